"""Layers carry the module path users know them by (issue 11): from the dynamo exporter's node
metadata, else parameter initializer names, else TorchScript node names; the zoo carries none.

The fixtures' modules (tests/fixtures/README.md, scripts/export_fixtures.py): the transformer has
``tok`` (Embedding), ``q``/``k``/``v``/``out`` (attention Linears), ``ln1``/``ln2`` (LayerNorm),
``ffn1``/``ffn2`` (MLP Linears), ``head``; the CNN ``stem``/``conv1``/``conv2`` (Conv, each with
a BatchNorm ``stem_bn``/``bn1``/``bn2``), ``pool``, ``fc``.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, parser

from hypar import graph as G
from hypar.errors import HyparWarning
from hypar.onnx import load_layer_graph
from hypar.onnx.modules import join_scopes, metadata_path, param_module, scoped_name_path

from paths import FIXTURES, MODELS

WEIGHTED_MODULES = ["tok", "q", "k", "v", "out", "ffn1", "ffn2", "head"]
TRANSFORMERS = ["transformer_dynamo", "transformer_dynamo_dynbatch", "transformer_sdpa_dynamo",
                "transformer_sdpa_dynamo_opset23", "transformer_torchscript", "transformer_torchscript_opset14",
                "transformer_torchscript_dynbatch", "transformer_sdpa_torchscript"]


def load(source, **kw):
    """Import a fixture (a stem) or a ModelProto; any HyparWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        path = FIXTURES / f"{source}.onnx" if isinstance(source, str) else source
        return load_layer_graph(path, **kw)


def modules(g) -> dict[str, str | None]:
    """Layer name -> module, every layer."""
    return {n: G.layer(g, n).module for n in G.topo_layers(g)}


def weighted_modules(g) -> list[str | None]:
    return [G.layer(g, n).module for n in G.weighted_layers(g)]


# -- the fixtures --------------------------------------------------------------------------------


def test_transformer_dynamo_layers_by_their_torch_names():
    got = modules(load("transformer_dynamo"))
    # attention projections and the MLP: the MatMul and its bias Add (node_linear_<n>) both
    assert {n: got[n] for n in ("node_MatMul_1", "node_linear", "node_MatMul_9", "node_linear_1",
                                "node_MatMul_17", "node_linear_2", "node_MatMul_31", "node_linear_3",
                                "node_MatMul_33", "node_linear_4", "node_MatMul_35", "node_linear_5")} == {
        "node_MatMul_1": "q", "node_linear": "q", "node_MatMul_9": "k", "node_linear_1": "k",
        "node_MatMul_17": "v", "node_linear_2": "v", "node_MatMul_31": "out", "node_linear_3": "out",
        "node_MatMul_33": "ffn1", "node_linear_4": "ffn1", "node_MatMul_35": "ffn2", "node_linear_5": "ffn2"}
    assert (got["node_embedding"], got["node_MatMul_37"]) == ("tok", "head")
    # both LayerNorms read the one deduplicated initializer ln1.weight: the metadata tells them apart
    assert (got["node_layer_norm"], got["node_layer_norm_1"]) == ("ln1", "ln2")
    # ops of the root module itself (functional calls in forward) have no module
    for n in ("node_add", "node_add_1", "node_add_2", "node_matmul", "node_softmax", "node_matmul_1",
              "node_view", "node_transpose", "node_gelu", "node_div"):
        assert got[n] is None, n
    assert sum(m is not None for m in got.values()) == 17     # tok, ln1, ln2 and 7 Linears' MatMul + Add


@pytest.mark.parametrize("stem", TRANSFORMERS)
def test_every_transformer_export_names_its_weighted_layers_alike(stem):
    kw = {"batch": 2} if stem.endswith("dynbatch") else {}
    g = load(stem, **kw)
    assert weighted_modules(g) == WEIGHTED_MODULES
    norms = [G.layer(g, n).module for n in G.topo_layers(g) if G.layer(g, n).kind == G.FEATURENORM]
    assert norms == ([] if stem.endswith("opset14") else ["ln1", "ln2"])   # opset 14: decomposed


def test_torchscript_modules_come_from_node_names():
    got = modules(load("transformer_torchscript"))
    assert (got["/q/MatMul"], got["/q/Add"], got["/ffn2/MatMul"], got["/ln2/LayerNormalization"]) == \
        ("q", "q", "ffn2", "ln2")
    assert got["/Add"] is None and got["/MatMul"] is None and got["/Softmax"] is None
    # the decomposed LayerNorm of opset 14: every op of it belongs to the LayerNorm module
    g14 = load("transformer_torchscript_opset14")
    ln1 = [n for n in G.topo_layers(g14) if n.startswith("/ln1/")]
    assert len(ln1) == 9 and {G.layer(g14, n).module for n in ln1} == {"ln1"}


def test_cnn_dynamo_conv_with_folded_batchnorm_is_named_by_its_weight():
    # the exporter's rewriter fused BatchNorm into each Conv and left the BatchNorm's metadata
    # (stem_bn) on it; the weight it holds is the Conv's (stem.weight)
    got = modules(load("cnn_dynamo"))
    assert weighted_modules(load("cnn_dynamo")) == ["stem", "conv1", "conv2", "fc"]
    assert got["node_max_pool2d"] == "pool" and got["node_add"] is None and got["node_relu"] is None


def test_cnn_torchscript_keeps_conv_and_batchnorm_apart():
    got = modules(load("cnn_torchscript_train"))
    assert [got[n] for n in got if "Conv" in n or "Batch" in n or "Gemm" in n] == \
        ["stem", "stem_bn", "conv1", "bn1", "conv2", "bn2", "fc"]
    assert weighted_modules(load("cnn_torchscript")) == ["stem", "conv1", "conv2", "fc"]


