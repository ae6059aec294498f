"""The units pass (hypar/onnx/units.py): the unit of each named tensor axis, derived by hand from
the reshapes that regroup it, on the transformer fixtures, alexnet's flatten and small graphs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper, parser

from paths import MODELS, FIXTURES
from hypar import graph as G
from hypar.cost.structure import Structure
from hypar.onnx import load_layer_graph

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def tensors(g) -> dict[str, G.Tensor]:
    """Every edge tensor of ``g`` by name."""
    return {d["tensor"].name: d["tensor"] for _p, _c, d in g.edges(data=True)}


def units(g, name: str) -> tuple[int, int]:
    t = tensors(g)[name]
    return t.batch_unit, t.feature_unit


def node_units(g, name: str, space: str = "full") -> dict[str, int]:
    s = Structure(g, space)
    node = s.nodes[s.index[name]]
    return {a: node.unit(a) for a in node.axes}


@pytest.fixture(scope="module")
def torchscript():
    return load_layer_graph(FIXTURES / "transformer_torchscript.onnx", batch=2)


def test_heads_of_the_torchscript_transformer(torchscript):
    g = torchscript
    # q = x W_q + b: 64 features reshaped into 4 heads of 16 -> unit 16 on q's features (before and
    # after the bias), and on the merged context the output projection reads
    for name in ("/q/MatMul_output_0", "/q/Add_output_0", "/k/Add_output_0", "/v/Add_output_0",
                 "/Reshape_3_output_0"):
        assert units(g, name) == (1, 16), name
    # the heads axis itself (4 heads, each its own unit), and the residual stream: unit 1
    for name in ("/Reshape_output_0", "/Transpose_output_0", "/MatMul_output_0", "/Add_1_output_0",
                 "/ln1/LayerNormalization_output_0", "/ffn1/Add_output_0", "/tok/Gather_output_0"):
        assert units(g, name) == (1, 1), name
    # the weights: W_q's columns and W_o's rows take 16; the FFN's none
    assert node_units(g, "/q/MatMul") == {"b": 1, "i": 1, "o": 16}
    assert node_units(g, "/out/MatMul") == {"b": 1, "i": 16, "o": 1}
    assert node_units(g, "/ffn1/MatMul") == {"b": 1, "i": 1, "o": 1}
    assert node_units(g, "/MatMul") == {"b": 1, "h": 1}


def test_batch_merged_with_heads():
    """transformer_sdpa_dynamo reshapes k (2, 4, 16, 16) into (8, 16, 16): the merged axis holds
    batch x 4 heads, so its unit is 4 (x the batch's 1); the heads' features keep 16."""
    g = load_layer_graph(FIXTURES / "transformer_sdpa_dynamo.onnx", batch=2)
    assert units(g, "val_43") == (4, 1)
    assert units(g, "val_44") == (4, 1)
    assert units(g, "val_46") == (1, 1)
    assert units(g, "linear_1") == (1, 16)
    assert node_units(g, "node_Reshape_43") == {"b": 4}


def test_alexnet_flatten():
    """(4, 256, 6, 6) -> (4, 9216): 9216 = 256 channels x 36, unit 36 on the flattened features and
    classifier.fc1's input features (its weight's rows); the conv's channels keep 1."""
    g = load_layer_graph(MODELS / "alexnet.onnx", batch=4)
    assert units(g, "flatten") == (1, 36)
    assert units(g, "classifier.drop0") == (1, 36)
    assert node_units(g, "classifier.fc1", "accpar") == {"b": 1, "i": 36, "o": 1}
    assert all(t.feature_unit == 1 for t in tensors(g).values() if len(t.shape) == 4)


def make(text: str, **weights: tuple[int, ...]):
    m = parser.parse_model(HEADER + text)
    for name, shape in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
    return m


def test_two_regroupings_meet_at_their_lcm():
    """48 features read as 3 x 16 by one reshape and 4 x 12 by another: the features need unit
    lcm(16, 12) = 48, so the 3 outer parts get 48 / 16 = 3 and the 4 outer parts 48 / 12 = 4 --
    the whole axis is one unit (a split of it keeps it on one PE, which both reshapes map)."""
    m = make("""g (float[2, 8] x) => (float[2, 3, 16] y, float[2, 4, 12] z) {
        s1 = Constant<value = int64[3] {0, 3, 16}>()
        s2 = Constant<value = int64[3] {0, 4, 12}>()
        h = MatMul(x, w)
        a = Relu(h)
        y = Reshape(a, s1)
        z = Reshape(h, s2) }""", w=(8, 48))
    g = load_layer_graph(m, batch=2)
    t = {o.name: o for o in g.graph["outputs"]}
    assert units(g, "h") == (1, 48) and units(g, "a") == (1, 48)
    assert (t["y"].feature_axis, t["y"].feature_unit) == (1, 3)
    assert (t["z"].feature_axis, t["z"].feature_unit) == (1, 4)


def test_plain_chains_keep_unit_1():
    m = make("""g (float[2, 8] x) => (float[2, 6] y) {
        h = MatMul(x, w1)
        a = Relu(h)
        y = MatMul(a, w2) }""", w1=(8, 10), w2=(10, 6))
    g = load_layer_graph(m, batch=2)
    assert all((t.batch_unit, t.feature_unit) == (1, 1) for t in tensors(g).values())
