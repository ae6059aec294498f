"""Small ONNX models of transformer pieces, as exporters write them, for the importer's and the
simulator's tests: attention with a mask added from a graph input (BERT), a LayerNorm
decomposed into ReduceMean / Sub / Pow / Sqrt / Div (TorchScript below opset 17), and the
opset-23 ``Attention`` op (dynamo's scaled_dot_product_attention).

Every model reads ``x`` (B, S, D) float and ends in a MatMul with a weight, so every activation
between needs its error; sizes are small enough for 2x2x2 arrays to split them evenly.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

B, S, D, H = 4, 8, 16, 4          # batch, sequence, hidden, heads
DH = D // H                       # head size


def _weight(name: str, shape: tuple, seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _model(nodes, inputs, inits, opset: int, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _x() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D])


def _projections_to_heads(k_perm: tuple) -> tuple[list, list]:
    """q, k, v MatMuls, each reshaped to heads and transposed ((B, H, S, DH); k with ``k_perm``)."""
    nodes, inits = [], [_const("heads_shape", [B, S, H, DH], np.int64)]
    for j, t in enumerate("qkv"):
        inits.append(_weight(f"W{t}", (D, D), j))
        perm = k_perm if t == "k" else (0, 2, 1, 3)
        nodes += [helper.make_node("MatMul", ["x", f"W{t}"], [t], name=f"{t}_proj"),
                  helper.make_node("Reshape", [t, "heads_shape"], [f"{t}_r"], name=f"{t}_reshape"),
                  helper.make_node("Transpose", [f"{t}_r"], [f"{t}_h"], name=f"{t}_heads", perm=list(perm))]
    return nodes, inits


def _heads_to_output(ctx: str) -> tuple[list, list]:
    """Context (B, H, S, DH) -> (B, S, D) -> the output projection ``y``."""
    nodes = [helper.make_node("Transpose", [ctx], ["ctx_t"], name="merge_heads", perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["ctx_t", "out_shape"], ["ctx_r"], name="merge_reshape"),
             helper.make_node("MatMul", ["ctx_r", "Wo"], ["y"], name="out_proj")]
    return nodes, [_const("out_shape", [B, S, D], np.int64), _weight("Wo", (D, D), 9)]


def plain_attention() -> onnx.ModelProto:
    """Self-attention without mask or scale: heads, scores, softmax, context, heads merged, output
    projection (H heads of DH features: split unevenly on 3 or 8 PEs)."""
    nodes, inits = _projections_to_heads((0, 2, 3, 1))
    nodes += [helper.make_node("MatMul", ["q_h", "k_h"], ["scores"], name="scores"),
              helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["probs", "v_h"], ["ctx"], name="context")]
    more_nodes, more_inits = _heads_to_output("ctx")
    return _model(nodes + more_nodes, [_x()], inits + more_inits, 17, "plain_attention")


def masked_attention() -> onnx.ModelProto:
    """BERT's self-attention: scores (B, H, S, S) / sqrt(DH) + the mask (B, 1, 1, S) computed from
    the graph input ``mask`` (B, S) by Unsqueeze, Sub and Mul with constants; softmax; context."""
    nodes, inits = _projections_to_heads((0, 2, 3, 1))
    nodes += [
        helper.make_node("MatMul", ["q_h", "k_h"], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "sqrt_dh"], ["scaled"], name="scale"),
        helper.make_node("Unsqueeze", ["mask", "mask_axes"], ["m1"], name="mask_unsqueeze"),
        helper.make_node("Sub", ["one", "m1"], ["m2"], name="mask_sub"),
        helper.make_node("Mul", ["m2", "big"], ["m3"], name="mask_mul"),
        helper.make_node("Add", ["scaled", "m3"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v_h"], ["ctx"], name="context"),
    ]
    more_nodes, more_inits = _heads_to_output("ctx")
    inits += more_inits + [_const("sqrt_dh", 2.0), _const("mask_axes", [1, 2], np.int64), _const("one", 1.0),
                           _const("big", -10000.0)]
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [B, S])
    return _model(nodes + more_nodes, [_x(), mask], inits, 17, "masked_attention")


def decomposed_layernorm(center_batch: bool = False) -> onnx.ModelProto:
    """x @ W1, then LayerNorm over the hidden axis as TorchScript writes it below opset 17
    (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta), then @ Wo.
    ``center_batch``: first subtract the mean over the batch (ReduceMean axes [0]: a (1, S, D)
    operand broadcast along the batch)."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1")]
    src = "h"
    if center_batch:
        nodes += [helper.make_node("ReduceMean", ["h"], ["mb"], name="batch_mean", axes=[0], keepdims=1),
                  helper.make_node("Sub", ["h", "mb"], ["hc"], name="batch_center")]
        src = "hc"
    nodes += [
        helper.make_node("ReduceMean", [src], ["mu"], name="ln/mean", axes=[-1], keepdims=1),
        helper.make_node("Sub", [src, "mu"], ["d"], name="ln/sub"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="ln/pow"),
        helper.make_node("ReduceMean", ["d2"], ["var"], name="ln/var", axes=[-1], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="ln/eps"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="ln/sqrt"),
        helper.make_node("Div", ["d", "sd"], ["n"], name="ln/div"),
        helper.make_node("Mul", ["n", "gamma"], ["ng"], name="ln/scale"),
        helper.make_node("Add", ["ng", "beta"], ["nb"], name="ln/shift"),
        helper.make_node("MatMul", ["nb", "Wo"], ["y"], name="fc2"),
    ]
    inits = [_weight("W1", (D, D), 1), _weight("Wo", (D, D), 2), _const("two", 2.0), _const("eps", 1e-5),
             _const("gamma", np.ones(D)), _const("beta", np.zeros(D))]
    return _model(nodes, [_x()], inits, 14, "decomposed_layernorm")


def layernorm() -> onnx.ModelProto:
    """:func:`decomposed_layernorm` with one LayerNormalization op (opset 17) instead."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
             helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["nb"], name="ln", axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["nb", "Wo"], ["y"], name="fc2")]
    inits = [_weight("W1", (D, D), 1), _weight("Wo", (D, D), 2), _const("gamma", np.ones(D)),
             _const("beta", np.zeros(D))]
    return _model(nodes, [_x()], inits, 17, "layernorm")


def attention_op(**attrs) -> onnx.ModelProto:
    """dynamo's scaled_dot_product_attention at opset 23: one ``Attention`` op on q, k, v
    (B, H, S, DH) (named ``sdpa``), then merged heads and the output projection. ``attrs`` are set on
    the Attention node (e.g. is_causal=1)."""
    nodes, inits = _projections_to_heads((0, 2, 1, 3))
    nodes.append(helper.make_node("Attention", ["q_h", "k_h", "v_h"], ["ctx"], name="sdpa", **attrs))
    more_nodes, more_inits = _heads_to_output("ctx")
    return _model(nodes + more_nodes, [_x()], inits + more_inits, 23, "attention_op")
