"""Write the precision fixtures (tests/fixtures/README.md "Precision fixtures") with onnx.helper
only (no torch, no onnxruntime):

- ``cnn_qdq.onnx``: a QDQ-quantised CNN as onnxruntime's static quantiser writes one -- every
  activation entering a Conv / Gemm goes through a QuantizeLinear -> DequantizeLinear pair (int8,
  per-tensor scale), every weight is an int8 initializer read through a DequantizeLinear, biases
  stay fp32;
- ``cnn_fp16.onnx``: the same network stored in fp16 (inputs, weights, activations, output).

Network (input ``x`` (2, 3, 16, 16); output ``logits`` (2, 10)): Conv 3->8 3x3 pad 1 + bias,
ReLU, Conv 8->8 3x3 pad 1 + bias, ReLU, MaxPool 2x2, Flatten, Gemm 512->10 + bias. Parameters:
216 + 8 + 576 + 8 + 5,120 + 10 = 5,938. Seeded: re-running writes identical files.

    python scripts/make_precision_fixtures.py [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
BATCH = 2
LAYERS = (("conv1", (8, 3, 3, 3)), ("conv2", (8, 8, 3, 3)))
FC = ("fc", (10, 512))


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float weights and biases of the network, seeded."""
    out = {}
    for name, shape in LAYERS + (FC,):
        out[f"{name}.weight"] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        out[f"{name}.bias"] = (rng.standard_normal(shape[0]) * 0.1).astype(np.float32)
    return out


def _qdq(nodes: list, inits: list, x: str, tag: str) -> str:
    """Append a QuantizeLinear -> DequantizeLinear pair (int8, scale 1/64) on activation ``x``;
    returns the dequantised tensor's name."""
    scale, zero = f"{tag}.scale", f"{tag}.zero_point"
    inits += [numpy_helper.from_array(np.array(1 / 64, np.float32), scale),
              numpy_helper.from_array(np.array(0, np.int8), zero)]
    nodes.append(helper.make_node("QuantizeLinear", [x, scale, zero], [f"{tag}.q"], name=f"{tag}_quant"))
    nodes.append(helper.make_node("DequantizeLinear", [f"{tag}.q", scale, zero], [f"{tag}.dq"], name=f"{tag}_dequant"))
    return f"{tag}.dq"


def _int8_weight(nodes: list, inits: list, name: str, w: np.ndarray) -> str:
    """An int8 initializer (symmetric, per-tensor scale) read through a DequantizeLinear."""
    scale = float(np.abs(w).max() / 127) or 1.0
    inits += [numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{name}_quantized"),
              numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
              numpy_helper.from_array(np.array(0, np.int8), f"{name}_zero_point")]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
                                  [name], name=f"{name}_dequant"))
    return name


def qdq_cnn(seed: int = 0) -> onnx.ModelProto:
    """The QDQ int8 CNN (module docstring)."""
    w = _weights(np.random.default_rng(seed))
    nodes: list = []
    inits: list = []
    x = "x"
    for name, _shape in LAYERS:
        xq = _qdq(nodes, inits, x, f"{name}.input")
        wq = _int8_weight(nodes, inits, f"{name}.weight", w[f"{name}.weight"])
        inits.append(numpy_helper.from_array(w[f"{name}.bias"], f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [xq, wq, f"{name}.bias"], [f"{name}.out"], name=name,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}_relu"))
        x = f"{name}.relu"
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    xq = _qdq(nodes, inits, "flat", "fc.input")
    wq = _int8_weight(nodes, inits, "fc.weight", w["fc.weight"])
    inits.append(numpy_helper.from_array(w["fc.bias"], "fc.bias"))
    nodes.append(helper.make_node("Gemm", [xq, wq, "fc.bias"], ["logits"], name="fc", transB=1))
    return _model(nodes, inits, TensorProto.FLOAT, "cnn_qdq")


def fp16_cnn(seed: int = 0) -> onnx.ModelProto:
    """The fp16 CNN (module docstring): every tensor stored in float16."""
    w = _weights(np.random.default_rng(seed))
    inits = [numpy_helper.from_array(v.astype(np.float16), k) for k, v in w.items()]
    nodes: list = []
    x = "x"
    for name, _shape in LAYERS:
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}_relu"))
        x = f"{name}.relu"
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    return _model(nodes, inits, TensorProto.FLOAT16, "cnn_fp16")


def _model(nodes: list, inits: list, io_type: int, name: str) -> onnx.ModelProto:
    """The checked model of ``nodes`` with input ``x`` and output ``logits`` in ``io_type``."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", io_type, [BATCH, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", io_type, [BATCH, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hypar scripts/make_precision_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> None:
    """Write both fixtures into ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "fixtures")
    args = ap.parse_args(argv)
    for model in (qdq_cnn(), fp16_cnn()):
        path = args.out / f"{model.graph.name}.onnx"
        onnx.save(model, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
