"""Which PEs hold which indices of a split axis: the one rule the cost model and the simulator
share for every axis on every array (pure: an array and a size in, integer arrays out).

**Leaf blocks.** An axis of ``n`` indices is cut into P contiguous blocks, one per PE, in PE order
(mixed radix, top level first: the order of the array's ``pes``). The block sizes are split top
first down the array's tree: ``n`` among the level-0 subgroups by
:func:`hypar.array.split_counts` with the root's children's throughput fractions, each part among
that subgroup's children by theirs, and so on (on a homogeneous array all fractions are equal).
Blocks may be empty (a batch of 4 over 8 PEs).

**Digits.** Index r's digit at level h is the level-h coordinate of the PE whose block holds r.
A layout sharding the axis at a set of levels L gives PE p every index whose digits at L equal
p's coordinates at L ("digit nesting": a split at one level is independent of the splits at the
others, so SPEC §3's hierarchical order lands exactly in its target).

**Units.** An axis may carry a *unit* ``u`` (a divisor of ``n``; 1 unless the graph says otherwise,
:mod:`hypar.onnx.units`): it is then cut as an axis of ``n / u`` units by the rule above and the
``u`` indices of each unit share its digits (index r's digits are those of unit ``r // u``), so
every count is ``u`` times the count of the ``n / u`` units. Two axes holding the same number of
units split alike: a reshape that regroups heads into features (or channels into flattened
features) keeps every PE's share. Every function takes ``unit`` (default 1: the plain rule).

Properties (tests/test_shards.py): when P divides ``n`` on a homogeneous array every block holds
``n / P`` indices, so every set of levels splits the axis evenly (the mixed-radix digits of
``r // (n / P)``); on one level the parts are exactly ``split_counts(n, fractions)``, contiguous;
every index lies in exactly one block.

:func:`axis_digits` gives the (levels, n) digit array; :func:`level_counts` how many indices each
combination of digits at a set of levels holds (a bincount over mixed-radix codes);
:func:`group_shares` tells, for every group of one level, how many indices of some axes it and
each of its members hold, aggregated over groups alike (what the cost model prices per group).
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np

from hypar.array import PEArray, split_counts

# What fixes the rule on an array: its fanouts and every PE's throughput (the tree's fractions).
TreeKey = tuple[tuple[int, ...], tuple[float, ...]]


def tree_key(array: PEArray) -> TreeKey:
    """The fanouts (top first) and each PE's TFLOP/s in PE order: equal keys split alike."""
    return array.fanouts, tuple(array.kinds[k].tflops for k in array.pes)


def units_of(n: int, unit: int) -> int:
    """How many units of ``unit`` indices an axis of ``n`` holds (ValueError unless ``unit`` is a
    positive divisor of ``n``; an empty axis holds none)."""
    n, unit = int(n), int(unit)
    if unit < 1 or n % unit:
        raise ValueError(f"a unit of {unit} does not divide an axis of {n}")
    return n // unit


def is_even(array: PEArray, n: int, unit: int = 1) -> bool:
    """True when every block of an axis of ``n`` (in units of ``unit``) holds ``n / P`` indices (a
    homogeneous array whose PE count divides ``n / unit``): every set of levels L then splits it
    into ``n / prod k_L``."""
    return units_of(n, unit) % array.n_pes == 0 and not _Tree.of(array).heterogeneous


def block_sizes(array: PEArray, n: int, unit: int = 1) -> np.ndarray:
    """Indices of an axis of ``n`` (in units of ``unit``) in each PE's block, in PE order (module
    docstring); read-only."""
    return _block_sizes(_Tree.of(array), units_of(n, unit), int(unit))


def axis_digits(array: PEArray, n: int, unit: int = 1) -> np.ndarray:
    """(levels, n) digits of an axis of ``n`` indices in units of ``unit``: row h holds every
    index's level-h digit (top level first); cached, read-only."""
    return _axis_digits(_Tree.of(array), units_of(n, unit), int(unit))


