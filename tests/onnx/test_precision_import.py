"""The importer reads each tensor's precision (hypar/onnx/precision.py, docs/precision.md)."""

from __future__ import annotations

import pytest
from onnx import TensorProto

from hypar import graph as G
from hypar.onnx import load_layer_graph
from hypar.onnx.precision import type_widths

from paths import FIXTURES


def _edges(g) -> dict[str, tuple]:
    return {d["tensor"].name: (d["tensor"].elem_bytes, d["tensor"].error_bytes) for _u, _v, d in g.edges(data=True)}


def _weights(g) -> dict[str, tuple]:
    return {n: (G.layer(g, n).weight_bytes, G.layer(g, n).weight_grad_bytes) for n in G.weighted_layers(g)}


@pytest.mark.parametrize("elem_type, widths", [
    (TensorProto.FLOAT, (None, None)), (TensorProto.DOUBLE, (None, None)), (TensorProto.INT64, (None, None)),
    (TensorProto.INT8, (1, None)), (TensorProto.UINT8, (1, None)),
    (TensorProto.FLOAT16, (2, 2)), (TensorProto.BFLOAT16, (2, 2)),
])
def test_type_widths(elem_type, widths):
    """Narrow types keep their width; floats keep it for their errors too, integers do not."""
    assert type_widths(elem_type) == widths


def test_qdq_fixture_declares_int8_between_the_pair_and_after_it():
    """cnn_qdq: every QuantizeLinear output and the DequantizeLinear output after it are int8
    (1 byte; errors in the training precision); the fp32 activations (conv outputs, ReLU, pool,
    flatten) declare nothing; every weight is int8 with its gradient in the training precision."""
    g = load_layer_graph(str(FIXTURES / "cnn_qdq.onnx"))
    edges = _edges(g)
    for tag in ("conv1.input", "conv2.input", "fc.input"):
        assert edges[f"{tag}.q"] == edges[f"{tag}.dq"] == (1, None), tag
    for name in ("conv1.out", "conv1.relu", "conv2.out", "pool", "flat"):
        assert edges[name] == (None, None), name
    assert _weights(g) == {"conv1": (1, None), "conv2": (1, None), "fc": (1, None)}
    assert [t.elem_bytes for t in g.graph["inputs"]] == [None]


def test_fp16_fixture_declares_two_bytes_everywhere():
    """cnn_fp16: every activation, error, weight and gradient is 2 bytes; so are the graph input and
    output."""
    g = load_layer_graph(str(FIXTURES / "cnn_fp16.onnx"))
    assert set(_edges(g).values()) == {(2, 2)}
    assert set(_weights(g).values()) == {(2, 2)}
    assert [(t.elem_bytes, t.error_bytes) for t in g.graph["inputs"] + g.graph["outputs"]] == [(2, 2), (2, 2)]


def test_fp32_export_declares_nothing():
    """An fp32 export (the zoo's case) declares no width anywhere: its plans are priced as before."""
    g = load_layer_graph(str(FIXTURES / "cnn_dynamo.onnx"))
    assert set(_edges(g).values()) == {(None, None)}
    assert set(_weights(g).values()) == {(None, None)}


def test_without_precision_drops_every_width():
    """graph.without_precision (what --dtype plans on) leaves no declared width and keeps shapes."""
    g = load_layer_graph(str(FIXTURES / "cnn_fp16.onnx"))
    plain = G.without_precision(g)
    assert set(_edges(plain).values()) == {(None, None)} and set(_weights(plain).values()) == {(None, None)}
    assert [d["tensor"].shape for *_e, d in plain.edges(data=True)] == [d["tensor"].shape for *_e, d in g.edges(data=True)]
    assert set(_edges(g).values()) == {(2, 2)}          # the original is untouched
