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
every PE of every group; forward conversions run in the consumer's view (top level first, after
slicing locally wherever the producer holds a replica), backward conversions bottom level first;
partial sums are all-reduced (reduce-scatter of flat chunks + all-gather, hierarchically over
several levels); a conversion of one producer tensor that reaches the same state for several
consumers is executed once and charged to the first consumer; errors of several consumers in the
same state are summed locally and converted once.

Shards: the index ``r`` of a split axis of size ``N`` lies in block ``r // (N / P)`` (``P`` =
number of PEs) whose mixed-radix digits (top level first) say which subgroup holds it at each
level, so a split at one level is independent of the splits at the others. This needs every split
axis to divide by ``P`` and equal subgroups; other cases are reported as unsupported.

Coverage: decision-layer graphs (spaces ``hypar`` / ``accpar``) of Gemm / MatMul-with-weight
layers with residual Adds folded into the edges. Anything else is reported by name in
``SimResult.unsupported`` and nothing is simulated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from math import prod

import numpy as np

from hypar import graph as G
from hypar.array import split_counts
from hypar.strategies import COLS, FULL, PARTIAL, ROWS

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

    @property
    def ok_numerics(self) -> list[bool]:
        return [e <= self.tol * max(1.0, s) for e, s in zip(self.max_err, self.scale)]


# ----------------------------------------------------------------------------- the mesh

class Mesh:
    """P virtual PEs; PE p has one coordinate per level (its subgroup index there, top first)."""

    def __init__(self, fanouts: tuple[int, ...]):
        self.fanouts = tuple(fanouts)
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

    def __init__(self, mesh: Mesh, shape: tuple[int, int], layouts: tuple[str, ...], vals: list[np.ndarray]):
        self.mesh, self.shape, self.layouts, self.vals = mesh, shape, tuple(layouts), vals

    def copy(self) -> "Dist":
        return Dist(self.mesh, self.shape, self.layouts, [v.copy() for v in self.vals])


def shard_mask(mesh: Mesh, shape: tuple[int, int], layouts: tuple[str, ...], p: int) -> np.ndarray:
    rd, cd = mesh.axis_digits(shape[0]), mesh.axis_digits(shape[1])
    r = np.ones(shape[0], bool)
    c = np.ones(shape[1], bool)
    for h, lay in enumerate(layouts):
        if lay == ROWS:
            r &= rd[h] == mesh.coords[p][h]
        elif lay == COLS:
            c &= cd[h] == mesh.coords[p][h]
    return np.outer(r, c)


def axis_mask(mesh: Mesh, n: int, levels: list[int], p: int) -> np.ndarray:
    d = mesh.axis_digits(n)
    m = np.ones(n, bool)
    for h in levels:
        m &= d[h] == mesh.coords[p][h]
    return m


def scatter(mesh: Mesh, full: np.ndarray, layouts: tuple[str, ...]) -> Dist:
    """Load a whole tensor into a layout (graph inputs, output errors: free). No PARTIAL."""
    vals = []
    for p in range(mesh.P):
        v = np.full(full.shape, np.nan)
        m = shard_mask(mesh, full.shape, layouts, p)
        v[m] = full[m]
        vals.append(v)
    return Dist(mesh, full.shape, layouts, vals)


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
            want = shard_mask(mesh, d.shape, layouts, p)
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
        return Dist(mesh, d.shape, layouts, out)

    def reduce_scatter_to(self, d: Dist, h: int, new: str) -> Dist:
        """Partial sums over level h -> full sums of each PE's level-h shard in layout ``new``."""
        mesh = d.mesh
        layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
        out = []
        for group in mesh.sibling_groups(h):
            self._regions(d, group)
        for p in range(mesh.P):
            want = shard_mask(mesh, d.shape, layouts, p)
            if np.isnan(d.vals[p][want]).any():
                raise SimulationError(f"PE {p} lacks part of its partial shard at level {h}")
            v = np.full(d.shape, np.nan)
            v[want] = d.vals[p][want]
            for q in self._siblings(p, h):
                self.send(h, q, p, want.sum())
                v[want] += d.vals[q][want]
            out.append(v)
        return Dist(mesh, d.shape, layouts, out)

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
        return Dist(mesh, d.shape, d.layouts, vals), saved

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
        return Dist(mesh, d.shape, d.layouts, vals)

    def allreduce(self, d: Dist, h: int) -> Dist:
        d2, saved = self.reduce_scatter(d, h)
        d3 = self.all_gather_flat(d2, h, saved)
        return Dist(d.mesh, d.shape, d.layouts[:h] + (FULL,) + d.layouts[h + 1:], d3.vals)

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
        return Dist(d.mesh, d.shape, layouts, d.vals)


