"""com.microsoft fused ops of onnxruntime's transformer optimizer (hypar/onnx/expand_ort.py,
hypar/onnx/ops.py): MultiHeadAttention and GroupQueryAttention expanded into the ops they are made
of -- computing what a numpy reference of their spec computes -- with the layer kinds of a
decomposed attention; forms not expressed stay one opaque layer with one warning; RotaryEmbedding
an elementwise layer; the skip norms with their parameters."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from hypar import graph as G
from hypar.errors import HyparWarning
from hypar.onnx.expand import expand_composites
from hypar.onnx.importer import load_layer_graph

B, S, H, KV, D = 2, 5, 4, 2, 3
ORT = "com.microsoft"


def _model(node: onnx.NodeProto, inputs: list[tuple[str, int, list]], out_size: int) -> onnx.ModelProto:
    """``node`` over graph inputs, then a MatMul with a weight (the model has a weighted layer)."""
    vis = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    proj = helper.make_node("MatMul", [node.output[0], "W"], ["y"], name="proj")
    w = numpy_helper.from_array(np.eye(out_size, dtype=np.float32), "W")
    graph = helper.make_graph([node, proj], "fused", vis, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ORT, 1)],
                             ir_version=8)


def mha(**attrs) -> onnx.ModelProto:
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["a"], name="mha", domain=ORT, num_heads=H,
                            **attrs)
    f = TensorProto.FLOAT
    return _model(node, [("q", f, [B, S, H * D]), ("k", f, [B, S, H * D]), ("v", f, [B, S, H * D])], H * D)


def gqa(**attrs) -> onnx.ModelProto:
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"], ["a"], name="gqa",
                            domain=ORT, num_heads=H, kv_num_heads=KV, **attrs)
    f = TensorProto.FLOAT
    return _model(node, [("q", f, [B, S, H * D]), ("k", f, [B, S, KV * D]), ("v", f, [B, S, KV * D]),
                         ("seqlens_k", TensorProto.INT32, [B]), ("total", TensorProto.INT32, [])], H * D)


def reference(q, k, v, heads: int, kv_heads: int, scale: float | None, causal: bool) -> np.ndarray:
    """The specs' attention in numpy: heads split from the last axis, query head h reading key /
    value head h // (heads / kv_heads), softmax(q k^T * scale) with keys after the query masked
    when causal, heads merged."""
    def split(x, n):
        return x.reshape(x.shape[0], x.shape[1], n, -1).transpose(0, 2, 1, 3)
    qh, kh, vh = split(q, heads), split(k, kv_heads), split(v, kv_heads)
    kh, vh = (np.repeat(t, heads // kv_heads, axis=1) for t in (kh, vh))
    scale = scale or 1.0 / np.sqrt(qh.shape[-1])
    s = qh @ kh.transpose(0, 1, 3, 2) * scale
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], -1)


def _run_expanded(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    expanded, texts = expand_composites(model, owned=False)
    assert texts == [] and not [n for n in expanded.graph.node if n.domain == ORT]
    names = {i.name for i in expanded.graph.input}
    # the expanded graph no longer reads seqlens_k / total: feed only what it has
    out, = ReferenceEvaluator(expanded).run(["a"], {k: x for k, x in feeds.items() if k in names})
    return out


def _qkv(kv_heads: int) -> dict:
    rng = np.random.default_rng(0)
    return {"q": rng.standard_normal((B, S, H * D)).astype(np.float32),
            "k": rng.standard_normal((B, S, kv_heads * D)).astype(np.float32),
            "v": rng.standard_normal((B, S, kv_heads * D)).astype(np.float32)}


@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}, {"unidirectional": 1}], ids=["default", "scale", "causal"])
def test_mha_expansion_computes_what_the_spec_says(attrs):
    feeds = _qkv(H)
    got = _run_expanded(mha(**attrs), feeds)
    want = reference(feeds["q"], feeds["k"], feeds["v"], H, H, attrs.get("scale"), bool(attrs.get("unidirectional")))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}, {"causal": 0}], ids=["causal-default", "scale", "bidirectional"])
def test_gqa_expansion_computes_what_the_spec_says(attrs):
    feeds = _qkv(KV)
    feeds.update(seqlens_k=np.full(B, S - 1, np.int32), total=np.array(S, np.int32))
    got = _run_expanded(gqa(**attrs), feeds)
    want = reference(feeds["q"], feeds["k"], feeds["v"], H, KV, attrs.get("scale"), bool(attrs.get("causal", 1)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _kinds(g) -> Counter:
    return Counter(G.layer(g, n).kind for n in g.nodes)


@pytest.mark.parametrize("build, name", [(mha, "mha"), (gqa, "gqa")])
def test_fused_attention_becomes_attention_layers(build, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        g = load_layer_graph(build())
    kinds = _kinds(g)
    assert kinds[G.MATMUL_ACT] == 2 and kinds[G.SOFTMAX] == 1 and not kinds[G.OPAQUE]
    scores, ctx = G.layer(g, f"{name}/scores"), G.layer(g, name)
    assert (scores.heads, scores.d_in, scores.d_out, ctx.heads, ctx.d_in, ctx.d_out) == (H, D, S, H, S, D)
    assert scores.macs == ctx.macs == B * H * S * S * D
    for _, _, d in g.in_edges([f"{name}/scores", name], data=True):    # heads are the feature axis (type II)
        assert (d["tensor"].batch_axis, d["tensor"].feature_axis) == (0, 1)
    assert "seqlens_k" not in {t.name for t in g.graph["inputs"]}


FORMS = {
    "mha-bias": (lambda: _with_inputs(mha(), ["q", "k", "v", "W"]), "MultiHeadAttention", "a bias input"),
    "mha-packed": (lambda: _with_inputs(mha(), ["q"]), "MultiHeadAttention", "packed QKV"),
    "gqa-rotary": (lambda: gqa(do_rotary=1), "GroupQueryAttention", "do_rotary=1"),
    "gqa-past": (lambda: _with_inputs(gqa(), ["q", "k", "v", "k", "v", "seqlens_k", "total"]),
                 "GroupQueryAttention", "a past_key input, a past_value input"),
    "gqa-window": (lambda: gqa(local_window_size=2), "GroupQueryAttention", "local_window_size=2"),
}


def _with_inputs(model: onnx.ModelProto, inputs: list[str]) -> onnx.ModelProto:
    del model.graph.node[0].input[:]
    model.graph.node[0].input.extend(inputs)
    return model


@pytest.mark.parametrize("form", FORMS)
def test_other_forms_stay_opaque_with_one_warning(form):
    build, op, what = FORMS[form]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_layer_graph(build())
    texts = [str(w.message) for w in caught if issubclass(w.category, HyparWarning)]
    assert len(texts) == 1, texts
    assert f"com.microsoft::{op} at node" in texts[0] and what in texts[0] and "hypar reads" in texts[0]
    assert any(G.layer(g, n).kind == G.OPAQUE and G.layer(g, n).op == op for n in g.nodes)
