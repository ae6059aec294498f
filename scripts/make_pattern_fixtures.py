#!/usr/bin/env python3
"""Write the exporter-pattern ONNX fixtures in tests/fixtures/ (deterministic; onnx.helper only).

Small models with dynamic input dims whose shapes are computed at run time the way exporters
that no one here ran write them, so that binding dims (``--dim`` / ``--input-shape``) and
folding shape subgraphs are tested on the patterns themselves:

- ``windowed_attention_dynamic.onnx`` -- the TorchScript exporter on a Swin-style block with
  ``dynamic_axes`` {batch, height, width}: Shape -> Gather -> Div -> Concat -> Reshape into
  windows, Pad by amounts computed from the size (Mod / Sub), Slice with computed ends, and a
  relative-position bias table gathered with a constant index tensor.
- ``sequence_pattern_dynamic.onnx`` -- paddle2onnx / tf2onnx patterns on a small sequence model
  whose length dim has no name: Shape -> Slice -> Squeeze -> Range position ids gathered from a
  position table, ConstantOfShape token-type ids, Expand to the batch, Reshape targets built by
  Shape -> Slice -> Concat, and Gemms on the flattened (batch x length) rows.
- ``decoder_ort_fused.onnx`` -- what onnxruntime's transformer optimizer writes for a 2-block
  Llama-style decoder (the prompt model, no KV cache): embedding Gather, SimplifiedLayerNormalization
  / com.microsoft SkipSimplifiedLayerNormalization (residual sums as their 4th output), q/k/v
  MatMuls, com.microsoft RotaryEmbedding on q and k (position ids a graph input, cos/sin caches),
  com.microsoft GroupQueryAttention (4 query / 2 key-value heads; seqlens_k and
  total_sequence_length from the attention mask as onnxruntime computes them), o MatMul, SwiGLU
  (gate, Sigmoid, Mul, up, Mul, down), final norm, lm_head; batch and sequence symbolic.
  onnx's checker rejects onnxruntime's default-domain SimplifiedLayerNormalization, so this file
  is not checked with it.

Weights are seeded numpy values stored inline. Usage::

    python scripts/make_pattern_fixtures.py           # writes tests/fixtures/<name>.onnx
    python scripts/make_pattern_fixtures.py --check   # rebuild in memory, fail if a file differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OPSET = 17

# windowed attention: channels, window, heads, patch size, classes
W_CH, W_WIN, W_HEADS, W_PATCH, W_CLASSES = 16, 4, 2, 4, 10
# sequence model: vocabulary, hidden, FFN, position table rows, token types
S_VOCAB, S_HID, S_FFN, S_POS, S_TYPES = 100, 32, 64, 64, 2
# fused decoder: vocabulary, hidden, query heads, key/value heads, MLP, blocks, rotary cache rows
D_VOCAB, D_HID, D_HEADS, D_KV, D_MLP, D_LAYERS, D_MAX_POS = 128, 64, 4, 2, 128, 2, 64
ORT = "com.microsoft"


class Graph:
    """A graph under construction: nodes, initializers and the trainable parameter count."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.RandomState(seed)
        self.params = 0
        self._n = 0

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        """Add one node named ``name`` (also its output's name); returns the output."""
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def ort(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> str:
        """Add one com.microsoft node; returns its first output."""
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=ORT, **attrs))
        return outputs[0]

    def weight(self, name: str, shape: list[int]) -> str:
        """A trainable float initializer of seeded values."""
        self.inits.append(numpy_helper.from_array(self.rng.normal(0, 0.02, shape).astype(np.float32), name))
        self.params += int(np.prod(shape))
        return name

    def ints(self, values: list[int], name: str | None = None) -> str:
        """An int64 1-D constant initializer."""
        self._n += 1
        name = name or f"const_{self._n}"
        self.inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def scalar(self, value: int) -> str:
        """An int64 scalar constant initializer."""
        self._n += 1
        name = f"scalar_{self._n}"
        self.inits.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
        return name

    def dim(self, x: str, axis: int, name: str) -> str:
        """TorchScript's ``x.size(axis)``: Shape -> Gather(axis) (a scalar)."""
        shape = self.op("Shape", [x], f"{name}_shape")
        return self.op("Gather", [shape, self.scalar(axis)], name, axis=0)

    def vec(self, parts: list[str | int], name: str) -> str:
        """Concat of scalars (Unsqueezed) and literal ints: a shape vector built at run time."""
        items = []
        for k, p in enumerate(parts):
            items.append(self.ints([p]) if isinstance(p, int) else
                         self.op("Unsqueeze", [p, self.ints([0])], f"{name}_u{k}"))
        return self.op("Concat", items, name, axis=0)

    def model(self, name: str, inputs, outputs, ort: bool = False) -> onnx.ModelProto:
        """The model (IR 8, opset :data:`OPSET`; com.microsoft 1 too when ``ort``), its trainable
        count in the doc string; checked by onnx's checker unless ``ort``."""
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(ORT, 1)] if ort else [])
        m = helper.make_model(g, opset_imports=opsets, ir_version=8,
                              producer_name="hypar scripts/make_pattern_fixtures.py")
        m.doc_string = f"trainable parameters: {self.params}"
        if not ort:
            onnx.checker.check_model(m, full_check=True)
        return m


