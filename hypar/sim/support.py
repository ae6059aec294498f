"""What the simulator can run: every layer, tensor and array setting it cannot, each named, so a
plan is either simulated whole or reported as unsupported (nothing skipped silently).

Coverage: Gemm / MatMul with a weight (also over sequence positions), Conv (im2col; 2-D, grouped
or depthwise too), embeddings (Gather of graph-input ids, or of constant indices:
:mod:`hypar.sim.lookup`), attention MatMuls (batch or heads), residual Add and elementwise
Mul/Sub/Div of two activations (broadcasting a smaller operand along size-1 axes where the op is
a node of the plan: :mod:`hypar.sim.broadcast`), elementwise ops with a constant operand (run
with a seeded scalar; Pow with its constant exponent), Relu/Tanh/Sigmoid/Gelu/Erf/Sqrt/Identity/
Dropout, QuantizeLinear/DequantizeLinear (straight-through: docs/precision.md), Expand (broadcast to a larger shape), ReduceMean/ReduceSum (dims kept or dropped;
partial sums all-reduced over the levels that split a reduced axis), MaxPool/AveragePool/
GlobalAveragePool, Flatten/Reshape/Transpose/(Un)Squeeze, Split and Slice (a crop with positive
steps), Softmax (not over a split axis), LayerNorm, RMSNorm (RMSNormalization /
SimplifiedLayerNormalization over the last axis), the skip norms (SkipSimplifiedLayerNormalization /
SkipLayerNormalization as nodes of the plan: :mod:`hypar.sim.fused`) and BatchNorm (training statistics all-reduced
over the levels that split their axis), LRN over whole channels, Concat along an unsplit axis,
RotaryEmbedding over whole heads, in every partition space (folded ops run locally on the consumer's side, or on the producer's
side before a conversion when they change the shape), with any split sizes under the
hierarchical convention (:mod:`hypar.shards`). Anything else -- and, under the ``reference``
convention, heterogeneous arrays and uneven splits over several levels -- is reported by name in
``SimResult.unsupported`` and nothing is simulated.
"""

from __future__ import annotations

from hypar import graph as G
from hypar.sim.broadcast import broadcast_problem, broadcasting
from hypar.sim.errors import Unsupported
from hypar.sim.fused import is_skip_norm, skip_norm_problem
from hypar.sim.graphwalk import folded_between, pre_chain, producers, tensor_meta, topo_order
from hypar.sim.hierorder import free_axes, is_p_and_rr
from hypar.sim.kernels import pool_supported
from hypar.sim.lookup import lookup_problem
from hypar.sim.norms import rms_axes
from hypar.sim.ops import is_add, is_binary, is_chain_op, is_concat, is_lookup, is_reduce, is_rmsnorm, is_split
from hypar.vocab import Convention


