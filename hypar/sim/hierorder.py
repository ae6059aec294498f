"""The ``hierarchical`` convention's conversion of one distributed tensor, executed (SPEC.md §3
"Several levels: two conventions"; HIER_SEMANTICS.md): from per-level layouts ``s`` to ``t`` in
the SPEC's fixed order, with real point-to-point sends between the PEs of one level-h group, each
counted at level h (elements received, summed over every PE). Nothing is looked up from the cost
model: the amounts are what the order moves.

The order (bottom = the last level, top = level 0; "shard" = S(b) rows or S(f) cols):

1. top first, every level going R -> shard slices (each PE keeps its part; free);
2. bottom first, every P level reduce-scatters: each member of a level-h group keeps its part
   (along t_h's axis; the batch axis when t_h is R) and receives the other members' partial sums
   of it; stale partials are dropped;
3. bottom first: a level R in both s and t is sliced *virtually* (the PE keeps its copy in memory
   but later steps treat the tensor as sharded there, along the batch axis, else the feature
   axis); shard -> other shard is an all-to-all (slice the new axis, gather the old one); P ->
   shard gathers back what step 2 scattered (the gather half of the all-reduce), then slices;
4. top first, every level where t is R all-gathers; at a level R in both this is the *relay*: a
   PE receives only what is not in its memory.

A gather receives, for each PE, the elements of its new logical region it does not hold, from a
group member that holds them. Layouts nest by digits (:mod:`hypar.shards`, any sizes): a PE's
part at level h is the indices whose level-h digit is its coordinate, so a split at one level is
independent of the others and the order ends exactly in ``t`` (checked: SimulationError
otherwise). The one family that would not move the SPEC's closed form -- ``s`` with a P level and
a level R in both ``s`` and ``t`` ("P+RR": the reduce-scatter would be repeated by every replica)
-- never arises on a plan edge (forward sources have no P; backward sources have no R) and is
refused (:class:`Unsupported`).
"""

from __future__ import annotations

import numpy as np

from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.comm import Comm
from hypar.sim.errors import SimulationError, Unsupported
from hypar.sim.mesh import Dist, put_block, share_replicas, take_block, units_of

SHARDS = (ROWS, COLS)
AXIS = {ROWS: 0, COLS: 1}          # a shard layout -> which of (batch, feature) it splits


def is_p_and_rr(src: tuple, tgt: tuple) -> bool:
    """True for the "P+RR" pairs: ``src`` has a P level and some level is R in both."""
    return PARTIAL in src and any(s == t == FULL for s, t in zip(src, tgt))


def free_axes(axes: tuple, src: tuple, tgt: tuple) -> dict[int, int]:
    """Level -> the axis (0 batch, 1 feature) its temporary split uses in the conversion
    ``src -> tgt`` of a tensor with (batch, feature) ``axes`` (R -> R virtual slice, reduce-scatter
    of a P level going to R): the batch axis, else the feature axis (the cost model's rows, then
    columns). Raises Unsupported when a temporary split finds no axis at all."""
    present = [a for a in (0, 1) if axes[a] is not None]
    free = {}
    for h, (x, y) in enumerate(zip(src, tgt)):
        if y == FULL and x in (FULL, PARTIAL):
            if not present:
                raise Unsupported("a tensor with neither a batch nor a feature axis converted over several levels")
            free[h] = present[0]
    return free