def slice_local(d: Dist, h: int, new: str) -> Dist:
    """FULL -> anything at level h: drop what the PE does not keep (no messages)."""
    assert d.layouts[h] == FULL
    layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
    out = []
    for p in range(d.mesh.P):
        m = shard_mask(d.mesh, d.shape, layouts, p)
        v = np.full(d.shape, np.nan)
        v[m] = d.vals[p][m]
        if np.isnan(v[m]).any():
            raise SimulationError(f"PE {p} lacks part of a replicated shard at level {h}")
        out.append(v)
    return Dist(d.mesh, d.shape, layouts, out)


def add(a: Dist | None, b: Dist) -> Dist:
    if a is None:
        return b
    if a.layouts != b.layouts:
        raise SimulationError(f"adding tensors in layouts {a.layouts} and {b.layouts}")
    return Dist(a.mesh, a.shape, a.layouts, [x + y for x, y in zip(a.vals, b.vals)])


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

def _supported(model) -> list[str]:
    """Names of what the simulator cannot run on this model (empty: all supported)."""
    bad: list[str] = []
    arr = model.array
    if model.space == "full":
        bad.append(f"space 'full' (non-weighted nodes with their own layouts); verify with space accpar or hypar")
    if arr.heterogeneous:
        bad.append(f"heterogeneous array {arr.name!r} (uneven throughput splits)")
    P = arr.n_pes
    g = model.g
    kept = set(model.names)
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        if n in kept:
            if lay.kind != G.GEMM or lay.groups != 1 or lay.in_spatial or lay.out_spatial:
                bad.append(f"{n} ({lay.op}, kind {lay.kind})")
                continue
            for ax, size in (("batch", lay.batch), ("d_in", lay.d_in), ("d_out", lay.d_out)):
                if size % P:
                    bad.append(f"{n} ({lay.op}): {ax} {size} does not divide over {P} PEs (uneven split)")
        elif not (lay.kind == G.BINARY and lay.op == "Add"):
            bad.append(f"{n} ({lay.op}, kind {lay.kind})")
    for i, n in enumerate(model.names):
        ins = [e for e in model.in_edges[i]]
        srcs = [model.edges[e].p for e in ins]
        if len(srcs) != len(set(srcs)):
            bad.append(f"{n}: a producer reaches it along two paths")
        lay = G.layer(g, n)
        fed_by_input = any(n in cons for cons in g.graph.get("input_consumers", {}).values())
        if fed_by_input and ins:
            bad.append(f"{n}: mixes a graph input with layer outputs")
        if any(model.edges[e].slot != 0 for e in ins):
            bad.append(f"{n}: more than one activation input")
    for lst in g.graph.get("input_consumers", {}).values():
        for c in lst:
            if c not in kept:
                bad.append(f"{c}: a folded op reads a graph input")
    return bad


def _reference(g, weights: dict, inputs: dict, out_err: dict):
    """One-device training step on the full layer graph: values, errors, weight gradients."""
    order = G.topo_layers(g)
    val: dict[str, np.ndarray] = dict(inputs)
    for n in order:
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            val[lay.outputs[0]] = val[lay.inputs[0]] @ weights[n]
        else:  # Add
            val[lay.outputs[0]] = sum(val[t] for t in lay.inputs)
    err: dict[str, np.ndarray] = defaultdict(lambda: 0.0)
    for t, e in out_err.items():
        err[t] = err[t] + e
    dW = {}
    for n in reversed(order):
        lay = G.layer(g, n)
        e_out = err[lay.outputs[0]]
        if isinstance(e_out, float):
            e_out = np.zeros_like(val[lay.outputs[0]])
        if lay.kind == G.GEMM:
            x = val[lay.inputs[0]]
            dW[n] = x.T @ e_out
            err[lay.inputs[0]] = err[lay.inputs[0]] + e_out @ weights[n].T
        else:
            for t in lay.inputs:
                err[t] = err[t] + e_out
    return val, err, dW


def _kept_output_sources(model, tname: str) -> list[int]:
    g = model.g
    prod_ = [n for n in g.nodes if tname in G.layer(g, n).outputs]
    if not prod_:
        return []
    return [model.index[n] for n in model._kept_sources(prod_[0])]


