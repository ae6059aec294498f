"""A functional simulator: run one training step on virtual PEs exactly as a plan says, count every
element sent (numpy only).

:func:`simulate` takes a :class:`hypar.cost.CostModel` and a full assignment (types per level for
every kept node) and

1. runs the *reference* step on one device, straight from the layer graph: forward
   ``F_{l+1} = F_l W``, backward ``E_l = E_{l+1} W^T``, ``dW = F_l^T E_{l+1}``, residual Adds
   passing activations and errors, a fixed random error at every graph output;
2. runs the *distributed* step: every virtual PE holds only its shards (an array of the tensor's
   full shape that is NaN wherever the PE holds nothing, so a missing element poisons the result
   instead of being read silently); every exchange is explicit point-to-point sends between PEs of
   one group at one named level, and every element received is counted per layer, per edge (or
   intra-layer quantity) and per level.

Conventions, those of the cost model (SPEC.md §2-4): amounts are elements received, summed over
every PE of every group; a conversion runs level by level (messages at level h only between PEs
that differ in their level-h coordinate) in an order that realises the model's per-level amounts
on the consumer's view (:func:`schedule`: levels above as the consumer's view, levels below
sharded); when no order does, the conversion is flagged and the difference is reported as a
cost-model limitation. Partial sums are all-reduced whatever the target (reduce-scatter +
all-gather, hierarchically over several levels). One producer tensor converted by the same step
for several consumers (same state, source layout and view size, the model's de-duplication key)
moves once and is charged to the first consumer; errors of several consumers in the same state
are summed locally and converted once.

Shards: the index ``r`` of a split axis of size ``N`` lies in block ``r // (N / P)`` (``P`` =
number of PEs) whose mixed-radix digits (top level first) say which subgroup holds it at each
level, so a split at one level is independent of the splits at the others. Several levels need
every split axis to divide by ``P`` on a homogeneous array; one level takes any sizes and
heterogeneous subgroups (contiguous parts of ``split_counts``, as the cost model rounds them).

Coverage: Gemm / MatMul with a weight (also over sequence positions), Conv (im2col; 2-D,
ungrouped), embeddings (Gather of graph-input ids), attention MatMuls (batch or heads), residual
Add and elementwise Mul/Sub/Div of two activations, elementwise ops with a constant operand (run
with a seeded scalar), Relu/Tanh/Sigmoid/Gelu/Erf/Identity/Dropout, MaxPool/AveragePool/
GlobalAveragePool, Flatten/Reshape/Transpose/(Un)Squeeze, Softmax (not over a split axis),
LayerNorm and BatchNorm (training statistics all-reduced over the levels that split their axis),
in every partition space (folded ops run locally on the consumer's side, or on the producer's
side before a conversion when they change the shape). Anything else -- and uneven splits over
several levels -- is reported by name in ``SimResult.unsupported`` and nothing is simulated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from math import prod

import numpy as np

from hypar import graph as G
from hypar.array import split_counts
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS

DEFAULT_TOL = 1e-9


class SimulationError(RuntimeError):
    """The distributed step went wrong (a PE lacked data it needed): a simulator or plan bug."""


@dataclass
class Transfer:
    """Elements received at one level by one collective / conversion."""

    kind: str          # "intra" or "fwd" / "bwd" (edge conversions)
    what: str          # "dW", "F_out" (intra) or "<producer> -> <consumer(s)>" (edges)
    level: int
    elements: int
    node: int          # model node index charged (intra: the node; edges: first consumer)


@dataclass
class SimResult:
    names: list[str]
    n_levels: int
    dtype_bytes: int
    unsupported: list[str] = field(default_factory=list)
    counted: list[list[int]] = field(default_factory=list)        # [node][level] elements received
    transfers: list[Transfer] = field(default_factory=list)
    max_err: list[float] = field(default_factory=list)             # [node] max |distributed - reference|
    scale: list[float] = field(default_factory=list)               # [node] max |reference|
    tol: float = DEFAULT_TOL
    # conversions no hierarchical order realises at the model's per-level amounts:
    # (kind, what, consumer node, levels, source layouts, target layouts)
    flags: list = field(default_factory=list)
    # conversions the model de-duplicates at a level but that reach it from different states
    # (kind, what, charged node, level)
    split_dedup: list = field(default_factory=list)

    # BatchNorm statistics all-reduced by a folded BatchNorm under a batch split: (node, level, what)
    folded_stats: list = field(default_factory=list)

    # other known differences: (node, level, text)
    notes: list = field(default_factory=list)

    def explained(self, node: int, level: int) -> str | None:
        """Why counted and predicted bytes may differ at (node, level), or None."""
        for c, h, text in self.notes:
            if c == node and h == level:
                return text
        for c, h, what in self.folded_stats:
            if c == node and h == level:
                return (f"{what}: a folded normalisation whose statistics axis is split (BatchNorm under a "
                        "batch split, LayerNorm under a feature split) needs its statistics all-reduced (mean, "
                        "variance forward; two sums backward); the folded space does not charge them")
        for kind, what, c, levels, src, tgt in self.flags:
            if c == node and level in levels:
                return (f"{kind} {what} {'/'.join(src)} -> {'/'.join(tgt)}: no level-by-level order moves "
                        f"the model's per-level amounts (a replica or partial sum below level {level} "
                        "must be moved by every copy, or the consumer's view above it is wrong)")
        for kind, what, c, h in self.split_dedup:
            if c == node and h == level:
                return (f"{kind} {what}: the model converts this tensor once at level {level} for several "
                        "consumers whose views there have equal sizes (CostModel.level_edge_costs keys on "
                        "_edge_view's sizes) though their shards differ (split at other levels, or other "
                        "layouts below); the simulator shares a step only between equal states")
        return None

    @property
    def ok_numerics(self) -> list[bool]:
        return [e <= self.tol * max(1.0, s) for e, s in zip(self.max_err, self.scale)]


# ----------------------------------------------------------------------------- the mesh

class Mesh:
    """P virtual PEs; PE p has one coordinate per level (its subgroup index there, top first)."""

    def __init__(self, fanouts: tuple[int, ...], fractions: tuple[float, ...] | None = None):
        """``fractions``: for a single level, the subgroups' throughput shares (heterogeneous arrays
        split an axis in proportion, rounded as the cost model does)."""
        self.fanouts = tuple(fanouts)
        self.fractions = tuple(fractions) if fractions is not None else None
        self.H = len(fanouts)
        self.P = prod(fanouts)
        self.coords = [self._digits(p, self.P) for p in range(self.P)]
        self._digit_cache: dict[int, np.ndarray] = {}

    def _digits(self, q: int, n_blocks: int) -> tuple[int, ...]:
        out = []
        for h in range(self.H):
            below = prod(self.fanouts[h + 1:])
            out.append((q // below) % self.fanouts[h])
        return tuple(out)

    def axis_digits(self, n: int) -> np.ndarray:
        """(H, n) digits of every index of an axis of size n (n must divide by P)."""
        hit = self._digit_cache.get(n)
        if hit is None:
            blk = n // self.P
            q = np.arange(n) // blk
            hit = np.array([(q // prod(self.fanouts[h + 1:])) % self.fanouts[h] for h in range(self.H)])
            self._digit_cache[n] = hit
        return hit

    def sibling_groups(self, h: int) -> list[list[int]]:
        """Groups of PEs that differ only in their level-h coordinate, ordered by it."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for p, c in enumerate(self.coords):
            groups[c[:h] + c[h + 1:]].append(p)
        return [sorted(g, key=lambda p: self.coords[p][h]) for g in groups.values()]


class Dist:
    """A 2-D tensor (rows x cols) spread over the mesh: one layout per level and per-PE values.

    Layout semantics per level h: ROWS -> PE keeps rows whose level-h digit is its coordinate;
    COLS -> the same for columns; FULL -> no constraint; PARTIAL -> no constraint, values are
    partial sums over the level-h subgroups. Values outside a PE's shard are NaN.
    """

    def __init__(self, mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...], vals: list[np.ndarray],
                 axes: tuple = (0, 1)):
        self.mesh, self.shape, self.layouts, self.vals = mesh, tuple(shape), tuple(layouts), vals
        self.axes = tuple(axes)     # (batch axis, feature axis); either may be None

    def copy(self) -> "Dist":
        return Dist(self.mesh, self.shape, self.layouts, [v.copy() for v in self.vals], self.axes)


class UnevenSplit(SimulationError):
    """An axis does not divide over the PEs that split it (uneven shards are not simulated)."""


def _digits_for(mesh: Mesh, n: int, needed: bool) -> np.ndarray | None:
    """Digits of an axis of size n: mixed radix when n divides over the PEs of a homogeneous
    array; on a single level, contiguous parts of split_counts(n, fractions) (uneven or
    heterogeneous splits, as the cost model rounds them)."""
    if not needed:
        return None
    even = mesh.fractions is None or len(set(mesh.fractions)) == 1
    if even and n % mesh.P == 0:
        return mesh.axis_digits(n)
    if mesh.H == 1:
        k = mesh.fanouts[0]
        parts = split_counts(n, mesh.fractions or [1.0 / k] * k)
        return np.repeat(np.arange(k), parts)[None, :]
    raise UnevenSplit(f"an axis of size {n} does not divide over {mesh.P} PEs")


def shard_mask(mesh: Mesh, shape: tuple[int, ...], layouts: tuple[str, ...], p: int,
               axes: tuple = (0, 1)) -> np.ndarray:
    """PE p's elements of a tensor: ROWS splits the batch axis, COLS the feature axis (``axes``)."""
    bax, fax = axes
    m = np.ones(tuple(shape), bool)
    for ax, lay in ((bax, ROWS), (fax, COLS)):
        if lay not in layouts:
            continue
        if ax is None:
            raise SimulationError(f"layout {lay} on a tensor without that axis")
        d = _digits_for(mesh, shape[ax], True)
        r = np.ones(shape[ax], bool)
        for h, l in enumerate(layouts):
            if l == lay:
                r &= d[h] == mesh.coords[p][h]
        m &= r.reshape(tuple(shape[ax] if a == ax else 1 for a in range(len(shape))))
    return m


