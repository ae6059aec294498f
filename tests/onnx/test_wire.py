"""Reading a model file without its weight bytes (hypar/onnx/wire.py, hypar/onnx/load.py): the
parsed model equals the whole file parsed by onnx with the data of every tensor of more than
SMALL_ELEMENTS elements cleared, field for field and byte for byte, on every fixture and zoo model,
on random models (Hypothesis) and on hand-written wire encodings protobuf also accepts."""

from __future__ import annotations

import os
import threading

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hypar import graph as G
from hypar.errors import ModelLoadError
from hypar.onnx import load_layer_graph
from hypar.onnx.load import load_model, read_light
from hypar.onnx.protos import SMALL_ELEMENTS, tensor_elements
from hypar.onnx.wire import WireError, encode_varint, light_model_bytes

from paths import FIXTURES, MODELS

_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _stripped(t: TensorProto) -> None:
    """Clear ``t``'s data fields in place when it has more than SMALL_ELEMENTS elements."""
    if tensor_elements(t) > SMALL_ELEMENTS:
        for f in _DATA_FIELDS:
            t.ClearField(f)


def _reference(g: onnx.GraphProto) -> None:
    """What read_light should give, built with protobuf's own API: every large tensor of the graph's
    initializers and of its nodes' tensor attributes and subgraphs, data cleared (in place)."""
    for t in g.initializer:
        _stripped(t)
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                _stripped(a.t)
            for t in a.tensors:
                _stripped(t)
            if a.HasField("g"):
                _reference(a.g)
            for sub in a.graphs:
                _reference(sub)


def _expected(path) -> bytes:
    m = onnx.load(str(path), load_external_data=False)
    _reference(m.graph)
    return m.SerializeToString()


FILES = sorted(FIXTURES.glob("*.onnx")) + sorted(MODELS.glob("*.onnx"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_fixture_and_zoo_model_reads_as_stripped(path):
    assert read_light(path).SerializeToString() == _expected(path)


def test_fixture_weights_are_left_in_the_file():
    """The decoder fixture's large weights arrive as name, type and dims only (the file has them)."""
    path = FIXTURES / "decoder_dynamo.onnx"
    full = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    light = {t.name: t for t in read_light(path).graph.initializer}
    large = [k for k, t in full.items() if tensor_elements(t) > SMALL_ELEMENTS]
    assert len(large) == 8 and all(full[k].raw_data for k in large)
    for k in large:
        assert (light[k].raw_data, light[k].data_type, list(light[k].dims)) == (b"", full[k].data_type, list(full[k].dims))
    assert all(light[k] == full[k] for k in full if k not in large)
    assert path.stat().st_size - read_light(path).ByteSize() >= sum(len(full[k].raw_data) for k in large)


# ------------------------------------------------------------------------------------------------
# Random models: initializers, Constant nodes, If subgraphs and the repeated tensor and graph
# attributes; data raw or in typed fields

_DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8, np.bool_]
_SIZES = st.sampled_from([1, 7, SMALL_ELEMENTS, SMALL_ELEMENTS + 1, 3 * SMALL_ELEMENTS])


@st.composite
def _tensors(draw, name: str) -> TensorProto:
    n, dtype, raw = draw(_SIZES), draw(st.sampled_from(_DTYPES)), draw(st.booleans())
    dims = draw(st.sampled_from([[n], [1, n], [n, 1, 1]])) if n > 1 else draw(st.sampled_from([[], [1]]))
    values = (np.arange(n) % 3).astype(dtype).reshape(dims)
    if raw:
        return numpy_helper.from_array(values, name)
    return helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(values.dtype), dims, values.reshape(-1).tolist())


@st.composite
def _branches(draw) -> onnx.GraphProto:
    """A subgraph with one initializer and a Constant node."""
    return helper.make_graph([helper.make_node("Constant", [], ["k"], value=draw(_tensors("k"))),
                              helper.make_node("Add", ["b", "k"], ["z"])], "branch", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [draw(_tensors("b"))])


