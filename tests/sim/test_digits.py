"""Digit maps (hypar/sim/digits.py) and what the simulator refuses before running (support.py)."""

from __future__ import annotations

import itertools
from math import prod

import numpy as np
import pytest

from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.sim import simulate
from hypar.sim.digits import balanced, balanced_digits, even_digits
from hypar.sim.support import unsupported
from hypar.synthetic import gemm_chain


@pytest.mark.parametrize("fanouts", [(2, 2), (3, 2), (4, 2), (2, 2, 2), (2, 2, 2, 2)])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 12, 16, 24, 30, 64])
def test_balanced_digits_split_every_level_set_that_divides(fanouts, n):
    """Every level set whose fanouts divide n splits it evenly -- except where no digit map can:
    four 2-way levels and exactly two factors 2 in n (only three pairwise-independent ways to
    halve by two bits: one pair of levels stays uneven); the even digits when every PE divides n."""
    d = balanced_digits(n, fanouts)
    assert d.shape == (len(fanouts), n) and all(((0 <= d[h]) & (d[h] < k)).all() for h, k in enumerate(fanouts))
    if n % prod(fanouts) == 0:
        np.testing.assert_array_equal(d, even_digits(n, fanouts))
    missed = []
    for size in range(1, len(fanouts) + 1):
        for levels in itertools.combinations(range(len(fanouts)), size):
            if n % prod(fanouts[h] for h in levels):
                assert not balanced(d, fanouts, levels)
            elif not balanced(d, fanouts, levels):
                missed.append(levels)
    two_bits = fanouts == (2, 2, 2, 2) and n % 4 == 0 and n % 8
    assert len(missed) == (1 if two_bits else 0), missed


def test_batch_four_on_eight_pes():
    """A batch of 4 on 2x2x2: any one or two levels split it evenly (parity digits), all three
    cannot."""
    d = balanced_digits(4, (2, 2, 2))
    assert d.tolist() == [[0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]]
    assert all(balanced(d, (2, 2, 2), lv) for lv in ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2)))
    assert not balanced(d, (2, 2, 2), (0, 1, 2))


def test_uneven_layouts_refused_before_any_step():
    """6 features split at both levels of 2x2 (fc1 II, II): named by layer, axis size and levels,
    found from the plan's layouts alone; split at one level, the same chain runs."""
    model = CostModel(gemm_chain([6, 8], 8), array_from_levels([2, 2]), "accpar", convention="hierarchical")
    assert unsupported(model, [("II", "II")]) == [
        "fc1: an axis of size 6 split at levels [0, 1] of 2x2 does not split evenly there"]
    res = simulate(model, [("II", "II")])
    assert res.unsupported and not res.counted
    assert not simulate(model, [("II", "I")]).unsupported
