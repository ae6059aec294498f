"""Real torch 2.13 exports of current model blocks (scripts/fixture_llm.py, exported by
scripts/export_fixtures.py; committed, so no torch is needed here):

- decoder_dynamo / decoder_dynamo_opset23: a Llama-style decoder (GQA with 4 query and 2 key/value
  heads, RMSNorm -- decomposed at the default opset, ``RMSNormalization`` at 23 --, rotary
  embeddings, SwiGLU), batch and sequence symbolic;
- windowed_vit_torchscript: a windowed-attention ViT through the TorchScript exporter with
  ``dynamic_axes`` batch, height and width (the window padding is computed at run time).

Every one imports with no op kept opaque, with the model's exact layer kinds and parameter count
(derived by hand below, equal to torch's ``sum(p.numel() for p in model.parameters())``), and
with the shapes onnx's reference implementation runs it with.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from hypar import api
from hypar import graph as G
from hypar.array import array_from_levels
from hypar.errors import HyparWarning, ShapeError
from hypar.onnx import load_layer_graph

from onnx_runs import graph_shapes, run_shapes
from paths import FIXTURES

DECODERS = ["decoder_dynamo", "decoder_dynamo_opset23"]
VOCAB, HIDDEN, KV, MLP, LAYERS = 128, 64, 32, 128, 2
# embedding + per block (q, k, v, o, gate, up, down, two RMSNorm scales) + final norm + lm_head
DECODER_PARAMS = (VOCAB * HIDDEN
                  + LAYERS * (2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * MLP + 2 * HIDDEN)
                  + HIDDEN + HIDDEN * VOCAB)
# patch conv (32x3x4x4 + 32), two LayerNorms, qkv (32x96 + 96), the 7x7x2 bias table, proj, fc1, fc2, head
VIT_PARAMS = (32 * 48 + 32) + 2 * 64 + (32 * 96 + 96) + 49 * 2 + (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10)


def load(stem: str, **kw):
    """Import a fixture; a HyparWarning (an op kept opaque) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        return load_layer_graph(FIXTURES / f"{stem}.onnx", **kw)


def kinds(g) -> Counter:
    return Counter(G.layer(g, n).kind for n in G.decision_layers(g))


def test_hand_derived_counts_are_the_models():
    assert DECODER_PARAMS == 90_432 and VIT_PARAMS == 10_540   # torch's counts when exported


@pytest.mark.parametrize("stem", DECODERS)
def test_decoder_imports_every_layer_and_parameter(stem):
    g = load(stem, batch=2, dims={"sequence": 16})
    assert kinds(g) == {G.GEMM: 15, G.EMBEDDING: 1, G.MATMUL_ACT: 4}
    assert G.parameter_count(g) == DECODER_PARAMS
    assert not [n for n in g.nodes if G.layer(g, n).kind == G.OPAQUE]


@pytest.mark.parametrize("stem", DECODERS)
def test_decoder_layers_carry_the_module_paths(stem):
    g = load(stem, batch=2, dims={"sequence": 16})
    gemms = {G.layer(g, n).module: G.layer(g, n) for n in G.decision_layers(g) if G.layer(g, n).kind == G.GEMM}
    k = gemms["model.layers.1.self_attn.k_proj"]
    assert (k.d_in, k.d_out) == (HIDDEN, KV)                       # GQA: 2 heads of 16
    assert (gemms["model.layers.0.mlp.down_proj"].d_in, gemms["lm_head"].d_out) == (MLP, VOCAB)
    assert len(gemms) == 15


@pytest.mark.parametrize("stem", DECODERS)
def test_decoder_shapes_are_the_ones_it_runs_with(stem):
    g = load(stem, batch=3, dims={"sequence": 5})
    ran = run_shapes(FIXTURES / f"{stem}.onnx", {"input_ids": np.zeros((3, 5), np.int64)})
    got = graph_shapes(g)
    assert got and all(ran[t] == s for t, s in got.items()), {t: (s, ran[t]) for t, s in got.items() if ran[t] != s}


def test_decoder_unbound_error_names_both_dims_and_the_flags():
    with pytest.raises(ShapeError) as err:
        load_layer_graph(FIXTURES / "decoder_dynamo.onnx")
    text = str(err.value)
    assert "'batch' at axis 0" in text and "'sequence' at axis 1" in text
    assert "--dim sequence=SEQUENCE" in text and "--input-shape input_ids=" in text


def test_decoder_plan_is_megatrons_by_module_name():
    """Two tensor-parallel levels: q/k/v/gate/up split their output features (type III), o/down
    their input features (type II), so each block talks once after attention and once after the
    MLP, and the plan says so under the names the user knows."""
    g = load("decoder_dynamo", batch=2, dims={"sequence": 16})
    plan = api.partition("decoder_dynamo.onnx", array_from_levels([2, 2]), graph=g)
    types = {row["module"]: row["types"] for row in plan["layers"] if row["kind"] == G.GEMM}
    for i in range(LAYERS):
        blk = f"model.layers.{i}"
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            assert types[f"{blk}.{m}"] == ["III", "III"], (m, types[f"{blk}.{m}"])
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            assert types[f"{blk}.{m}"] == ["II", "II"], (m, types[f"{blk}.{m}"])
    assert plan["model"]["parameters"] == DECODER_PARAMS


@pytest.mark.parametrize("hw", [(24, 40), (16, 16), (36, 20)])
def test_windowed_vit_imports_at_any_size_with_its_parameters(hw):
    h, w = hw                                             # 24x40: 6x10 patches, padded to 8x12
    g = load("windowed_vit_torchscript", batch=2, dims={"height": h, "width": w})
    assert kinds(g) == {G.CONV: 1, G.GEMM: 5, G.EMBEDDING: 1, G.MATMUL_ACT: 2}
    assert G.parameter_count(g) == VIT_PARAMS
    ran = run_shapes(FIXTURES / "windowed_vit_torchscript.onnx",
                     {"pixel_values": np.zeros((2, 3, h, w), np.float32)})
    got = graph_shapes(g)
    assert all(ran[t] == s for t, s in got.items()), {t: (s, ran[t]) for t, s in got.items() if ran[t] != s}
    table = next(G.layer(g, n) for n in G.decision_layers(g) if G.layer(g, n).kind == G.EMBEDDING)
    assert (table.module, table.weight_elements) == ("attn", 98)   # the module whose forward gathers it


@pytest.mark.parametrize("stem, dims", [("windowed_vit_torchscript", {"height": 16, "width": 16}),
                                        ("windowed_attention_dynamic", {"height": 16, "width": 16})])
def test_picking_q_out_of_packed_qkv_keeps_the_heads_as_features(stem, dims):
    """qkv (.., 3 x heads x head size) -> reshape -> permute -> Gather(0): q's heads are its
    feature axis (the packed dim's next part), so the attention and the projection after it
    split by heads like an unpacked export's."""
    g = load(stem, batch=2, dims=dims)
    for n in G.decision_layers(g):
        lay = G.layer(g, n)
        if lay.kind == G.MATMUL_ACT:
            (t,) = {d["tensor"] for _, _, d in g.in_edges(n, data=True) if d["slots"] == (0,)} or {None}
            assert t is not None and t.feature_axis == 1 and t.shape[1] == 2, (n, t)   # (windows x B, heads, ...)
    proj = next(n for n in G.decision_layers(g) if (G.layer(g, n).module or "").endswith("attn.proj"))
    (x,) = {d["tensor"] for _, _, d in g.in_edges(proj, data=True)}
    assert x.feature_axis == len(x.shape) - 1