def axis_mask(mesh: Mesh, n: int, levels: list[int], p: int) -> np.ndarray:
    m = np.ones(n, bool)
    if not levels:
        return m
    d = _digits_for(mesh, n, True)
    for h in levels:
        m &= d[h] == mesh.coords[p][h]
    return m


def scatter(mesh: Mesh, full: np.ndarray, layouts: tuple[str, ...], axes: tuple = (0, 1)) -> Dist:
    """Load a whole tensor into a layout (graph inputs, output errors: free). No PARTIAL."""
    vals = []
    for p in range(mesh.P):
        v = np.full(full.shape, np.nan)
        m = shard_mask(mesh, full.shape, layouts, p, axes)
        v[m] = full[m]
        vals.append(v)
    return Dist(mesh, full.shape, layouts, vals, axes)


# ----------------------------------------------------------------------------- collectives

class Comm:
    """Point-to-point sends with counting. ``charge(level, elements)`` goes to the current key."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.sink: list[int] | None = None   # per-level counter of the operation in progress

    def send(self, h: int, src: int, dst: int, n: int) -> None:
        c0, c1 = self.mesh.coords[src], self.mesh.coords[dst]
        assert c0[:h] == c1[:h] and c0[h + 1:] == c1[h + 1:] and c0[h] != c1[h], "message crosses another level"
        if self.sink is not None:
            self.sink[h] += int(n)

    # -- conversions at one level
    def relayout(self, d: Dist, h: int, new: str) -> Dist:
        """Change the level-h layout of ``d`` to ``new`` with level-h messages only."""
        old = d.layouts[h]
        if old == new:
            return d
        if old == PARTIAL:
            if new == FULL:
                return self.allreduce(d, h)
            return self.reduce_scatter_to(d, h, new)
        layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
        mesh = d.mesh
        out = []
        for p in range(mesh.P):
            want = shard_mask(mesh, d.shape, layouts, p, d.axes)
            v = np.full(d.shape, np.nan)
            have = want & ~np.isnan(d.vals[p])
            v[have] = d.vals[p][have]
            need = want & ~have
            if need.any():
                if old == FULL:
                    raise SimulationError(f"PE {p} lacks elements of a replicated tensor at level {h}")
                for q in self._siblings(p, h):
                    got = need & ~np.isnan(d.vals[q])
                    if got.any():
                        self.send(h, q, p, got.sum())
                        v[got] = d.vals[q][got]
                        need &= ~got
                if need.any():
                    raise SimulationError(f"PE {p}: {int(need.sum())} elements held by no level-{h} sibling")
            out.append(v)
        return Dist(mesh, d.shape, layouts, out, d.axes)

    def reduce_scatter_to(self, d: Dist, h: int, new: str) -> Dist:
        """Partial sums over level h -> full sums of each PE's level-h shard in layout ``new``."""
        mesh = d.mesh
        layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
        out = []
        for group in mesh.sibling_groups(h):
            self._regions(d, group)
        for p in range(mesh.P):
            want = shard_mask(mesh, d.shape, layouts, p, d.axes)
            if np.isnan(d.vals[p][want]).any():
                raise SimulationError(f"PE {p} lacks part of its partial shard at level {h}")
            v = np.full(d.shape, np.nan)
            v[want] = d.vals[p][want]
            for q in self._siblings(p, h):
                self.send(h, q, p, want.sum())
                v[want] += d.vals[q][want]
            out.append(v)
        return Dist(mesh, d.shape, layouts, out, d.axes)

    def _siblings(self, p: int, h: int) -> list[int]:
        c = self.mesh.coords[p]
        out = []
        stride = prod(self.mesh.fanouts[h + 1:])
        for j in range(self.mesh.fanouts[h]):
            if j != c[h]:
                out.append(p + (j - c[h]) * stride)
        return out

    def _regions(self, d: Dist, group: list[int]) -> np.ndarray:
        masks = [~np.isnan(d.vals[p]) for p in group]
        for m in masks[1:]:
            if not np.array_equal(m, masks[0]):
                raise SimulationError("partial sums held on different shards by sibling PEs")
        return np.flatnonzero(masks[0])

    def reduce_scatter(self, d: Dist, h: int) -> tuple[Dist, dict]:
        """Partial sums over level h -> each sibling j holds the full sum of flat chunk j."""
        mesh = d.mesh
        vals = [v.copy() for v in d.vals]
        saved = {}
        for group in mesh.sibling_groups(h):
            region = self._regions(d, group)
            k = len(group)
            parts = split_counts(len(region), [1.0 / k] * k)
            starts = np.cumsum([0] + parts)
            for j, p in enumerate(group):
                idx = region[starts[j]:starts[j + 1]]
                tot = d.vals[p].ravel()[idx].copy()
                for q in group:
                    if q != p:
                        self.send(h, q, p, len(idx))
                        tot = tot + d.vals[q].ravel()[idx]
                v = np.full(d.shape, np.nan)
                v.ravel()[idx] = tot
                vals[p] = v
                saved[p] = region
        return Dist(mesh, d.shape, d.layouts, vals, d.axes), saved

    def all_gather_flat(self, d: Dist, h: int, saved: dict) -> Dist:
        mesh = d.mesh
        vals = [v.copy() for v in d.vals]
        for group in mesh.sibling_groups(h):
            region = saved[group[0]]
            for p in group:
                v = vals[p]
                for q in group:
                    if q != p:
                        idx = np.flatnonzero(~np.isnan(d.vals[q]))
                        self.send(h, q, p, len(idx))
                        v.ravel()[idx] = d.vals[q].ravel()[idx]
                if np.isnan(v.ravel()[region]).any():
                    raise SimulationError("all-gather left holes")
        return Dist(mesh, d.shape, d.layouts, vals, d.axes)

    def allreduce(self, d: Dist, h: int) -> Dist:
        d2, saved = self.reduce_scatter(d, h)
        d3 = self.all_gather_flat(d2, h, saved)
        return Dist(d.mesh, d.shape, d.layouts[:h] + (FULL,) + d.layouts[h + 1:], d3.vals, d.axes)

    def allreduce_levels(self, d: Dist) -> Dist:
        """All-reduce every PARTIAL level: reduce-scatter at the lower ones (bottom first), all-reduce
        at the top one, all-gather back down: each level moves one all-reduce of its own view."""
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
        layouts = tuple(FULL if l == PARTIAL else l for l in d.layouts)
        return Dist(d.mesh, d.shape, layouts, d.vals, d.axes)


def slice_local(d: Dist, h: int, new: str) -> Dist:
    """FULL -> anything at level h: drop what the PE does not keep (no messages)."""
    assert d.layouts[h] == FULL
    layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
    out = []
    for p in range(d.mesh.P):
        m = shard_mask(d.mesh, d.shape, layouts, p, d.axes)
        v = np.full(d.shape, np.nan)
        v[m] = d.vals[p][m]
        if np.isnan(v[m]).any():
            raise SimulationError(f"PE {p} lacks part of a replicated shard at level {h}")
        out.append(v)
    return Dist(d.mesh, d.shape, layouts, out, d.axes)


def add(a: Dist | None, b: Dist) -> Dist:
    if a is None:
        return b
    if a.layouts != b.layouts:
        raise SimulationError(f"adding tensors in layouts {a.layouts} and {b.layouts}")
    return Dist(a.mesh, a.shape, a.layouts, [x + y for x, y in zip(a.vals, b.vals)], a.axes)


def gather(d: Dist) -> np.ndarray:
    """Reassemble a non-partial tensor; NaN where no PE holds the element; replicas must agree."""
    out = np.full(d.shape, np.nan)
    for v in d.vals:
        m = ~np.isnan(v)
        clash = m & ~np.isnan(out) & (np.abs(out - v) > 1e-6 * (1 + np.abs(v)))
        if clash.any():
            raise SimulationError("replicas of one element disagree")
        out[m] = v[m]
    return out


# ----------------------------------------------------------------------------- the model's graph

# Local ops (no communication: they act on each (batch, channel) slice): value and input error.
def _pool_windows(x: np.ndarray, lay: G.Layer, fill: float):
    k = tuple(lay.attr("kernel_shape"))
    st_ = tuple(lay.attr("strides") or (1,) * len(k))
    pads = tuple(lay.attr("pads") or (0,) * (2 * len(k)))
    if len(k) != 2 or lay.attr("ceil_mode", 0) or tuple(lay.attr("dilations") or (1, 1)) != (1, 1):
        raise SimulationError(f"{lay.name}: only 2-D pooling without ceil_mode/dilations is simulated")
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=(2, 3))[:, :, ::st_[0], ::st_[1]]
    return win, k, st_, pads, xp.shape


def _maxpool(x, lay):
    win, *_ = _pool_windows(x, lay, -np.inf)
    return win.max(axis=(4, 5))


def _maxpool_bwd(x, e, lay):
    win, k, st_, pads, pshape = _pool_windows(x, lay, -np.inf)
    B, C, Ho, Wo = e.shape
    flat = win.reshape(B, C, Ho, Wo, -1)
    arg = np.nan_to_num(flat, nan=-np.inf).argmax(axis=-1)
    dx = np.zeros(pshape)
    for a in range(k[0] * k[1]):
        i, j = divmod(a, k[1])
        contrib = np.where(arg == a, e, 0.0)
        dx[:, :, i:i + st_[0] * Ho:st_[0], j:j + st_[1] * Wo:st_[1]] += contrib
    dx = dx[:, :, pads[0]:pshape[2] - pads[2], pads[1]:pshape[3] - pads[3]]
    return np.where(np.isnan(x), np.nan, dx)


def _avgpool(x, lay):
    if lay.attr("pads") and any(lay.attr("pads")) and not lay.attr("count_include_pad", 0):
        raise SimulationError(f"{lay.name}: padded average pooling is not simulated")
    win, *_ = _pool_windows(x, lay, 0.0)
    return win.mean(axis=(4, 5))


def _avgpool_bwd(x, e, lay):
    win, k, st_, pads, pshape = _pool_windows(x, lay, 0.0)
    B, C, Ho, Wo = e.shape
    dx = np.zeros(pshape)
    for i in range(k[0]):
        for j in range(k[1]):
            dx[:, :, i:i + st_[0] * Ho:st_[0], j:j + st_[1] * Wo:st_[1]] += e / (k[0] * k[1])
    dx = dx[:, :, pads[0]:pshape[2] - pads[2], pads[1]:pshape[3] - pads[3]]
    return np.where(np.isnan(x), np.nan, dx)


