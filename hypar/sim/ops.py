"""Which kernel a layer runs: the layer classes the simulator knows (predicates on
``hypar.graph.Layer``), and dispatch tables from class to forward value, input errors and weight
gradient on whole arrays (or on a PE's shard of them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import RMS_NORM_OPS
from hypar.sim.conv import conv_forward, conv_input_grad, conv_weight_grad
from hypar.sim.kernels import (BINARY_OPS, CONST_OPS, LOCAL, REDUCE_OPS, SHAPE_OPS, batchnorm, batchnorm_bwd,
                               embedding_grad, layernorm, layernorm_bwd, lrn, lrn_bwd, reduce_bwd, reduce_fwd, softmax,
                               softmax_bwd, unbroadcast)
from hypar.sim.fused import is_rotary, is_skip_norm, rotary, skip_norm_error, skip_norm_values
from hypar.sim.norms import rms_norm, rms_norm_bwd

WEIGHTED_KINDS = (G.GEMM, G.CONV, G.EMBEDDING)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")    # scale and zero point are constant inputs


def is_const_op(lay: G.Layer) -> bool:
    """An elementwise op of one activation and one constant (run with a seeded scalar; a Pow only
    with the exponent the importer read)."""
    return lay.kind == G.ELEMENTWISE and lay.op in CONST_OPS and lay.attr("const_inputs") == 1 \
        and len(lay.inputs) == 1 and (lay.op != "Pow" or lay.attr("exponent") is not None)


def is_binary(lay: G.Layer) -> bool:
    """Mul / Sub / Div of two activations."""
    return lay.kind == G.BINARY and lay.op in BINARY_OPS and len(lay.inputs) == 2 and not lay.attr("const_inputs")


def is_reduce(lay: G.Layer) -> bool:
    """ReduceMean / ReduceSum of one activation over recorded axes (dims kept or dropped)."""
    return lay.kind == G.REDUCE and lay.op in REDUCE_OPS and len(lay.inputs) == 1 and lay.attr("axes") is not None


def is_shape_op(lay: G.Layer) -> bool:
    """Reshape / Transpose / (Un)Squeeze with a recorded output shape (and perm)."""
    return lay.kind == G.RESHAPE and lay.op in SHAPE_OPS and lay.attr("shape") is not None and len(lay.inputs) == 1 \
        and (lay.op != "Transpose" or lay.attr("perm") is not None)


def is_expand(lay: G.Layer) -> bool:
    """An Expand of one activation to its recorded output shape (numpy broadcasting)."""
    return lay.op == "Expand" and len(lay.inputs) == 1 and lay.attr("shape") is not None


def is_pad(lay: G.Layer) -> bool:
    """A constant-mode Pad of one activation by recorded non-negative pads."""
    pads = lay.attr("pads")
    return lay.op == "Pad" and len(lay.inputs) == 1 and lay.attr("mode", "constant") == "constant" \
        and pads is not None and min(pads, default=0) >= 0


def pad_widths(lay: G.Layer) -> list[tuple[int, int]]:
    """A Pad's (before, after) per axis."""
    pads = lay.attr("pads")
    r = len(pads) // 2
    return [(int(pads[a]), int(pads[a + r])) for a in range(r)]


def _pad(lay: G.Layer, xs: list, w) -> np.ndarray:
    return np.pad(xs[0], pad_widths(lay), constant_values=lay.attr("value", 0.0))


def _pad_bwd(lay: G.Layer, xs: list, e: np.ndarray, w) -> list:
    return [e[tuple(slice(b, b + n) for (b, _a), n in zip(pad_widths(lay), xs[0].shape))]]


def is_split(lay: G.Layer) -> bool:
    """A Split with recorded sizes, a Slice with recorded starts, ends, axes and positive steps (a
    crop), or a Gather of recorded distinct constant indices (one output, the input's part at
    :func:`split_slice`)."""
    if lay.kind != G.SPLIT or len(lay.inputs) != 1:
        return False
    if lay.op == "Gather":
        idx = lay.attr("indices")
        return isinstance(idx, int) or (isinstance(idx, tuple) and len(set(idx)) == len(idx))
    if lay.op == "Slice":
        return all(lay.attr(k) is not None for k in ("starts", "ends", "axes", "steps")) \
            and all(int(s) > 0 for s in lay.attr("steps"))
    return lay.op == "Split" and lay.attr("split") is not None