# ----------------------------------------------------------------------------- the step

def simulate(model, assignment: list[tuple], seed: int = 0, tol: float = DEFAULT_TOL) -> SimResult:
    """Reference step vs distributed step of ``assignment`` on ``model``'s graph and array."""
    names = list(model.names)
    H = model.n_levels
    res = SimResult(names, H, model.array.dtype_bytes, tol=tol)
    res.unsupported = _supported(model)
    if res.unsupported:
        return res
    model.check_assignment(assignment)
    g = model.g
    mesh = Mesh(model.array.fanouts)
    comm = Comm(mesh)
    rng = np.random.default_rng(seed)

    # Data: seeded weights (scaled so activations stay O(1)), inputs and output errors.
    weights = {}
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out)) / np.sqrt(lay.d_in)
    inputs = {t.name: rng.standard_normal(t.shape) for t in g.graph.get("inputs", ())}
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

    def levels_of(i: int, axis: str) -> list[int]:
        return [h for h in range(H) if strat[i][h].split_axis == axis]

    # -- forward
    fwd_memo: dict[tuple, Dist] = {}
    f_in: dict[int, Dist] = {}
    f_out: dict[int, Dist] = {}
    for i, n in enumerate(names):
        lay = G.layer(g, n)
        B, Di, Do = lay.batch, lay.d_in, lay.d_out
        dst = tuple(strat[i][h].in_layouts[0] for h in range(H))
        if not model.in_edges[i]:
            x = inputs[lay.inputs[0]]
            f_in[i] = scatter(mesh, x, dst)
        else:
            total = None
            for e_idx in model.in_edges[i]:
                e = model.edges[e_idx]
                src = f_out[e.p]
                what = f"{names[e.p]}:{e.source} -> {n}"
                total = add(total, _convert(comm, run_step, fwd_memo, "fwd", (e.p, e.source), what, i,
                                            src, dst, dst, res.flags))
            f_in[i] = total
        # local products
        R, I_, O = levels_of(i, "b"), levels_of(i, "i"), levels_of(i, "o")
        vals = []
        for p in range(mesh.P):
            rm, im, om = axis_mask(mesh, B, R, p), axis_mask(mesh, Di, I_, p), axis_mask(mesh, Do, O, p)
            xb = f_in[i].vals[p][np.ix_(rm, im)]
            if np.isnan(xb).any():
                raise SimulationError(f"{n}: PE {p} lacks part of its input shard")
            v = np.full((B, Do), np.nan)
            v[np.ix_(rm, om)] = xb @ weights[n][np.ix_(im, om)]
            vals.append(v)
        lays = tuple({"b": ROWS, "i": PARTIAL, "o": COLS}[strat[i][h].split_axis] for h in range(H))
        d = Dist(mesh, (B, Do), lays, vals)
        d = run_step(("intra", i, "F_out"), "intra", "F_out", i, lambda d=d: comm.allreduce_levels(d))
        out_l = tuple(strat[i][h].out_layout for h in range(H))
        if d.layouts != out_l:
            raise SimulationError(f"{n}: output layouts {d.layouts} differ from the strategy's {out_l}")
        f_out[i] = d

    # -- backward (reverse order); errors of a node's output accumulate in its needed layout
    e_out: dict[int, Dist | None] = {i: None for i in range(len(names))}
    for t in g.graph.get("outputs", ()):
        for i in _kept_output_sources(model, t.name):
            lays = tuple(strat[i][h].out_err_layout for h in range(H))
            e_out[i] = add(e_out[i], scatter(mesh, out_err[t.name], lays))
    max_err = [0.0] * len(names)
    scale = [0.0] * len(names)
    for i in reversed(range(len(names))):
        n = names[i]
        lay = G.layer(g, n)
        B, Di, Do = lay.batch, lay.d_in, lay.d_out
        lays = tuple(strat[i][h].out_err_layout for h in range(H))
        if e_out[i] is None:
            e_out[i] = scatter(mesh, np.zeros((B, Do)), lays)
        eo = e_out[i]
        R, I_, O = levels_of(i, "b"), levels_of(i, "i"), levels_of(i, "o")
        dw_vals, ei_vals = [], []
        for p in range(mesh.P):
            rm, im, om = axis_mask(mesh, B, R, p), axis_mask(mesh, Di, I_, p), axis_mask(mesh, Do, O, p)
            eb = eo.vals[p][np.ix_(rm, om)]
            xb = f_in[i].vals[p][np.ix_(rm, im)]
            if np.isnan(eb).any():
                raise SimulationError(f"{n}: PE {p} lacks part of its output-error shard")
            v = np.full((Di, Do), np.nan)
            v[np.ix_(im, om)] = xb.T @ eb
            dw_vals.append(v)
            w = np.full((B, Di), np.nan)
            w[np.ix_(rm, im)] = eb @ weights[n][np.ix_(im, om)].T
            ei_vals.append(w)
        dlays = tuple({"b": PARTIAL, "i": ROWS, "o": COLS}[strat[i][h].split_axis] for h in range(H))
        dw = Dist(mesh, (Di, Do), dlays, dw_vals)
        dw = run_step(("intra", i, "dW"), "intra", "dW", i, lambda dw=dw: comm.allreduce_levels(dw))
        # checks on this node
        errs = []
        ref_out = ref_val[lay.outputs[0]]
        errs.append(_dist_err(f_out[i], ref_out))
        errs.append(_dist_err(dw, ref_dW[n]))
        ref_eo = ref_err[lay.outputs[0]]
        errs.append(_dist_err(eo, ref_eo if not isinstance(ref_eo, float) else np.zeros((B, Do))))
        max_err[i] = max(errs)
        scale[i] = max(float(np.abs(ref_out).max(initial=0)), float(np.abs(ref_dW[n]).max(initial=0)))
        if not model.in_edges[i]:
            continue
        elays = tuple(strat[i][h].in_err_layouts[0] for h in range(H))
        ein = Dist(mesh, (B, Di), elays, ei_vals)
        for e_idx in model.in_edges[i]:
            e = model.edges[e_idx]
            if not e.needs_error:
                continue
            tgt = tuple(strat[e.p][h].out_err_layout for h in range(H))
            what = f"{n} -> {names[e.p]}:{e.source}"
            conv = _convert(comm, run_step, None, "bwd", (e.p, e.source), what, i, ein, tgt, elays, res.flags)
            e_out[e.p] = add(e_out[e.p], conv)

    # attribute counts: intra to the node, edge conversions to their first consumer
    for key, rec in keyed.items():
        node = min(rec["nodes"])
        for h, c in enumerate(rec["counts"]):
            if c:
                counted[node][h] += c
                res.transfers.append(Transfer(rec["kind"], rec["what"], h, c, node))
    res.counted = counted
    res.max_err = max_err
    res.scale = scale
    return res


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


