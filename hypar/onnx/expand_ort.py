"""com.microsoft's fused attention ops (onnxruntime's transformer optimizer) as the ops they are
made of, for :mod:`hypar.onnx.expand`: what each expresses, and its expansion.

- ``MultiHeadAttention`` (Q (B, S, H x D), K (B, L, H x D), V (B, L, H x Dv), ``num_heads``):
  Q, K, V split into heads (Reshape, Transpose), scaled dot-product attention
  (:func:`~hypar.onnx.attention_ops.scaled_dot_product`; a causal mask when ``unidirectional=1``),
  heads merged (Transpose, Reshape).
- ``GroupQueryAttention`` (Q (B, S, H x D), K, V (B, S, Hkv x D), ``num_heads``, ``kv_num_heads``,
  causal by default): the same, with K and V repeated to the query heads (query head h reads
  key/value head h // (H / Hkv), as onnxruntime computes it) -- the layout a decomposed GQA export
  has. ``seqlens_k`` and ``total_sequence_length`` are not read: the expansion is the prompt with
  every sequence whole (no padding; the costs do not depend on it). ``present_key`` /
  ``present_value`` outputs (no past) are the key / value heads.

The causal mask is an elementwise Add of a shape-derived constant onto the scores: the layers
and their layouts are those without it. Forms not expressed (packed QKV, past key/value, masks
and biases, rotary inside the op, windows, softcap, qk outputs) stay opaque: the refusals say
what a node has.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

from hypar.onnx.attention_ops import Emitter, merge_heads, repeat_kv, scaled_dot_product, split_heads
from hypar.onnx.protos import node_attrs
from hypar.onnx.shapes import ShapeTable

DOMAIN = "com.microsoft"
MHA_WORKS = ("hypar reads a MultiHeadAttention op as its attention MatMuls and a Softmax only for 3-D query, key "
             "and value with a known hidden size and no bias, masks, past key/value or extra outputs; optimise "
             "with onnxruntime's transformer optimizer without attention fusion (or export without it) to keep "
             "the MatMul and Softmax ops hypar reads")
GQA_WORKS = ("hypar reads a GroupQueryAttention op as its attention MatMuls and a Softmax only for separate 3-D "
             "query, key and value with known hidden sizes, without past key/value (the prompt model), do_rotary, "
             "attention_bias, head_sink, kv scales, q/k norms, local windows, softcap or an output_qk; export the "
             "model without the GQA fusion (or apply rotary as RotaryEmbedding ops before it) to keep ops hypar reads")
GQA_DROPPED = (5, 6)  # seqlens_k, total_sequence_length
_MHA_EXTRA = {3: "a bias input", 4: "a key_padding_mask input", 5: "an attention_bias input", 6: "a past_key input",
              7: "a past_value input", 8: "a past_sequence_length input", 9: "a cache_indirection input"}
_MHA_OUTPUTS = {1: "a present_key output", 2: "a present_value output", 3: "a qk output"}
_GQA_EXTRA = {3: "a past_key input", 4: "a past_value input", 7: "a cos_cache input", 8: "a sin_cache input",
              9: "a position_ids input", 10: "an attention_bias input", 11: "a head_sink input",
              12: "a k_scale input", 13: "a v_scale input", 14: "a q_norm_weight input", 15: "a k_norm_weight input"}
_GQA_ATTRS = {"do_rotary": 0, "local_window_size": -1, "softcap": 0.0, "smooth_softmax": 0, "qk_output": 0,
              "sliding_window_cache": 0}


def _present(n: onnx.NodeProto, inputs: dict[int, str], outputs: dict[int, str]) -> list[str]:
    """What of ``inputs`` / ``outputs`` (position -> description) node ``n`` has."""
    got = [what for pos, what in inputs.items() if len(n.input) > pos and n.input[pos]]
    return got + [what for pos, what in outputs.items() if len(n.output) > pos and n.output[pos]]


def _hidden_sizes(n: onnx.NodeProto, shapes: ShapeTable) -> str | list[int]:
    """The last dims of Q, K, V when all three are 3-D with a known last dim, else what is wrong."""
    if len(n.input) < 3 or not n.input[1] or not n.input[2]:
        return "packed QKV (no separate key and value inputs)"
    dims = [shapes.dims(t) for t in n.input[:3]]
    if any(d is None or len(d) != 3 for d in dims):
        return "query, key, value of ranks " + "/".join("unknown" if d is None else str(len(d)) for d in dims) + \
            " (not 3-D)"
    if not all(isinstance(d[2], int) for d in dims):
        return "hidden sizes that are not known numbers"
    return [d[2] for d in dims]


def mha_refusal(n: onnx.NodeProto, shapes: ShapeTable) -> str | None:
    """What MultiHeadAttention node ``n`` has that :func:`mha_expansion` does not express, or None."""
    extra = _present(n, _MHA_EXTRA, _MHA_OUTPUTS)
    if extra:
        return ", ".join(extra)
    sizes = _hidden_sizes(n, shapes)
    if isinstance(sizes, str):
        return sizes
    heads = int(node_attrs(n).get("num_heads", 0))
    if heads <= 0 or sizes[0] != sizes[1] or any(s % heads for s in sizes):
        return f"hidden sizes {sizes} that {heads} heads do not divide (or Q and K of different sizes)"
    return None


def mha_expansion(e: Emitter, shapes: ShapeTable) -> None:
    """The ops of MultiHeadAttention node ``e.node`` (module docstring)."""
    n = e.node
    a = node_attrs(n)
    heads = int(a["num_heads"])
    hq, _, hv = (shapes.dims(t)[2] for t in n.input[:3])
    d = hq // heads
    q, k, v = (split_heads(e, t, heads, size // heads, tag) for t, size, tag in zip(n.input[:3], (hq, hq, hv), "qkv"))
    ctx = e.tensor("context")
    scale = float(a.get("scale", 0.0)) or 1.0 / math.sqrt(d)  # 0: the default, as onnxruntime reads it
    elem = shapes.elem_type(n.input[0]) or TensorProto.FLOAT
    scaled_dot_product(e, (q, k, v), ctx, scale, elem, causal=bool(a.get("unidirectional", 0)))
    merge_heads(e, ctx, n.output[0])


def gqa_refusal(n: onnx.NodeProto, shapes: ShapeTable) -> str | None:
    """What GroupQueryAttention node ``n`` has that :func:`gqa_expansion` does not express, or None."""
    a = node_attrs(n)
    extra = _present(n, _GQA_EXTRA, {3: "an output_qk output"})
    extra += [f"{k}={a[k]}" for k, default in _GQA_ATTRS.items() if k in a and a[k] != default]
    if extra:
        return ", ".join(extra)
    sizes = _hidden_sizes(n, shapes)
    if isinstance(sizes, str):
        return sizes
    heads, kv_heads = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads or sizes[0] % heads:
        return f"{heads} query heads for {kv_heads} key/value heads and a query size of {sizes[0]}"
    d = sizes[0] // heads
    if sizes[1] != kv_heads * d or sizes[2] != kv_heads * d:
        return f"key/value sizes {sizes[1]}/{sizes[2]} that are not {kv_heads} heads of {d}"
    return None


def gqa_expansion(e: Emitter, shapes: ShapeTable) -> None:
    """The ops of GroupQueryAttention node ``e.node`` (module docstring)."""
    n = e.node
    a = node_attrs(n)
    heads, kv_heads = int(a["num_heads"]), int(a["kv_num_heads"])
    d = shapes.dims(n.input[0])[2] // heads
    q = split_heads(e, n.input[0], heads, d, "q")
    k, v = (split_heads(e, t, kv_heads, d, tag) for t, tag in ((n.input[1], "k"), (n.input[2], "v")))
    for pos, heads_of in ((1, k), (2, v)):  # present key / value: the heads (there is no past)
        if len(n.output) > pos and n.output[pos]:
            e.op("Identity", [heads_of], f"present_{'kv'[pos - 1]}", n.output[pos])
    groups = heads // kv_heads
    if groups > 1:
        k, v = (repeat_kv(e, t, kv_heads, groups, d, tag) for t, tag in ((k, "k"), (v, "v")))
    ctx = e.tensor("context")
    scale = float(a.get("scale", 0.0)) or 1.0 / math.sqrt(d)  # 0: the default, as onnxruntime reads it
    elem = shapes.elem_type(n.input[0]) or TensorProto.FLOAT
    scaled_dot_product(e, (q, k, v), ctx, scale, elem, causal=bool(a.get("causal", 1)))
    merge_heads(e, ctx, n.output[0])
