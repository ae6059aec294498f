"""Two-layer models stored in other precisions than fp32, for the hand-derived byte tests
(tests/cost/test_precision_bytes.py) and the simulator's check of them
(tests/sim/test_precision_verify.py).

Every model reads ``x`` (4, 8) and computes ``fc1`` (Gemm, W 8x8, no bias) then ``fc2`` (Gemm,
W 8x8, no bias); only the element types differ:

- ``int8``: fp32 ``x`` and fc1 weight; fc1's output goes through a QuantizeLinear ->
  DequantizeLinear pair (int8) into fc2, whose weight is an int8 initializer read through a
  DequantizeLinear (onnxruntime's QDQ format);
- ``fp16``: everything (input, weights, activations) in float16;
- ``mix``: float16 input and fc1 weight, fc1's fp16 output through an fp16 -> int8 QDQ pair
  (opset 19) into fc2 with an int8 weight dequantised to fp16.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

B, D = 4, 8


def _w(name: str, seed: int, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal((D, D)) * 0.1).astype(dtype), name)


def _qdq_nodes(x: str, out: str, scale_dtype) -> tuple[list, list]:
    """x -> QuantizeLinear -> ``q`` (int8) -> DequantizeLinear -> ``out``."""
    inits = [numpy_helper.from_array(np.array(1 / 64, scale_dtype), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", [x, "s", "z"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], [out], name="dequant")]
    return nodes, inits


def _int8_weight(name: str, scale_dtype) -> tuple[list, list]:
    """An int8 8x8 initializer dequantised into ``name``."""
    q = np.random.default_rng(2).integers(-127, 128, (D, D)).astype(np.int8)
    inits = [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(np.array(0.01, scale_dtype), f"{name}_s"),
             numpy_helper.from_array(np.array(0, np.int8), f"{name}_z")]
    return [helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name],
                             name=f"{name}_dequant")], inits


def _model(nodes: list, inits: list, io_type: int, opset: int, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", io_type, [B, D])],
                              [helper.make_tensor_value_info("y", io_type, [B, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def _qdq_pair_model(float_type: type, io_type: int, opset: int, name: str) -> onnx.ModelProto:
    """fc1 -> an int8 QDQ pair -> fc2 with an int8 weight, every float tensor in ``float_type``."""
    qdq, q_inits = _qdq_nodes("h", "h_dq", float_type)
    w2, w2_inits = _int8_weight("w2", float_type)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"), *qdq, *w2,
             helper.make_node("Gemm", ["h_dq", "w2"], ["y"], name="fc2")]
    return _model(nodes, [_w("w1", 1, float_type), *q_inits, *w2_inits], io_type, opset, name)


def int8_model() -> onnx.ModelProto:
    """The QDQ int8 model (module docstring)."""
    return _qdq_pair_model(np.float32, TensorProto.FLOAT, 17, "int8_pair")


def fp16_model() -> onnx.ModelProto:
    """The all-fp16 model (module docstring)."""
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2")]
    return _model(nodes, [_w("w1", 1, np.float16), _w("w2", 2, np.float16)], TensorProto.FLOAT16, 17, "fp16_pair")


def mix_model() -> onnx.ModelProto:
    """fp16 with an int8 QDQ pair and an int8 weight (module docstring)."""
    return _qdq_pair_model(np.float16, TensorProto.FLOAT16, 19, "mix_pair")