def is_lookup(lay: G.Layer) -> bool:
    """An embedding whose indices are constant (no activation input; :mod:`hypar.sim.lookup`)."""
    return lay.kind == G.EMBEDDING and not lay.inputs


def is_layernorm(lay: G.Layer) -> bool:
    """LayerNormalization of one activation."""
    return lay.kind == G.FEATURENORM and lay.op == "LayerNormalization" and len(lay.inputs) == 1


def is_rmsnorm(lay: G.Layer) -> bool:
    """RMSNormalization / SimplifiedLayerNormalization of one activation (its scale a parameter)."""
    return lay.kind == G.FEATURENORM and lay.op in RMS_NORM_OPS and len(lay.inputs) == 1


def is_softmax(lay: G.Layer) -> bool:
    """Softmax of one activation."""
    return lay.kind == G.SOFTMAX and lay.op == "Softmax" and len(lay.inputs) == 1


def is_add(lay: G.Layer) -> bool:
    """Add / Sum of activations (a residual join)."""
    return lay.kind == G.BINARY and lay.op in ("Add", "Sum") and not lay.attr("const_inputs")


def is_unary(lay: G.Layer) -> bool:
    """One of the ``kernels.LOCAL`` ops on one activation (Clip with its constant bounds, Where
    with its constant condition and value)."""
    consts = lay.attr("const_inputs")
    if lay.op not in LOCAL or len(lay.inputs) != 1 or (consts and lay.op not in ("Clip", "Where", *QDQ_OPS)):
        return False
    if lay.op == "Where" and consts != 2:
        return False
    return lay.op != "Flatten" or lay.attr("axis", 1) == 1


def is_lrn(lay: G.Layer) -> bool:
    """Local response normalisation across channels (of one activation)."""
    return lay.op == "LRN" and len(lay.inputs) == 1


def is_concat(lay: G.Layer) -> bool:
    """Concat of activations along a recorded axis."""
    return lay.kind == G.CONCAT and lay.op == "Concat" and lay.attr("axis") is not None


def concat_axis(lay: G.Layer, ndim: int) -> int:
    """The axis a Concat joins along (non-negative)."""
    return int(lay.attr("axis")) % ndim


def is_bn(lay: G.Layer) -> bool:
    """BatchNormalization."""
    return lay.kind == G.BATCHNORM and lay.op == "BatchNormalization"


def is_chain_op(lay: G.Layer) -> bool:
    """A single-input op that may run folded on either side of a conversion."""
    return is_unary(lay) or is_bn(lay) or is_const_op(lay) or is_shape_op(lay) or is_layernorm(lay) \
        or is_rmsnorm(lay) or is_softmax(lay) or is_lrn(lay) or is_expand(lay) or is_pad(lay) or is_rotary(lay)


def several_outputs(lay: G.Layer) -> bool:
    """Does the simulator compute every output of the layer (a Split's parts, a skip norm's
    normalised output and sum), not only its first?"""
    return is_split(lay) or is_skip_norm(lay)


def changes_shape(lay: G.Layer) -> bool:
    """Does the op's output have another shape than its input (pooling, flatten, reshape, expand,
    pad)."""
    if lay.op in LOCAL:
        return LOCAL[lay.op][2]
    return is_shape_op(lay) or is_expand(lay) or (is_pad(lay) and any(lay.attr("pads")))


