"""The simulator's threads each get their share of BLAS threads (hypar/sim/blas.py): the setting
holds inside the block and is restored after, the reference's thread gets the share too, and a
user's OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from hypar.sim import blas
from hypar.sim.background import Background
from hypar.sim.reference import seeded_data
from hypar.synthetic import gemm_chain


@pytest.fixture
def settable(monkeypatch):
    """The environment without the user's settings; skipped where numpy's BLAS has no per-thread
    setting (another BLAS than OpenBLAS >= 0.3.27)."""
    for var in blas.USER_SETTINGS:
        monkeypatch.delenv(var, raising=False)
    if blas._set_local() is None:
        pytest.skip("numpy's BLAS has no openblas_set_num_threads_local")


def current() -> int:
    """The calling thread's BLAS threads (set to what it was: reading means setting)."""
    now = blas.set_blas_threads(1)
    blas.set_blas_threads(now)
    return now


def test_set_inside_and_restored_after(settable):
    before = blas.set_blas_threads(2)
    try:
        with blas.blas_threads(1):
            assert current() == 1
        assert current() == 2
        with blas.blas_threads():
            assert current() == blas.share_of_cores()
        assert current() == 2
    finally:
        blas.set_blas_threads(before)


def test_restored_when_the_block_raises(settable):
    before = blas.set_blas_threads(2)
    try:
        with pytest.raises(RuntimeError), blas.blas_threads(1):
            raise RuntimeError("step failed")
        assert current() == 2
    finally:
        blas.set_blas_threads(before)


def test_reference_thread_gets_its_share(settable):
    g = gemm_chain([4, 4], 2)
    bg = Background(g, seeded_data(g, np.random.default_rng(0)), set())
    try:
        assert bg.check(lambda ref: current()).result() == blas.share_of_cores()
    finally:
        bg.close()


@pytest.mark.parametrize("var", blas.USER_SETTINGS)
def test_user_setting_left_alone(monkeypatch, var):
    monkeypatch.setenv(var, "3")
    assert blas.set_blas_threads(1) is None
    with blas.blas_threads(1):
        pass                                   # nothing set, nothing to restore


def test_share_of_cores_is_at_least_one():
    assert blas.share_of_cores() >= 1
