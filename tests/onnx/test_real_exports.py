"""Real PyTorch exports (dynamo and TorchScript exporters) import with their structure intact.

The ONNX files are committed in tests/fixtures/ (made by scripts/export_fixtures.py with
torch 2.13.0; see tests/fixtures/README.md for what each exporter emits), so no torch is
needed here. Layers are found by structure (kind, shape, graph position), never by the
exporter's node names, which differ between exporters.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from hypar import graph as G
from hypar.errors import HyparWarning, ShapeError
from hypar.onnx import load_layer_graph

from paths import FIXTURES

CNN = ["cnn_dynamo", "cnn_torchscript", "cnn_torchscript_train"]
# Explicit attention (q @ k^T / sqrt(d), softmax, @ v) and SDPA decomposed by the exporter.
TRANSFORMER = [
    "transformer_dynamo", "transformer_torchscript", "transformer_torchscript_opset14",
    "transformer_sdpa_dynamo", "transformer_sdpa_torchscript",
]
DYNBATCH = ["cnn_dynamo_dynbatch", "transformer_dynamo_dynbatch", "transformer_torchscript_dynbatch"]
STATIC = CNN + TRANSFORMER + ["transformer_sdpa_dynamo_opset23"]

B, SEQ, HID, HEADS, HEAD_DIM, FFN, VOCAB = 2, 16, 64, 4, 16, 128, 100


def load(stem: str, **kw) -> nx.DiGraph:
    """Import a fixture; any HyparWarning (an op kept opaque) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        return load_layer_graph(FIXTURES / f"{stem}.onnx", **kw)


def lay(g: nx.DiGraph, n: str) -> G.Layer:
    return G.layer(g, n)


def of_kind(g: nx.DiGraph, kind: str) -> list[str]:
    return [n for n in G.topo_layers(g) if lay(g, n).kind == kind]


def in_tensors(g: nx.DiGraph, n: str) -> list[G.Tensor]:
    """Activation tensors entering ``n`` ordered by slot."""
    got = sorted((min(d["slots"]), d["tensor"]) for _, _, d in g.in_edges(n, data=True))
    return [t for _, t in got]


def out_tensor(g: nx.DiGraph, n: str) -> G.Tensor:
    ts = {d["tensor"] for _, _, d in g.out_edges(n, data=True)}
    assert len(ts) == 1, f"{n} has {len(ts)} distinct output tensors"
    return ts.pop()


def residual_adds(g: nx.DiGraph) -> list[tuple[str, str, str]]:
    """(add, skip_pred, branch_pred): BINARY Adds whose one input is an ancestor of the other."""
    out = []
    for n in of_kind(g, G.BINARY):
        if lay(g, n).op != "Add":
            continue
        preds = list(g.predecessors(n))
        if len(preds) != 2:
            continue
        a, b = preds
        if a in nx.ancestors(g, b):
            out.append((n, a, b))
        elif b in nx.ancestors(g, a):
            out.append((n, b, a))
    return out


def path_nodes(g: nx.DiGraph, src: str, dst: str) -> set[str]:
    """Nodes strictly between src and dst on some path."""
    return (nx.descendants(g, src) & nx.ancestors(g, dst))


# --------------------------------------------------------------------------------------------
# CNN: conv-bn-relu stem, residual block, max-pool, flatten, linear