def split_slice(lay: G.Layer, ndim: int, out: str) -> tuple:
    """The index of output ``out`` of a Split (or of a Slice's or a Gather's output) inside its
    input (a Gather's scalar index drops the axis)."""
    if lay.op == "Gather":
        idx = lay.attr("indices")
        cut = idx if isinstance(idx, int) else np.array(idx, dtype=np.int64)
        return tuple(cut if a == int(lay.attr("axis", 0)) % ndim else slice(None) for a in range(ndim))
    if lay.op == "Slice":
        cuts = {int(a) % ndim: slice(int(b), int(e), int(st)) for a, b, e, st in
                zip(lay.attr("axes"), lay.attr("starts"), lay.attr("ends"), lay.attr("steps"))}
        return tuple(cuts.get(a, slice(None)) for a in range(ndim))
    axis = int(lay.attr("axis", 0)) % ndim
    sizes = list(lay.attr("split"))
    k = list(lay.outputs).index(out)
    start = sum(sizes[:k])
    return tuple(slice(start, start + sizes[k]) if a == axis else slice(None) for a in range(ndim))


# The layer classes, tried in this order (the first that matches wins); "local" otherwise.
CLASSES: tuple[tuple[str, Callable[[G.Layer], bool]], ...] = (
    ("gemm", lambda l: l.kind == G.GEMM),
    ("conv", lambda l: l.kind == G.CONV),
    ("add", is_add),
    ("lookup", is_lookup),
    ("embedding", lambda l: l.kind == G.EMBEDDING),
    ("matmul_act", lambda l: l.kind == G.MATMUL_ACT),
    ("expand", is_expand),
    ("pad", is_pad),
    ("const", is_const_op),
    ("binary", is_binary),
    ("shape", is_shape_op),
    ("rotary", is_rotary),
    ("skipnorm", is_skip_norm),
    ("layernorm", is_layernorm),
    ("rmsnorm", is_rmsnorm),
    ("softmax", is_softmax),
    ("batchnorm", lambda l: l.kind == G.BATCHNORM),
    ("lrn", lambda l: is_lrn(l)),
    ("concat", lambda l: is_concat(l)),
    ("reduce", is_reduce),
)


def op_class(lay: G.Layer) -> str:
    """The name of the first class in ``CLASSES`` the layer belongs to, else "local"."""
    for name, test in CLASSES:
        if test(lay):
            return name
    return "local"


def _reshape(lay: G.Layer, xs: list, w) -> np.ndarray:
    if lay.op == "Transpose":
        return np.transpose(xs[0], lay.attr("perm"))
    return xs[0].reshape(lay.attr("shape"))


def _reshape_bwd(lay: G.Layer, xs: list, e: np.ndarray, w) -> list:
    if lay.op == "Transpose":
        return [np.transpose(e, np.argsort(lay.attr("perm")))]
    return [e.reshape(xs[0].shape)]


def _sum(lay: G.Layer, xs: list, w) -> np.ndarray:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


# class -> forward(layer, input arrays, parameters) -> output array
FORWARD: dict[str, Callable] = {
    "gemm": lambda lay, xs, w: xs[0] @ w,
    "conv": lambda lay, xs, w: conv_forward(xs[0], w, lay),
    "add": _sum,
    "lookup": lambda lay, xs, w: w.table[w.ids],                        # w: a sim.lookup.Lookup
    "embedding": lambda lay, xs, w: w[xs[0].astype(int)],
    "matmul_act": lambda lay, xs, w: xs[0] @ xs[1],
    "expand": lambda lay, xs, w: np.array(np.broadcast_to(xs[0], lay.attr("shape"))),
    "pad": _pad,
    "const": lambda lay, xs, w: CONST_OPS[lay.op][0](xs[0], w),
    "binary": lambda lay, xs, w: BINARY_OPS[lay.op][0](xs[0], xs[1]),
    "shape": _reshape,
    "rotary": lambda lay, xs, w: rotary(xs[0], w, lay),
    "skipnorm": lambda lay, xs, w: skip_norm_values(lay, xs, w, forward_op)[lay.outputs[0]],
    "layernorm": lambda lay, xs, w: layernorm(xs[0], w, lay),
    "rmsnorm": lambda lay, xs, w: rms_norm(xs[0], w, lay),
    "softmax": lambda lay, xs, w: softmax(xs[0]),
    "batchnorm": lambda lay, xs, w: batchnorm(xs[0], w, lay),
    "local": lambda lay, xs, w: LOCAL[lay.op][0](xs[0], lay),
    "lrn": lambda lay, xs, w: lrn(xs[0], lay),
    "concat": lambda lay, xs, w: np.concatenate(xs, axis=concat_axis(lay, xs[0].ndim)),
    "reduce": lambda lay, xs, w: reduce_fwd(xs[0], lay),
}