def _flatten_ok(lay: G.Layer) -> bool:
    return lay.op == "Flatten" and lay.attr("axis", 1) == 1


_LOCAL = {
    # op: (forward(x, layer), input error(x, e, layer), changes the shape)
    "Relu": (lambda x, l: np.maximum(x, 0.0), lambda x, e, l: e * (x > 0), False),
    "Identity": (lambda x, l: x, lambda x, e, l: e, False),
    "Dropout": (lambda x, l: x, lambda x, e, l: e, False),          # inference semantics
    "Tanh": (lambda x, l: np.tanh(x), lambda x, e, l: e * (1.0 - np.tanh(x) ** 2), False),
    "Sigmoid": (lambda x, l: 1.0 / (1.0 + np.exp(-x)),
                lambda x, e, l: e * np.exp(-x) / (1.0 + np.exp(-x)) ** 2, False),
    "MaxPool": (_maxpool, _maxpool_bwd, True),
    "AveragePool": (_avgpool, _avgpool_bwd, True),
    "GlobalAveragePool": (lambda x, l: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
                          lambda x, e, l: np.broadcast_to(e, x.shape) / np.prod(x.shape[2:]), True),
    "Flatten": (lambda x, l: x.reshape(x.shape[0], -1), lambda x, e, l: e.reshape(x.shape), True),
}


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[float])(x)


def _gelu(x, l):
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _gelu_bwd(x, e, l):
    return e * (0.5 * (1.0 + _erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi))


_LOCAL.update({
    "Gelu": (_gelu, _gelu_bwd, False),
    "Erf": (lambda x, l: _erf(x), lambda x, e, l: e * 2.0 / np.sqrt(np.pi) * np.exp(-x * x), False),
})

# Elementwise ops with one constant operand: run as ``x op c`` with a seeded scalar c (the
# constant's values do not change what is sent; the reference uses the same c).
_CONST_OPS = {
    "Add": (lambda x, c: x + c, lambda x, e, c: e),
    "Sub": (lambda x, c: x - c, lambda x, e, c: e),
    "Mul": (lambda x, c: x * c, lambda x, e, c: e * c),
    "Div": (lambda x, c: x / c, lambda x, e, c: e / c),
}
# Elementwise ops of two activations of one shape.
_BINARY_OPS = {
    "Mul": (lambda a, b: a * b, lambda a, b, e: [e * b, e * a]),
    "Sub": (lambda a, b: a - b, lambda a, b, e: [e, -e]),
    "Div": (lambda a, b: a / b, lambda a, b, e: [e / b, -e * a / (b * b)]),
}
_SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")


def _is_const_op(lay: G.Layer) -> bool:
    return lay.kind == G.ELEMENTWISE and lay.op in _CONST_OPS and lay.attr("const_inputs") == 1 \
        and len(lay.inputs) == 1


def _is_binary(lay: G.Layer) -> bool:
    return lay.kind == G.BINARY and lay.op in _BINARY_OPS and len(lay.inputs) == 2 and not lay.attr("const_inputs")


def _is_shape_op(lay: G.Layer) -> bool:
    return lay.kind == G.RESHAPE and lay.op in _SHAPE_OPS and lay.attr("shape") is not None and len(lay.inputs) == 1 \
        and (lay.op != "Transpose" or lay.attr("perm") is not None)


def _is_split(lay: G.Layer) -> bool:
    return lay.kind == G.SPLIT and lay.op == "Split" and lay.attr("split") is not None and len(lay.inputs) == 1


def _split_slice(lay: G.Layer, ndim: int, out: str) -> tuple:
    """The index of output ``out`` of a Split inside its input."""
    axis = int(lay.attr("axis", 0)) % ndim
    sizes = list(lay.attr("split"))
    k = list(lay.outputs).index(out)
    start = sum(sizes[:k])
    return tuple(slice(start, start + sizes[k]) if a == axis else slice(None) for a in range(ndim))


def _is_layernorm(lay: G.Layer) -> bool:
    return lay.kind == G.FEATURENORM and lay.op == "LayerNormalization" and len(lay.inputs) == 1


def _is_softmax(lay: G.Layer) -> bool:
    return lay.kind == G.SOFTMAX and lay.op == "Softmax" and len(lay.inputs) == 1


def _is_add(lay: G.Layer) -> bool:
    return lay.kind == G.BINARY and lay.op in ("Add", "Sum") and not lay.attr("const_inputs")


def _is_unary(lay: G.Layer) -> bool:
    if lay.op not in _LOCAL or lay.attr("const_inputs") or len(lay.inputs) != 1:
        return False
    return lay.op != "Flatten" or _flatten_ok(lay)


def _is_bn(lay: G.Layer) -> bool:
    return lay.kind == G.BATCHNORM and lay.op == "BatchNormalization"


def _is_chain_op(lay: G.Layer) -> bool:
    return _is_unary(lay) or _is_bn(lay) or _is_const_op(lay) or _is_shape_op(lay) or _is_layernorm(lay) \
        or _is_softmax(lay)


def _changes_shape(lay: G.Layer) -> bool:
    if lay.op in _LOCAL:
        return _LOCAL[lay.op][2]
    return _is_shape_op(lay)


def _tensor_meta(g) -> dict:
    """Tensor name -> graph.Tensor (shape, batch and feature axes) for every activation."""
    meta = {}
    for _, _, data in g.edges(data=True):
        meta[data["tensor"].name] = data["tensor"]
    for t in tuple(g.graph.get("inputs", ())) + tuple(g.graph.get("outputs", ())):
        meta[t.name] = t
    return meta


def _tensor_ok(t: G.Tensor | None) -> bool:
    return t is not None and len(t.shape) >= 2 and t.batch_axis == 0 and t.feature_axis == 1


def _supported(model) -> list[str]:
    """What the simulator cannot run on this model, each naming the layer or setting (empty: all)."""
    bad: list[str] = []
    arr = model.array
    if arr.heterogeneous and arr.n_levels > 1:
        bad.append(f"array {arr.name!r}: heterogeneous PEs over several levels (uneven nested splits are "
                   "not simulated; one heterogeneous level is)")
    g = model.g
    kept = set(model.names)
    meta = _tensor_meta(g)
    input_names = {t.name for t in g.graph.get("inputs", ())}
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            t = meta.get(lay.inputs[0]) if lay.inputs else None
            if lay.groups != 1 or t is None or t.feature_axis != len(t.shape) - 1:
                bad.append(f"{n} ({lay.op}): grouped, or features not the last axis")
            elif n not in kept:
                bad.append(f"{n} ({lay.op}): weighted layer not kept by the cost model")
        elif lay.kind == G.EMBEDDING:
            if lay.op != "Gather" or n not in kept or lay.inputs[0] not in input_names:
                bad.append(f"{n} ({lay.op}): only a Gather of graph-input ids is simulated")
        elif lay.kind == G.MATMUL_ACT:
            if n not in kept or len(lay.inputs) != 2:
                bad.append(f"{n} ({lay.op}, kind {lay.kind})")
        elif _is_binary(lay):
            shapes = {meta[t].shape for t in lay.inputs if t in meta}
            if len(shapes) != 1:
                bad.append(f"{n} ({lay.op}): broadcasting two activations")
        elif lay.kind == G.CONV:
            if lay.op != "Conv" or lay.groups != 1 or len(lay.kernel) != 2 \
                    or tuple(lay.attr("dilations") or (1, 1)) != (1, 1):
                bad.append(f"{n} ({lay.op}): only 2-D, ungrouped, undilated Conv is simulated")
            elif n not in kept:
                bad.append(f"{n} ({lay.op}): weighted layer not kept by the cost model")
        elif not (_is_add(lay) or _is_chain_op(lay) or _is_binary(lay) or _is_split(lay)):
            bad.append(f"{n} ({lay.op}, kind {lay.kind})")
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        for t in lay.outputs[:1] + tuple(lay.inputs):
            if t not in meta:
                bad.append(f"{n} ({lay.op}): tensor {t} has no recorded shape")
    for tname, cons in g.graph.get("input_consumers", {}).items():
        for c in cons:
            if c not in kept:
                bad.append(f"{c}: a folded op reads graph input {tname}")
    for i, n in enumerate(model.names):
        srcs = [(model.edges[e].p, model.edges[e].slot) for e in model.in_edges[i]]
        if len(srcs) != len(set(srcs)):
            bad.append(f"{n}: one producer reaches the same input along two paths")
    return sorted(set(bad))


def _reference(g, weights: dict, inputs: dict, out_err: dict):
    """One-device training step on the full layer graph: values, errors, weight gradients."""
    order = G.topo_layers(g)
    val: dict[str, np.ndarray] = dict(inputs)
    for n in order:
        lay = G.layer(g, n)
        if _is_split(lay):
            x = val[lay.inputs[0]]
            for o in lay.outputs:
                val[o] = x[_split_slice(lay, x.ndim, o)]
            continue
        val[lay.outputs[0]] = _forward_op(lay, [val[t] for t in lay.inputs], weights.get(n))
    err: dict[str, np.ndarray] = {t: np.zeros_like(v) for t, v in val.items()}
    for t, e in out_err.items():
        err[t] = err[t] + e
    dW = {}
    for n in reversed(order):
        lay = G.layer(g, n)
        if _is_split(lay):
            x = val[lay.inputs[0]]
            e_in = np.zeros_like(x)
            for o in lay.outputs:
                e_in[_split_slice(lay, x.ndim, o)] += err[o]
            err[lay.inputs[0]] = err[lay.inputs[0]] + e_in
            continue
        e_out = err[lay.outputs[0]]
        xs = [val[t] for t in lay.inputs]
        if lay.kind in (G.GEMM, G.CONV, G.EMBEDDING):
            dW[n] = _weight_grad(lay, xs[0], e_out, lay.d_in)
        for t, e in zip(lay.inputs, _backward_op(lay, xs, e_out, weights.get(n))):
            err[t] = err[t] + e
    return val, err, dW


