"""Counted communication between virtual PEs: point-to-point sends between siblings of one level,
and the collectives built from them (relayout at one level, reduce-scatter, all-gather, all-reduce,
hierarchical all-reduce over several levels). Every element a PE receives is added to the
per-level counter in force (``Comm.sink``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from hypar.array import split_counts
from hypar.cost.strategies import FULL, PARTIAL
from hypar.sim.errors import SimulationError
from hypar.sim.mesh import Dist, Mesh, as_cut, shard_mask


class Comm:
    """Point-to-point sends with counting: while ``sink`` (a per-level list of elements received)
    is set, every send adds its element count there; with ``sink`` None nothing is counted."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.sink: list[int] | None = None   # per-level counter of the operation in progress

    @contextmanager
    def counting(self, sink: list[int] | None) -> Iterator[None]:
        """Count the sends of the ``with`` block into ``sink`` (None: count nothing)."""
        saved = self.sink
        self.sink = sink
        try:
            yield
        finally:
            self.sink = saved

    def send(self, h: int, src: int, dst: int, n: int) -> None:
        """PE ``src`` sends ``n`` elements to its level-h sibling ``dst`` (asserts they are siblings)."""
        c0, c1 = self.mesh.coords[src], self.mesh.coords[dst]
        assert c0[:h] == c1[:h] and c0[h + 1:] == c1[h + 1:] and c0[h] != c1[h], "message crosses another level"
        if self.sink is not None:
            self.sink[h] += int(n)

    # -- conversions at one level
    def relayout(self, d: Dist, h: int, new: str) -> Dist:
        """Change the level-h layout of ``d`` to ``new`` with level-h messages only. Raises
        SimulationError when a PE's new shard is held by none of its siblings."""
        old = d.layouts[h]
        if old == new:
            return d
        if old == PARTIAL:
            if new == FULL:
                return self.allreduce(d, h)
            return self.reduce_scatter_to(d, h, new)
        layouts = d.layouts_with(h, new)
        out = [self._fetch(d, h, p, shard_mask(d.mesh, d.shape, layouts, p, d.axes)) for p in range(d.mesh.P)]
        return Dist(d.mesh, d.shape, layouts, out, d.axes)

    def _fetch(self, d: Dist, h: int, p: int, want: np.ndarray) -> np.ndarray:
        """PE p's values on ``want``: its own, the rest received from its level-h siblings."""
        v = np.full(d.shape, np.nan, d.dtype)
        have = want & ~np.isnan(d.vals[p])
        v[have] = d.vals[p][have]
        need = want & ~have
        if need.any():
            if d.layouts[h] == FULL:
                raise SimulationError(f"PE {p} lacks elements of a replicated tensor at level {h}")
            for q in self.mesh.siblings(p, h):
                got = need & ~np.isnan(d.vals[q])
                if got.any():
                    self.send(h, q, p, got.sum())
                    v[got] = d.vals[q][got]
                    need &= ~got
            if need.any():
                raise SimulationError(f"PE {p}: {int(need.sum())} elements held by no level-{h} sibling")
        return v

    def reduce_scatter_to(self, d: Dist, h: int, new: str) -> Dist:
        """Partial sums over level h -> full sums of each PE's level-h shard in layout ``new``."""
        mesh = d.mesh
        layouts = d.layouts_with(h, new)
        out = []
        for group in mesh.sibling_groups(h):
            _partial_region(d, group)
        for p in range(mesh.P):
            want = shard_mask(mesh, d.shape, layouts, p, d.axes)
            if np.isnan(d.vals[p][want]).any():
                raise SimulationError(f"PE {p} lacks part of its partial shard at level {h}")
            v = np.full(d.shape, np.nan, d.dtype)
            v[want] = d.vals[p][want]
            for q in mesh.siblings(p, h):
                self.send(h, q, p, want.sum())
                v[want] += d.vals[q][want]
            out.append(v)
        return Dist(mesh, d.shape, layouts, out, d.axes)

    def reduce_scatter(self, d: Dist, h: int) -> tuple[Dist, dict]:
        """Partial sums over level h -> each sibling j holds the full sum of flat chunk j.
        Returns the result and, per PE, the flat indices its group held (for all_gather_flat;
        a slice when they are one contiguous range)."""
        vals: list = list(d.vals)
        saved = {}
        for group in d.mesh.sibling_groups(h):
            region = _partial_region(d, group)
            flat = {q: d.vals[q].ravel() for q in group}
            k = len(group)
            parts = split_counts(_size(region), [1.0 / k] * k)
            starts = np.cumsum([0] + parts)
            for j, p in enumerate(group):
                idx = _part(region, int(starts[j]), int(starts[j + 1]))
                tot = flat[p][idx].copy()
                for q in group:
                    if q != p:
                        self.send(h, q, p, _size(idx))
                        tot += flat[q][idx]
                v = np.full(d.vals[p].shape, np.nan, d.dtype)
                v.ravel()[idx] = tot
                vals[p] = v
                saved[p] = region
        return Dist(d.mesh, d.shape, d.layouts, vals, d.axes), saved

    def all_gather_flat(self, d: Dist, h: int, saved: dict) -> Dist:
        """Undo reduce_scatter's chunking: every PE receives its siblings' chunks (``saved``: the
        regions reduce_scatter returned). Raises SimulationError when holes remain."""
        vals = [v.copy() for v in d.vals]
        for group in d.mesh.sibling_groups(h):
            region = saved[group[0]]
            flat = {q: d.vals[q].ravel() for q in group}
            held = {q: _flat_set(~np.isnan(flat[q])) for q in group}
            for p in group:
                v = vals[p].ravel()                      # a view: vals[p] is a fresh C-ordered copy
                for q in group:
                    if q != p:
                        self.send(h, q, p, _size(held[q]))
                        v[held[q]] = flat[q][held[q]]
                if np.isnan(v[region]).any():
                    raise SimulationError("all-gather left holes")
        return Dist(d.mesh, d.shape, d.layouts, vals, d.axes)

    def allreduce(self, d: Dist, h: int) -> Dist:
        """Partial sums over level h -> full sums on every PE (reduce-scatter + all-gather)."""
        d2, saved = self.reduce_scatter(d, h)
        d3 = self.all_gather_flat(d2, h, saved)
        return Dist(d.mesh, d.shape, d.layouts_with(h, FULL), d3.vals, d.axes)

    def allreduce_levels(self, d: Dist) -> Dist:
        """All-reduce every PARTIAL level: reduce-scatter at the lower ones (bottom first), all-reduce
        at the top one, all-gather back down: each level moves one all-reduce of its own view.

        This is the SPEC's hierarchical P -> R conversion (both conventions price it so,
        HIER_SEMANTICS §4): at a P level h, with K the product of the fanouts of the P levels above
        (still unreduced when h reduce-scatters, so each of their K copies reduces its own) and
        T = K (they are R in the target, and no level of these tensors is R in the source), the
        closed form gives A((k_h-1)K + (k_h-1)T) = 2(k_h-1)K A elements over all PEs: the
        reduce-scatter's (k_h-1)/k_h of every PE's chunk plus the all-gather's, summed over the
        K-fold copies -- what this routine sends (tests/sim/test_hier_sim.py checks it)."""
        levels = [h for h, l in enumerate(d.layouts) if l == PARTIAL]
        if not levels:
            return d
        top, lows = levels[0], levels[1:]
        saved = []
        for g in reversed(lows):
            d, s = self.reduce_scatter(d, g)
            saved.append((g, s))
        d = self.allreduce(d, top)
        for g, s in reversed(saved):
            d = self.all_gather_flat(d, g, s)
        return d.relabelled(tuple(FULL if l == PARTIAL else l for l in d.layouts))


def _partial_region(d: Dist, group: list[int]) -> slice | np.ndarray:
    """The flat indices a group of siblings holds partial sums of (they must hold the same ones,
    else SimulationError), as :func:`_flat_set` gives them."""
    masks = [~np.isnan(d.vals[p]) for p in group]
    for m in masks[1:]:
        if not np.array_equal(m, masks[0]):
            raise SimulationError("partial sums held on different shards by sibling PEs")
    return _flat_set(masks[0].ravel())


def _flat_set(mask: np.ndarray) -> slice | np.ndarray:
    """The flat indices where ``mask`` holds: a slice when they are one contiguous range (views,
    not index copies), else an int array."""
    if mask.all():
        return slice(0, mask.size)
    return as_cut(np.flatnonzero(mask))


def _size(idx: slice | np.ndarray) -> int:
    """How many indices a :func:`_flat_set` holds."""
    return idx.stop - idx.start if isinstance(idx, slice) else len(idx)


def _part(idx: slice | np.ndarray, lo: int, hi: int) -> slice | np.ndarray:
    """Positions lo..hi of a :func:`_flat_set` (same kind)."""
    return slice(idx.start + lo, idx.start + hi) if isinstance(idx, slice) else idx[lo:hi]
