"""The opset-23 ONNX Attention op (hypar/onnx/expand.py): imported as the ops the ONNX spec gives
for it -- computing what onnx's reference implementation of Attention computes -- with the layer
kinds of a decomposed attention; every other form stays one opaque layer with one warning naming
the node, what it has and what would work. Also: a constant Pow exponent is kept."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnx_blocks as ob
from hypar import graph as G
from hypar.errors import HyparWarning
from hypar.onnx.expand import expand_composites
from hypar.onnx.importer import load_layer_graph


def _kinds(g) -> Counter:
    return Counter(G.layer(g, n).kind for n in g.nodes)


def test_attention_op_becomes_attention_layers():
    model = ob.attention_op()
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        g = load_layer_graph(model)
    assert sum(n.op_type == "Attention" for n in model.graph.node) == 1      # the caller's model untouched
    assert _kinds(g)[G.MATMUL_ACT] == 2 and _kinds(g)[G.SOFTMAX] == 1 and not _kinds(g)[G.OPAQUE]
    scores, ctx = G.layer(g, "sdpa/scores"), G.layer(g, "sdpa")
    assert (scores.heads, scores.d_in, scores.d_out, ctx.heads, ctx.d_in, ctx.d_out) == \
        (ob.H, ob.DH, ob.S, ob.H, ob.S, ob.DH)
    assert scores.macs == ctx.macs == ob.B * ob.H * ob.S * ob.S * ob.DH
    assert [G.layer(g, p).op for p in g.predecessors("sdpa/scores")] == ["Mul", "Transpose"]
    assert list(g.successors("sdpa/scores")) == ["sdpa/softmax"]
    # the heads are the feature axis of every tensor between, so the MatMuls split them (type II)
    for _, _, d in g.in_edges(["sdpa/scores", "sdpa"], data=True):
        assert (d["tensor"].batch_axis, d["tensor"].feature_axis) == (0, 1)


@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}], ids=["default-scale", "scale"])
def test_expansion_computes_what_attention_computes(attrs):
    model = ob.attention_op(**attrs)
    expanded, texts = expand_composites(model, owned=False)
    assert texts == [] and not [n for n in expanded.graph.node if n.op_type == "Attention"]
    x = np.random.default_rng(0).standard_normal((ob.B, ob.S, ob.D)).astype(np.float32)
    want, = ReferenceEvaluator(model).run(None, {"x": x})
    got, = ReferenceEvaluator(expanded).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _attention_model(q: list, k: list, v: list, extra: tuple = (), **attrs) -> onnx.ModelProto:
    """Attention over graph inputs q, k, v (and ``extra`` (name, shape) inputs after them), then
    a MatMul with a weight (so the model has a weighted layer)."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
              [("q", q), ("k", k), ("v", v), *extra]]
    nodes = [helper.make_node("Attention", ["q", "k", "v"] + [n for n, _ in extra], ["a"], name="att", **attrs),
             helper.make_node("MatMul", ["a", "W"], ["y"], name="proj")]
    w = numpy_helper.from_array(np.ones((q[-1], q[-1]), np.float32), "W")
    graph = helper.make_graph(nodes, "att", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


Q4 = [2, 4, 8, 4]
FORMS = {
    "causal": (_attention_model(Q4, Q4, Q4, is_causal=1), "is_causal=1"),
    "softcap": (_attention_model(Q4, Q4, Q4, softcap=30.0), "softcap=30.0"),
    "mask": (_attention_model(Q4, Q4, Q4, extra=(("m", [8, 8]),)), "an attn_mask input"),
    "3-D": (_attention_model([2, 8, 16], [2, 8, 16], [2, 8, 16], q_num_heads=4, kv_num_heads=4),
            "3-D inputs (q_num_heads / kv_num_heads)"),
    "grouped-query": (_attention_model(Q4, [2, 2, 8, 4], [2, 2, 8, 4]), "grouped- or multi-query attention"),
}


@pytest.mark.parametrize("form", FORMS)
def test_other_forms_stay_opaque_with_one_warning(form):
    model, what = FORMS[form]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_layer_graph(model)
    texts = [str(w.message) for w in caught if issubclass(w.category, HyparWarning)]
    assert len(texts) == 1, texts
    assert "Attention at node 'att'" in texts[0] and what in texts[0] and "opset 22 or lower" in texts[0]
    assert G.layer(g, "att").kind == G.OPAQUE and G.layer(g, "att").op == "Attention"


def test_pow_keeps_a_constant_exponent():
    g = load_layer_graph(ob.decomposed_layernorm())
    assert G.layer(g, "ln/pow").attr("exponent") == 2.0