def _conv_attrs(lay: G.Layer):
    st_ = tuple(lay.attr("strides") or (1, 1))
    pads = tuple(lay.attr("pads") or (0, 0, 0, 0))
    return st_, pads


def _conv_cols(x: np.ndarray, lay: G.Layer):
    st_, pads = _conv_attrs(lay)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cols = np.lib.stride_tricks.sliding_window_view(xp, tuple(lay.kernel), axis=(2, 3))[:, :, ::st_[0], ::st_[1]]
    return cols, xp.shape, st_, pads


def conv_forward(x: np.ndarray, w: np.ndarray, lay: G.Layer) -> np.ndarray:
    """x (B, Ci, H, W), w (Ci, Co, kh, kw) -> (B, Co, Ho, Wo): the im2col matrix product."""
    cols, *_ = _conv_cols(x, lay)
    return np.einsum("bchwij,coij->bohw", cols, w, optimize=True)


def conv_backward(x: np.ndarray, w: np.ndarray, e: np.ndarray, lay: G.Layer) -> tuple[np.ndarray, np.ndarray]:
    """(dW (Ci, Co, kh, kw), dx) of conv_forward for the output error e."""
    cols, pshape, st_, pads = _conv_cols(x, lay)
    dw = np.einsum("bchwij,bohw->coij", cols, e, optimize=True)
    B, Co, Ho, Wo = e.shape
    dxp = np.zeros(pshape)
    kh, kw = lay.kernel
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + st_[0] * Ho:st_[0], j:j + st_[1] * Wo:st_[1]] += np.einsum("bohw,co->bchw", e,
                                                                                       w[:, :, i, j])
    return dw, dxp[:, :, pads[0]:pshape[2] - pads[2], pads[1]:pshape[3] - pads[3]]


def _forward_op(lay: G.Layer, xs: list, w) -> np.ndarray:
    if lay.kind == G.GEMM:
        return xs[0] @ w
    if lay.kind == G.CONV:
        return conv_forward(xs[0], w, lay)
    if _is_add(lay):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    if lay.kind == G.EMBEDDING:
        return w[xs[0].astype(int)]
    if lay.kind == G.MATMUL_ACT:
        return xs[0] @ xs[1]
    if _is_const_op(lay):
        return _CONST_OPS[lay.op][0](xs[0], w)
    if _is_binary(lay):
        return _BINARY_OPS[lay.op][0](xs[0], xs[1])
    if _is_shape_op(lay):
        if lay.op == "Transpose":
            return np.transpose(xs[0], lay.attr("perm"))
        return xs[0].reshape(lay.attr("shape"))
    if _is_layernorm(lay):
        gamma, beta = w
        x = xs[0]
        xhat = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True)
                                                               + float(lay.attr("epsilon", 1e-5)))
        return gamma * xhat + beta
    if _is_softmax(lay):
        z = np.exp(xs[0] - np.max(np.where(np.isnan(xs[0]), -np.inf, xs[0]), axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if lay.kind == G.BATCHNORM:
        gamma, beta = w
        x = xs[0]
        axes = tuple(a for a in range(x.ndim) if a != 1)
        xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True)
                                                                + float(lay.attr("epsilon", 1e-5)))
        return gamma.reshape(_bn_shape(x)) * xhat + beta.reshape(_bn_shape(x))
    return _LOCAL[lay.op][0](xs[0], lay)


def _backward_op(lay: G.Layer, xs: list, e_out: np.ndarray, w) -> list:
    """Errors of the inputs (a local operation: works on shards and on partial sums alike)."""
    if lay.kind == G.GEMM:
        return [e_out @ w.T]
    if lay.kind == G.CONV:
        return [conv_backward(xs[0], w, e_out, lay)[1]]
    if _is_add(lay):
        return [e_out for _ in xs]
    if lay.kind == G.EMBEDDING:
        return [np.zeros_like(xs[0])]          # token ids take no error
    if lay.kind == G.MATMUL_ACT:
        return [e_out @ np.swapaxes(xs[1], -1, -2), np.swapaxes(xs[0], -1, -2) @ e_out]
    if _is_const_op(lay):
        return [_CONST_OPS[lay.op][1](xs[0], e_out, w)]
    if _is_binary(lay):
        return _BINARY_OPS[lay.op][1](xs[0], xs[1], e_out)
    if _is_shape_op(lay):
        if lay.op == "Transpose":
            return [np.transpose(e_out, np.argsort(lay.attr("perm")))]
        return [e_out.reshape(xs[0].shape)]
    if _is_layernorm(lay):
        gamma, _beta = w
        x = xs[0]
        inv = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + float(lay.attr("epsilon", 1e-5)))
        xhat = (x - x.mean(axis=-1, keepdims=True)) * inv
        g_ = e_out * gamma
        return [inv * (g_ - g_.mean(axis=-1, keepdims=True) - xhat * (g_ * xhat).mean(axis=-1, keepdims=True))]
    if _is_softmax(lay):
        y = _forward_op(lay, xs, w)
        return [y * (e_out - (e_out * y).sum(axis=-1, keepdims=True))]
    if lay.kind == G.BATCHNORM:
        gamma, _beta = w
        x = xs[0]
        axes = tuple(a for a in range(x.ndim) if a != 1)
        inv = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + float(lay.attr("epsilon", 1e-5)))
        xhat = (x - x.mean(axis=axes, keepdims=True)) * inv
        return [gamma.reshape(_bn_shape(x)) * inv * (e_out - e_out.mean(axis=axes, keepdims=True)
                                                     - xhat * (e_out * xhat).mean(axis=axes, keepdims=True))]
    return [_LOCAL[lay.op][1](xs[0], e_out, lay)]


def _weight_grad(lay: G.Layer, x: np.ndarray, e: np.ndarray, vocab: int = 0) -> np.ndarray:
    if lay.kind == G.CONV:
        return conv_backward(x, np.zeros((x.shape[1], e.shape[1]) + tuple(lay.kernel)), e, lay)[0]
    if lay.kind == G.EMBEDDING:
        dw = np.zeros((vocab, e.shape[-1]))
        np.add.at(dw, x.astype(int).ravel(), e.reshape(-1, e.shape[-1]))
        return dw
    return np.tensordot(x, e, axes=(tuple(range(x.ndim - 1)), tuple(range(e.ndim - 1))))


def _folded_between(model, c: int) -> list[str]:
    """Folded nodes on the paths from kept sources into kept node c (topological order)."""
    g = model.g
    seen, stack = set(), list(g.predecessors(model.names[c]))
    while stack:
        n = stack.pop()
        if n in seen or n in model.index:
            continue
        seen.add(n)
        stack.extend(g.predecessors(n))
    return [n for n in G.topo_layers(g) if n in seen]


def _folded_error_to_sources(model, tname: str, e: np.ndarray, ref_val: dict, weights: dict) -> dict[int, np.ndarray]:
    """An error at tensor ``tname`` pushed back through folded nodes to the kept producers."""
    g = model.g
    producer = {o: n for n in g.nodes for o in G.layer(g, n).outputs}
    err = {tname: e}
    out: dict[int, np.ndarray] = {}
    order = [n for n in G.topo_layers(g)]
    pos = {n: k for k, n in enumerate(order)}
    pending = [tname]
    while pending:
        pending.sort(key=lambda t: -pos.get(producer.get(t), -1))
        t = pending.pop(0)
        n = producer.get(t)
        if n is None:
            continue
        if n in model.index:
            i = model.index[n]
            out[i] = out.get(i, 0) + err.pop(t)
            continue
        lay = G.layer(g, n)
        e_t = err.pop(t)
        if _is_split(lay):
            x = ref_val[lay.inputs[0]]
            full = np.zeros_like(x)
            full[_split_slice(lay, x.ndim, t)] = e_t
            grads = [full]
        else:
            grads = _backward_op(lay, [ref_val[x] for x in lay.inputs], e_t, weights.get(n))
        for u, eu in zip(lay.inputs, grads):
            if u not in err:
                pending.append(u)
                err[u] = 0
            err[u] = err[u] + eu
    return out


def _kept_output_sources(model, tname: str) -> list[int]:
    g = model.g
    prod_ = [n for n in g.nodes if tname in G.layer(g, n).outputs]
    if not prod_:
        return []
    return [model.index[n] for n in model.kept_sources(prod_[0])]


# ----------------------------------------------------------------------------- the step

def simulate(model, assignment: list[tuple], seed: int = 0, tol: float = DEFAULT_TOL) -> SimResult:
    """Reference step vs distributed step of ``assignment`` on ``model``'s graph and array.

    What it cannot run is listed in ``SimResult.unsupported`` (by layer name) and nothing is
    counted; a lost message raises :class:`SimulationError`."""
    names = list(model.names)
    res = SimResult(names, model.n_levels, model.array.dtype_bytes, tol=tol)
    res.unsupported = _supported(model)
    if res.unsupported:
        return res
    model.check_assignment(assignment)
    if any(t is None for a in assignment for t in a):
        raise ValueError("simulate needs every level of every node decided")
    where = {"node": None}
    try:
        return _simulate(model, assignment, seed, res, where)
    except UnevenSplit as exc:
        res.unsupported = [f"{where['node']}: {exc} (uneven split over several levels; choose a batch / "
                           f"widths divisible by {model.array.n_pes})"]
    except _Unsupported as exc:
        res.unsupported = [str(exc)]
    res.counted, res.transfers, res.flags, res.split_dedup, res.folded_stats, res.notes = [], [], [], [], [], []
    return res