@pytest.mark.parametrize("stem", CNN)
def test_cnn_decision_layers(stem):
    g = load(stem)
    assert [lay(g, n).kind for n in G.decision_layers(g)] == [G.CONV] * 3 + [G.GEMM]
    convs = of_kind(g, G.CONV)
    assert [(lay(g, n).d_in, lay(g, n).d_out) for n in convs] == [(3, 8), (8, 8), (8, 8)]
    for n in convs:
        c = lay(g, n)
        assert (c.batch, c.kernel, c.groups, c.in_spatial, c.out_spatial) == (B, (3, 3), 1, (16, 16), (16, 16))
        assert c.weight_elements == c.d_in * c.d_out * 9
        assert c.macs == B * c.d_out * 16 * 16 * c.d_in * 9
    (fc,) = of_kind(g, G.GEMM)
    f = lay(g, fc)
    assert (f.batch, f.d_in, f.d_out, f.weight_elements, f.bias_elements) == (B, 512, 10, 5120, 10)
    assert f.macs == B * 512 * 10
    assert not of_kind(g, G.OPAQUE)
    # Graph-level attributes.
    assert g.graph["batch"] == B
    (x,) = g.graph["inputs"]
    assert (x.name, x.shape, x.batch_axis, x.feature_axis) == ("x", (B, 3, 16, 16), 0, 1)
    assert [t.shape for t in g.graph["outputs"]] == [(B, 10)]
    assert g.graph["input_consumers"] == {"x": (convs[0],)}


@pytest.mark.parametrize("stem", CNN)
def test_cnn_residual_add_joins_two_distinct_branches(stem):
    g = load(stem)
    res = residual_adds(g)
    assert len(res) == 1, res
    add, skip, branch = res[0]
    assert lay(g, add).kind == G.BINARY and g.in_degree(add) == 2
    assert skip != branch
    slots = sorted(s for _, _, d in g.in_edges(add, data=True) for s in d["slots"])
    assert slots == [0, 1]
    convs = of_kind(g, G.CONV)
    # The skip is the stem's output; the block's two convs sit only on the other branch.
    assert convs[0] in nx.ancestors(g, skip)
    between = path_nodes(g, skip, branch) | {branch}
    assert set(convs[1:]) <= between
    for t in in_tensors(g, add):
        assert (t.shape, t.batch_axis, t.feature_axis) == ((B, 8, 16, 16), 0, 1)


@pytest.mark.parametrize("stem", CNN)
def test_cnn_pool_flatten_axes(stem):
    g = load(stem)
    (pool,) = of_kind(g, G.POOL)
    assert out_tensor(g, pool).shape == (B, 8, 8, 8)
    (fc,) = of_kind(g, G.GEMM)
    (flat_in,) = in_tensors(g, fc)
    # Flatten (TorchScript) or Reshape [2, 512] (dynamo): channels stay the (outer) feature axis.
    assert (flat_in.shape, flat_in.batch_axis, flat_in.feature_axis) == ((B, 512), 0, 1)
    assert lay(g, next(iter(g.predecessors(fc)))).kind == G.RESHAPE


def test_cnn_batchnorm_kept_in_preserve_mode():
    """TorchScript TrainingMode.PRESERVE keeps BN; its gamma/beta for bn1/bn2 come through
    Identity nodes (deduplicated equal initializers) and must still count as parameters."""
    g = load("cnn_torchscript_train")
    bns = of_kind(g, G.BATCHNORM)
    assert len(bns) == 3
    for bn in bns:
        (p,) = g.predecessors(bn)
        assert lay(g, p).kind == G.CONV
        assert (lay(g, bn).weight_elements, lay(g, bn).bias_elements) == (8, 8)
    assert not [n for n in g.nodes if lay(g, n).op == "Identity"]
    # Eval-mode exports fold BN into the conv (the conv gains a bias).
    g2 = load("cnn_torchscript")
    assert not of_kind(g2, G.BATCHNORM)
    assert all(lay(g2, n).bias_elements == 8 for n in of_kind(g2, G.CONV))


# --------------------------------------------------------------------------------------------
# Transformer: embedding, q/k/v/out, attention, LayerNorm, GELU FFN, residuals, head


def _qkv(g: nx.DiGraph) -> tuple[list[str], str]:
    """The three GEMMs fed by one tensor (q, k, v in ONNX order) and that tensor's producer."""
    by_src: dict[str, list[str]] = {}
    for n in of_kind(g, G.GEMM):
        for p in g.predecessors(n):
            by_src.setdefault(p, []).append(n)
    (src, qkv), = [(p, ns) for p, ns in by_src.items() if len(ns) == 3]
    return qkv, src