def level_counts(array: PEArray, n: int, levels, unit: int = 1) -> np.ndarray:
    """Indices of an axis of ``n`` (in units of ``unit``) per combination of digits at ``levels``
    (a set of level numbers): a vector indexed by the mixed-radix code of the digits at the sorted
    levels (top first), ``prod`` of their fanouts long (``[n]`` for no level); cached, read-only."""
    return _level_counts(_Tree.of(array), units_of(n, unit), tuple(sorted(set(levels))), int(unit))


def held(array: PEArray, n: int, levels, digits, unit: int = 1) -> int:
    """How many indices of an axis of ``n`` (in units of ``unit``) have digits ``digits`` (one per
    level, same order) at ``levels`` (a sequence of distinct level numbers)."""
    order = sorted(range(len(levels)), key=lambda i: levels[i])
    fan = array.fanouts
    code = 0
    for i in order:
        code = code * fan[levels[i]] + digits[i]
    return int(level_counts(array, n, levels, unit)[code])


def group_coords(array: PEArray, h: int) -> np.ndarray:
    """(groups, h) coordinates of the level-h groups (the subgroups of levels 0..h-1, in PE
    order); a (1, 0) array for h = 0; cached, read-only."""
    return _group_coords(array.fanouts, h)


def group_keys(array: PEArray, h: int) -> tuple:
    """The class key (:attr:`hypar.array.GroupClass.key`) of every level-h group, in the order of
    :func:`group_coords`; level ``n_levels`` gives the PEs' own keys. Cached on the array."""
    hit = array._cache.get(("group_keys", h))
    if hit is None:
        if h == 0:
            hit = (array.root_key,)
        else:
            hit = tuple(c[0] for k in group_keys(array, h - 1) for c in array.classes[h - 1][k].children)
        array._cache[("group_keys", h)] = hit
    return hit


# One question about the level-h groups: (axis size n, the levels above h splitting the axis, sorted;
# whether to answer per member of the group -- their level-h digit fixed too -- or for the group;
# the axis' unit). A query of three entries has unit 1.
Query = tuple[int, tuple[int, ...], bool, int]


def group_shares(array: PEArray, h: int, queries: tuple[Query, ...]) -> tuple[tuple[tuple, tuple, int], ...]:
    """The level-h groups (``0 <= h <= n_levels``; level ``n_levels``: the PEs) aggregated by what
    they hold: ``((class key, answers, number of groups), ...)`` in order of the first such group,
    one answer per query ``(n, levels, member, unit)``: the indices of an axis of ``n`` (in units
    of ``unit``; a query without it has unit 1) whose digits at ``levels`` (all above h) equal the
    group's coordinates there, or (``member``) a tuple over the group's members of those whose
    level-h digit is also the member's. Cached on the array.

    Only the coordinates some query reads tell groups apart on a homogeneous array, and none when
    every axis splits evenly (:func:`is_even`): then one representative stands for all."""
    queries = tuple(q if len(q) == 4 else tuple(q) + (1,) for q in queries)
    key = ("group_shares", h, queries)
    hit = array._cache.get(key)
    if hit is None:
        hit = array._cache[key] = _group_shares(array, h, queries)
    return hit


