"""The one placement rule (hypar/shards.py): leaf blocks split top first down the array's tree,
digits from the block owners, counts per digit combination, and groups aggregated by what they
hold -- each checked against an independent computation or numbers derived by hand."""

from __future__ import annotations

import itertools
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypar import shards
from hypar.array import Level, PEArray, PEKind, array_from_levels, split_counts

FANOUTS = [(2,), (3,), (2, 2), (3, 2), (2, 3), (4, 2), (2, 2, 2), (2, 2, 2, 2)]


def het_array(fanouts: tuple[int, ...], tflops: list[float]) -> PEArray:
    """An array over ``fanouts`` whose PEs (in order) have the given TFLOP/s."""
    kinds = {f"k{t:g}": PEKind(f"k{t:g}", tflops=t) for t in set(tflops)}
    return PEArray("het", tuple(Level(k) for k in fanouts), kinds, tuple(f"k{t:g}" for t in tflops))


HETERO = [het_array((2, 2), [120, 120, 40, 40]), het_array((2, 3), [100, 300, 200, 300, 300, 100]),
          het_array((3,), [100, 300, 50]), het_array((2, 2, 2), [1, 2, 3, 4, 5, 6, 7, 8])]


def mixed_radix_digits(n: int, fanouts: tuple[int, ...]) -> np.ndarray:
    """The digits of block ``r // (n / P)`` (what the simulator used when P divides n)."""
    q = np.arange(n) // (n // prod(fanouts))
    return np.array([(q // prod(fanouts[h + 1:])) % fanouts[h] for h in range(len(fanouts))])


def all_arrays():
    return [array_from_levels(list(f)) for f in FANOUTS] + HETERO


@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "x".join(map(str, f)))
@pytest.mark.parametrize("multiple", [1, 2, 3, 5])
def test_divisible_axes_get_the_mixed_radix_digits(fanouts, multiple):
    arr = array_from_levels(list(fanouts))
    n = multiple * prod(fanouts)
    assert shards.is_even(arr, n)
    np.testing.assert_array_equal(shards.axis_digits(arr, n), mixed_radix_digits(n, fanouts))
    for size in range(len(fanouts) + 1):
        for levels in itertools.combinations(range(len(fanouts)), size):
            assert (shards.level_counts(arr, n, levels) == n // prod(fanouts[h] for h in levels)).all()


@pytest.mark.parametrize("arr", [array_from_levels([k]) for k in (2, 3, 4, 5)] + [HETERO[2]], ids=str)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 10, 13, 100])
def test_one_level_is_contiguous_split_counts(arr, n):
    """One level: PE j holds split_counts(n, fractions)[j] indices, contiguous, in order."""
    fr = [c[1] for c in arr.classes[0][arr.root_key].children]
    parts = split_counts(n, fr)
    assert shards.block_sizes(arr, n).tolist() == parts
    np.testing.assert_array_equal(shards.axis_digits(arr, n)[0], np.repeat(np.arange(len(fr)), parts))
    assert shards.level_counts(arr, n, [0]).tolist() == parts


def test_block_sizes_by_hand():
    """Top first: 6 over 2x2 is 3, 3 then 2, 1 in each half; 4 over 2x2x2 leaves every second PE
    empty; on the 3:1 heterogeneous 2x2 (fast pair first) 6 is 5, 1 at the top (the tie goes to
    the faster half), then 3, 2 and 1, 0; 8 is 6, 2 then 3, 3, 1, 1."""
    assert shards.block_sizes(array_from_levels([2, 2]), 6).tolist() == [2, 1, 2, 1]
    assert shards.block_sizes(array_from_levels([2, 2, 2]), 4).tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert shards.block_sizes(HETERO[0], 6).tolist() == [3, 2, 1, 0]
    assert shards.block_sizes(HETERO[0], 8).tolist() == [3, 3, 1, 1]
    # 6 over 2x2: level 1 alone holds 4 and 2 (not split_counts(6, halves) = 3, 3)
    assert shards.level_counts(array_from_levels([2, 2]), 6, [1]).tolist() == [4, 2]


def test_batch_four_on_eight_pes():
    """A batch of 4 on 2x2x2: blocks of 1 on every second PE, so the level-2 digit is always 0
    (a split at level 2 alone leaves one half empty); levels 0 and 1 split it evenly. (The
    balanced GF(2) digits this replaces gave [[0,0,1,1],[0,1,0,1],[0,1,1,0]].)"""
    d = shards.axis_digits(array_from_levels([2, 2, 2]), 4)
    assert d.tolist() == [[0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]]
    assert shards.level_counts(array_from_levels([2, 2, 2]), 4, [2]).tolist() == [4, 0]
    assert shards.level_counts(array_from_levels([2, 2, 2]), 4, [0, 1]).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("arr", all_arrays(), ids=lambda a: "x".join(map(str, a.fanouts)) + a.name)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 6, 7, 9, 17, 50])
