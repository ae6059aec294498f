"""The virtual PEs and the tensors spread over them: the mesh (one coordinate per level), a
distributed tensor (per-PE values, NaN outside the PE's shard), which elements each PE holds in a
layout, and the message-free moves (load a whole tensor, slice, reassemble, add).

Shards (digit nesting, :mod:`hypar.sim.digits`): every index of a split axis has one digit per
level; a layout sharding the axis at levels L gives a PE the indices whose digits at L are its
coordinates there, so a split at one level is independent of the splits at the others. When the
axis divides over all P PEs the digits are those of the index's block ``r // (N / P)`` (mixed
radix, top level first). Otherwise one level takes any sizes and heterogeneous subgroups
(contiguous parts of ``split_counts``, as the cost model rounds them); several levels raise
:class:`UnevenSplit` -- unless the mesh is ``balanced`` (the hierarchical convention), whose
digits split evenly every set of levels whose fanouts divide the axis, and which refuses (same
error) only a set of levels that does not split the axis evenly.
"""

from __future__ import annotations

from collections import defaultdict
from math import prod

import numpy as np

from hypar.array import split_counts
from hypar.cost.strategies import COLS, FULL, ROWS
from hypar.sim.digits import balanced, balanced_digits, even_digits
from hypar.sim.errors import SimulationError, UnevenSplit


class Mesh:
    """P virtual PEs; PE p has one coordinate per level (its subgroup index there, top first)."""

    def __init__(self, fanouts: tuple[int, ...], fractions: tuple[float, ...] | None = None,
                 balanced: bool = False):
        """``fanouts``: subgroups per level, top first. ``fractions``: for a single level, the
        subgroups' throughput shares (heterogeneous arrays split an axis in proportion, rounded as
        the cost model does); None for equal shares. ``balanced``: axes that do not divide over
        all PEs get balanced digits (:func:`hypar.sim.digits.balanced_digits`) instead of raising
        UnevenSplit."""
        self.fanouts = tuple(fanouts)
        self.fractions = tuple(fractions) if fractions is not None else None
        self.balanced = balanced
        self.H = len(fanouts)
        self.P = prod(fanouts)
        self.coords = [self._digits(p) for p in range(self.P)]
        self._digit_cache: dict[int, np.ndarray] = {}
        self._groups: dict[int, list[list[int]]] = {}

    def _digits(self, q: int) -> tuple[int, ...]:
        """The mixed-radix digits of q (one per level, top first)."""
        return tuple((q // prod(self.fanouts[h + 1:])) % self.fanouts[h] for h in range(self.H))

    def axis_digits(self, n: int) -> np.ndarray:
        """(H, n) digits of every index of an axis of size n (n must divide by P)."""
        hit = self._digit_cache.get(n)
        if hit is None:
            hit = self._digit_cache[n] = even_digits(n, self.fanouts)
        return hit

    def sibling_groups(self, h: int) -> list[list[int]]:
        """Groups of PEs that differ only in their level-h coordinate, ordered by it (cached; do
        not modify the lists)."""
        hit = self._groups.get(h)
        if hit is None:
            groups: dict[tuple, list[int]] = defaultdict(list)
            for p, c in enumerate(self.coords):
                groups[c[:h] + c[h + 1:]].append(p)
            hit = self._groups[h] = [sorted(g, key=lambda p: self.coords[p][h]) for g in groups.values()]
        return hit

    def siblings(self, p: int, h: int) -> list[int]:
        """The PEs that differ from p only in their level-h coordinate, by that coordinate."""
        c = self.coords[p]
        stride = prod(self.fanouts[h + 1:])
        return [p + (j - c[h]) * stride for j in range(self.fanouts[h]) if j != c[h]]


class Dist:
    """A tensor spread over the mesh: one layout per level and per-PE values.

    Layout semantics per level h: ROWS -> PE keeps the batch-axis indices whose level-h digit is
    its coordinate; COLS -> the same for the feature axis; FULL -> no constraint; PARTIAL -> no
    constraint, values are partial sums over the level-h subgroups. Values outside a PE's shard
    are NaN, so a missing element poisons the result instead of being read silently.
    """

    def __init__(self, mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...], vals: list[np.ndarray],
                 axes: tuple = (0, 1)):
        """``vals[p]``: PE p's array of the full ``shape``; ``axes``: (batch axis, feature axis),
        either may be None."""
        self.mesh, self.shape, self.layouts, self.vals = mesh, tuple(shape), tuple(layouts), vals
        self.axes = tuple(axes)

    def copy(self) -> "Dist":
        """A deep copy (values copied)."""
        return Dist(self.mesh, self.shape, self.layouts, [v.copy() for v in self.vals], self.axes)

    def layouts_with(self, h: int, new: str) -> tuple[str, ...]:
        """The layouts with level h's replaced by ``new``."""
        return self.layouts[:h] + (new,) + self.layouts[h + 1:]

    def relabelled(self, layouts: tuple[str, ...]) -> "Dist":
        """The same values under other layouts (no copy, no check)."""
        return Dist(self.mesh, self.shape, layouts, self.vals, self.axes)


def digits_for(mesh: Mesh, n: int) -> np.ndarray:
    """Digits (levels x n) of an axis of size n: mixed radix when n divides over the PEs of a
    homogeneous array; on a single level, contiguous parts of split_counts(n, fractions) (uneven or
    heterogeneous splits, as the cost model rounds them). Raises UnevenSplit otherwise."""
    even = mesh.fractions is None or len(set(mesh.fractions)) == 1
    if even and n % mesh.P == 0:
        return mesh.axis_digits(n)
    if mesh.H == 1:
        k = mesh.fanouts[0]
        parts = split_counts(n, mesh.fractions or [1.0 / k] * k)
        return np.repeat(np.arange(k), parts)[None, :]
    if mesh.balanced and even:
        return balanced_digits(n, mesh.fanouts)
    raise UnevenSplit(f"an axis of size {n} does not divide over {mesh.P} PEs")


def level_digits(mesh: Mesh, n: int, levels) -> np.ndarray:
    """:func:`digits_for`, checking that ``levels`` (the levels splitting the axis together) split
    it evenly on several levels; raises UnevenSplit naming the axis size and levels otherwise."""
    d = digits_for(mesh, n)
    if mesh.H > 1 and n % mesh.P and not balanced(d, mesh.fanouts, levels):
        fan = "x".join(map(str, mesh.fanouts))
        raise UnevenSplit(f"an axis of size {n} split at levels {sorted(set(levels))} of {fan} does not split "
                          "evenly there")
    return d


def shard_mask(mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...], p: int,
               axes: tuple = (0, 1)) -> np.ndarray:
    """PE p's elements of a tensor (a boolean array of ``shape``): ROWS splits the batch axis,
    COLS the feature axis (``axes``). Raises SimulationError for a split of a missing axis."""
    bax, fax = axes
    m = np.ones(tuple(shape), bool)
    for ax, lay in ((bax, ROWS), (fax, COLS)):
        if lay not in layouts:
            continue
        if ax is None:
            raise SimulationError(f"layout {lay} on a tensor without that axis")
        d = level_digits(mesh, shape[ax], [h for h, l in enumerate(layouts) if l == lay])
        r = np.ones(shape[ax], bool)
        for h, l in enumerate(layouts):
            if l == lay:
                r &= d[h] == mesh.coords[p][h]
        m &= r.reshape(tuple(shape[ax] if a == ax else 1 for a in range(len(shape))))
    return m