def _group_shares(array: PEArray, h: int, queries: tuple[Query, ...]) -> tuple[tuple[tuple, tuple, int], ...]:
    """:func:`group_shares` computed: a table of answers per distinct coordinate combination."""
    tree = _Tree.of(array)
    fan = tree.fanouts
    if tree.heterogeneous:
        used: tuple[int, ...] = tuple(range(h))
    elif all(is_even(array, n, unit) for n, _levels, _member, unit in queries):
        used = ()
    else:
        used = tuple(sorted({g for _n, levels, _m, _u in queries for g in levels}))
    combos = np.zeros((prod(fan[g] for g in used), h), dtype=np.int64)   # coordinates, 0 where unread
    combos[:, list(used)] = _group_coords(tuple(fan[g] for g in used), len(used))
    columns = []
    for n, levels, member, unit in queries:
        code = np.zeros(len(combos), dtype=np.int64)
        for g in levels:
            code = code * fan[g] + combos[:, g]
        if member:
            columns.append(level_counts(array, n, levels + (h,), unit).reshape(-1, fan[h])[code])
        else:
            columns.append(level_counts(array, n, levels, unit)[code][:, None])
    keys = group_keys(array, h)
    distinct = list(dict.fromkeys(keys)) if tree.heterogeneous else [keys[0]]
    kind = np.array([distinct.index(k) for k in keys] if len(distinct) > 1 else [0] * len(combos), dtype=np.int64)
    table = np.ascontiguousarray(np.hstack([kind[:, None]] + columns))
    rows = table.view(np.dtype((np.void, table.dtype.itemsize * table.shape[1]))).ravel()
    _rows, first, counts = np.unique(rows, return_index=True, return_counts=True)
    widths = [c.shape[1] for c in columns]
    out = []
    per_combo = prod(fan[:h]) // len(combos)
    for j in np.argsort(first):
        row = table[first[j]].tolist()
        answers, at = [], 1
        for (_n, _levels, member, _unit), w in zip(queries, widths):
            answers.append(tuple(row[at:at + w]) if member else row[at])
            at += w
        out.append((distinct[row[0]], tuple(answers), int(counts[j]) * per_combo))
    return tuple(out)


class _Tree:
    """The hashable part of an array the rule reads: fanouts and per-level child fractions of each
    group, by group, top first."""

    __slots__ = ("key", "fanouts", "fractions", "heterogeneous", "_hash")

    def __init__(self, key: TreeKey, fanouts: tuple[int, ...], fractions: tuple):
        self.key, self.fanouts, self.fractions = key, fanouts, fractions
        self.heterogeneous = len(set(key[1])) > 1
        self._hash = hash(key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, _Tree) and self.key == other.key

    @staticmethod
    def of(array: PEArray) -> "_Tree":
        """The tree of ``array`` (cached on the array)."""
        hit = array._cache.get("shards_tree")
        if hit is None:
            fractions = []
            for h in range(array.n_levels):
                keys = group_keys(array, h)
                fractions.append(tuple(tuple(c[1] for c in array.classes[h][k].children) for k in keys))
            hit = array._cache["shards_tree"] = _Tree(tree_key(array), array.fanouts, tuple(fractions))
        return hit


@lru_cache(maxsize=4096)
def _block_sizes(tree: _Tree, units: int, unit: int) -> np.ndarray:
    """:func:`block_sizes` computed: ``units`` units split top first, group by group, each
    ``unit`` indices."""
    sizes = [units]
    for level_fractions in tree.fractions:
        sizes = [part for size, fr in zip(sizes, level_fractions) for part in split_counts(size, fr)]
    out = np.array(sizes, dtype=np.int64) * unit
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _axis_digits(tree: _Tree, units: int, unit: int) -> np.ndarray:
    """:func:`axis_digits` computed from the block owners."""
    fan = tree.fanouts
    owner = np.repeat(np.arange(prod(fan)), _block_sizes(tree, units, unit))
    out = np.array([(owner // prod(fan[h + 1:])) % fan[h] for h in range(len(fan))], dtype=np.int64)
    out = out.reshape(len(fan), units * unit)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1 << 16)
def _level_counts(tree: _Tree, units: int, levels: tuple[int, ...], unit: int) -> np.ndarray:
    """:func:`level_counts` computed: block sizes summed by their PE's digits at ``levels``."""
    fan = tree.fanouts
    pe = np.arange(prod(fan))
    code = np.zeros(len(pe), dtype=np.int64)
    for h in levels:
        code = code * fan[h] + (pe // prod(fan[h + 1:])) % fan[h]
    out = np.bincount(code, weights=_block_sizes(tree, units, unit), minlength=prod(fan[h] for h in levels))
    out = out.astype(np.int64)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def _group_coords(fanouts: tuple[int, ...], h: int) -> np.ndarray:
    """:func:`group_coords` computed."""
    g = np.arange(prod(fanouts[:h]))
    out = np.array([(g // prod(fanouts[j + 1:h])) % fanouts[j] for j in range(h)], dtype=np.int64).T
    out = out.reshape(len(g), h)
    out.setflags(write=False)
    return out
