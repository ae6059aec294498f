#!/usr/bin/env python3
"""Write a Llama-style decoder LM as the torch dynamo exporter writes it, at any size, with
shapes-only weights (onnx.helper only; no torch, nothing downloaded).

The graph repeats node for node what ``torch.onnx.export(..., dynamo=True)`` (torch 2.13, opset
20) makes of hypar/torch/examples.py's ``Decoder`` (tests/fixtures/decoder_dynamo.onnx): token
embedding ``Gather``; per block an RMSNorm (``Pow``, ``ReduceMean``, ``Add`` eps, ``Sqrt``,
``Reciprocal``, ``Mul``, ``Mul`` by the learned scale), q/k/v ``MatMul`` projections reshaped to
heads with the shape ``Concat``-ed from ``Shape`` of the input, rotary embeddings (``Split``,
``Neg``, ``Concat``, ``Mul`` by cos and sin, ``Add``), grouped-query K/V expanded to the query
heads (``Unsqueeze``, ``Expand``, ``Reshape``), the causal mask (``Trilu`` + ``Where``),
``Softmax``, the output projection and residual ``Add``; a SwiGLU MLP (``Sigmoid``, ``Mul``);
a final RMSNorm and an untied vocabulary head. Every node carries the exporter's
``pkg.torch.onnx.name_scopes`` metadata, so module paths read ``model.layers.7.mlp.up_proj``.

Weights (every learned tensor) are initializers whose data lives in an external file that is
never written: ``onnx.load(path, load_external_data=False)`` reads them as shapes, which is all
planning needs (hypar never loads external data). Small constants (shapes, eps, scale) are inline.

The default is Llama-3-8B's shape: 32 blocks, hidden 4096, 32 query / 8 key-value heads, SwiGLU
14336, vocabulary 128256, batch 8 and sequence 2048 as fixed input dims.

Usage::

    python scripts/build_decoder.py OUT.onnx                  # Llama-3-8B shaped, 32 blocks
    python scripts/build_decoder.py OUT.onnx --layers 4 --sequence 512
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20
#: The external data file named by every weight; never written.
ABSENT_DATA = "weights.absent.bin"


@dataclass(frozen=True)
class DecoderShape:
    """The decoder's dimensions (elements)."""

    layers: int = 32
    hidden: int = 4096
    q_heads: int = 32
    kv_heads: int = 8
    mlp: int = 14336
    vocab: int = 128256
    batch: int = 8
    sequence: int = 2048
    rope_base: float = 500000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.q_heads

    def parameters(self) -> int:
        """Trainable parameters: embedding, per block 4 projections + 3 MLP + 2 norms, final
        norm, vocabulary head."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        block = 2 * h * h + 2 * h * kv + 3 * h * self.mlp + 2 * h
        return 2 * self.vocab * h + self.layers * block + h


class _Writer:
    """Nodes, initializers and the current module scope of the graph being written."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.scope: list[str] = [""]
        self.counter = 0

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        """Add one node (named ``node_<base>_<k>``) in the current scope; its outputs."""
        name = self.fresh(base)
        outs = [name] if n_out == 1 else [f"{name}_split_{i}" for i in range(n_out)]
        n = helper.make_node(op, inputs, outs, name=f"node_{name}", **attrs)
        scopes = self.scope + [name]
        entry = n.metadata_props.add()
        entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(scopes)
        self.nodes.append(n)
        return outs

    def one(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        return self.node(op, inputs, base, **attrs)[0]

    def const(self, name: str, value, dtype=np.float32) -> str:
        """An inline initializer (small constants only)."""
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def weight(self, name: str, shape: list[int]) -> str:
        """A learned tensor as shape only: float32 initializer with absent external data."""
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        t.data_location = TensorProto.EXTERNAL
        size = int(np.prod(shape)) * 4
        for key, value in (("location", ABSENT_DATA), ("offset", "0"), ("length", str(size))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.inits.append(t)
        return name


class _Decoder:
    """Writes the decoder's nodes into a :class:`_Writer`."""

    def __init__(self, shape: DecoderShape) -> None:
        self.s = shape
        self.w = _Writer()
        self.consts()

    def consts(self) -> None:
        s, w = self.s, self.w
        w.const("c_zero", 0.0), w.const("c_one", 1.0), w.const("c_two", 2.0)
        w.const("c_eps", 1e-5), w.const("c_neg_inf", -np.inf)
        w.const("c_scale", 1.0 / np.sqrt(s.head_dim)), w.const("c_true", True, np.bool_)
        w.const("c_axis1", [1], np.int64), w.const("c_axis2", [2], np.int64)
        w.const("c_diag", 1, np.int64)
        w.const("c_q_heads", [s.q_heads], np.int64), w.const("c_kv_heads", [s.kv_heads], np.int64)
        w.const("c_groups", [s.q_heads // s.kv_heads], np.int64)
        w.const("c_head_dim", [s.head_dim], np.int64), w.const("c_hidden", [s.hidden], np.int64)
        half = np.arange(0, s.head_dim, 2, dtype=np.float64) / s.head_dim
        w.const("c_inv_freq", (1.0 / s.rope_base ** half)[None, :])

    def shapes(self) -> None:
        """Batch and sequence sizes read from the input, the rotary tables and the reshape
        targets, as the exporter computes them."""
        w = self.w
        self.b = w.one("Shape", ["input_ids"], "Shape", start=0, end=1)
        self.t = w.one("Shape", ["input_ids"], "Shape", start=1, end=2)
        t_scalar = w.one("Squeeze", [self.t], "sym_size_int")
        t_float = w.one("Cast", [t_scalar], "Cast", to=TensorProto.FLOAT)
        pos = w.one("Range", ["c_zero", t_float, "c_one"], "arange")
        pos = w.one("Unsqueeze", [pos, "c_axis1"], "unsqueeze")
        freqs = w.one("Mul", [pos, "c_inv_freq"], "mul")
        emb = w.one("Concat", [freqs, freqs], "cat", axis=-1)
        self.cos, self.sin = w.one("Cos", [emb], "cos"), w.one("Sin", [emb], "sin")
        b, t = self.b, self.t
        self.q_shape = w.one("Concat", [b, t, "c_q_heads", "c_head_dim"], "Concat", axis=0)
        self.kv_shape = w.one("Concat", [b, t, "c_kv_heads", "c_head_dim"], "Concat", axis=0)
        self.expand_shape = w.one("Concat", [b, "c_kv_heads", "c_groups", t, "c_head_dim"],
                                  "Concat", axis=0)
        self.heads_shape = w.one("Concat", [b, "c_q_heads", t, "c_head_dim"], "Concat", axis=0)
        self.merge_shape = w.one("Concat", [b, t, "c_hidden"], "Concat", axis=0)
        square = w.one("Concat", [self.t, self.t], "Concat", axis=0)
        ones = w.one("Expand", ["c_true", square], "ones")
        self.mask = w.one("Trilu", [ones, "c_diag"], "triu", upper=1)

    def rms_norm(self, x: str, module: str) -> str:
        w = self.w
        w.scope.append(module)
        sq = w.one("Pow", [x, "c_two"], "pow")
        mean = w.one("ReduceMean", [sq, "c_axis2"], "mean", keepdims=1, noop_with_empty_axes=0)
        root = w.one("Sqrt", [w.one("Add", [mean, "c_eps"], "add")], "Sqrt")
        normed = w.one("Mul", [x, w.one("Reciprocal", [root], "rsqrt")], "mul")
        out = w.one("Mul", [normed, w.weight(f"{module}.weight", [self.s.hidden])], "mul")
        w.scope.pop()
        return out

    def linear(self, x: str, module: str, n_in: int, n_out: int) -> str:
        w = self.w
        w.scope.append(module)
        out = w.one("MatMul", [x, w.weight(f"{module}.weight.T", [n_in, n_out])], "linear")
        w.scope.pop()
        return out

    def rotary(self, x: str) -> str:
        w = self.w
        straight = w.one("Mul", [x, self.cos], "mul")
        left, right = w.node("Split", [x], "Split", n_out=2, axis=3, num_outputs=2)
        del w.nodes[-1].metadata_props[:]          # the exporter's Split carries no metadata
        turned = w.one("Concat", [w.one("Neg", [right], "neg"), left], "cat", axis=-1)
        return w.one("Add", [straight, w.one("Mul", [turned, self.sin], "mul")], "add")

    def expand_kv(self, x: str) -> str:
        w = self.w
        wide = w.one("Expand", [w.one("Unsqueeze", [x, "c_axis2"], "unsqueeze"),
                                self.expand_shape], "expand")
        return w.one("Reshape", [wide, self.heads_shape], "_unsafe_view", allowzero=1)

    def attention(self, x: str, prefix: str) -> str:
        s, w = self.s, self.w
        kv = s.kv_heads * s.head_dim
        heads = []
        for proj, n_out, shape in (("q_proj", s.hidden, self.q_shape), ("k_proj", kv, self.kv_shape),
                                   ("v_proj", kv, self.kv_shape)):
            y = self.linear(x, f"{prefix}.{proj}", s.hidden, n_out)
            w.scope.append(prefix)
            y = w.one("Reshape", [y, shape], "view", allowzero=1)
            heads.append(w.one("Transpose", [y], "transpose", perm=[0, 2, 1, 3]))
            w.scope.pop()
        w.scope.append(prefix)
        q, k = self.rotary(heads[0]), self.rotary(heads[1])
        k, v = self.expand_kv(k), self.expand_kv(heads[2])
        kt = w.one("Transpose", [k], "transpose", perm=[0, 1, 3, 2])
        scores = w.one("Mul", [w.one("MatMul", [q, kt], "matmul"), "c_scale"], "mul")
        masked = w.one("Where", [self.mask, "c_neg_inf", scores], "masked_fill")
        probs = w.one("Softmax", [masked], "softmax", axis=-1)
        ctx = w.one("Transpose", [w.one("MatMul", [probs, v], "matmul")], "transpose",
                    perm=[0, 2, 1, 3])
        ctx = w.one("Reshape", [ctx, self.merge_shape], "_unsafe_view", allowzero=1)
        w.scope.pop()
        return self.linear(ctx, f"{prefix}.o_proj", s.hidden, s.hidden)

    def mlp(self, x: str, prefix: str) -> str:
        s, w = self.s, self.w
        gate = self.linear(x, f"{prefix}.gate_proj", s.hidden, s.mlp)
        w.scope.append(prefix)
        act = w.one("Mul", [gate, w.one("Sigmoid", [gate], "Sigmoid")], "silu")
        w.scope.pop()
        up = self.linear(x, f"{prefix}.up_proj", s.hidden, s.mlp)
        w.scope.append(prefix)
        both = w.one("Mul", [act, up], "mul")
        w.scope.pop()
        return self.linear(both, f"{prefix}.down_proj", s.mlp, s.hidden)

    def block(self, x: str, k: int) -> str:
        w, prefix = self.w, f"model.layers.{k}"
        attn = self.attention(self.rms_norm(x, f"{prefix}.input_layernorm"), f"{prefix}.self_attn")
        w.scope.append(prefix)
        x = w.one("Add", [x, attn], "add")
        w.scope.pop()
        out = self.mlp(self.rms_norm(x, f"{prefix}.post_attention_layernorm"), f"{prefix}.mlp")
        w.scope.append(prefix)
        x = w.one("Add", [x, out], "add")
        w.scope.pop()
        return x

    def model(self, name: str) -> onnx.ModelProto:
        s, w = self.s, self.w
        w.scope.append("model")
        self.shapes()
        w.scope.append("model.embed_tokens")
        x = w.one("Gather", [w.weight("model.embed_tokens.weight", [s.vocab, s.hidden]),
                             "input_ids"], "embedding", axis=0)
        w.scope.pop()
        for k in range(s.layers):
            x = self.block(x, k)
        x = self.rms_norm(x, "model.norm")
        w.scope.pop()
        logits = self.linear(x, "lm_head", s.hidden, s.vocab)
        w.nodes[-1].output[0] = "logits"
        graph = helper.make_graph(
            w.nodes, name,
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [s.batch, s.sequence])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                           [s.batch, s.sequence, s.vocab])],
            w.inits)
        del logits
        return helper.make_model(graph, producer_name="hypar build_decoder",
                                 opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)


def build_decoder(shape: DecoderShape = DecoderShape(), name: str = "decoder32") -> onnx.ModelProto:
    """The decoder model (weights as absent external data)."""
    return _Decoder(shape).model(name)


def write_decoder(path: str | Path, shape: DecoderShape = DecoderShape(),
                  name: str | None = None) -> Path:
    """Write the decoder to ``path`` unless it already holds one of these dims; returns the path."""
    path = Path(path)
    model = build_decoder(shape, name or path.stem)
    data = model.SerializeToString()
    if not path.exists() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the .onnx file to write")
    defaults = DecoderShape()
    for field in ("layers", "hidden", "q_heads", "kv_heads", "mlp", "vocab", "batch", "sequence"):
        ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field))
    a = ap.parse_args(argv)
    shape = DecoderShape(a.layers, a.hidden, a.q_heads, a.kv_heads, a.mlp, a.vocab, a.batch,
                         a.sequence)
    path = write_decoder(a.out, shape)
    print(f"wrote {path} ({path.stat().st_size} bytes): {shape.layers} blocks, "
          f"{shape.parameters():,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