class _Order:
    """One conversion in progress: per PE its memory and its logical region.

    Layouts split only the batch and feature axes, so a PE holds whole *fibres* (one element of
    each present (batch, feature) axis, every other axis whole): its memory is ``data[p]``, an
    array of the full shape valid exactly on the fibres its ``have[p]`` grid (a boolean array over
    the present axes) marks -- partial sums while P levels are unreduced -- and its logical region
    is an index set along each present axis (``sel[a][p]``, a = 0 batch, 1 feature). An element
    is received when its fibre is copied into a PE's memory (``fibre`` elements per grid cell)."""

    def __init__(self, comm: Comm, d: Dist, tgt: tuple, virtual_first: bool = False):
        self.comm, self.mesh = comm, d.mesh
        # the levels R in both sliced before step 2: those below a partial level (norm statistics)
        self.early = {h for h in range(d.mesh.H) if virtual_first and d.layouts[h] == tgt[h] == FULL
                      and PARTIAL in d.layouts[:h]}
        self.src, self.tgt = tuple(d.layouts), tuple(tgt)
        self.shape, self.axes = d.shape, d.axes
        self.present = [a for a in (0, 1) if d.axes[a] is not None]
        self.grid_axes = [d.axes[a] for a in self.present]
        self.fibre = int(np.prod([n for ax, n in enumerate(d.shape) if ax not in self.grid_axes]))
        self.digits = {a: self.mesh.axis_digits(d.shape[d.axes[a]], units_of(d.axes)[a]) for a in self.present}
        self.free = free_axes(self.axes, self.src, self.tgt)
        self.sel = {a: [self._initial(a, p) for p in range(self.mesh.P)] for a in self.present}
        self.data, self.have = [], []
        for p in range(self.mesh.P):
            data, have = self._memory(d, p)
            self.data.append(data)
            self.have.append(have)

    def _memory(self, d: Dist, p: int) -> tuple[np.ndarray, np.ndarray]:
        """PE p's (memory, held fibres) at the start: the fibres of its shard (of its full-shape
        array when ``d`` has them) holding no NaN. A whole tensor held whole is used as is (nothing
        is ever written into held fibres); anything else is copied into an array of its own."""
        if d._vals is not None:
            data = d._vals[p].copy()
            return data, ~self._nan_fibres(data)
        blk = d.blocks[p]
        have = np.zeros(tuple(d.shape[ax] for ax in self.grid_axes), bool)
        idx = d.index(p)
        cut = tuple(slice(None) if idx[a] is None else idx[a] for a in self.present)
        held = ~self._nan_fibres(blk)
        if len(cut) == 2 and not all(isinstance(c, slice) for c in cut):
            have[np.ix_(*[np.arange(n)[c] for n, c in zip(have.shape, cut)])] = held
        else:
            have[cut] = held
        if have.all():
            return blk, have
        data = np.empty(d.shape, blk.dtype)
        put_block(data, d.axes, idx, blk)
        return data, have

    def _nan_fibres(self, arr: np.ndarray) -> np.ndarray:
        """Over the present axes of ``arr``: which fibres hold a NaN (a missing element)."""
        others = tuple(ax for ax in range(arr.ndim) if ax not in self.grid_axes)
        sums = arr.sum(axis=others) if others else arr
        order = sorted(range(len(self.grid_axes)), key=lambda k: self.grid_axes[k])
        return np.isnan(np.transpose(sums, np.argsort(order))) if len(order) > 1 else np.isnan(sums)

    # -- regions
    def _initial(self, a: int, p: int) -> np.ndarray:
        """PE p's indices along axis ``a`` under the source layouts."""
        lay = (ROWS, COLS)[a]
        return self._region_along(a, p, [h for h, x in enumerate(self.src) if x == lay])

    def _region_along(self, a: int, p: int, levels: list[int]) -> np.ndarray:
        """Indices along axis ``a`` whose digit at every level in ``levels`` is p's coordinate."""
        m = np.ones(self.digits[a].shape[1], bool)
        for h in levels:
            m &= self.digits[a][h] == self.mesh.coords[p][h]
        return m

    def _axis_of(self, layout: str) -> int:
        """The axis a shard layout splits (SimulationError when the tensor lacks it)."""
        a = AXIS[layout]
        if a not in self.present:
            raise SimulationError(f"layout {layout} on a tensor without that axis")
        return a

    def _part(self, a: int, p: int, h: int) -> np.ndarray:
        """PE p's level-h part of its current indices along axis ``a``."""
        return self.sel[a][p] & (self.digits[a][h] == self.mesh.coords[p][h])

    def _slice(self, h: int, a: int) -> None:
        """Every PE keeps (logically) its level-h part along axis ``a``; no messages."""
        for p in range(self.mesh.P):
            self.sel[a][p] = self._part(a, p, h)

    def _region(self, p: int) -> np.ndarray:
        """PE p's logical region as a boolean grid over the present axes."""
        out = np.ones((), bool)
        for k, a in enumerate(self.present):
            shape = [1] * len(self.present)
            shape[k] = -1
            out = out & self.sel[a][p].reshape(shape)
        return out

    def _index(self, p: int) -> tuple:
        """An open-mesh index of PE p's region in :meth:`_view` coordinates."""
        return np.ix_(*[np.flatnonzero(self.sel[a][p]) for a in self.present])

    def _view(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` with the present (batch, feature) axes moved first (a view)."""
        return np.moveaxis(arr, self.grid_axes, list(range(len(self.grid_axes))))

    # -- collectives at one level
    def _fetch(self, h: int, group: list[int]) -> None:
        """Every member receives the fibres of its region it lacks from the other members (each
        from the first member holding it). SimulationError when none holds one."""
        for p in group:
            miss = self._region(p) & ~self.have[p]
            if not miss.any():
                continue
            mine = self._view(self.data[p])
            for q in group:
                if q == p:
                    continue
                take = miss & self.have[q]
                n = int(take.sum())
                if n:
                    self.comm.send(h, q, p, n * self.fibre)
                    mine[take] = self._view(self.data[q])[take]
                    self.have[p] |= take
                    miss &= ~take
                    if not miss.any():
                        break
            if miss.any():
                raise SimulationError(f"PE {p}: {int(miss.sum()) * self.fibre} elements held by no level-{h} sibling")

    def _reduce_scatter(self, h: int, a: int) -> None:
        """P at level h: each member keeps its level-h part along axis ``a`` of the common region
        and receives the other members' partial sums of it; memory becomes exactly that part."""
        for group in self.mesh.sibling_groups(h):
            self._same_region(h, group, "partial sums")
            new = {}
            for p in group:
                self.sel[a][p] = self._part(a, p, h)
                region = self._region(p)
                if any((region & ~self.have[q]).any() for q in group):
                    raise SimulationError(f"PE {p} lacks part of its partial sums at level {h}")
                idx = self._index(p)
                total = self._view(self.data[p])[idx]          # a copy (open-mesh index)
                for q in group:
                    if q != p:
                        self.comm.send(h, q, p, total.size)
                        total += self._view(self.data[q])[idx]
                v = np.empty(self.shape, total.dtype)
                self._view(v)[idx] = total
                new[p] = (v, region)
            for p, (v, region) in new.items():
                self.data[p], self.have[p] = v, region

    def _same_region(self, h: int, group: list[int], what: str) -> None:
        """SimulationError unless the group's members have the same region."""
        for a in self.present:
            if any(not np.array_equal(self.sel[a][q], self.sel[a][group[0]]) for q in group):
                raise SimulationError(f"level {h} {what} over different regions")

    def _gather(self, h: int) -> None:
        """All-gather at level h: each member's region becomes the union of the group's (the members
        may differ along one axis only), then the missing elements are fetched."""
        for group in self.mesh.sibling_groups(h):
            differ = [a for a in self.present
                      if any(not np.array_equal(self.sel[a][q], self.sel[a][group[0]]) for q in group)]
            if len(differ) > 1:
                raise SimulationError(f"level {h} gather of a region that is not a product set")
            for a in differ:
                union = np.logical_or.reduce([self.sel[a][q] for q in group])
                for q in group:
                    self.sel[a][q] = union
            self._fetch(h, group)

    def _all_to_all(self, h: int, old: int, new: int) -> None:
        """Level h goes from splitting axis ``old`` to axis ``new``: slice new, gather old."""
        for group in self.mesh.sibling_groups(h):
            union = np.logical_or.reduce([self.sel[old][q] for q in group])
            for q in group:
                self.sel[new][q] = self._part(new, q, h)
                self.sel[old][q] = union
            self._fetch(h, group)

    # -- the order
    def run(self) -> Dist:
        """SPEC steps 1-4, then the end state checked against ``t``: the converted tensor (NaN
        outside each PE's region of ``t``)."""
        s, t, H = self.src, self.tgt, self.mesh.H
        for h in range(H):                                              # 1
            if s[h] == FULL and t[h] in SHARDS:
                self._slice(h, self._axis_of(t[h]))
        for h in reversed(range(H)):                                    # 3's virtual slices, early
            if h in self.early:
                self._slice(h, self.free[h])
        for h in reversed(range(H)):                                    # 2
            if s[h] == PARTIAL:
                self._reduce_scatter(h, self._axis_of(t[h]) if t[h] in SHARDS else self.free[h])
        for h in reversed(range(H)):                                    # 3
            self._step3(h)
        for h in range(H):                                              # 4
            if t[h] == FULL:
                self._gather(h)
        return self._result()

    def _step3(self, h: int) -> None:
        """Step 3 at level h: virtual slice, all-to-all or gather half (or nothing)."""
        x, y = self.src[h], self.tgt[h]
        if x == y == FULL:
            if h not in self.early:
                self._slice(h, self.free[h])
        elif x in SHARDS and y in SHARDS and x != y:
            self._all_to_all(h, self._axis_of(x), self._axis_of(y))
        elif x == PARTIAL and y in SHARDS:
            self._gather(h)
            self._slice(h, self._axis_of(y))

    def _result(self) -> Dist:
        """The end state as a Dist in ``t`` (its blocks); SimulationError when it is not exactly ``t``."""
        out = Dist(self.mesh, self.shape, self.tgt, axes=self.axes, blocks=[])
        for p in range(self.mesh.P):
            for a in self.present:
                want = self._region_along(a, p, [h for h, x in enumerate(self.tgt) if x == (ROWS, COLS)[a]])
                if not np.array_equal(self.sel[a][p], want):
                    raise SimulationError(f"the order ended PE {p} off its target region ({self.src} -> {self.tgt})")
            if (self._region(p) & ~self.have[p]).any():
                raise SimulationError(f"PE {p} lacks part of its target region ({self.src} -> {self.tgt})")
            blk = take_block(self.data[p], self.axes, out.index(p))
            out.blocks.append(blk.copy() if blk.base is not None else blk)
        return share_replicas(out)


def run_order(comm: Comm, d: Dist, tgt: tuple, virtual_first: bool = False) -> Dist:
    """Convert ``d`` into the layouts ``tgt`` (one per level, top first; no P) by the SPEC's order,
    counting every element received into ``comm``'s sink at the level it crosses. Returns the
    converted tensor (NaN outside each PE's region). ``d.layouts == tgt`` moves nothing.

    ``virtual_first``: slice the levels R in both that lie below a partial level virtually before
    the reduce-scatters of step 2 (SPEC §3 on norm statistics with a replicated level below a
    partial one: each replica reduces only its slice, the relay of step 4 then gathers the
    slices); a level R in both above every partial level keeps the literal order (its replicas are
    independent groups, each reducing its own copy, as the all-reduce of today). This makes
    "P+RR" pairs run.

    Raises Unsupported for a "P+RR" pair without ``virtual_first`` and
    SimulationError when a PE lacks data a step needs or the order ends elsewhere."""
    tgt = tuple(tgt)
    if PARTIAL in tgt:
        raise ValueError(f"target layouts {tgt} with a partial level")
    if d.layouts == tgt:
        return d
    if is_p_and_rr(d.layouts, tgt) and not virtual_first:
        raise Unsupported(f"conversion {'/'.join(d.layouts)} -> {'/'.join(tgt)}: a partial-sum level with a "
                          "level replicated in both (P+RR) has no exact hierarchical order")
    return _Order(comm, d, tgt, virtual_first).run()