@st.composite
def _models(draw) -> onnx.ModelProto:
    inits = [draw(_tensors(f"w{k}")) for k in range(draw(st.integers(0, 3)))]
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    for k in range(draw(st.integers(0, 2))):
        nodes.append(helper.make_node("Constant", [], [f"c{k}"], value=draw(_tensors(f"c{k}"))))
    if draw(st.booleans()):
        nodes.append(helper.make_node("If", ["cond"], ["z"], then_branch=draw(_branches()), else_branch=draw(_branches())))
    if draw(st.booleans()):  # the repeated forms (TENSORS, GRAPHS), on an op of a custom domain
        nodes.append(helper.make_node("Custom", ["x"], ["u"], domain="test",
                                      tensors=[draw(_tensors(f"t{k}")) for k in range(draw(st.integers(1, 2)))],
                                      graphs=[draw(_branches()) for _ in range(draw(st.integers(1, 2)))]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    return helper.make_model(g)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_models())
def test_random_models_read_as_stripped(model):
    data = model.SerializeToString()
    light = light_model_bytes(data)
    _reference(model.graph)
    assert (data if light is None else light) == model.SerializeToString()


# ------------------------------------------------------------------------------------------------
# Encodings onnx does not write but protobuf reads: packed dims, fields out of order


def _field(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def _model_with(tensor_body: bytes) -> bytes:
    """A ModelProto (ir_version 8) whose graph has the one initializer ``tensor_body``."""
    graph = _field(5, tensor_body) + _field(2, b"g")
    return encode_varint(1 << 3) + encode_varint(8) + _field(7, graph)


@pytest.mark.parametrize("dims_first", [True, False])
def test_packed_dims_and_data_before_dims(dims_first):
    dims = [64, 128]
    packed = _field(1, b"".join(encode_varint(d) for d in dims))
    data = _field(9, np.ones(64 * 128, np.float32).tobytes())
    body = encode_varint(2 << 3) + encode_varint(TensorProto.FLOAT) + _field(8, b"w")
    body = packed + body + data if dims_first else data + body + packed
    t = TensorProto.FromString(body)
    assert list(t.dims) == dims and len(t.raw_data) == 4 * 64 * 128  # protobuf reads the encoding
    light = onnx.ModelProto.FromString(light_model_bytes(_model_with(body)))
    w = light.graph.initializer[0]
    assert (w.name, list(w.dims), w.data_type, w.raw_data) == ("w", dims, TensorProto.FLOAT, b"")
    assert light.ir_version == 8 and light.graph.name == "g"


def test_small_tensor_kept_byte_for_byte():
    body = _field(1, encode_varint(4)) + _field(9, bytes(16))
    assert light_model_bytes(_model_with(body)) is None


@pytest.mark.parametrize("data", [b"\x0a\x05abc", b"\x0b", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x00\x01"])
def test_malformed_bytes_raise_wire_error(data):
    with pytest.raises(WireError):
        light_model_bytes(data)


# ------------------------------------------------------------------------------------------------
# Through the importer


def test_text_format_file_reads_whole(tmp_path):
    """A .textproto file (onnx picks the format by extension) imports like the binary file."""
    src = FIXTURES / "cnn_torchscript.onnx"
    p = tmp_path / "cnn.textproto"
    onnx.save(onnx.load(str(src)), str(p), format="textproto")
    a, b = load_layer_graph(p, batch=2), load_layer_graph(src, batch=2)
    assert sorted(a.nodes) == sorted(b.nodes)
    assert [a.nodes[n]["layer"].weight_elements for n in sorted(a.nodes)] == \
           [b.nodes[n]["layer"].weight_elements for n in sorted(b.nodes)]


def test_large_weights_of_a_file_are_not_parsed(tmp_path):
    """A 16 MB weight stays in the file: the loaded model is a few hundred bytes."""
    w = numpy_helper.from_array(np.ones((2048, 2048), np.float32), "w")
    m = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2048])], [w]))
    p = tmp_path / "big.onnx"
    onnx.save(m, str(p))
    model, name = load_model(p)
    assert name == "big" and model.ByteSize() < 1000 and list(model.graph.initializer[0].dims) == [2048, 2048]
    g = load_layer_graph(p)
    assert g.nodes[G.weighted_layers(g)[0]]["layer"].weight_elements == 2048 * 2048


def test_truncated_inside_a_weight(tmp_path):
    w = numpy_helper.from_array(np.ones((128, 128), np.float32), "w")
    m = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 128])], [w]))
    data = m.SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: data.index(w.raw_data[:64]) + 1000])
    with pytest.raises(ModelLoadError, match="truncated or wrong format"):
        load_model(p)


def test_a_pipe_is_read_without_mmap(tmp_path):
    """A named pipe cannot be memory-mapped: it is read, then parsed the same way."""
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    data = (FIXTURES / "decoder_dynamo.onnx").read_bytes()
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    model, name = load_model(fifo)
    writer.join()
    assert name == "model" and model.SerializeToString() == _expected(FIXTURES / "decoder_dynamo.onnx")