def schedule(src: tuple, tgt: tuple, view: tuple, backward: bool) -> tuple[list[tuple[int, str, str]], list[int]]:
    """Order the per-level operations converting layouts ``src`` into ``tgt``.

    The cost model prices level h's conversion on the consumer's view there (``view``: the
    consumer's layouts, unsplit where full or partial). An order *realises* those amounts when
    every message-moving operation at level h runs while (1) each level above has the split-ness
    of ``view`` and (2) each level below is sharded (a replica or an unreduced partial below would
    make every copy move its own data). Returns (steps (level, op, new layout), levels of the
    steps that break (1)/(2)); the second list is empty when such an order exists.
    Preference: forward top level first with replicas sliced early, backward bottom level first.
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


def _convert(comm: Comm, run_step, memo: dict | None, kind: str, base: tuple, what: str, c: int,
             d: Dist, tgt: tuple, view: tuple, flags: list) -> Dist:
    steps, bad = schedule(d.layouts, tgt, view, kind == "bwd")
    if bad:
        flags.append((kind, what, c, bad, d.layouts, tgt))
    src = d.layouts
    for h, op, new in steps:
        pre = d.layouts
        nxt = pre[:h] + (new,) + pre[h + 1:]
        # steps of different conversions merge (errors summed locally, a tensor converted once)
        # only when they are the same operation on the same state *and* the same source layout
        # at that level, as the cost model's (view, layout) de-duplication
        key = (kind,) + base + (h, pre, nxt, src[h], view[:h])
        hit = memo.get(base + (nxt,)) if memo is not None else None
        if hit is not None:
            run_step(key, kind, what, c, lambda: None)
            d = hit
        elif op == "slice":
            d = slice_local(d, h, new)
        else:
            d = run_step(key, kind, what, c, lambda d=d, h=h, new=new: comm.relayout(d, h, new))
        if memo is not None:
            memo[base + (nxt,)] = d
    if d.layouts != tgt:
        raise SimulationError(f"{kind} conversion {what} ended in {d.layouts}, wanted {tgt}")
    return d