def _simulate(model, assignment: list[tuple], seed: int, res: SimResult, where: dict) -> SimResult:
    names = list(model.names)
    H = model.n_levels
    g = model.g
    arr = model.array
    fr = tuple(c[1] for c in arr.classes[0][arr.root_key].children) if arr.n_levels == 1 else None
    mesh = Mesh(arr.fanouts, fr)
    comm = Comm(mesh)
    rng = np.random.default_rng(seed)

    # Data: seeded weights (scaled so activations stay O(1)), inputs and output errors.
    weights = {}
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out)) / np.sqrt(lay.d_in)
        elif lay.kind == G.CONV:
            k = tuple(lay.kernel)
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out) + k) / np.sqrt(lay.d_in * int(np.prod(k)))
    meta = _tensor_meta(g)
    vocab: dict[str, int] = {}
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        if lay.kind == G.BATCHNORM:
            c = meta[lay.inputs[0]].shape[1]
            weights[n] = (1.0 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c))
        elif _is_layernorm(lay):
            c = meta[lay.inputs[0]].shape[-1]
            weights[n] = (1.0 + 0.1 * rng.standard_normal(c), 0.1 * rng.standard_normal(c))
        elif lay.kind == G.EMBEDDING:
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out))
            vocab[lay.inputs[0]] = min(vocab.get(lay.inputs[0], lay.d_in), lay.d_in)
        elif _is_const_op(lay):
            weights[n] = float(rng.uniform(0.5, 1.5))
    inputs = {t.name: (rng.integers(0, vocab[t.name], t.shape).astype(float) if t.name in vocab
                       else rng.standard_normal(t.shape)) for t in g.graph.get("inputs", ())}
    out_err = {t.name: rng.standard_normal(t.shape) for t in g.graph.get("outputs", ())}
    ref_val, ref_err, ref_dW = _reference(g, weights, inputs, out_err)

    counted = [[0] * H for _ in names]
    keyed: dict[tuple, dict] = {}   # step key -> {"counts": [..], "nodes": set, "what": str, "kind": str}

    def run_step(key: tuple, kind: str, what: str, node: int, fn):
        """Execute ``fn`` counting its messages under ``key``; a key seen before counts nothing."""
        rec = keyed.get(key)
        first = rec is None
        if first:
            rec = keyed[key] = {"counts": [0] * H, "nodes": set(), "what": what, "kind": kind}
        rec["nodes"].add(node)
        comm.sink = rec["counts"] if first else [0] * H
        try:
            return fn()
        finally:
            comm.sink = None

    strat = [[model.nodes[i].strategy(t) for t in assignment[i]] for i in range(len(names))]
    axes_of = {name: (t.batch_axis, t.feature_axis) for name, t in meta.items()}
    ctx = _Ctx(comm, run_step, weights, res, axes_of)

    def levels_of(i: int, axis: str) -> list[int]:
        return [h for h in range(H) if strat[i][h].split_axis == axis]

    def lay_of(i: int) -> G.Layer:
        return G.layer(g, names[i])

    # -- forward
    fwd_memo: dict[tuple, Dist] = {}
    pre_memo: dict[tuple, Dist] = {}        # folded ops run on the producer side, per (producer, node)
    f_in: dict[int, list[Dist]] = {}        # per kept node, per activation slot (after folded ops)
    folded_vals: dict[int, dict] = {}       # per kept node: tensor name -> Dist (consumer side)
    edge_pre: dict[int, tuple] = {}         # edge index -> (pre chain, converted tensor, base key)
    folded_pre: dict[int, set] = {}         # per kept node: folded ops run on the producers' side
    f_out: dict[int, Dist] = {}
    f_outs: dict[int, dict] = defaultdict(dict)   # several outputs (a kept Split): tensor -> Dist
    producer = {o: n for n in g.nodes for o in G.layer(g, n).outputs}
    input_names = {t.name for t in g.graph.get("inputs", ())}
    for i, n in enumerate(names):
        where["node"] = n
        lay = lay_of(i)
        weighted = lay.kind in (G.GEMM, G.CONV, G.EMBEDDING)
        n_slots = 1 if weighted else len(lay.inputs)
        dsts = [tuple(strat[i][h].in_layouts[s] for h in range(H)) for s in range(n_slots)]
        slots: list[Dist] = []
        folded = _folded_between(model, i)
        vals: dict[str, Dist] = {}
        pre_nodes: set[str] = set()
        for s in range(n_slots):
            tname = lay.inputs[s]
            if tname in input_names:
                slots.append(scatter(mesh, inputs[tname], dsts[s], axes_of[tname]))
                continue
            for e_idx in model.in_edges[i]:
                e = model.edges[e_idx]
                if e.slot != s:
                    continue
                pre = _pre_chain(model, e.p, i, s, folded, producer)
                pre_nodes.update(fn_ for fn_, _t in pre)
                x = f_outs[e.p].get(e.source, f_out[e.p])
                for fn_, out_t in pre:
                    hit = pre_memo.get((e.p, fn_, out_t))
                    x = hit if hit is not None else _local(G.layer(g, fn_), [x], ctx, "fold", i, f"pre:{e.p}",
                                                           out=out_t)
                    pre_memo[(e.p, fn_, out_t)] = x
                conv_t = pre[-1][1] if pre else e.source
                if tuple(x.shape) != tuple(e.tensor.shape):
                    raise _Unsupported(f"{n}: the cost model converts {e.tensor.name} {e.tensor.shape} from "
                                       f"{names[e.p]}, but the folded ops between need {conv_t} {x.shape} "
                                       "converted (a size-changing op after a folded Add)")
                base = (e.p, e.source if conv_t == e.source else f"{e.source}|{conv_t}")
                edge_pre[e_idx] = (pre, conv_t, base)
                what = f"{names[e.p]}:{conv_t} -> {n}"
                vals[conv_t] = _convert(comm, run_step, fwd_memo, "fwd", base, what, i, x, dsts[s], dsts[s],
                                        res.flags, keyed)
            for fn_ in folded:                       # folded ops after the conversions, per PE
                fl = G.layer(g, fn_)
                if fn_ in pre_nodes or fl.outputs[0] in vals or not all(t in vals for t in fl.inputs):
                    continue
                xs = [vals[t] for t in fl.inputs]
                if any(x.layouts != xs[0].layouts for x in xs):
                    raise SimulationError(f"{n}: folded {fn_} inputs in different layouts")
                for o in (fl.outputs if _is_split(fl) else fl.outputs[:1]):
                    vals[o] = _local(fl, xs, ctx, "fold", i, "post", out=o)
            if tname not in vals:
                raise SimulationError(f"{n}: input {tname} not reached from kept producers")
            slots.append(vals[tname])
        f_in[i] = slots
        folded_vals[i] = vals
        folded_pre[i] = pre_nodes
        if weighted:
            f_out[i] = _weighted_forward(comm, run_step, mesh, i, lay, weights[n], slots[0], strat[i], levels_of,
                                         ref_val[lay.outputs[0]].shape, axes_of[lay.outputs[0]])
        else:
            out_l = tuple(strat[i][h].out_layout for h in range(H))
            for s, x in enumerate(slots):
                if x.layouts != out_l and lay.kind != G.MATMUL_ACT:
                    raise SimulationError(f"{n}: slot {s} in {x.layouts}, output {out_l}")
            if lay.kind == G.MATMUL_ACT:
                vals_ = [slots[0].vals[p] @ slots[1].vals[p] for p in range(mesh.P)]
                f_out[i] = Dist(mesh, vals_[0].shape, out_l, vals_, axes_of[lay.outputs[0]])
                f_out[i] = _mask_to_layout(f_out[i])
            elif _is_split(lay):
                for o in lay.outputs:
                    f_outs[i][o] = _local(lay, slots, ctx, "intra", i, "node", out=o)
                f_out[i] = f_outs[i][lay.outputs[0]]
            else:
                f_out[i] = _local(lay, slots, ctx, "intra", i, "node")

    fwd_memo.clear()                        # (memory: the converted states live on in f_in / vals)

    def release(i: int) -> None:
        """Node i's backward is done (its consumers came before it): drop what it kept."""
        for d in (f_in, folded_vals, f_out, f_outs, e_outs):
            d.pop(i, None)
        for k in [k for k in pre_memo if k[0] == i]:
            del pre_memo[k]

    # -- backward (reverse order); errors of a node's output accumulate in its needed layout
    names_out = {i: lay_of(i).outputs[0] for i in range(len(names))}
    e_outs: dict[int, dict] = defaultdict(dict)   # node -> output tensor -> error Dist
    for t in g.graph.get("outputs", ()):
        for i, e in _folded_error_to_sources(model, t.name, out_err[t.name], ref_val, weights).items():
            lays = tuple(strat[i][h].out_err_layout for h in range(H))
            o = names_out[i]
            e_outs[i][o] = add(e_outs[i].get(o), scatter(mesh, e, lays, axes_of[o]))
    max_err = [0.0] * len(names)
    scale = [0.0] * len(names)
    pending: dict[int, list] = defaultdict(list)   # producer -> [(consumer, edge, error Dist)]
    for i in reversed(range(len(names))):
        n = names[i]
        where["node"] = n
        lay = lay_of(i)
        out_t = lay.outputs[0]
        lays = tuple(strat[i][h].out_err_layout for h in range(H))
        # the errors of this node's output from its consumers, converted to its layouts
        for c, e_idx, src in sorted(_fold_into_partials(pending.pop(i, []), edge_pre), key=lambda t: (t[0], t[1])):
            pre, conv_t, base = edge_pre[e_idx]
            source = model.edges[e_idx].source
            what = f"{names[c]} -> {n}:{conv_t}"
            conv = _convert(comm, run_step, None, "bwd", base, what, c, src, lays, src.layouts, res.flags, keyed)
            for k in reversed(range(len(pre))):      # back through the producer-side folded ops
                x_in = f_outs[i].get(source, f_out[i]) if k == 0 else pre_memo[(i,) + pre[k - 1]]
                conv = _local_bwd(G.layer(g, pre[k][0]), [x_in], conv, 0, conv.layouts, ctx, "fold", c,
                                  f"pre:{i}", out=pre[k][1])
            key_t = source if source in f_outs[i] else out_t
            e_outs[i][key_t] = add(e_outs[i].get(key_t), conv)
        for o in (lay.outputs if _is_split(lay) else lay.outputs[:1]):
            if o not in e_outs[i]:
                e_outs[i][o] = scatter(mesh, np.zeros_like(ref_val[o]), lays, axes_of[o])
        eo = e_outs[i][out_t]
        errs = [_dist_err(f_out[i], ref_val[out_t]), _dist_err(eo, ref_err[out_t])]
        scale[i] = float(np.abs(ref_val[out_t]).max(initial=0))
        needs = [e for e in model.in_edges[i] if model.edges[e].needs_error]
        if lay.kind in (G.GEMM, G.CONV, G.EMBEDDING):
            dw, ein = _weighted_backward(comm, run_step, mesh, i, lay, weights[n], f_in[i][0], eo, strat[i],
                                         levels_of)
            errs.append(_dist_err(dw, ref_dW[n]))
            scale[i] = max(scale[i], float(np.abs(ref_dW[n]).max(initial=0)))
            e_slots = [ein]
        elif _is_split(lay):
            el = tuple(strat[i][h].in_err_layouts[0] for h in range(H))
            tot = None
            for o in lay.outputs:
                tot = add(tot, _local_bwd(lay, f_in[i], e_outs[i][o], 0, el, ctx, "intra", i, "node", out=o))
            e_slots = [tot]
        else:
            e_slots = [_local_bwd(lay, f_in[i], eo, s, tuple(strat[i][h].in_err_layouts[s] for h in range(H)),
                                  ctx, "intra", i, "node")
                       for s in range(len(lay.inputs))]
        max_err[i] = max(errs)
        if not needs:
            release(i)
            continue
        # push each slot's error back through the folded ops (locally), then to the producers
        fvals = folded_vals[i]
        err_t: dict[str, Dist] = {}
        for s, d in enumerate(e_slots):
            tname = lay.inputs[s]
            err_t[tname] = add(err_t.get(tname), d)
        for fn_ in reversed(_folded_between(model, i)):
            fl = G.layer(g, fn_)
            if fn_ in folded_pre[i]:
                continue
            xs = [fvals[t] for t in fl.inputs]
            if _is_split(fl):
                for o in fl.outputs:
                    eo_f = err_t.pop(o, None)
                    if eo_f is not None:
                        back = _local_bwd(fl, xs, eo_f, 0, eo_f.layouts, ctx, "fold", i, "post", out=o)
                        err_t[fl.inputs[0]] = add(err_t.get(fl.inputs[0]), back)
                continue
            eo_f = err_t.pop(fl.outputs[0], None)
            if eo_f is None:
                continue
            for k, t in enumerate(fl.inputs):
                err_t[t] = add(err_t.get(t), _local_bwd(fl, xs, eo_f, k, eo_f.layouts, ctx, "fold", i, "post"))
        for e_idx in needs:
            e = model.edges[e_idx]
            conv_t = edge_pre[e_idx][1] if e_idx in edge_pre else e.source
            src = err_t.get(conv_t)
            if src is None:
                raise SimulationError(f"{n}: no error reached {conv_t}")
            pending[e.p].append((i, e_idx, src))
        release(i)

    # The cost model converts a producer tensor once per (level, consumer view, layout); when
    # consumers sharing that key reach the level from different lower-level states the
    # simulator cannot share the step: note them (SimResult.split_dedup).
    groups: dict[tuple, list] = defaultdict(list)
    for key, rec in keyed.items():
        if key[0] != "intra" and any(rec["counts"]):
            groups[key[:4] + key[6:]].append(rec)
    for gk, recs in groups.items():
        if len(recs) > 1:
            for rec in recs:
                res.split_dedup.append((gk[0], rec["what"], min(rec["nodes"]), gk[3]))
    # attribute counts: intra to the node, edge conversions to their first consumer
    for key, rec in keyed.items():
        node = min(rec["nodes"])
        for h, c in enumerate(rec["counts"]):
            if c:
                counted[node][h] += c
                res.transfers.append(Transfer(rec["kind"], rec["what"], h, c, node))
                if rec["kind"] == "fold":
                    res.folded_stats.append((node, h, rec["what"]))
    res.counted = counted
    res.max_err = max_err
    res.scale = scale
    return res


