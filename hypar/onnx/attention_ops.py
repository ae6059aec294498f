"""Attention written in plain ONNX ops: the node builders the expansions of fused attention ops
(:mod:`hypar.onnx.expand`, :mod:`hypar.onnx.expand_ort`) share.

:class:`Emitter` adds nodes and constant initializers under one fused node's name (each new node
keeps the fused node's ``metadata_props``, so the module it came from stays known);
:func:`scaled_dot_product` writes the ONNX spec's attention on 4-D heads (Q and K each scaled by
sqrt(scale), K transposed, MatMul, an optional causal mask, Softmax, MatMul with V);
:func:`split_heads`, :func:`repeat_kv` and :func:`merge_heads` move between 3-D (batch, sequence,
heads x head size) tensors and 4-D (batch, heads, sequence, head size) ones. Every target shape
is a constant that copies the batch and sequence from the input (Reshape's 0 and -1), so the
expansion holds for any bound dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper



class Names:
    """Tensor names not used in the graph yet."""

    def __init__(self, used: set[str]) -> None:
        self.used = used

    def fresh(self, base: str) -> str:
        """``base``, else ``base_2``, ``base_3``, ... whichever is unused (then reserved)."""
        cand, k = base, 2
        while cand in self.used:
            cand, k = f"{base}_{k}", k + 1
        self.used.add(cand)
        return cand


@dataclass
class Emitter:
    """Nodes and initializers replacing fused node ``node`` (named ``base``)."""

    node: onnx.NodeProto
    names: Names
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The fused node's name (its first output's when unnamed)."""
        return self.node.name or self.node.output[0]

    def tensor(self, tag: str) -> str:
        """A fresh tensor name ``<base>/<tag>``."""
        return self.names.fresh(f"{self.base}/{tag}")

    def op(self, op: str, inputs: list[str], tag: str | None, y: str, **attrs) -> str:
        """Add node ``<base>/<tag>`` (``<base>`` when ``tag`` is None) writing tensor ``y``;
        returns ``y``."""
        n = helper.make_node(op, inputs, [y], name=self.base if tag is None else f"{self.base}/{tag}", **attrs)
        n.metadata_props.extend(self.node.metadata_props)  # the module the fused op came from
        self.nodes.append(n)
        return y

    def const(self, tag: str, value: np.ndarray) -> str:
        """A constant initializer ``<base>/<tag>`` holding ``value``."""
        name = self.names.fresh(f"{self.base}/{tag}")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def scaled_dot_product(e: Emitter, qkv: tuple[str, str, str], y: str, scale: float, elem: int,
                       causal: bool = False) -> None:
    """``y`` = softmax(Q K^T * scale [+ causal mask]) V on 4-D heads Q (B, H, S, D), K (B, H, L, D),
    V (B, H, L, Dv): the ONNX spec's pattern (nodes ``q_scale``, ``k_scale``, ``k_transpose``,
    ``scores``, [``mask``...], ``softmax``, and the context MatMul named ``<base>``)."""
    q, k, v = qkv
    root = e.const("sqrt_scale", np.asarray(math.sqrt(scale), dtype=helper.tensor_dtype_to_np_dtype(elem)))
    qs = e.op("Mul", [q, root], "q_scale", e.tensor("q_scaled"))
    ks = e.op("Mul", [k, root], "k_scale", e.tensor("k_scaled"))
    kt = e.op("Transpose", [ks], "k_transpose", e.tensor("k_transposed"), perm=[0, 1, 3, 2])
    scores = e.op("MatMul", [qs, kt], "scores", e.tensor("scores"))
    if causal:
        scores = causal_mask(e, scores, elem)
    probs = e.op("Softmax", [scores], "softmax", e.tensor("probs"), axis=-1)
    e.op("MatMul", [probs, v], None, y)


def causal_mask(e: Emitter, scores: str, elem: int) -> str:
    """``scores`` (.., S, L) plus a mask of the lowest float strictly above the diagonal (query i
    sees keys 0..i: no past), built from the scores' shape at run time (Shape, Slice,
    ConstantOfShape, Trilu: shape-derived, not an activation), added elementwise."""
    np_type = helper.tensor_dtype_to_np_dtype(elem)
    dims = e.op("Shape", [scores], "mask_shape", e.tensor("scores_shape"))
    ends = (e.const("mask_from", np.array([-2], np.int64)), e.const("mask_to", np.array([np.iinfo(np.int64).max])))
    last2 = e.op("Slice", [dims, *ends], "mask_dims", e.tensor("mask_dims"))
    low = numpy_helper.from_array(np.array([np.finfo(np_type).min], dtype=np_type))
    fill = e.op("ConstantOfShape", [last2], "mask_fill", e.tensor("mask_fill"), value=low)
    tri = e.op("Trilu", [fill, e.const("mask_diagonal", np.array(1, np.int64))], "mask", e.tensor("causal_mask"),
               upper=1)
    return e.op("Add", [scores, tri], "mask_add", e.tensor("masked_scores"))


def split_heads(e: Emitter, x: str, heads: int, head_size: int, tag: str) -> str:
    """(B, S, heads x head_size) -> (B, heads, S, head_size): Reshape then Transpose."""
    r = e.op("Reshape", [x, e.const(f"{tag}_heads_shape", np.array([0, 0, heads, head_size], np.int64))],
             f"{tag}_reshape", e.tensor(f"{tag}_heads"))
    return e.op("Transpose", [r], f"{tag}_transpose", e.tensor(f"{tag}_bhsd"), perm=[0, 2, 1, 3])


def repeat_kv(e: Emitter, x: str, kv_heads: int, groups: int, head_size: int, tag: str) -> str:
    """(B, kv_heads, L, D) -> (B, kv_heads x groups, L, D), each key/value head repeated for the
    ``groups`` query heads that read it (query head h reads key/value head h // groups):
    Reshape to (B, kv_heads, 1, L, D), Expand to groups, Reshape."""
    r = e.op("Reshape", [x, e.const(f"{tag}_group_shape", np.array([0, kv_heads, 1, -1, head_size], np.int64))],
             f"{tag}_group", e.tensor(f"{tag}_grouped"))
    x5 = e.op("Expand", [r, e.const(f"{tag}_repeats", np.array([1, 1, groups, 1, 1], np.int64))],
              f"{tag}_expand", e.tensor(f"{tag}_expanded"))
    return e.op("Reshape", [x5, e.const(f"{tag}_repeat_shape", np.array([0, kv_heads * groups, -1, head_size],
                                                                          np.int64))],
                f"{tag}_repeat", e.tensor(f"{tag}_repeated"))


def merge_heads(e: Emitter, x: str, y: str) -> None:
    """(B, H, S, D) -> ``y`` (B, S, H x D): Transpose then Reshape."""
    t = e.op("Transpose", [x], "merge_transpose", e.tensor("merge_bshd"), perm=[0, 2, 1, 3])
    e.op("Reshape", [t, e.const("merge_shape", np.array([0, 0, -1], np.int64))], "merge", y)