@pytest.mark.parametrize("stem", TRANSFORMER)
def test_transformer_decision_layers(stem):
    g = load(stem)
    kinds = Counter(lay(g, n).kind for n in G.decision_layers(g))
    assert kinds == {G.GEMM: 7, G.MATMUL_ACT: 2, G.EMBEDDING: 1}
    assert not of_kind(g, G.OPAQUE)
    gemms = [lay(g, n) for n in of_kind(g, G.GEMM)]
    assert sorted((x.d_in, x.d_out) for x in gemms) == sorted(
        [(HID, HID)] * 4 + [(HID, FFN), (FFN, HID), (HID, VOCAB)])
    for x in gemms:
        assert x.op == "MatMul"  # 3-D Linear -> MatMul + Add with both exporters
        assert (x.batch, x.in_spatial, x.out_spatial) == (B, (SEQ,), (SEQ,))
        assert x.weight_elements == x.d_in * x.d_out
        assert x.bias_elements == x.d_out  # the bias Add folded onto the MatMul
        assert x.macs == B * SEQ * x.d_in * x.d_out
    (emb,) = of_kind(g, G.EMBEDDING)
    e = lay(g, emb)
    assert (e.batch, e.in_spatial, e.weight_elements, e.d_in, e.d_out) == (B, (SEQ,), VOCAB * HID, VOCAB, HID)
    (ids,) = g.graph["inputs"]
    assert (ids.name, ids.shape, ids.batch_axis, ids.feature_axis) == ("ids", (B, SEQ), 0, None)
    assert g.graph["input_consumers"] == {"ids": (emb,)}
    (logits,) = g.graph["outputs"]
    assert (logits.shape, logits.batch_axis, logits.feature_axis) == ((B, SEQ, VOCAB), 0, 2)


@pytest.mark.parametrize("stem", TRANSFORMER)
def test_transformer_qkv_out_ffn_head(stem):
    g = load(stem)
    (emb,) = of_kind(g, G.EMBEDDING)
    qkv, src = _qkv(g)
    assert all((lay(g, n).d_in, lay(g, n).d_out) == (HID, HID) for n in qkv)
    assert emb in nx.ancestors(g, src) | {src}  # q/k/v read the embedding sum (tok + pos)
    scores, ctx = of_kind(g, G.MATMUL_ACT)
    q, k, v = qkv
    assert q in nx.ancestors(g, scores) and k in nx.ancestors(g, scores)
    assert v not in nx.ancestors(g, scores)
    assert v in nx.ancestors(g, ctx) and scores in nx.ancestors(g, ctx)
    rest = [n for n in of_kind(g, G.GEMM) if n not in qkv]
    out, ffn1, ffn2, head = rest
    assert (lay(g, out).d_in, lay(g, out).d_out) == (HID, HID) and ctx in nx.ancestors(g, out)
    assert (lay(g, ffn1).d_out, lay(g, ffn2).d_in, lay(g, head).d_out) == (FFN, FFN, VOCAB)
    # GELU sits between the two FFN layers (one Gelu op, or Erf-based decomposition).
    between = {lay(g, n).op for n in path_nodes(g, ffn1, ffn2)}
    assert "Gelu" in between or "Erf" in between


@pytest.mark.parametrize("stem", TRANSFORMER)
def test_transformer_attention_layers(stem):
    g = load(stem)
    scores, ctx = of_kind(g, G.MATMUL_ACT)
    for n in (scores, ctx):
        a = lay(g, n)
        assert a.heads == HEADS
        assert a.batch == B and a.weight_elements == 0
        assert g.in_degree(n) == 2
        assert a.macs == B * HEADS * SEQ * SEQ * HEAD_DIM
    # scores = q (b,h,s,d) x k^T (b,h,d,s): contraction d, output columns s;
    # context = p (b,h,s,s) x v (b,h,s,d): contraction s, output columns d.
    assert (lay(g, scores).d_in, lay(g, scores).d_out) == (HEAD_DIM, SEQ)
    assert (lay(g, ctx).d_in, lay(g, ctx).d_out) == (SEQ, HEAD_DIM)
    (sm,) = of_kind(g, G.SOFTMAX)
    assert sm in path_nodes(g, scores, ctx)
    assert lay(g, sm).attr("axis") == 3
    assert out_tensor(g, sm).shape == (B, HEADS, SEQ, SEQ)