def axis_mask(mesh: Mesh, n: int, levels: list[int], p: int) -> np.ndarray:
    """PE p's indices of an axis of size n split at ``levels`` (boolean, length n)."""
    m = np.ones(n, bool)
    if not levels:
        return m
    d = level_digits(mesh, n, levels)
    for h in levels:
        m &= d[h] == mesh.coords[p][h]
    return m


def held(x: Dist, p: int, keep: str) -> np.ndarray:
    """PE p's shard of x under only its ``keep`` (ROWS or COLS) splits: which channels / rows it
    holds, even when its share of the other axis is empty (uneven splits)."""
    lays = tuple(l if l == keep else FULL for l in x.layouts)
    return shard_mask(x.mesh, x.shape, lays, p, x.axes)


def _kept(src: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``src`` where ``m``, NaN elsewhere (a new float array)."""
    v = np.full(src.shape, np.nan)
    v[m] = src[m]
    return v


def scatter(mesh: Mesh, full: np.ndarray, layouts: tuple[str, ...], axes: tuple = (0, 1)) -> Dist:
    """Load a whole tensor into a layout (graph inputs, output errors: free). No PARTIAL."""
    vals = [_kept(full, shard_mask(mesh, full.shape, layouts, p, axes)) for p in range(mesh.P)]
    return Dist(mesh, full.shape, layouts, vals, axes)


def slice_local(d: Dist, h: int, new: str) -> Dist:
    """FULL -> anything at level h: drop what the PE does not keep (no messages). Raises
    SimulationError when a PE lacks part of its new shard."""
    assert d.layouts[h] == FULL
    layouts = d.layouts_with(h, new)
    out = []
    for p in range(d.mesh.P):
        m = shard_mask(d.mesh, d.shape, layouts, p, d.axes)
        v = _kept(d.vals[p], m)
        if np.isnan(v[m]).any():
            raise SimulationError(f"PE {p} lacks part of a replicated shard at level {h}")
        out.append(v)
    return Dist(d.mesh, d.shape, layouts, out, d.axes)


def mask_to_layout(d: Dist) -> Dist:
    """Drop what a PE computed outside its shard (e.g. a batched product over replicated heads)."""
    vals = []
    for p, v in enumerate(d.vals):
        m = shard_mask(d.mesh, d.shape, d.layouts, p, d.axes)
        vals.append(np.where(m, v, np.nan))
    return Dist(d.mesh, d.shape, d.layouts, vals, d.axes)


def add(a: Dist | None, b: Dist) -> Dist:
    """a + b per PE (``b`` when a is None); raises SimulationError for different layouts."""
    if a is None:
        return b
    if a.layouts != b.layouts:
        raise SimulationError(f"adding tensors in layouts {a.layouts} and {b.layouts}")
    return Dist(a.mesh, a.shape, a.layouts, [x + y for x, y in zip(a.vals, b.vals)], a.axes)


def gather(d: Dist) -> np.ndarray:
    """Reassemble a non-partial tensor; NaN where no PE holds the element; replicas must agree
    (else SimulationError)."""
    out = np.full(d.shape, np.nan)
    for v in d.vals:
        m = ~np.isnan(v)
        clash = m & ~np.isnan(out) & (np.abs(out - v) > 1e-6 * (1 + np.abs(v)))
        if clash.any():
            raise SimulationError("replicas of one element disagree")
        out[m] = v[m]
    return out


def max_abs_error(d: Dist, ref: np.ndarray) -> float:
    """max |value - ref| over every element every PE holds (replicas each compared with the
    reference); inf when an element is held by no PE."""
    covered = np.zeros(d.shape, bool)
    err = 0.0
    for v in d.vals:
        held_now = ~np.isnan(v)
        covered |= held_now
        diff = np.abs(v - ref)
        if held_now.any():
            err = max(err, float(np.nanmax(diff)))
    return err if covered.all() else float("inf")