def _fold_into_partials(items: list, edge_pre: dict) -> list:
    """Errors of one producer tensor from several consumers: where one is replicated (R) at a
    level at which another, otherwise in the same layouts, is a partial sum (P), fold it into a
    partial sum (kept by subgroup 0 only: free) so both are summed locally and reduced once, as
    the cost model charges them (a replica is a valid partial sum)."""
    out = []
    for c, e_idx, d in items:
        for _c2, e2, d2 in items:
            if edge_pre[e2][2] != edge_pre[e_idx][2] or d2 is d:
                continue
            lv = [h for h in range(len(d.layouts)) if d.layouts[h] != d2.layouts[h]]
            if lv and all(d.layouts[h] == FULL and d2.layouts[h] == PARTIAL for h in lv):
                vals = []
                for p, v in enumerate(d.vals):
                    keep = all(d.mesh.coords[p][h] == 0 for h in lv)
                    vals.append(v if keep else np.where(np.isnan(v), np.nan, 0.0))
                d = Dist(d.mesh, d.shape, d2.layouts, vals, d.axes)
                break
        out.append((c, e_idx, d))
    return out


class _Unsupported(Exception):
    """Raised mid-simulation for a construct the simulator cannot run (reported by name)."""


def _pre_chain(model, p: int, c: int, slot: int, folded: list[str], producer: dict) -> list[tuple[str, str]]:
    """Folded single-input ops (with the output used) from producer p's output towards input
    ``slot`` of consumer c, up to the last one that changes the shape (pooling, flatten, reshape,
    split): they run on the producer's side before the conversion, so the tensor converted is the
    one the cost model prices (the consumer's input); shape-preserving ops after that run on the
    consumer's side."""
    g = model.g
    fset = set(folded)
    path: list[tuple[str, str]] | None = []
    t = G.layer(g, model.names[c]).inputs[slot]
    while True:                                   # the unique single-input path back to p, if any
        n = producer.get(t)
        if n == model.names[p]:
            break
        lay = G.layer(g, n) if n is not None else None
        if n not in fset or not (_is_chain_op(lay) or _is_split(lay)):
            path = None
            break
        path.insert(0, (n, t))
        t = lay.inputs[0]
    if path is None:                              # p reaches c through an Add: p's own chain to it
        path = []
        cur = model.names[p]
        while True:
            nxt = [n for n in g.successors(cur) if n in fset]
            if len(nxt) != 1 or not _is_chain_op(G.layer(g, nxt[0])):
                if len([n for n in nxt if _is_chain_op(G.layer(g, n))]) > 1:
                    raise _Unsupported(f"{model.names[p]}: its output branches through several folded ops")
                break
            path.append((nxt[0], G.layer(g, nxt[0]).outputs[0]))
            cur = nxt[0]
    last = max((k for k, (n, _t) in enumerate(path)
                if _changes_shape(G.layer(g, n)) or _is_split(G.layer(g, n))), default=-1)
    return path[:last + 1]


class _Ctx:
    """What a local op may need to talk: batch-norm statistics are all-reduced over the levels
    that split the batch (counted as the kept node's intra-layer traffic, or as ``fold`` traffic
    of the consumer that runs a folded BatchNorm)."""

    def __init__(self, comm: Comm, run_step, params: dict, res: SimResult, axes: dict | None = None):
        self.comm, self.run_step, self.params, self.res = comm, run_step, params, res
        self.axes = axes or {}      # tensor name -> (batch axis, feature axis)

    def allreduce_stats(self, key: tuple, kind: str, what: str, node: int, st: Dist) -> Dist:
        lays = st.layouts
        for h, l in enumerate(lays):
            if l != PARTIAL:
                continue
            if any(lays[g] == FULL for g in range(h + 1, len(lays))):
                self.res.notes.append((node, h, f"{what}: every replica below level {h} all-reduces its own copy "
                                       "(the cost model prices one per subgroup; no schedule avoids the extra "
                                       "copies or an all-gather below)"))
            if any(lays[u] == COLS for u in range(h)):
                self.res.notes.append((node, h, f"{what}: the channels are split above level {h}, but the cost "
                                       "model all-reduces statistics of all channels (hypar/strategies.py quantity, "
                                       "Q_STATS_BN uses node.size('f'), not the view's channels)"))
        return self.run_step(key, kind, what, node, lambda: self.comm.allreduce_levels(st))


def _stats_dist(x: Dist, parts: list[np.ndarray]) -> Dist:
    """Per-channel partial sums (rows of ``parts``) as a tensor partial over the batch-split levels."""
    lays = tuple(PARTIAL if l == ROWS else (FULL if l == PARTIAL else l) for l in x.layouts)
    return Dist(x.mesh, parts[0].shape, lays, parts)


def _held(x: Dist, p: int, keep: str) -> np.ndarray:
    """PE p's shard of x under only its ``keep`` (ROWS or COLS) splits: which channels / rows it
    holds, even when its share of the other axis is empty (uneven splits)."""
    lays = tuple(l if l == keep else FULL for l in x.layouts)
    return shard_mask(x.mesh, x.shape, lays, p, x.axes)


def _channel_sums(v: np.ndarray, held_mask: np.ndarray, *arrays) -> np.ndarray:
    axes = tuple(a for a in range(v.ndim) if a != 1)
    held = held_mask.any(axis=axes)
    return np.stack([np.where(held, np.nansum(a, axis=axes), np.nan) for a in arrays])


def _bn_shape(x: np.ndarray) -> tuple:
    return (1, -1) + (1,) * (x.ndim - 2)


def _bn_forward(ctx: _Ctx, lay: G.Layer, x: Dist, kind: str, node: int, where: str) -> Dist:
    gamma, beta = ctx.params[lay.name]
    eps = float(lay.attr("epsilon", 1e-5))
    n = x.shape[0] * int(np.prod(x.shape[2:]))
    st = _stats_dist(x, [_channel_sums(v, _held(x, p, COLS), v, v * v) for p, v in enumerate(x.vals)])
    st = ctx.allreduce_stats(("bn", node, lay.name, "fwd", where), kind, f"{lay.name} statistics", node, st)
    out = []
    for p, v in enumerate(x.vals):
        mean = st.vals[p][0] / n
        var = st.vals[p][1] / n - mean ** 2
        xhat = (v - mean.reshape(_bn_shape(v))) / np.sqrt(var + eps).reshape(_bn_shape(v))
        out.append(gamma.reshape(_bn_shape(v)) * xhat + beta.reshape(_bn_shape(v)))
    return Dist(x.mesh, x.shape, x.layouts, out, x.axes)