def _windows(g: Graph, x: str, b: str, hp: str, wp: str, tag: str) -> str:
    """(B, Hp, Wp, C) -> (B * nH * nW, win * win, C) through a run-time Reshape target."""
    nh = g.op("Div", [hp, g.scalar(W_WIN)], f"{tag}_nh")
    nw = g.op("Div", [wp, g.scalar(W_WIN)], f"{tag}_nw")
    r = g.op("Reshape", [x, g.vec([b, nh, W_WIN, nw, W_WIN, W_CH], f"{tag}_target")], f"{tag}_split")
    t = g.op("Transpose", [r], f"{tag}_perm", perm=[0, 1, 3, 2, 4, 5])
    return g.op("Reshape", [t, g.ints([-1, W_WIN * W_WIN, W_CH])], f"{tag}_windows")


def _relative_bias(g: Graph) -> str:
    """The relative-position bias (1, heads, N, N): a (2w-1)^2 x heads table gathered with a
    constant index tensor (Swin's relative_position_index), reshaped and permuted."""
    table = g.weight("blocks.0.attn.relative_position_bias_table", [(2 * W_WIN - 1) ** 2, W_HEADS])
    coords = np.stack(np.meshgrid(np.arange(W_WIN), np.arange(W_WIN), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (W_WIN - 1)
    index = (rel[..., 0] * (2 * W_WIN - 1) + rel[..., 1]).reshape(-1)
    bias = g.op("Gather", [table, g.ints(index.tolist(), "relative_position_index")], "attn_bias_gather", axis=0)
    n = W_WIN * W_WIN
    bias = g.op("Reshape", [bias, g.ints([n, n, W_HEADS])], "attn_bias_reshape")
    bias = g.op("Transpose", [bias], "attn_bias_perm", perm=[2, 0, 1])
    return g.op("Unsqueeze", [bias, g.ints([0])], "attn_bias")


def _attention(g: Graph, win: str) -> str:
    """Window attention on (B_, N, C): qkv Linear, heads, q k^T * scale + bias, softmax, @ v,
    merge heads (target from Shape), proj Linear."""
    hd, n = W_CH // W_HEADS, W_WIN * W_WIN
    qkv = g.op("MatMul", [win, g.weight("blocks.0.attn.qkv.weight", [W_CH, 3 * W_CH])], "qkv_matmul")
    qkv = g.op("Add", [qkv, g.weight("blocks.0.attn.qkv.bias", [3 * W_CH])], "qkv_add")
    qkv = g.op("Reshape", [qkv, g.ints([-1, n, 3, W_HEADS, hd])], "qkv_heads")
    qkv = g.op("Transpose", [qkv], "qkv_perm", perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", [qkv, g.scalar(i)], f"{c}_pick", axis=0) for i, c in enumerate("qkv"))
    q = g.op("Mul", [q, _scale(g, hd)], "q_scaled")
    kt = g.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, kt], "scores")
    scores = g.op("Add", [scores, _relative_bias(g)], "scores_bias")
    probs = g.op("Softmax", [scores], "probs", axis=-1)
    ctx = g.op("MatMul", [probs, v], "context")
    ctx = g.op("Transpose", [ctx], "context_perm", perm=[0, 2, 1, 3])
    rows = g.dim(win, 0, "windows_count")
    ctx = g.op("Reshape", [ctx, g.vec([rows, n, W_CH], "merge_target")], "context_merged")
    out = g.op("MatMul", [ctx, g.weight("blocks.0.attn.proj.weight", [W_CH, W_CH])], "proj_matmul")
    return g.op("Add", [out, g.weight("blocks.0.attn.proj.bias", [W_CH])], "proj_add")


def _scale(g: Graph, hd: int) -> str:
    """The attention scale hd^-0.5 as a float scalar initializer (not trainable)."""
    g.inits.append(numpy_helper.from_array(np.array(hd ** -0.5, dtype=np.float32), "attn_scale"))
    return "attn_scale"


def _padded(g: Graph, x: str, b: str, hp: str, wp: str) -> tuple[str, str, str]:
    """Pad (B, Hp, Wp, C) at the bottom / right to multiples of the window, by amounts computed
    from the size ((w - s % w) % w); returns the padded tensor and its computed H, W."""
    win = g.scalar(W_WIN)
    ph = g.op("Mod", [g.op("Sub", [win, g.op("Mod", [hp, win], "h_rem")], "h_gap"), win], "pad_h")
    pw = g.op("Mod", [g.op("Sub", [win, g.op("Mod", [wp, win], "w_rem")], "w_gap"), win], "pad_w")
    zero = g.scalar(0)
    pads = g.vec([zero, zero, zero, zero, zero, ph, pw, zero], "pads")
    xp = g.op("Pad", [x, pads], "x_padded", mode="constant")
    return xp, g.op("Add", [hp, ph], "h_padded"), g.op("Add", [wp, pw], "w_padded")


def windowed_attention() -> onnx.ModelProto:
    """Patch Conv, NHWC, pad to windows, window attention with relative-position bias, window
    reverse through computed targets, crop by a computed Slice, residual, mean pool, head."""
    g = Graph(seed=0)
    feat = g.op("Conv", ["x", g.weight("patch_embed.proj.weight", [W_CH, 3, W_PATCH, W_PATCH]),
                         g.weight("patch_embed.proj.bias", [W_CH])], "patch_embed",
                kernel_shape=[W_PATCH, W_PATCH], strides=[W_PATCH, W_PATCH])
    nhwc = g.op("Transpose", [feat], "to_nhwc", perm=[0, 2, 3, 1])
    b, hp, wp = (g.dim(feat, a, n) for a, n in ((0, "b"), (2, "hp"), (3, "wp")))
    xp, hpad, wpad = _padded(g, nhwc, b, hp, wp)
    out = _attention(g, _windows(g, xp, b, hpad, wpad, "part"))
    nh = g.op("Div", [hpad, g.scalar(W_WIN)], "rev_nh")
    nw = g.op("Div", [wpad, g.scalar(W_WIN)], "rev_nw")
    r = g.op("Reshape", [out, g.vec([b, nh, nw, W_WIN, W_WIN, W_CH], "rev_target")], "rev_split")
    r = g.op("Transpose", [r], "rev_perm", perm=[0, 1, 3, 2, 4, 5])
    r = g.op("Reshape", [r, g.vec([b, hpad, wpad, W_CH], "rev_full_target")], "rev_full")
    ends = g.vec([hp, wp], "crop_ends")
    crop = g.op("Slice", [r, g.ints([0, 0]), ends, g.ints([1, 2])], "crop")
    y = g.op("Add", [nhwc, crop], "residual")
    pooled = g.op("ReduceMean", [y], "pool", axes=[1, 2], keepdims=0)
    g.op("Gemm", [pooled, g.weight("head.weight", [W_CLASSES, W_CH]), g.weight("head.bias", [W_CLASSES])],
         "head", transB=1)
    return g.model("windowed_attention_dynamic",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                   [helper.make_tensor_value_info("head", TensorProto.FLOAT, ["batch", W_CLASSES])])


def _embeddings(g: Graph, ids: str) -> str:
    """Token + position (Range over the computed length) + token-type (ConstantOfShape zeros)
    embeddings, the position rows Expanded to the batch."""
    tok = g.op("Gather", [g.weight("embeddings.word_embeddings", [S_VOCAB, S_HID]), ids], "word_gather", axis=0)
    shape = g.op("Shape", [ids], "ids_shape")
    length = g.op("Squeeze", [g.op("Slice", [shape, g.ints([1]), g.ints([2]), g.ints([0])], "len_slice"),
                              g.ints([0])], "length")
    pos_ids = g.op("Unsqueeze", [g.op("Range", [g.scalar(0), length, g.scalar(1)], "position_range"),
                                 g.ints([0])], "position_ids")
    pos = g.op("Gather", [g.weight("embeddings.position_embeddings", [S_POS, S_HID]), pos_ids], "pos_gather",
               axis=0)
    pos = g.op("Expand", [pos, g.op("Shape", [tok], "tok_shape")], "pos_expand")
    zeros = g.op("ConstantOfShape", [shape], "token_type_ids",
                 value=numpy_helper.from_array(np.array([0], dtype=np.int64)))
    typ = g.op("Gather", [g.weight("embeddings.token_type_embeddings", [S_TYPES, S_HID]), zeros], "type_gather",
               axis=0)
    return g.op("Add", [g.op("Add", [tok, pos], "emb_sum"), typ], "embeddings")


def sequence_pattern() -> onnx.ModelProto:
    """Embeddings, then a feed-forward block on (batch x length) rows (Reshape targets built by
    Shape -> Slice -> Concat), back to (batch, length, hidden), residual, vocabulary head."""
    g = Graph(seed=1)
    emb = _embeddings(g, "ids")
    rows = g.op("Reshape", [emb, g.ints([-1, S_HID])], "rows")
    h = g.op("Gemm", [rows, g.weight("ffn.fc1.weight", [S_HID, S_FFN]), g.weight("ffn.fc1.bias", [S_FFN])], "fc1")
    h = g.op("Relu", [h], "fc1_relu")
    h = g.op("Gemm", [h, g.weight("ffn.fc2.weight", [S_FFN, S_HID]), g.weight("ffn.fc2.bias", [S_HID])], "fc2")
    lead = g.op("Slice", [g.op("Shape", [emb], "emb_shape"), g.ints([0]), g.ints([2]), g.ints([0])], "lead_dims")
    h = g.op("Reshape", [h, g.op("Concat", [lead, g.ints([S_HID])], "back_target", axis=0)], "back")
    y = g.op("Add", [emb, h], "residual")
    g.op("MatMul", [y, g.weight("lm_head.weight", [S_HID, S_VOCAB])], "lm_head")
    return g.model("sequence_pattern_dynamic",
                   [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", None])],
                   [helper.make_tensor_value_info("lm_head", TensorProto.FLOAT, ["batch", None, S_VOCAB])])


def _rotary_caches(g: Graph) -> tuple[str, str]:
    """cos / sin caches (max positions, head size / 2) of base 10000 (constants, not trained)."""
    half = D_HID // D_HEADS // 2
    freqs = np.outer(np.arange(D_MAX_POS), 10000.0 ** (-np.arange(half) / half))
    for name, f in (("cos_cache", np.cos), ("sin_cache", np.sin)):
        g.inits.append(numpy_helper.from_array(f(freqs).astype(np.float32), name))
    return "cos_cache", "sin_cache"


def _fused_attention(g: Graph, x: str, i: int, lengths: tuple[str, str]) -> str:
    """q/k/v projections, rotary on q and k, GroupQueryAttention, o projection (block ``i``)."""
    p, path, kv = f"model.layers.{i}.self_attn", f"/model/layers.{i}/self_attn", D_HID // D_HEADS * D_KV
    q, k, v = (g.op("MatMul", [x, g.weight(f"{p}.{m}_proj.weight", [D_HID, n])], f"{path}/{m}_proj/MatMul")
               for m, n in (("q", D_HID), ("k", kv), ("v", kv)))
    q, k = (g.ort("RotaryEmbedding", [t, "position_ids", "cos_cache", "sin_cache"], [f"{path}/{m}_rotary"],
                  f"{path}/{m}_rotary/RotaryEmbedding", interleaved=0) for t, m in ((q, "q"), (k, "k")))
    a = g.ort("GroupQueryAttention", [q, k, v, "", "", *lengths], [f"{path}/GroupQueryAttention"],
              f"{path}/GroupQueryAttention", num_heads=D_HEADS, kv_num_heads=D_KV)
    return g.op("MatMul", [a, g.weight(f"{p}.o_proj.weight", [D_HID, D_HID])], f"{path}/o_proj/MatMul")


def _swiglu(g: Graph, x: str, i: int) -> str:
    """down(silu(gate(x)) * up(x)) with silu = gate * Sigmoid(gate)."""
    p, path = f"model.layers.{i}.mlp", f"/model/layers.{i}/mlp"
    gate, up = (g.op("MatMul", [x, g.weight(f"{p}.{m}_proj.weight", [D_HID, D_MLP])], f"{path}/{m}_proj/MatMul")
                for m in ("gate", "up"))
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{path}/act_fn/Sigmoid")], f"{path}/act_fn/Mul")
    h = g.op("Mul", [silu, up], f"{path}/Mul")
    return g.op("MatMul", [h, g.weight(f"{p}.down_proj.weight", [D_MLP, D_HID])], f"{path}/down_proj/MatMul")


def _skip_norm(g: Graph, x: str, residual: str, weight: str, name: str) -> tuple[str, str]:
    """SkipSimplifiedLayerNormalization: (normalised x + residual, the sum) -- its outputs 0 and 3."""
    out, total = f"{name}_output_0", f"{name}_output_3"
    g.ort("SkipSimplifiedLayerNormalization", [x, residual, g.weight(weight, [D_HID])], [out, "", "", total], name,
          epsilon=1e-6)
    return out, total


def decoder_ort_fused() -> onnx.ModelProto:
    """The optimised Llama-style decoder (module docstring)."""
    g = Graph(seed=2)
    h = g.op("Gather", [g.weight("model.embed_tokens.weight", [D_VOCAB, D_HID]), "input_ids"],
             "/model/embed_tokens/Gather", axis=0)
    mask_sum = g.op("ReduceSum", ["attention_mask", g.ints([1])], "/model/attn_mask_reformat/ReduceSum", keepdims=0)
    seqlens = g.op("Cast", [g.op("Sub", [mask_sum, g.ints([1], "one")], "/model/attn_mask_reformat/Sub")],
                   "/model/attn_mask_reformat/seqlens_k", to=TensorProto.INT32)
    width = g.op("Gather", [g.op("Shape", ["attention_mask"], "/model/attn_mask_reformat/Shape"), g.scalar(1)],
                 "/model/attn_mask_reformat/Gather", axis=0)
    total = g.op("Cast", [width], "/model/attn_mask_reformat/total_seq_len", to=TensorProto.INT32)
    _rotary_caches(g)
    x = g.op("SimplifiedLayerNormalization", [h, g.weight("model.layers.0.input_layernorm.weight", [D_HID])],
             "/model/layers.0/input_layernorm/LayerNorm", axis=-1, epsilon=1e-6)
    residual = h
    for i in range(D_LAYERS):
        if i:
            x, residual = _skip_norm(g, x, residual, f"model.layers.{i}.input_layernorm.weight",
                                     f"/model/layers.{i}/input_layernorm/SkipLayerNorm")
        attn = _fused_attention(g, x, i, (seqlens, total))
        x, residual = _skip_norm(g, attn, residual, f"model.layers.{i}.post_attention_layernorm.weight",
                                 f"/model/layers.{i}/post_attention_layernorm/SkipLayerNorm")
        x = _swiglu(g, x, i)
    x, _ = _skip_norm(g, x, residual, "model.norm.weight", "/model/norm/SkipLayerNorm")
    g.op("MatMul", [x, g.weight("lm_head.weight", [D_HID, D_VOCAB])], "logits")
    ints = [("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"]),
            ("position_ids", ["batch", "sequence"])]
    return g.model("decoder_ort_fused", [helper.make_tensor_value_info(n, TensorProto.INT64, s) for n, s in ints],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", D_VOCAB])],
                   ort=True)


FIXTURES_BUILT = {"windowed_attention_dynamic": windowed_attention, "sequence_pattern_dynamic": sequence_pattern,
                  "decoder_ort_fused": decoder_ort_fused}


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check compare) every fixture; 0 when all is well."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed file differs from the build")
    args = ap.parse_args(argv)
    bad = 0
    for name, build in FIXTURES_BUILT.items():
        path = FIXTURES / f"{name}.onnx"
        data = build().SerializeToString()
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{path} differs from what {Path(__file__).name} builds", file=sys.stderr)
                bad += 1
        else:
            path.write_bytes(data)
            print(f"wrote {path} ({len(data)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
