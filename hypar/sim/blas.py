"""How many BLAS threads each of the simulator's own threads uses.

The step runs on two threads at once (the distributed step, and the reference with the checks
beside it: :mod:`hypar.sim.background`), each calling BLAS through numpy. Left to its default,
OpenBLAS gives every call all the cores, so the two threads' calls compete for them and its
waiting threads spin: measured on 2 cores (resnet18, 2x2x2, batch 4) 25 CPU seconds per verify
against 9 with one BLAS thread per caller, for the same results. :func:`blas_threads` sets the
calling thread's BLAS threads for a ``with`` block (OpenBLAS's per-thread setting,
``openblas_set_num_threads_local``, 0.3.27 and later); :func:`share_of_cores` is each of the
simulator's threads' share. Nothing is changed where the user chose (``OPENBLAS_NUM_THREADS`` or
``OMP_NUM_THREADS`` set) or where numpy's BLAS is not an OpenBLAS with that function (MKL,
Accelerate, an older OpenBLAS).
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

SIMULATOR_THREADS = 2      # the distributed step and the reference beside it
USER_SETTINGS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


@lru_cache(maxsize=1)
def _set_local():
    """OpenBLAS's ``openblas_set_num_threads_local`` (int -> previous int) from the library numpy
    loaded, or None when there is none (another BLAS, an older OpenBLAS, no /proc)."""
    import numpy  # noqa: F401  (loads numpy's BLAS, so that the map below lists it)
    try:
        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
    except OSError:
        return None
    for path in paths:
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    return None


def share_of_cores() -> int:
    """BLAS threads for each of the simulator's threads: the usable cores shared among them (at
    least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // SIMULATOR_THREADS)


def set_blas_threads(n: int) -> int | None:
    """Set the calling thread's BLAS threads to ``n``; the previous setting (None: not settable,
    or left to the user's environment)."""
    fn = None if any(os.environ.get(v) for v in USER_SETTINGS) else _set_local()
    return None if fn is None else int(fn(int(n)))


@contextmanager
def blas_threads(n: int | None = None) -> Iterator[None]:
    """The calling thread's BLAS threads set to ``n`` (default :func:`share_of_cores`) inside the
    ``with`` block, restored after."""
    prev = set_blas_threads(share_of_cores() if n is None else n)
    try:
        yield
    finally:
        if prev is not None:
            set_blas_threads(prev)