@pytest.mark.parametrize("stem", TRANSFORMER)
def test_transformer_head_split_axes(stem):
    """graph.py: feature_axis is the head axis once the hidden dim is split into heads.

    q/k/v: (b, s, 64) feature 2 -> Reshape (b, s, 4, 16) feature 2 (heads are the outer part of
    the hidden dim) -> Transpose (b, 4, s, 16) feature 1; both attention matmuls see their two
    operands with batch axis 0 and head axis 1; the context goes back through Transpose
    (b, s, 4, 16) feature 2 and Reshape (b, s, 64) feature 2 into the out projection.
    """
    g = load(stem)
    scores, ctx = of_kind(g, G.MATMUL_ACT)
    for n in (scores, ctx):
        for t in in_tensors(g, n):
            assert len(t.shape) == 4 and t.shape[0] == B and t.shape[1] == HEADS, t
            assert (t.batch_axis, t.feature_axis) == (0, 1), f"{n} input {t}"
        o = out_tensor(g, n)
        assert (o.shape[:2], o.batch_axis, o.feature_axis) == ((B, HEADS), 0, 1)
    qkv, _ = _qkv(g)
    for p in qkv:
        # Follow the projection to its head-split reshape.
        node = p
        while True:
            (node,) = g.successors(node)
            if lay(g, node).kind != G.ELEMENTWISE:  # skip the bias Add (if not folded away)
                break
        assert lay(g, node).op == "Reshape"
        t = out_tensor(g, node)
        assert (t.shape, t.batch_axis, t.feature_axis) == ((B, SEQ, HEADS, HEAD_DIM), 0, 2)
    # Merge: context -> Transpose -> Reshape -> out projection.
    (tr,) = g.successors(ctx)
    assert lay(g, tr).op == "Transpose"
    t = out_tensor(g, tr)
    assert (t.shape, t.batch_axis, t.feature_axis) == ((B, SEQ, HEADS, HEAD_DIM), 0, 2)
    (rs,) = g.successors(tr)
    assert lay(g, rs).kind == G.RESHAPE
    t = out_tensor(g, rs)
    assert (t.shape, t.batch_axis, t.feature_axis) == ((B, SEQ, HID), 0, 2)
    (out,) = g.successors(rs)
    assert lay(g, out).kind == G.GEMM


@pytest.mark.parametrize("stem", TRANSFORMER)
def test_transformer_residual_adds_and_norms(stem):
    g = load(stem)
    res = residual_adds(g)
    assert len(res) == 2, res
    scores, ctx = of_kind(g, G.MATMUL_ACT)
    gemms = of_kind(g, G.GEMM)
    (emb,) = of_kind(g, G.EMBEDDING)
    (a1, skip1, br1), (a2, skip2, br2) = res
    # First residual: embedding sum + attention branch (through q/k/v, attention, out proj).
    assert emb in nx.ancestors(g, skip1) | {skip1}
    assert ctx in path_nodes(g, skip1, br1)
    # Second residual: LN1 output + FFN branch (ffn1, ffn2).
    assert a1 in nx.ancestors(g, skip2)
    assert set(gemms[4:6]) <= path_nodes(g, skip2, br2) | {br2}
    for add in (a1, a2):
        assert lay(g, add).kind == G.BINARY and g.in_degree(add) == 2
        for t in in_tensors(g, add):
            assert (t.shape, t.batch_axis, t.feature_axis) == ((B, SEQ, HID), 0, 2)
    norms = of_kind(g, G.FEATURENORM)
    if stem.endswith("opset14"):
        # LayerNormalization decomposed: mean and variance as ReduceMean over the hidden axis.
        assert not norms
        reds = of_kind(g, G.REDUCE)
        assert len(reds) == 4 and all(lay(g, n).attr("axes") == (2,) for n in reds)
    else:
        assert len(norms) == 2
        for n in norms:
            assert lay(g, n).op == "LayerNormalization" and lay(g, n).attr("axis") == 2
            # ln2's scale/bias are deduplicated: the same initializer (dynamo) or an Identity
            # of ln1's (TorchScript); they are still this layer's parameters.
            assert (lay(g, n).weight_elements, lay(g, n).bias_elements) == (HID, HID)
        assert (a1, norms[0]) in g.edges and (a2, norms[1]) in g.edges


