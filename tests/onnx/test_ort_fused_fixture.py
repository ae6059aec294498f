"""tests/fixtures/decoder_ort_fused.onnx (scripts/make_pattern_fixtures.py): what onnxruntime's
transformer optimizer writes for a 2-block Llama-style decoder -- SimplifiedLayerNormalization,
com.microsoft SkipSimplifiedLayerNormalization, RotaryEmbedding and GroupQueryAttention -- imports
with no op opaque, the decomposed decoder's layer kinds and parameter count, the shapes
onnxruntime runs it with (derived by hand: onnx's reference implementation cannot run
com.microsoft ops), and the Megatron pattern at two tensor-parallel levels."""

from __future__ import annotations

import warnings
from collections import Counter

import onnx
import pytest

from hypar import api
from hypar import graph as G
from hypar.array import array_from_levels
from hypar.errors import HyparWarning
from hypar.onnx import load_layer_graph

from paths import FIXTURES
from test_llm_fixtures import assert_megatron

PATH = FIXTURES / "decoder_ort_fused.onnx"
VOCAB, HIDDEN, HEADS, KV_HEADS, MLP, LAYERS = 128, 64, 4, 2, 128, 2
HEAD = HIDDEN // HEADS
KV = KV_HEADS * HEAD
# embedding + per block (q, k, v, o, gate, up, down, two norm scales) + final norm + lm_head
PARAMS = (VOCAB * HIDDEN + LAYERS * (2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * MLP + 2 * HIDDEN)
          + HIDDEN + HIDDEN * VOCAB)


def load(batch: int = 2, sequence: int = 16):
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)       # an op kept opaque fails the test
        return load_layer_graph(PATH, batch=batch, dims={"sequence": sequence})


def by_module(g, kind: str) -> dict:
    return {G.layer(g, n).module: G.layer(g, n) for n in g.nodes if G.layer(g, n).kind == kind}


def test_fixture_is_the_fused_export():
    m = onnx.load(PATH)
    ops = Counter((n.domain, n.op_type) for n in m.graph.node)
    assert ops[("com.microsoft", "GroupQueryAttention")] == LAYERS and ops[("com.microsoft", "RotaryEmbedding")] == 4
    assert ops[("com.microsoft", "SkipSimplifiedLayerNormalization")] == 2 * LAYERS
    assert ops[("", "SimplifiedLayerNormalization")] == 1
    assert m.doc_string == f"trainable parameters: {PARAMS}" and PARAMS == 90_432   # the dynamo decoder's count


def test_imports_every_layer_and_parameter():
    g = load()
    assert Counter(G.layer(g, n).kind for n in G.decision_layers(g)) == {G.GEMM: 15, G.EMBEDDING: 1, G.MATMUL_ACT: 4}
    assert G.parameter_count(g) == PARAMS
    assert not [n for n in g.nodes if G.layer(g, n).kind == G.OPAQUE]
    assert [t.name for t in g.graph["inputs"]] == ["input_ids"]     # position ids and mask: indices only
    for i in range(LAYERS):
        att = [n for n in g.nodes if n.startswith(f"/model/layers.{i}/self_attn/GroupQueryAttention")
               and G.layer(g, n).kind == G.MATMUL_ACT]
        assert len(att) == 2


def test_fused_norms_and_rotary_are_layers_with_their_parameters():
    g = load()
    norms = by_module(g, G.FEATURENORM)
    assert len(norms) == 2 * LAYERS + 1 and all(n.weight_elements == HIDDEN for n in norms.values())
    skip = norms["model.layers.1.input_layernorm"]
    assert len(skip.inputs) == 2          # the block output and the residual (the first norm's 4th output)
    assert skip.inputs[1].endswith("post_attention_layernorm/SkipLayerNorm_output_3")
    rot = [G.layer(g, n) for n in g.nodes if G.layer(g, n).op == "RotaryEmbedding"]
    assert len(rot) == 4 and all(r.kind == G.ELEMENTWISE and len(r.inputs) == 1 and not r.weight_elements
                                 for r in rot)


@pytest.mark.parametrize("b, s", [(3, 5), (1, 16)])
def test_shapes_are_the_ones_onnxruntime_runs(b, s):
    g = load(b, s)
    shape = {t.name: t.shape for _, _, d in g.edges(data=True) for t in [d["tensor"]]}
    p = "/model/layers.0/self_attn"
    # q/k/v projections (B, S, features); rotary keeps them; GQA's scores (B, H, S, S) and context
    # (B, H, S, D) over the query heads; the merged output (B, S, HIDDEN); logits (B, S, VOCAB)
    assert shape[f"{p}/q_rotary"] == (b, s, HIDDEN) and shape[f"{p}/k_rotary"] == (b, s, KV)
    assert shape[f"{p}/v_proj/MatMul"] == (b, s, KV)
    scores = G.layer(g, f"{p}/GroupQueryAttention/scores")
    assert (scores.attr("lhs_shape"), scores.attr("rhs_shape")) == ((b, HEADS, s, HEAD), (b, HEADS, HEAD, s))
    ctx = G.layer(g, f"{p}/GroupQueryAttention")
    assert (ctx.attr("lhs_shape"), ctx.attr("rhs_shape")) == ((b, HEADS, s, s), (b, HEADS, s, HEAD))
    assert shape[f"{p}/GroupQueryAttention"] == (b, s, HIDDEN)
    assert [t.shape for t in g.graph["outputs"]] == [(b, s, VOCAB)]
    assert (scores.heads, ctx.heads, scores.macs) == (HEADS, HEADS, b * HEADS * s * s * HEAD)


def test_plan_is_megatrons_by_module_name():
    """q/k/v/gate/up split their output features (type III), o/down their input features (type
    II) at both tensor-parallel levels, as for the dynamo export of the same decoder."""
    g = load()
    plan = api.partition("decoder_ort_fused.onnx", array_from_levels([2, 2]), graph=g)
    assert_megatron(plan, LAYERS)
    assert plan["model"]["parameters"] == PARAMS
