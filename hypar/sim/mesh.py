"""The virtual PEs and the tensors spread over them: the mesh (one coordinate per level), a
distributed tensor (per-PE values, NaN outside the PE's shard), which elements each PE holds in a
layout, the message-free moves (load a whole tensor, slice, reassemble, add), and the per-PE
bookkeeping that keeps the step fast: blocks cut as views where indices are contiguous
(:func:`as_cut`), replicas sharing one array (:func:`share_replicas`, :func:`per_pe`) and the
comparison with the reference in cache-sized pieces (:func:`max_abs_diff`).

Shards (digit nesting, :mod:`hypar.shards`, the rule the cost model prices by too): every index
of a split axis has one digit per level -- the level's coordinate of the PE whose leaf block holds
it, the axis cut into one contiguous block per PE, sizes split top first down the array's tree by
throughput (``split_counts``); a layout sharding the axis at levels L gives a PE the indices whose
digits at L are its coordinates there, so a split at one level is independent of the splits at
the others. Blocks may be unequal or empty. An axis may carry a unit (``hypar.shards`` "Units",
from the graph's tensors, :class:`TensorAxes`): its indices are then placed in units of that many
consecutive indices, which is what keeps the shards mapping through a reshape regrouping heads
into features. A ``strict`` mesh (the ``reference`` convention,
whose cost model rounds each level's view on its own) refuses an axis that does not split evenly
over several levels (:class:`UnevenSplit`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from math import prod
from typing import TypeVar

import numpy as np

from hypar import shards
from hypar.array import PEArray, array_from_levels
from hypar.cost.strategies import COLS, FULL, ROWS
from hypar.sim.errors import SimulationError, UnevenSplit

T = TypeVar("T")


class TensorAxes(tuple):
    """A tensor's (batch axis, feature axis) -- each an int or None -- with ``units``, the unit of
    each (:mod:`hypar.shards` "Units"; the graph tensor's ``batch_unit`` / ``feature_unit``). It
    is the 2-tuple of axes (unpacks, indexes and compares as one); the units ride along."""

    units: tuple[int, int]

    def __new__(cls, axes: tuple = (0, 1), units: tuple[int, int] = (1, 1)) -> "TensorAxes":
        out = super().__new__(cls, tuple(axes))
        out.units = (int(units[0]), int(units[1]))
        return out

    def __reduce__(self):
        return TensorAxes, (tuple(self), self.units)

    @staticmethod
    def of(t) -> "TensorAxes":
        """The axes and units of graph tensor ``t`` (:class:`hypar.graph.Tensor`)."""
        return TensorAxes((t.batch_axis, t.feature_axis), (t.batch_unit, t.feature_unit))


def units_of(axes: tuple) -> tuple[int, int]:
    """The (batch, feature) units of ``axes``: its own for :class:`TensorAxes`, else (1, 1)."""
    return getattr(axes, "units", (1, 1))


class Mesh:
    """P virtual PEs; PE p has one coordinate per level (its subgroup index there, top first)."""

    def __init__(self, fanouts: tuple[int, ...], array: PEArray | None = None, strict: bool = False):
        """``fanouts``: subgroups per level, top first. ``array``: the PE array whose tree splits
        every axis (:mod:`hypar.shards`; its fanouts must be ``fanouts``); None for equal
        subgroups. ``strict``: on several levels, refuse (UnevenSplit) an axis whose blocks are
        not all of one size (the ``reference`` convention's simulator)."""
        self.fanouts = tuple(fanouts)
        self.array = array if array is not None else array_from_levels(list(self.fanouts))
        if self.array.fanouts != self.fanouts:
            raise ValueError(f"mesh fanouts {self.fanouts} differ from the array's {self.array.fanouts}")
        self.strict = strict
        self.H = len(fanouts)
        self.P = prod(fanouts)
        self.coords = [self._digits(p) for p in range(self.P)]
        self._groups: dict[int, list[list[int]]] = {}
        self.index_cache: dict[tuple, list[np.ndarray]] = {}     # (axis size, unit, levels) -> indices per PE

    def _digits(self, q: int) -> tuple[int, ...]:
        """The mixed-radix digits of q (one per level, top first)."""
        return tuple((q // prod(self.fanouts[h + 1:])) % self.fanouts[h] for h in range(self.H))

    def axis_digits(self, n: int, unit: int = 1) -> np.ndarray:
        """(H, n) digits of every index of an axis of size n in units of ``unit``
        (:func:`hypar.shards.axis_digits`; read-only). A strict mesh raises UnevenSplit for an
        axis that does not split evenly over several levels."""
        if self.strict and self.H > 1 and not shards.is_even(self.array, n, unit):
            raise UnevenSplit(f"an axis of size {n} does not divide over {self.P} PEs")
        return shards.axis_digits(self.array, n, unit)

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
    constraint, values are partial sums over the level-h subgroups. A PE's *region* is the product
    of its batch and feature indices (:meth:`index`) with every other axis whole.

    Two representations of the same values, either given, the other built on first use and kept:
    ``vals[p]`` (an array of the full ``shape``, NaN outside the region, so a missing element
    poisons the result instead of being read silently) and ``blocks[p]`` (the region's values
    only, the batch and feature axes cut to :meth:`index`; NaN marks a missing element).
    """

    def __init__(self, mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...],
                 vals: list[np.ndarray] | None = None, axes: tuple = (0, 1),
                 blocks: list[np.ndarray] | None = None):
        """``vals[p]``: PE p's array of the full ``shape``, or ``blocks[p]``: its region's values
        (exactly one of the two); ``axes``: (batch axis, feature axis), either may be None, a
        :class:`TensorAxes` when an axis has a unit other than 1."""
        if (vals is None) == (blocks is None):
            raise ValueError("a Dist takes either vals or blocks")
        self.mesh, self.shape, self.layouts = mesh, tuple(shape), tuple(layouts)
        self.axes = axes if isinstance(axes, TensorAxes) else tuple(axes)
        self._vals, self._blocks = vals, blocks

    @property
    def vals(self) -> list[np.ndarray]:
        """Per PE, an array of the full shape, NaN outside its region (built from the blocks once)."""
        if self._vals is None:
            self._vals = self.full_arrays()
        return self._vals

    @property
    def blocks(self) -> list[np.ndarray]:
        """Per PE, its region's values (cut from the full arrays once)."""
        if self._blocks is None:
            self._blocks = [take_block(v, self.axes, self.index(p)) for p, v in enumerate(self._vals)]
        return self._blocks

    @property
    def dtype(self) -> np.dtype:
        """The values' float type (float64 when no PE holds an array)."""
        arrs = self._vals if self._vals is not None else self._blocks
        return arrs[0].dtype if arrs else np.dtype(np.float64)

    def full_arrays(self) -> list[np.ndarray]:
        """Per PE, a new array of the full shape, NaN outside its region (nothing kept here)."""
        if self._vals is not None:
            return [v.copy() for v in self._vals]
        return [put_block(np.full(self.shape, np.nan, self.dtype), self.axes, self.index(p), b)
                for p, b in enumerate(self._blocks)]

    def index(self, p: int) -> tuple:
        """PE p's region: (batch indices, feature indices), each an int array or None (whole)."""
        return region_index(self.mesh, self.shape, self.layouts, self.axes, p)

    def compact(self) -> "Dist":
        """The same tensor holding only its blocks (what a long-lived tensor should keep)."""
        return Dist(self.mesh, self.shape, self.layouts, axes=self.axes, blocks=self.blocks)

    def copy(self) -> "Dist":
        """A deep copy (blocks copied)."""
        return Dist(self.mesh, self.shape, self.layouts, axes=self.axes, blocks=[b.copy() for b in self.blocks])

    def layouts_with(self, h: int, new: str) -> tuple[str, ...]:
        """The layouts with level h's replaced by ``new``."""
        return self.layouts[:h] + (new,) + self.layouts[h + 1:]

    def relabelled(self, layouts: tuple[str, ...]) -> "Dist":
        """The same values under other layouts (no copy, no check)."""
        layouts = tuple(layouts)
        if self._blocks is not None and region_key(layouts) == region_key(self.layouts):
            return Dist(self.mesh, self.shape, layouts, axes=self.axes, blocks=self._blocks)
        return Dist(self.mesh, self.shape, layouts, self.vals, self.axes)


def region_key(layouts: tuple) -> tuple:
    """What a PE's region depends on: the levels splitting the batch and those splitting the features."""
    return tuple(l == ROWS for l in layouts), tuple(l == COLS for l in layouts)


def same_regions(a: Dist, b: Dist) -> bool:
    """Do a and b hold the same (batch, feature) indices on every PE: the same levels split each
    axis, of the same size and unit (so their blocks line up)."""
    def sizes(d: Dist) -> tuple:
        return tuple(None if ax is None else d.shape[ax] for ax in d.axes), units_of(d.axes)
    return region_key(a.layouts) == region_key(b.layouts) and sizes(a) == sizes(b)


def region_index(mesh: Mesh, shape: tuple, layouts: tuple, axes: tuple, p: int) -> tuple:
    """PE p's (batch indices, feature indices) under ``layouts``: int arrays, None where the axis
    is absent or not split (the whole axis). Raises UnevenSplit as :meth:`Mesh.axis_digits`."""
    out = []
    for ax, lay, unit in zip(axes, (ROWS, COLS), units_of(axes)):
        levels = tuple(h for h, l in enumerate(layouts) if l == lay)
        if ax is None or not levels:
            out.append(None)
            continue
        key = (shape[ax], unit, levels)
        hit = mesh.index_cache.get(key)
        if hit is None:
            d = mesh.axis_digits(shape[ax], unit)
            hit = mesh.index_cache[key] = [np.flatnonzero(np.logical_and.reduce(
                [d[h] == mesh.coords[q][h] for h in levels])) for q in range(mesh.P)]
        out.append(hit[p])
    return tuple(out)


def as_cut(idx: np.ndarray | None):
    """An index along one axis as numpy should apply it: a slice when the indices are one
    increasing contiguous range (a view, no copy), else the index array itself."""
    if idx is None:
        return slice(None)
    if len(idx) == 0:
        return slice(0, 0)
    if idx[-1] - idx[0] + 1 == len(idx) and (len(idx) == 1 or bool((np.diff(idx) == 1).all())):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def take_block(full: np.ndarray, axes: tuple, index: tuple) -> np.ndarray:
    """The block of ``full`` at ``index`` ((batch, feature) index arrays or None) on ``axes``
    (a view when every cut is a contiguous range, ``full`` itself when nothing is cut; do not
    write into it)."""
    out = full
    for ax, idx in zip(axes, index):
        if ax is not None and idx is not None:
            cut = as_cut(idx)
            out = out[(slice(None),) * ax + (cut,)] if isinstance(cut, slice) else out.take(cut, axis=ax)
    return out


MAX_PIECES = 64        # views at most when a block is read as runs of its indices; beyond, it is copied


def runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """(position in ``idx``, first index, length) of each run of consecutive increasing indices."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    return [(int(a), int(idx[a]), int(b - a)) for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(idx)])]


def block_pieces(axes: tuple, index: tuple) -> list[tuple[tuple, tuple]] | None:
    """The block :func:`take_block` cuts at ``index`` as (where in the block, where in the whole
    tensor) index pairs, one per combination of runs of consecutive indices along the cut axes:
    views of both, nothing copied. None when more than :data:`MAX_PIECES`."""
    cut = [(ax, runs(idx)) for ax, idx in zip(axes, index) if ax is not None and idx is not None]
    if prod(len(r) for _, r in cut) > MAX_PIECES:
        return None
    ndim = max((ax for ax, _ in cut), default=-1) + 1
    pieces = []
    for combo in itertools.product(*[r for _, r in cut]):
        here, there = [slice(None)] * ndim, [slice(None)] * ndim
        for (ax, _), (pos, first, n) in zip(cut, combo):
            here[ax], there[ax] = slice(pos, pos + n), slice(first, first + n)
        pieces.append((tuple(here), tuple(there)))
    return pieces


def put_block(full: np.ndarray, axes: tuple, index: tuple, block: np.ndarray) -> np.ndarray:
    """Write ``block`` into ``full`` at ``index`` (as :func:`take_block` cuts it); returns ``full``."""
    cut = [(ax, idx) for ax, idx in zip(axes, index) if ax is not None and idx is not None]
    if not cut:
        full[...] = block
        return full
    slices = [as_cut(idx) for _, idx in cut]
    if all(isinstance(c, slice) for c in slices):
        sel = [slice(None)] * full.ndim
        for (ax, _), c in zip(cut, slices):
            sel[ax] = c
        full[tuple(sel)] = block
        return full
    src = [ax for ax, _ in cut]
    view = np.moveaxis(full, src, list(range(len(src))))
    view[np.ix_(*[idx for _, idx in cut])] = np.moveaxis(block, src, list(range(len(src))))
    return full


def sub_block(d: Dist, p: int, want: tuple) -> np.ndarray:
    """The part of PE p's block at the (batch, feature) indices ``want`` (int arrays or None for
    the PE's whole share); SimulationError when the PE's region lacks one of them."""
    blk = d.blocks[p]
    for ax, have, need in zip(d.axes, d.index(p), want):
        if ax is None or need is None:
            continue
        if have is None or need.size == 0:
            pos = need
        else:
            pos = np.searchsorted(have, need)
            if np.any(pos >= len(have)) or not np.array_equal(have[np.minimum(pos, len(have) - 1)], need):
                raise SimulationError(f"PE {p} lacks part of a shard it needs")
        cut = as_cut(pos)
        if isinstance(cut, slice) and cut.stop - cut.start == blk.shape[ax]:
            continue                                    # the whole block along this axis
        blk = blk[(slice(None),) * ax + (cut,)] if isinstance(cut, slice) else blk.take(cut, axis=ax)
    return blk


def shard_mask(mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...], p: int,
               axes: tuple = (0, 1)) -> np.ndarray:
    """PE p's elements of a tensor (a boolean array of ``shape``): ROWS splits the batch axis,
    COLS the feature axis (``axes``, with their units). Raises SimulationError for a split of a
    missing axis."""
    bax, fax = axes
    m = np.ones(tuple(shape), bool)
    for ax, lay, unit in ((bax, ROWS, units_of(axes)[0]), (fax, COLS, units_of(axes)[1])):
        if lay not in layouts:
            continue
        if ax is None:
            raise SimulationError(f"layout {lay} on a tensor without that axis")
        d = mesh.axis_digits(shape[ax], unit)
        r = np.ones(shape[ax], bool)
        for h, l in enumerate(layouts):
            if l == lay:
                r &= d[h] == mesh.coords[p][h]
        m &= r.reshape(tuple(shape[ax] if a == ax else 1 for a in range(len(shape))))
    return m


def axis_mask(mesh: Mesh, n: int, levels: list[int], p: int, unit: int = 1) -> np.ndarray:
    """PE p's indices of an axis of size n (in units of ``unit``) split at ``levels`` (boolean,
    length n)."""
    m = np.ones(n, bool)
    if not levels:
        return m
    d = mesh.axis_digits(n, unit)
    for h in levels:
        m &= d[h] == mesh.coords[p][h]
    return m


def held(x: Dist, p: int, keep: str) -> np.ndarray:
    """PE p's shard of x under only its ``keep`` (ROWS or COLS) splits: which channels / rows it
    holds, even when its share of the other axis is empty (uneven splits)."""
    lays = tuple(l if l == keep else FULL for l in x.layouts)
    return shard_mask(x.mesh, x.shape, lays, p, x.axes)


def scatter(mesh: Mesh, full: np.ndarray, layouts: tuple[str, ...], axes: tuple = (0, 1)) -> Dist:
    """Load a whole tensor into a layout (graph inputs, output errors: free). No PARTIAL."""
    dt = full.dtype if full.dtype.kind == "f" else np.float64
    blocks = [np.array(take_block(full, axes, region_index(mesh, full.shape, layouts, axes, p)), dtype=dt)
              for p in range(mesh.P)]
    return Dist(mesh, full.shape, layouts, axes=axes, blocks=blocks)


def slice_local(d: Dist, h: int, new: str) -> Dist:
    """FULL -> anything at level h: drop what the PE does not keep (no messages). Raises
    SimulationError when a PE lacks part of its new shard."""
    assert d.layouts[h] == FULL
    out = Dist(d.mesh, d.shape, d.layouts_with(h, new), axes=d.axes, blocks=[])
    for p in range(d.mesh.P):
        blk = sub_block(d, p, out.index(p))
        if np.isnan(blk).any():
            raise SimulationError(f"PE {p} lacks part of a replicated shard at level {h}")
        out.blocks.append(blk)
    return out


def per_pe(P: int, key: Callable[[int], tuple], fn: Callable[[int], T]) -> list[T]:
    """``[fn(p) for p in range(P)]``, each distinct ``key(p)`` computed once and its result shared.
    Keys name the arrays a PE's computation reads (``id`` of each): replicas that hold the very
    same arrays (:func:`share_replicas`) compute once; the results are read-only, as every block."""
    memo: dict[tuple, T] = {}
    out = []
    for p in range(P):
        k = key(p)
        if k not in memo:
            memo[k] = fn(p)
        out.append(memo[k])
    return out


def share_replicas(d: Dist) -> Dist:
    """Let PEs holding the same region with equal values hold one array (``d``'s blocks changed
    in place; returns ``d``): later per-PE work on them runs once (:func:`per_pe`) and the memory
    is held once. Values that differ (or hold a NaN) stay apart."""
    firsts: dict[tuple, np.ndarray] = {}
    blocks = d.blocks
    for p, blk in enumerate(blocks):
        region = tuple(None if i is None else i.tobytes() for i in d.index(p))
        first = firsts.setdefault(region, blk)
        if first is not blk and first.shape == blk.shape and np.array_equal(first, blk):
            blocks[p] = first
    return d


def mask_to_layout(d: Dist) -> Dist:
    """Drop what a PE computed outside its shard (e.g. a batched product over replicated heads)."""
    return d.compact()


def add(a: Dist | None, b: Dist) -> Dist:
    """a + b per PE (``b`` when a is None); raises SimulationError for different layouts."""
    if a is None:
        return b
    if a.layouts != b.layouts:
        raise SimulationError(f"adding tensors in layouts {a.layouts} and {b.layouts}")
    return Dist(a.mesh, a.shape, a.layouts, axes=a.axes, blocks=[x + y for x, y in zip(a.blocks, b.blocks)])


def gather(d: Dist) -> np.ndarray:
    """Reassemble a non-partial tensor; NaN where no PE holds the element; replicas must agree
    (else SimulationError)."""
    out = np.full(d.shape, np.nan, d.dtype)
    for v in d.vals:
        m = ~np.isnan(v)
        clash = m & ~np.isnan(out) & (np.abs(out - v) > 1e-6 * (1 + np.abs(v)))
        if clash.any():
            raise SimulationError("replicas of one element disagree")
        out[m] = v[m]
    return out


def max_abs(a: np.ndarray) -> float:
    """max |a| (0 for an empty array; NaN when a holds one), without an |a| temporary."""
    return float(max(a.max(), -a.min())) if a.size else 0.0


CHUNK = 1 << 15        # elements per piece of max_abs_diff (its temporary stays in cache)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| of two arrays of one shape (NaN when either holds one), piece by piece along
    the leading axes so that the difference never leaves the cache."""
    if a.size <= CHUNK:
        return max_abs(np.subtract(a, b))
    k = next(k for k in range(1, a.ndim + 1) if prod(a.shape[k:]) <= CHUNK)
    step = max(1, CHUNK // prod(a.shape[k:]))
    buf = np.empty(CHUNK, np.result_type(a, b))
    worst = 0.0
    for lead in np.ndindex(*a.shape[:k - 1]):
        for i in range(0, a.shape[k - 1], step):
            sa, sb = a[lead + (slice(i, i + step),)], b[lead + (slice(i, i + step),)]
            d = np.subtract(sa, sb, out=buf[:sa.size].reshape(sa.shape))
            w = max_abs(d)
            if np.isnan(w):
                return w
            worst = max(worst, w)
    return worst


def max_abs_error(d: Dist, ref: np.ndarray) -> float:
    """max |value - ref| over every PE's region (replicas each compared with the reference, a
    block shared by replicas once; every element lies in some PE's region); inf when a PE lacks an
    element of its region."""
    def worst(p: int) -> float:
        blk = d.blocks[p]
        if not blk.size:
            return 0.0
        pieces = block_pieces(d.axes, d.index(p))
        if pieces is None:
            return max_abs_diff(blk, take_block(ref, d.axes, d.index(p)))
        diffs = [max_abs_diff(blk[here], ref[there]) for here, there in pieces]   # views: no copy of ref
        return float("nan") if any(np.isnan(e) for e in diffs) else max(diffs, default=0.0)

    errs = per_pe(d.mesh.P, lambda p: (id(d.blocks[p]),) + tuple(None if i is None else i.tobytes()
                                                                 for i in d.index(p)), worst)
    return float("inf") if any(np.isnan(e) for e in errs) else max(errs, default=0.0)