def test_every_index_exactly_once_and_counts_from_the_digits(arr, n):
    """Blocks cover the axis once (contiguous, in PE order); each index's digits are its owner's
    coordinates; for every set of levels the counts are the bincount of the digits' mixed-radix
    codes (computed here from the digits, not from the blocks)."""
    sizes = shards.block_sizes(arr, n)
    assert sizes.sum() == n and (sizes >= 0).all()
    d = shards.axis_digits(arr, n)
    fan = arr.fanouts
    owner = sum(d[h] * prod(fan[h + 1:]) for h in range(len(fan)))
    np.testing.assert_array_equal(owner, np.repeat(np.arange(arr.n_pes), sizes))
    for size in range(len(fan) + 1):
        for levels in itertools.combinations(range(len(fan)), size):
            code = np.zeros(n, dtype=int)
            for h in levels:
                code = code * fan[h] + d[h]
            want = np.bincount(code, minlength=prod(fan[h] for h in levels))
            np.testing.assert_array_equal(shards.level_counts(arr, n, levels), want)
            for combo in itertools.product(*(range(fan[h]) for h in levels)):
                held = int(np.logical_and.reduce([d[h] == c for h, c in zip(levels, combo)] + [np.ones(n, bool)]).sum())
                assert shards.held(arr, n, levels, combo) == held


def _brute_shares(arr, h, queries):
    """group_shares by walking every level-h group and every index."""
    fan = arr.fanouts
    out: dict = {}
    keys = shards.group_keys(arr, h)
    for g, coords in enumerate(itertools.product(*(range(k) for k in fan[:h]))):
        answers = []
        for n, levels, member in queries:
            d = shards.axis_digits(arr, n)
            mask = np.ones(n, bool)
            for lv in levels:
                mask &= d[lv] == coords[lv]
            answers.append(tuple(int((mask & (d[h] == j)).sum()) for j in range(fan[h])) if member else int(mask.sum()))
        key = (keys[g], tuple(answers))
        out[key] = out.get(key, 0) + 1
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_group_shares_equal_a_walk_over_every_group(data):
    arr = data.draw(st.sampled_from(all_arrays()))
    h = data.draw(st.integers(0, arr.n_levels))
    queries = []
    for _ in range(data.draw(st.integers(1, 3))):
        n = data.draw(st.integers(0, 40))
        levels = tuple(sorted(data.draw(st.sets(st.integers(0, h - 1))) if h else ()))
        queries.append((n, levels, h < arr.n_levels and data.draw(st.booleans())))
    queries = tuple(queries)
    got = shards.group_shares(arr, h, queries)
    assert sum(m for _k, _a, m in got) == prod(arr.fanouts[:h])
    assert {(k, a): m for k, a, m in got} == _brute_shares(arr, h, queries)


def test_group_keys_follow_the_pe_row():
    arr = HETERO[0]
    assert shards.group_keys(arr, 0) == (arr.root_key,)
    assert shards.group_keys(arr, 1) == ((("k120", 2),), (("k40", 2),))
    assert shards.group_keys(arr, 2) == ((("k120", 1),),) * 2 + ((("k40", 1),),) * 2


# -- units: an axis of n in units of u is cut as n / u units, each unit's u indices sharing its digits


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_an_axis_in_units_counts_u_times_its_units(data):
    arr = data.draw(st.sampled_from(all_arrays()))
    units, unit = data.draw(st.integers(0, 13)), data.draw(st.integers(1, 6))
    n = units * unit
    np.testing.assert_array_equal(shards.block_sizes(arr, n, unit), unit * shards.block_sizes(arr, units))
    np.testing.assert_array_equal(shards.axis_digits(arr, n, unit),
                                  np.repeat(shards.axis_digits(arr, units), unit, axis=1))
    levels = tuple(sorted(data.draw(st.sets(st.integers(0, arr.n_levels - 1)))))
    np.testing.assert_array_equal(shards.level_counts(arr, n, levels, unit), unit * shards.level_counts(arr, units, levels))
    assert shards.is_even(arr, n, unit) == shards.is_even(arr, units)


def test_units_by_hand():
    # 64 features in heads of 16 over 3 PEs: the 4 heads split 2, 1, 1 -> 32, 16, 16 features
    assert shards.block_sizes(array_from_levels([3]), 64, 16).tolist() == [32, 16, 16]
    assert shards.block_sizes(array_from_levels([3]), 64).tolist() == [22, 21, 21]     # without: not heads
    # 4 heads over 4x2 PEs: one head (16 features) per level-0 group, on its first PE
    assert shards.block_sizes(array_from_levels([4, 2]), 64, 16).tolist() == [16, 0] * 4
    assert shards.level_counts(array_from_levels([4, 2]), 64, [1], 16).tolist() == [64, 0]
    assert shards.held(array_from_levels([3, 2]), 9216, [0], [0], 36) == 86 * 36     # alexnet's flatten
    with pytest.raises(ValueError):
        shards.axis_digits(array_from_levels([2]), 10, 4)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_group_shares_with_units_are_u_times_those_of_the_units(data):
    arr = data.draw(st.sampled_from(all_arrays()))
    h = data.draw(st.integers(0, arr.n_levels))
    plain, with_units, units = [], [], []
    for _ in range(data.draw(st.integers(1, 3))):
        n, unit = data.draw(st.integers(0, 12)), data.draw(st.integers(1, 5))
        levels = tuple(sorted(data.draw(st.sets(st.integers(0, h - 1))) if h else ()))
        member = h < arr.n_levels and data.draw(st.booleans())
        plain.append((n, levels, member))
        with_units.append((n * unit, levels, member, unit))
        units.append(unit)
    got = shards.group_shares(arr, h, tuple(with_units))
    want = shards.group_shares(arr, h, tuple(plain))

    def scaled(a, u):
        return tuple(u * x for x in a) if isinstance(a, tuple) else u * a
    assert [(k, a, m) for k, a, m in got] == [(k, tuple(scaled(x, u) for x, u in zip(a, units)), m) for k, a, m in want]
    assert shards.group_shares(arr, h, tuple(plain)) == shards.group_shares(arr, h, tuple(q + (1,) for q in plain))