def _bn_backward(ctx: _Ctx, lay: G.Layer, x: Dist, e: Dist, kind: str, node: int, where: str) -> Dist:
    gamma, _beta = ctx.params[lay.name]
    eps = float(lay.attr("epsilon", 1e-5))
    n = x.shape[0] * int(np.prod(x.shape[2:]))
    stx = _stats_dist(x, [_channel_sums(v, _held(x, p, COLS), v, v * v) for p, v in enumerate(x.vals)])
    # the forward statistics are kept from the forward pass (recomputed here without counting)
    saved = ctx.comm.sink
    ctx.comm.sink = None
    stx = ctx.comm.allreduce_levels(stx)
    ctx.comm.sink = saved
    xh, parts = [], []
    for p, v in enumerate(x.vals):
        mean = stx.vals[p][0] / n
        inv = 1.0 / np.sqrt(stx.vals[p][1] / n - mean ** 2 + eps)
        xhat = (v - mean.reshape(_bn_shape(v))) * inv.reshape(_bn_shape(v))
        xh.append((xhat, inv))
        parts.append(_channel_sums(v, _held(x, p, COLS), e.vals[p], e.vals[p] * xhat))
    st = _stats_dist(e, parts)
    st = ctx.allreduce_stats(("bn", node, lay.name, "bwd", where), kind, f"{lay.name} statistics", node, st)
    out = []
    for p, v in enumerate(x.vals):
        xhat, inv = xh[p]
        se, sex = st.vals[p][0].reshape(_bn_shape(v)), st.vals[p][1].reshape(_bn_shape(v))
        out.append(gamma.reshape(_bn_shape(v)) * inv.reshape(_bn_shape(v)) * (e.vals[p] - se / n - xhat * sex / n))
    return Dist(x.mesh, x.shape, e.layouts, out, x.axes)


def _mask_to_layout(d: Dist) -> Dist:
    """Drop what a PE computed outside its shard (e.g. a batched product over replicated heads)."""
    vals = []
    for p, v in enumerate(d.vals):
        m = shard_mask(d.mesh, d.shape, d.layouts, p, d.axes)
        vals.append(np.where(m, v, np.nan))
    return Dist(d.mesh, d.shape, d.layouts, vals, d.axes)


def _local(lay: G.Layer, xs: list[Dist], ctx: _Ctx | None = None, kind: str = "intra", node: int = -1,
           where: str = "", out: str | None = None) -> Dist:
    """An op on every PE's shards (the output keeps the inputs' layouts); BatchNorm and a
    LayerNorm over a split feature axis talk (statistics), a split softmax axis is unsupported."""
    if lay.kind == G.BATCHNORM:
        return _bn_forward(ctx, lay, xs[0], kind, node, where)
    if _is_split(lay):
        out_t = out or lay.outputs[0]
        x0 = xs[0]
        sl = _split_slice(lay, len(x0.shape), out_t)
        vals = [v[sl].copy() for v in x0.vals]
        axes = ctx.axes.get(out_t, x0.axes) if ctx is not None else x0.axes
        return Dist(x0.mesh, vals[0].shape, x0.layouts, vals, axes)
    axes = ctx.axes.get(lay.outputs[0], xs[0].axes) if ctx is not None else xs[0].axes
    x0 = xs[0]
    if (_is_layernorm(lay) or _is_softmax(lay)) and x0.axes[1] == len(x0.shape) - 1 and COLS in x0.layouts:
        if _is_softmax(lay):
            raise _Unsupported(f"{lay.name} (Softmax): softmax over a split feature axis")
        return _ln_forward(ctx, lay, x0, kind, node, where)
    w = ctx.params.get(lay.name) if ctx is not None else None
    vals = [_forward_op(lay, [x.vals[p] for x in xs], w) for p in range(x0.mesh.P)]
    out = Dist(x0.mesh, vals[0].shape, x0.layouts, vals, axes)
    if _is_shape_op(lay) and any(l in (ROWS, COLS) for l in x0.layouts):
        for p, v in enumerate(out.vals):
            if not np.array_equal(~np.isnan(v), shard_mask(out.mesh, out.shape, out.layouts, p, out.axes)):
                raise _Unsupported(f"{lay.name} ({lay.op}): the shards do not map through it (uneven split "
                                   f"of {x0.shape} vs {out.shape}); the cost model assumes they do")
    return out


def _ln_stats(x: Dist, parts: list[np.ndarray]) -> Dist:
    """Per-row partial sums over a split last (feature) axis: partial where the features split."""
    lays = tuple(PARTIAL if l == COLS else (FULL if l == PARTIAL else l) for l in x.layouts)
    return Dist(x.mesh, parts[0].shape, lays, parts, (x.axes[0], None))


def _row_sums(v: np.ndarray, held_mask: np.ndarray, *arrays) -> np.ndarray:
    held = held_mask.any(axis=-1)
    return np.stack([np.where(held, np.nansum(a, axis=-1), np.nan) for a in arrays], axis=-1)


def _ln_forward(ctx: _Ctx, lay: G.Layer, x: Dist, kind: str, node: int, where: str) -> Dist:
    gamma, beta = ctx.params[lay.name]
    eps = float(lay.attr("epsilon", 1e-5))
    n = x.shape[-1]
    st = _ln_stats(x, [_row_sums(v, _held(x, p, ROWS), v, v * v) for p, v in enumerate(x.vals)])
    st = ctx.allreduce_stats(("ln", node, lay.name, "fwd", where), kind, f"{lay.name} statistics", node, st)
    out = []
    for p, v in enumerate(x.vals):
        mean = st.vals[p][..., :1] / n
        var = st.vals[p][..., 1:] / n - mean ** 2
        out.append(gamma * (v - mean) / np.sqrt(var + eps) + beta)
    return Dist(x.mesh, x.shape, x.layouts, out, x.axes)


def _ln_backward(ctx: _Ctx, lay: G.Layer, x: Dist, e: Dist, kind: str, node: int, where: str) -> Dist:
    gamma, _beta = ctx.params[lay.name]
    eps = float(lay.attr("epsilon", 1e-5))
    n = x.shape[-1]
    stx = _ln_stats(x, [_row_sums(v, _held(x, p, ROWS), v, v * v) for p, v in enumerate(x.vals)])
    saved = ctx.comm.sink
    ctx.comm.sink = None
    stx = ctx.comm.allreduce_levels(stx)       # forward statistics, kept from the forward pass
    ctx.comm.sink = saved
    xh, parts = [], []
    for p, v in enumerate(x.vals):
        mean = stx.vals[p][..., :1] / n
        inv = 1.0 / np.sqrt(stx.vals[p][..., 1:] / n - mean ** 2 + eps)
        xhat = (v - mean) * inv
        g_ = e.vals[p] * gamma
        xh.append((xhat, inv, g_))
        parts.append(_row_sums(v, _held(x, p, ROWS), g_, g_ * xhat))
    st = _ln_stats(e, parts)
    st = ctx.allreduce_stats(("ln", node, lay.name, "bwd", where), kind, f"{lay.name} statistics", node, st)
    out = []
    for p in range(len(x.vals)):
        xhat, inv, g_ = xh[p]
        out.append(inv * (g_ - st.vals[p][..., :1] / n - xhat * st.vals[p][..., 1:] / n))
    return Dist(x.mesh, x.shape, e.layouts, out, x.axes)


def _local_bwd(lay: G.Layer, xs: list[Dist], e: Dist, k: int, layouts: tuple, ctx: _Ctx | None = None,
               kind: str = "intra", node: int = -1, where: str = "", out: str | None = None) -> Dist:
    """The error of input k of a local op, on every PE (for a Split: of the error of output ``out``)."""
    if _is_split(lay):
        x0 = xs[0]
        sl = _split_slice(lay, len(x0.shape), out or lay.outputs[0])
        vals = []
        for p, v in enumerate(x0.vals):
            u = np.where(np.isnan(v), np.nan, 0.0)
            u[sl] = e.vals[p]
            vals.append(u)
        return Dist(x0.mesh, x0.shape, layouts, vals, x0.axes)
    if lay.kind == G.BATCHNORM:
        d = _bn_backward(ctx, lay, xs[0], e, kind, node, where)
        return Dist(d.mesh, d.shape, layouts, d.vals, d.axes)
    x0 = xs[0]
    if _is_layernorm(lay) and x0.axes[1] == len(x0.shape) - 1 and COLS in x0.layouts:
        d = _ln_backward(ctx, lay, x0, e, kind, node, where)
        return Dist(d.mesh, d.shape, layouts, d.vals, d.axes)
    w = ctx.params.get(lay.name) if ctx is not None else None
    vals = [_backward_op(lay, [x.vals[p] for x in xs], e.vals[p], w)[k] for p in range(e.mesh.P)]
    d = Dist(e.mesh, vals[0].shape, layouts, vals, xs[k].axes)
    return _mask_to_layout(d) if lay.kind == G.MATMUL_ACT else d


def _take(a: np.ndarray, masks: dict) -> np.ndarray:
    for ax, m in masks.items():
        if ax is not None:
            a = a.compress(m, axis=ax)
    return a


def _ix(shape: tuple, masks: dict) -> tuple:
    return np.ix_(*[np.flatnonzero(masks[ax]) if ax in masks else np.arange(n) for ax, n in enumerate(shape)])


def _weighted_forward(comm: Comm, run_step, mesh: Mesh, i: int, lay: G.Layer, w: np.ndarray, x: Dist,
                      strat: list, levels_of, out_shape: tuple, out_axes: tuple) -> Dist:
    """Local products on every PE's shard, then the all-reduce of the partial output (type II levels)."""
    H = len(strat)
    (bax, fax), (obax, ofax) = x.axes, out_axes
    B, Di, Do = x.shape[bax], w.shape[0], w.shape[1]
    R, I_, O = levels_of(i, "b"), levels_of(i, "i"), levels_of(i, "o")
    vals = []
    for p in range(mesh.P):
        rm, im, om = axis_mask(mesh, B, R, p), axis_mask(mesh, Di, I_, p), axis_mask(mesh, Do, O, p)
        v = np.full(out_shape, np.nan)
        if lay.kind == G.EMBEDDING:
            ids = _take(x.vals[p], {bax: rm})
            if np.isnan(ids).any():
                raise SimulationError(f"{lay.name}: PE {p} lacks part of its ids")
            ids = ids.astype(int)
            blk = np.where(im[ids][..., None], w[:, om][ids], 0.0)    # rows of other PEs' vocabulary: 0
        else:
            xb = _take(x.vals[p], {bax: rm, fax: im})
            if np.isnan(xb).any():
                raise SimulationError(f"{lay.name}: PE {p} lacks part of its input shard")
            blk = _forward_op(lay, [xb], w[np.ix_(im, om)])
        v[_ix(out_shape, {obax: rm, ofax: om})] = blk
        vals.append(v)
    lays = tuple({"b": ROWS, "i": PARTIAL, "o": COLS}[strat[h].split_axis] for h in range(H))
    d = Dist(mesh, out_shape, lays, vals, out_axes)
    d = run_step(("intra", i, "F_out"), "intra", "F_out", i, lambda: comm.allreduce_levels(d))
    out_l = tuple(strat[h].out_layout for h in range(H))
    if d.layouts != out_l:
        raise SimulationError(f"{lay.name}: output layouts {d.layouts} differ from the strategy's {out_l}")
    return d