def test_torchscript_sdpa_shape_derived_scale_is_not_in_the_graph():
    """TorchScript SDPA scales q and k^T by sqrt(1/sqrt(d)) computed from Shape(q): the
    Shape/Slice/Cast/Sqrt/Div chain is shape computation and must not appear."""
    g = load("transformer_sdpa_torchscript")
    ops = Counter(lay(g, n).op for n in g.nodes)
    assert not ops.keys() & {"Shape", "Slice", "Cast", "Sqrt", "Constant", "Identity"}
    scores, _ = of_kind(g, G.MATMUL_ACT)
    for p in g.predecessors(scores):
        assert lay(g, p).op == "Mul" and lay(g, p).kind == G.ELEMENTWISE


def test_onnx_attention_op_opset23():
    """dynamo at opset 23 emits one ONNX Attention op for SDPA. The import must not crash and the
    weighted layers and the q/k/v -> out wiring stay intact.

    Changed in issue 10 (H3): the test allowed either an opaque Attention layer (with a warning) or
    attention layers, and looked the layer up by op "Attention" (with three input slots). The
    importer now expands the op (hypar/onnx/expand.py) into what the decomposed SDPA gives: the
    context MatMul keeps the node's name, the scores MatMul reads q and k (k transposed), both are
    attention MatMuls over 4 heads with a Softmax between, and nothing is opaque or warned about."""
    g = load("transformer_sdpa_dynamo_opset23")            # fails on any HyparWarning
    kinds = Counter(lay(g, n).kind for n in G.decision_layers(g))
    assert kinds == {G.GEMM: 7, G.MATMUL_ACT: 2, G.EMBEDDING: 1}
    assert not of_kind(g, G.OPAQUE) and not [n for n in g.nodes if lay(g, n).op == "Attention"]
    att = "node_scaled_dot_product_attention"
    scores, context = of_kind(g, G.MATMUL_ACT)
    assert context == att and lay(g, att).heads == lay(g, scores).heads == 4
    assert [lay(g, p).op for p in g.predecessors(att)] == ["Softmax", "Transpose"]   # probs, v
    assert list(g.predecessors(next(g.predecessors(att)))) == [scores]
    qkv, _ = _qkv(g)
    assert all(q in nx.ancestors(g, scores) for q in qkv[:2]) and qkv[2] not in nx.ancestors(g, scores)
    assert all(q in nx.ancestors(g, att) for q in qkv)
    out = of_kind(g, G.GEMM)[3]
    assert att in nx.ancestors(g, out)


# --------------------------------------------------------------------------------------------
# Symbolic batch: error without --batch, shapes re-derived with it


@pytest.mark.parametrize("stem", DYNBATCH)
def test_symbolic_batch_needs_batch(stem):
    with pytest.raises(ShapeError, match=r"symbolic dim 'batch'.*--batch"):
        load(stem)