# class -> backward(layer, input arrays, output error, parameters) -> [error of each input]
BACKWARD: dict[str, Callable] = {
    "gemm": lambda lay, xs, e, w: [e @ w.T],
    "conv": lambda lay, xs, e, w: [conv_input_grad(xs[0], w, e, lay)],
    "add": lambda lay, xs, e, w: [unbroadcast(e, x.shape) for x in xs],
    "lookup": lambda lay, xs, e, w: [],                                 # constant indices: no input
    "embedding": lambda lay, xs, e, w: [np.zeros_like(xs[0])],          # token ids take no error
    "matmul_act": lambda lay, xs, e, w: [e @ np.swapaxes(xs[1], -1, -2), np.swapaxes(xs[0], -1, -2) @ e],
    "expand": lambda lay, xs, e, w: [unbroadcast(e, xs[0].shape)],
    "pad": _pad_bwd,
    "const": lambda lay, xs, e, w: [CONST_OPS[lay.op][1](xs[0], e, w)],
    "binary": lambda lay, xs, e, w: [unbroadcast(d, x.shape) for d, x in zip(BINARY_OPS[lay.op][1](xs[0], xs[1], e), xs)],
    "shape": _reshape_bwd,
    "rotary": lambda lay, xs, e, w: [rotary(e, w, lay, inverse=True)],
    "skipnorm": lambda lay, xs, e, w: [skip_norm_error(lay, xs, {lay.outputs[0]: e}, w, backward_op)] * 2,
    "layernorm": lambda lay, xs, e, w: [layernorm_bwd(xs[0], e, w, lay)],
    "rmsnorm": lambda lay, xs, e, w: [rms_norm_bwd(xs[0], e, w, lay)],
    "softmax": lambda lay, xs, e, w: [softmax_bwd(xs[0], e)],
    "batchnorm": lambda lay, xs, e, w: [batchnorm_bwd(xs[0], e, w, lay)],
    "local": lambda lay, xs, e, w: [LOCAL[lay.op][1](xs[0], e, lay)],
    "lrn": lambda lay, xs, e, w: [lrn_bwd(xs[0], e, lay)],
    "concat": lambda lay, xs, e, w: np.split(e, np.cumsum([x.shape[concat_axis(lay, e.ndim)] for x in xs])[:-1],
                                             axis=concat_axis(lay, e.ndim)),
    "reduce": lambda lay, xs, e, w: [reduce_bwd(xs[0], e, lay)],
}


def forward_op(lay: G.Layer, xs: list, w) -> np.ndarray:
    """The layer's output for input arrays ``xs`` and parameters ``w`` (not for a Split)."""
    return FORWARD[op_class(lay)](lay, xs, w)


def backward_op(lay: G.Layer, xs: list, e_out: np.ndarray, w) -> list:
    """Errors of the inputs (a local operation: works on shards and on partial sums alike)."""
    return BACKWARD[op_class(lay)](lay, xs, e_out, w)


def weight_grad(lay: G.Layer, x: np.ndarray, e: np.ndarray, vocab: int = 0) -> np.ndarray:
    """dW of a weighted layer (GEMM, Conv, embedding with ``vocab`` rows) for input x and output
    error e."""
    if lay.kind == G.CONV:
        return conv_weight_grad(x, e, lay)
    if lay.kind == G.EMBEDDING:
        return embedding_grad(x, e, np.arange(vocab))
    rows = int(np.prod(x.shape[:-1]))
    return x.reshape(rows, x.shape[-1]).T @ e.reshape(rows, e.shape[-1])