def _weighted_backward(comm: Comm, run_step, mesh: Mesh, i: int, lay: G.Layer, w: np.ndarray, x: Dist, eo: Dist,
                       strat: list, levels_of) -> tuple[Dist, Dist | None]:
    """dW on every PE's shard, all-reduced over type I levels; E_in left partial over type III levels
    (None for an embedding: token ids take no error)."""
    H = len(strat)
    (bax, fax), (obax, ofax) = x.axes, eo.axes
    B, Di, Do = x.shape[bax], w.shape[0], w.shape[1]
    R, I_, O = levels_of(i, "b"), levels_of(i, "i"), levels_of(i, "o")
    dw_vals, ei_vals = [], []
    for p in range(mesh.P):
        rm, im, om = axis_mask(mesh, B, R, p), axis_mask(mesh, Di, I_, p), axis_mask(mesh, Do, O, p)
        eb = _take(eo.vals[p], {obax: rm, ofax: om})
        if np.isnan(eb).any():
            raise SimulationError(f"{lay.name}: PE {p} lacks part of its output-error shard")
        v = np.full(w.shape, np.nan)
        if lay.kind == G.EMBEDDING:
            ids = _take(x.vals[p], {bax: rm})
            v[np.ix_(im, om)] = _weight_grad(lay, ids, eb, Di)[im]
        else:
            xb = _take(x.vals[p], {bax: rm, fax: im})
            v[np.ix_(im, om)] = _weight_grad(lay, xb, eb)
            u = np.full(x.shape, np.nan)
            u[_ix(x.shape, {bax: rm, fax: im})] = _backward_op(lay, [xb], eb, w[np.ix_(im, om)])[0]
            ei_vals.append(u)
        dw_vals.append(v)
    dlays = tuple({"b": PARTIAL, "i": ROWS, "o": COLS}[strat[h].split_axis] for h in range(H))
    dw = Dist(mesh, w.shape, dlays, dw_vals)
    dw = run_step(("intra", i, "dW"), "intra", "dW", i, lambda: comm.allreduce_levels(dw))
    if lay.kind == G.EMBEDDING:
        return dw, None
    elays = tuple(strat[h].in_err_layouts[0] for h in range(H))
    return dw, Dist(mesh, x.shape, elays, ei_vals, x.axes)


def _dist_err(d: Dist, ref: np.ndarray) -> float:
    got = gather(d)
    if np.isnan(got).any():
        return float("inf")
    return float(np.abs(got - ref).max(initial=0.0))


def _level_ops(s: str, t: str) -> list[tuple[str, str]]:
    """The operations turning layout s into t at one level: (op, new layout) with op one of
    "slice" (free), "a2a" (shard -> other shard), "ag" (shard -> full), "rs" (partial -> shard).
    Partial sums are all-reduced (reduce-scatter + all-gather) whatever t is (cost-model convention)."""
    if s == t:
        return []
    if s == FULL:
        return [("slice", t)]
    if s == PARTIAL:
        if t == FULL:
            return [("rs", ROWS), ("ag", FULL)]
        return [("rs", t), ("ag", FULL), ("slice", t)]
    if t == FULL:
        return [("ag", FULL)]
    return [("a2a", t)]


def _split(layout: str) -> bool:
    return layout in (ROWS, COLS)


def schedule(src: tuple, tgt: tuple, view: tuple, backward: bool,
             all_orders: bool = False) -> tuple[list, list[int]]:
    """Order the per-level operations converting layouts ``src`` into ``tgt``.

    The cost model prices level h's conversion on the consumer's view there (``view``: the
    consumer's layouts, unsplit where full or partial). An order *realises* those amounts when
    every message-moving operation at level h runs while (1) each level above has the split-ness
    of ``view`` and (2) each level below is sharded (a replica or an unreduced partial below would
    make every copy move its own data). Returns (steps (level, op, new layout), levels of the
    steps that break (1)/(2)); the second list is empty when such an order exists.
    Preference: forward top level first with replicas sliced early, backward bottom level first.
    ``all_orders``: the first element is then the list of every realising order (at most 64),
    preferred first (or the single fallback order).
    """
    H = len(src)
    ops = [_level_ops(src[h], tgt[h]) for h in range(H)]

    def valid(state: list, h: int, op: str) -> bool:
        if op == "slice":
            return True
        return (all(_split(state[u]) == _split(view[u]) for u in range(h))
                and all(_split(state[g]) for g in range(h + 1, H)))

    def candidates(pos: tuple) -> list[int]:
        hs = [h for h in range(H) if pos[h] < len(ops[h])]
        if backward:
            return sorted(hs, key=lambda h: (ops[h][pos[h]][0] == "slice", -h))
        return sorted(hs, key=lambda h: (ops[h][pos[h]][0] != "slice", h))

    dead: set = set()

    def dfs(pos: tuple, state: list) -> list | None:
        if all(pos[h] == len(ops[h]) for h in range(H)):
            return []
        if pos in dead:
            return None
        for h in candidates(pos):
            op, new = ops[h][pos[h]]
            if not valid(state, h, op):
                continue
            st = list(state)
            st[h] = new
            p2 = pos[:h] + (pos[h] + 1,) + pos[h + 1:]
            rest = dfs(p2, st)
            if rest is not None:
                return [(h, op, new)] + rest
        dead.add(pos)
        return None

    if all_orders:
        orders: list = []

        def every(pos: tuple, state: list, acc: list) -> None:
            if len(orders) >= 64:
                return
            if all(pos[h] == len(ops[h]) for h in range(H)):
                orders.append(list(acc))
                return
            for h in candidates(pos):
                op, new = ops[h][pos[h]]
                if valid(state, h, op):
                    st = list(state)
                    st[h] = new
                    every(pos[:h] + (pos[h] + 1,) + pos[h + 1:], st, acc + [(h, op, new)])

        every((0,) * H, list(src), [])
        if orders:
            return orders, []
        steps, bad = schedule(src, tgt, view, backward)
        return [steps], bad
    found = dfs((0,) * H, list(src))
    if found is not None:
        return found, []
    # No order realises the model's amounts: greedy in preference order, noting the bad steps.
    steps, bad, pos, state = [], [], (0,) * H, list(src)
    while True:
        cands = candidates(pos)
        if not cands:
            break
        ok = [h for h in cands if valid(state, h, ops[h][pos[h]][0])]
        h = (ok or cands)[0]
        op, new = ops[h][pos[h]]
        if not ok:
            bad.append(h)
        steps.append((h, op, new))
        state[h] = new
        pos = pos[:h] + (pos[h] + 1,) + pos[h + 1:]
    return steps, sorted(set(bad))


def _step_key(kind: str, base: tuple, h: int, pre: tuple, nxt: tuple, src: tuple, tgt: tuple, view: tuple) -> tuple:
    # steps of different conversions merge (errors summed locally, a tensor converted once)
    # only when they are the same operation on the same state *and* the same source layout
    # at that level, as the cost model's (view, layout) de-duplication
    # the view enters as the model's _edge_view does: by size (splits per axis above h)
    return (kind,) + base + (h, pre, nxt, src[h], tgt[h], (view[:h].count(ROWS), view[:h].count(COLS)))


def _sharing(kind: str, base: tuple, src: tuple, tgt: tuple, view: tuple, steps: list, known, memo) -> int:
    """How many of an order's message-moving steps another conversion already ran (shared)."""
    n, cur = 0, tuple(src)
    for h, op, new in steps:
        nxt = cur[:h] + (new,) + cur[h + 1:]
        if op != "slice" and _step_key(kind, base, h, cur, nxt, src, tgt, view) in known:
            n += 1
        cur = nxt
    return n


def _convert(comm: Comm, run_step, memo: dict | None, kind: str, base: tuple, what: str, c: int,
             d: Dist, tgt: tuple, view: tuple, flags: list, known=()) -> Dist:
    """Convert ``d`` to ``tgt``: among the orders that realise the model's per-level amounts, the
    one sharing most steps with conversions of the same tensor already run (``known`` step keys,
    ``memo`` states), else the preferred one."""
    orders, bad = schedule(d.layouts, tgt, view, kind == "bwd", all_orders=True)
    if bad:
        flags.append((kind, what, c, bad, d.layouts, tgt))
    src = d.layouts
    steps = max(orders, key=lambda o: _sharing(kind, base, src, tgt, view, o, known, memo))
    for h, op, new in steps:
        pre = d.layouts
        nxt = pre[:h] + (new,) + pre[h + 1:]
        key = _step_key(kind, base, h, pre, nxt, src, tgt, view)
        # a state another conversion reached is reused only through the same step (the cost
        # model's de-duplication: same tensor, view size and layouts), else moved again
        hit = memo.get(key) if memo is not None and op != "slice" else None
        if hit is not None:
            run_step(key, kind, what, c, lambda: None)
            d = hit
        elif op == "slice":
            d = slice_local(d, h, new)
        else:
            d = run_step(key, kind, what, c, lambda d=d, h=h, new=new: comm.relayout(d, h, new))
        if memo is not None and op != "slice":
            memo[key] = d
    if d.layouts != tgt:
        raise SimulationError(f"{kind} conversion {what} ended in {d.layouts}, wanted {tgt}")
    return d