@pytest.mark.parametrize("stem", DYNBATCH)
def test_symbolic_batch_bound_to_3(stem):
    static = load(stem.replace("_dynbatch", ""))
    g = load(stem, batch=3)
    assert g.graph["batch"] == 3
    assert all(t.shape[0] == 3 for t in g.graph["inputs"] + g.graph["outputs"])
    for _, _, d in g.edges(data=True):
        t = d["tensor"]
        if t.batch_axis is not None:
            assert t.shape[t.batch_axis] == 3, t
    # Same layers as the static export; the batch and everything proportional to it scale.
    def summary(h, batch):
        rows = []
        for n in G.topo_layers(h):
            x = lay(h, n)
            rows.append((x.kind, x.op, x.d_in, x.d_out, x.heads, x.in_spatial, x.weight_elements,
                         x.bias_elements, x.macs * 6 // batch, x.out_elements * 6 // batch,
                         x.batch and x.batch * 6 // batch))
        return rows
    assert summary(g, 3) == summary(static, B)
    # TorchScript builds the reshape targets from Shape(ids): none of it is a layer, and the
    # Gathers on the shape are not embeddings.
    assert len(of_kind(g, G.EMBEDDING)) == (0 if stem.startswith("cnn") else 1)
    assert not {lay(g, n).op for n in g.nodes} & {"Shape", "Concat", "Unsqueeze", "Constant"}


@pytest.mark.parametrize("stem", DYNBATCH)
def test_symbolic_batch_rejects_bad_batch(stem):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ShapeError):
            load(stem, batch=bad)


# --------------------------------------------------------------------------------------------
# Re-binding the batch of a fixed-batch export (every shape is re-derived)

# The dynamo exporter writes Reshape targets with the literal batch and allowzero=1
# ([2, 16, 4, 16], [2, 512]); TorchScript writes the same targets with allowzero=0.
@pytest.mark.parametrize("stem", STATIC)
def test_fixed_batch_export_rebound_to_3(stem):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HyparWarning)  # opset-23 Attention may be opaque
        static = load_layer_graph(FIXTURES / f"{stem}.onnx")
        g = load_layer_graph(FIXTURES / f"{stem}.onnx", batch=3)
    assert g.graph["batch"] == 3
    assert [lay(g, n).batch for n in G.decision_layers(g)] == [3] * len(G.decision_layers(static))
    assert all(t.shape[0] == 3 for t in g.graph["inputs"] + g.graph["outputs"])
    for n in G.decision_layers(g):
        assert lay(g, n).macs * B == lay(static, n).macs * 3, n


# --------------------------------------------------------------------------------------------
# Generic invariants on every fixture


@pytest.mark.parametrize("stem", STATIC + DYNBATCH)
def test_layer_graph_contract(stem):
    kw = {"batch": 3} if stem in DYNBATCH else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HyparWarning)
        g = load_layer_graph(FIXTURES / f"{stem}.onnx", **kw)
        again = load_layer_graph(FIXTURES / f"{stem}.onnx", **kw)
    assert nx.is_directed_acyclic_graph(g)
    assert list(g.nodes) == G.topo_layers(g)  # insertion order is topological
    assert [lay(g, n) for n in g.nodes] == [lay(again, n) for n in again.nodes]  # deterministic
    for n in g.nodes:
        x = lay(g, n)
        assert x.name == n
        assert x.op not in {"Shape", "Constant", "Range", "ConstantOfShape"}
    for u, v, d in g.edges(data=True):
        t = d["tensor"]
        assert t.name in lay(g, u).outputs and t.name in lay(g, v).inputs
        assert all(lay(g, v).inputs[s] == t.name for s in d["slots"])
        for ax in (t.batch_axis, t.feature_axis):
            assert ax is None or 0 <= ax < len(t.shape)
    # Parameter count: every weighted layer's weights and biases (norm and BN params aside).
    params = sum(lay(g, n).params for n in G.weighted_layers(g))
    if stem.startswith("cnn"):
        assert params == 216 + 576 * 2 + 5120 + 10 + (0 if stem.endswith("train") else 24)
    else:
        assert params == VOCAB * HID + 4 * (HID * HID + HID) + (HID * FFN + FFN) + (FFN * HID + HID) \
            + (HID * VOCAB + VOCAB)