def _gemm(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    t = meta.get(lay.inputs[0]) if lay.inputs else None
    if lay.groups != 1 or t is None or t.feature_axis != len(t.shape) - 1:
        return [f"{n} ({lay.op}): grouped, or features not the last axis"]
    return _kept_weighted(n, lay, kept)


def _kept_weighted(n: str, lay: G.Layer, kept: set) -> list[str]:
    """A weighted layer must be kept (decided) by the cost model."""
    if n not in kept:
        return [f"{n} ({lay.op}): weighted layer not kept by the cost model"]
    return []


def _embedding(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if is_lookup(lay) and n in kept:
        why = lookup_problem(lay, meta[lay.outputs[0]].shape if lay.outputs[0] in meta else None)
        return [why] if why else []
    if lay.op != "Gather" or n not in kept or not lay.inputs or lay.inputs[0] not in input_names:
        return [f"{n} ({lay.op}): only a Gather of graph-input ids or of constant indices is simulated"]
    return []


def _matmul_act(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if n not in kept or len(lay.inputs) != 2:
        return [f"{n} ({lay.op}, kind {lay.kind})"]
    return []


def _conv(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if lay.op != "Conv" or len(lay.kernel) != 2 or tuple(lay.attr("dilations") or (1, 1)) != (1, 1) \
            or (lay.groups > 1 and (lay.d_in % lay.groups or lay.d_out % lay.groups)):
        return [f"{n} ({lay.op}): only 2-D, undilated Conv is simulated"]
    return _kept_weighted(n, lay, kept)


def _other(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if is_skip_norm(lay):
        return skip_norm_problem(n, lay, kept, meta)
    if is_binary(lay) or is_add(lay):
        if not broadcasting(lay, [meta[t].shape for t in lay.inputs if t in meta]):
            return []
        if n not in kept:
            return [f"{n} ({lay.op}): broadcasting two activations folded into an edge (simulated where the op is a "
                    "node of the plan: space full)"]
        why = broadcast_problem(lay, meta) if all(t in meta for t in lay.inputs) else None
        return [why] if why else []
    if lay.op == "Pow" and lay.kind == G.ELEMENTWISE and lay.attr("exponent") is None:
        return [f"{n} (Pow): an exponent that is not a constant scalar"]
    if is_rmsnorm(lay) and lay.inputs[0] in meta and rms_axes(lay, len(meta[lay.inputs[0]].shape)) != \
            (len(meta[lay.inputs[0]].shape) - 1,):
        return [f"{n} ({lay.op}): only an RMS norm over the last axis is simulated"]
    if lay.kind == G.REDUCE and not is_reduce(lay):
        return [f"{n} ({lay.op}, kind reduce): only ReduceMean / ReduceSum over known axes are simulated"]
    if not (is_add(lay) or is_chain_op(lay) or is_split(lay) or is_concat(lay) or is_reduce(lay)):
        return [f"{n} ({lay.op}, kind {lay.kind})"]
    if lay.kind == G.POOL and lay.attr("kernel_shape") is not None and not pool_supported(lay):
        return [f"{n} ({lay.op}): only 2-D pooling without dilations (ceil_mode: MaxPool) is simulated"]
    return []


# layer kind -> check(name, layer, kept names, tensor meta, graph-input names) -> problems
KIND_CHECKS = {G.GEMM: _gemm, G.EMBEDDING: _embedding, G.MATMUL_ACT: _matmul_act, G.CONV: _conv}


def _folded_size_changes(model) -> list[str]:
    """Consumers with an in-edge whose folded ops change the shape after a folded Add: the cost
    model converts the consumer's input, but the ops between need the producer's tensor converted
    (the first such edge per consumer, found before any step runs; the step would find it only
    when it reaches the consumer)."""
    bad, meta, producer = [], tensor_meta(model.g), producers(model.g)
    for i, n in enumerate(model.names):
        folded = folded_between(model, i)
        for e_idx in model.in_edges[i]:
            e = model.edges[e_idx]
            try:
                pre = pre_chain(model, e.p, i, e.slot, folded, producer)
            except Unsupported as exc:
                bad.append(str(exc))
                continue
            conv_t = pre[-1][1] if pre else e.source
            shape = meta[conv_t].shape if conv_t in meta else None
            if shape is not None and tuple(shape) != tuple(e.tensor.shape):
                bad.append(f"{n}: the cost model converts {e.tensor.name} {e.tensor.shape} from {model.names[e.p]}, "
                           f"but the folded ops between need {conv_t} {shape} converted (a size-changing op after "
                           "a folded Add or Concat)")
                break                                   # one line per consumer
    return bad


def _layouts(model, assignment, i: int, field: str, slot: int | None = None) -> tuple:
    """Node i's strategy attribute ``field`` per level (``slot``: an entry of it)."""
    node = model.nodes[i]
    out = []
    for label in assignment[i]:
        v = getattr(node.strategy(label), field)
        out.append(v if slot is None else v[min(slot, len(v) - 1)])
    return tuple(out)


def _edge_pairs(model, assignment, e) -> list[tuple[tuple, tuple]]:
    """The (source, target) layouts of an edge's forward and backward conversions."""
    fwd = (_layouts(model, assignment, e.p, "out_layout"), _layouts(model, assignment, e.c, "in_layouts", e.slot))
    pairs = [fwd]
    if e.needs_error:
        pairs.append((_layouts(model, assignment, e.c, "in_err_layouts", e.slot),
                      _layouts(model, assignment, e.p, "out_err_layout")))
    return pairs


def _unordered_conversions(model, assignment) -> list[str]:
    """Edge conversions (hierarchical convention) with no exact order ("P+RR", or a temporary
    split of a tensor without a batch or feature axis), each naming the consumer, found before any
    step runs."""
    bad = []
    for e in model.edges:
        t = e.tensor
        for src, tgt in _edge_pairs(model, assignment, e):
            if src == tgt:
                continue
            try:
                if is_p_and_rr(src, tgt):
                    raise Unsupported(f"conversion {'/'.join(src)} -> {'/'.join(tgt)}: partial sums with a level "
                                      "replicated in both (P+RR)")
                free_axes((t.batch_axis, t.feature_axis), src, tgt)
            except Unsupported as exc:
                bad.append(f"{model.names[e.c]}: {t.name}: {exc}")
    return bad


def unsupported(model, assignment: list[tuple] | None = None) -> list[str]:
    """What the simulator cannot run on this cost model's graph and array, each naming the layer or
    setting, sorted (empty: all of it runs). With the ``assignment`` under the hierarchical
    convention, also the edge conversions its layouts make that have no exact order (found here,
    before any step runs)."""
    bad: list[str] = []
    arr = model.array
    hierarchical = model.convention == Convention.HIERARCHICAL
    if arr.heterogeneous and arr.n_levels > 1 and not hierarchical:
        # the reference convention only (its per-level views are not what any placement holds); the
        # text is the one its golden verify reports record
        bad.append(f"array {arr.name!r}: heterogeneous PEs over several levels (uneven nested splits are "
                   "not simulated; one heterogeneous level is)")
    g = model.g
    kept = set(model.names)
    meta = tensor_meta(g)
    input_names = {t.name for t in g.graph.get("inputs", ())}
    for n in topo_order(g):
        lay = G.layer(g, n)
        bad += KIND_CHECKS.get(lay.kind, _other)(n, lay, kept, meta, input_names)
    for n in topo_order(g):
        lay = G.layer(g, n)
        bad += [f"{n} ({lay.op}): tensor {t} has no recorded shape"
                for t in lay.outputs[:1] + tuple(lay.inputs) if t not in meta]
    bad += [f"{c}: a folded op reads graph input {tname}"
            for tname, cons in g.graph.get("input_consumers", {}).items() for c in cons if c not in kept]
    for i, n in enumerate(model.names):
        srcs = [(model.edges[e].p, model.edges[e].slot) for e in model.in_edges[i]]
        if len(srcs) != len(set(srcs)):
            bad.append(f"{n}: one producer reaches the same input along two paths")
    if not bad:
        bad += _folded_size_changes(model)
    if not bad and assignment is not None and hierarchical and arr.n_levels > 1:
        bad += _unordered_conversions(model, assignment)
    return sorted(set(bad))
