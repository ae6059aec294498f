"""What the simulator can run: every layer, tensor and array setting it cannot, each named, so a
plan is either simulated whole or reported as unsupported (nothing skipped silently).

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

from hypar import graph as G
from hypar.sim.graphwalk import tensor_meta
from hypar.sim.ops import is_add, is_binary, is_chain_op, is_split


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
    if lay.op != "Gather" or n not in kept or lay.inputs[0] not in input_names:
        return [f"{n} ({lay.op}): only a Gather of graph-input ids is simulated"]
    return []


def _matmul_act(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if n not in kept or len(lay.inputs) != 2:
        return [f"{n} ({lay.op}, kind {lay.kind})"]
    return []


def _conv(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if lay.op != "Conv" or lay.groups != 1 or len(lay.kernel) != 2 \
            or tuple(lay.attr("dilations") or (1, 1)) != (1, 1):
        return [f"{n} ({lay.op}): only 2-D, ungrouped, undilated Conv is simulated"]
    return _kept_weighted(n, lay, kept)


def _other(n: str, lay: G.Layer, kept: set, meta: dict, input_names: set) -> list[str]:
    if is_binary(lay):
        if len({meta[t].shape for t in lay.inputs if t in meta}) != 1:
            return [f"{n} ({lay.op}): broadcasting two activations"]
        return []
    if not (is_add(lay) or is_chain_op(lay) or is_split(lay)):
        return [f"{n} ({lay.op}, kind {lay.kind})"]
    return []


# layer kind -> check(name, layer, kept names, tensor meta, graph-input names) -> problems
KIND_CHECKS = {G.GEMM: _gemm, G.EMBEDDING: _embedding, G.MATMUL_ACT: _matmul_act, G.CONV: _conv}


def unsupported(model) -> list[str]:
    """What the simulator cannot run on this cost model's graph and array, each naming the layer or
    setting, sorted (empty: all of it runs)."""
    bad: list[str] = []
    arr = model.array
    if arr.heterogeneous and arr.n_levels > 1:
        bad.append(f"array {arr.name!r}: heterogeneous PEs over several levels (uneven nested splits are "
                   "not simulated; one heterogeneous level is)")
    g = model.g
    kept = set(model.names)
    meta = tensor_meta(g)
    input_names = {t.name for t in g.graph.get("inputs", ())}
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        bad += KIND_CHECKS.get(lay.kind, _other)(n, lay, kept, meta, input_names)
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        bad += [f"{n} ({lay.op}): tensor {t} has no recorded shape"
                for t in lay.outputs[:1] + tuple(lay.inputs) if t not in meta]
    bad += [f"{c}: a folded op reads graph input {tname}"
            for tname, cons in g.graph.get("input_consumers", {}).items() for c in cons if c not in kept]
    for i, n in enumerate(model.names):
        srcs = [(model.edges[e].p, model.edges[e].slot) for e in model.in_edges[i]]
        if len(srcs) != len(set(srcs)):
            bad.append(f"{n}: one producer reaches the same input along two paths")
    return sorted(set(bad))