def test_pattern_fixture_modules_from_initializer_names():
    g = load("windowed_attention_dynamic", input_shapes={"x": (1, 3, 16, 16)})
    assert weighted_modules(g) == ["patch_embed.proj", "blocks.0.attn.qkv", None, "blocks.0.attn.proj", "head"]


@pytest.mark.parametrize("model", ["lenet", "resnet18", "gpt2_small"])
def test_zoo_layers_have_no_module(model):
    # the zoo's weights are ConstantOfShape outputs, not initializers; its nodes carry no metadata
    g = load_layer_graph(MODELS / f"{model}.onnx", batch=1)
    assert set(modules(g).values()) == {None}


# -- the rules, on small models --------------------------------------------------------------------

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def linear_model(weight: str, bias: str | None = None, scopes: str | None = None) -> onnx.ModelProto:
    """y = x @ weight (+ bias); the MatMul carries name_scopes metadata ``scopes`` when given."""
    body = "h = MatMul(x, w)\n y = Add(h, b)" if bias else "y = MatMul(x, w)"
    m = parser.parse_model(HEADER + f"g (float[2, 4] x) => (float[2, 3] y) {{ {body} }}")
    m.graph.initializer.append(numpy_helper.from_array(np.ones((4, 3), np.float32), "w"))
    if bias:
        m.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "b"))
    renames = {"w": weight, **({"b": bias} if bias else {})}
    for t in m.graph.initializer:
        t.name = renames[t.name]
    for n in m.graph.node:
        n.input[:] = [renames.get(t, t) for t in n.input]
    if scopes is not None:
        m.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=scopes)
    return m


def matmul_module(m: onnx.ModelProto) -> str | None:
    g = load(m)
    return G.layer(g, G.weighted_layers(g)[0]).module


def test_nested_name_scopes_give_the_innermost_full_path():
    full = "['', 'layers', 'layers.0', 'layers.0.self_attn', 'layers.0.self_attn.o_proj', 'linear_7']"
    assert matmul_module(linear_model("val_3", scopes=full)) == "layers.0.self_attn.o_proj"
    local = "['', 'layers', '0', 'self_attn', 'o_proj', 'linear_7']"
    assert matmul_module(linear_model("val_3", scopes=local)) == "layers.0.self_attn.o_proj"


def test_metadata_beats_a_tied_weights_name():
    # a tied LM head reads the embedding's table: its own module is the metadata's
    m = linear_model("model.embed_tokens.weight", scopes="['', 'lm_head', 'linear']")
    assert matmul_module(m) == "lm_head"
    assert matmul_module(linear_model("model.embed_tokens.weight")) == "model.embed_tokens"


def test_weight_names_without_a_parameter_suffix_say_nothing():
    assert matmul_module(linear_model("onnx::MatMul_12")) is None
    assert matmul_module(linear_model("val_0", scopes="['', 'linear']")) is None   # the root module


def test_an_unnamed_matmul_weight_takes_its_bias_module():
    m = linear_model("onnx::MatMul_12", bias="encoder.fc1.bias")
    g = load(m)
    (mm,) = G.weighted_layers(g)
    assert G.layer(g, mm).bias_elements == 3 and G.layer(g, mm).module == "encoder.fc1"


def test_expanded_attention_keeps_the_attention_module():
    m = onnx.load(FIXTURES / "transformer_sdpa_dynamo_opset23.onnx")
    att = next(n for n in m.graph.node if n.op_type == "Attention")
    del att.metadata_props[:]
    att.metadata_props.add(key="pkg.torch.onnx.name_scopes",
                           value="['', 'blocks', 'blocks.3', 'blocks.3.attn', 'scaled_dot_product_attention']")
    g = load(m)
    expanded = [n for n in G.topo_layers(g) if n.startswith(att.name)]
    assert len(expanded) == 6
    assert {G.layer(g, n).module for n in expanded} == {"blocks.3.attn"}
    assert [G.layer(g, n).kind for n in expanded].count(G.MATMUL_ACT) == 2


# -- the readers, one by one -------------------------------------------------------------------------


def test_join_scopes_forms():
    assert join_scopes(["", "encoder", "encoder.layer.0", "encoder.layer.0.attention"]) == "encoder.layer.0.attention"
    assert join_scopes(["", "encoder", "layer.0", "attention"]) == "encoder.layer.0.attention"
    assert join_scopes(["L['self']", "L['self'].layers[0]", "L['self'].layers[0].mlp"]) == "layers.0.mlp"
    assert join_scopes(["", "layers.1@1", "layers.1.mlp@1"]) == "layers.1.mlp"
    assert join_scopes(["", ""]) is None and join_scopes([]) is None


def test_namespace_is_read_when_name_scopes_are_missing():
    n = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
    n.metadata_props.add(key="namespace", value=": m.Model/encoder: m.Encoder/encoder.fc: torch.nn.Linear/"
                                                "linear: aten.linear.default")
    assert metadata_path(n) == "encoder.fc"
    n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'decoder', 'linear']")
    assert metadata_path(n) == "decoder"            # name_scopes first
    bad = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
    bad.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="not a list")
    assert metadata_path(bad) is None


def test_parameter_and_node_name_readers():
    assert param_module("fc1.weight") == "fc1" and param_module("model.layers.0.mlp.up_proj.bias") == \
        "model.layers.0.mlp.up_proj"
    assert param_module("pos") is None and param_module("stem.weight_bias") is None and param_module(".weight") is None
    assert scoped_name_path("/encoder/layer.0/attention/MatMul") == "encoder.layer.0.attention"
    assert scoped_name_path("/Add") is None and scoped_name_path("node_add") is None
    assert scoped_name_path("model/dense/MatMul") is None
