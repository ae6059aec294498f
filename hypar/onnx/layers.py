"""One ONNX node -> one :class:`hypar.graph.Layer`: the node's layer kind, then the builder of
that kind from :data:`BUILDERS` (decision kinds in :mod:`hypar.onnx.decision_layers`, the
non-weighted kinds here), then the element counts and axes every layer records."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from hypar import graph as G
from hypar.errors import ShapeError
from hypar.onnx import decision_layers
from hypar.onnx.index import ModelIndex
from hypar.onnx.layer_context import Attrs, Fields, LayerContext, NodeView, pick
from hypar.onnx.modules import module_path
from hypar.onnx.ops import (BINARY, CONV, FEATURENORM, MATMUL, POOL, REDUCE, RESHAPE, SOFTMAX, SPLIT, UNARY,
                            UNTRAINED_OPERANDS)
from hypar.onnx.protos import hashable, norm_axis

Builder = Callable[[LayerContext, NodeView], tuple[Fields, Attrs]]

# Kind of every op whose kind does not depend on which inputs are activations.
_KIND_OF_OP: dict[str, str] = {
    "BatchNormalization": G.BATCHNORM,
    **dict.fromkeys(FEATURENORM, G.FEATURENORM),
    **dict.fromkeys(SOFTMAX, G.SOFTMAX),
    **dict.fromkeys(REDUCE, G.REDUCE),
    **dict.fromkeys(POOL, G.POOL),
    **dict.fromkeys(RESHAPE, G.RESHAPE),
    "Concat": G.CONCAT,
    **dict.fromkeys(SPLIT, G.SPLIT),
    **dict.fromkeys(UNARY, G.ELEMENTWISE),
}

_FEATURENORM_ATTRS = ("axis", "epsilon", "num_groups", "size", "alpha", "beta", "bias", "p")
_FEATURENORM_UNWEIGHTED = ("LRN", "LpNormalization", "MeanVarianceNormalization")
_SKIP_NORMS = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")  # (x, skip, gamma, [beta,] bias)
_TRAINED_OPERAND_KINDS = (G.ELEMENTWISE, G.BINARY, G.CONCAT)
_POOL_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad", "count_include_pad")
_UNARY_ATTRS = ("alpha", "beta", "approximate", "ratio", "mode", "to")


def layer_kind(n: onnx.NodeProto, act_in: tuple[str, ...], index: ModelIndex) -> str:
    """The layer kind of node ``n`` with activation inputs ``act_in`` (a ``hypar.graph`` kind).

    Conv needs its data (and only it) to be an activation, else it is opaque; MatMul / Gemm
    with one activation operand is a GEMM, with two a MATMUL_ACT; Gather on a weight is an
    EMBEDDING (also with constant indices, when the weight is a trainable table); a binary op with one activation operand is ELEMENTWISE; unknown ops are OPAQUE."""
    op = n.op_type
    if op in CONV and act_in and n.input[0] == act_in[0] and len(act_in) == 1:
        return G.CONV
    if op in MATMUL and len(act_in) == 1:
        return G.GEMM
    if op in MATMUL and len(act_in) >= 2:
        return G.MATMUL_ACT
    if op == "Gather" and not index.is_act(n.input[0]) and (act_in or index.is_table(n.input[0])):
        return G.EMBEDDING
    if op in BINARY:
        return G.BINARY if len(act_in) >= 2 else G.ELEMENTWISE
    return _KIND_OF_OP.get(op, G.OPAQUE)


def opaque_label(n: onnx.NodeProto) -> str:
    """How the opaque-layer warning names node ``n``'s op."""
    if n.op_type in CONV:
        return f"op '{n.op_type}' with a computed (activation) weight"
    dom = f"{n.domain}::" if n.domain not in ("", "ai.onnx") else ""
    return f"unknown op '{dom}{n.op_type}'"


def build_layer(ctx: LayerContext, n: onnx.NodeProto, name: str) -> G.Layer:
    """The layer of node ``n``, named ``name``, with the module path it comes from (see
    :mod:`~hypar.onnx.modules`); records its outputs' axes in ``ctx.axes``.

    Raises ShapeError when a shape the layer needs is unknown."""
    v = NodeView.of(n, name, ctx.index)
    kind = layer_kind(n, v.act_in, ctx.index)
    fields, attrs = BUILDERS[kind](ctx, v)
    if kind in (G.ELEMENTWISE, G.BINARY) and v.const_in:
        attrs["const_inputs"] = len(v.const_in)
    if kind in _TRAINED_OPERAND_KINDS and v.op not in UNTRAINED_OPERANDS:
        _count_trained_operand(ctx, v, fields, attrs)
    if kind in G.DECISION_KINDS:
        in_elements = ctx.table.elements(v.act_in[0]) if v.act_in else 0
    else:
        in_elements = sum(ctx.table.elements(t) for t in v.act_in)
    fields.setdefault("in_elements", in_elements)
    fields.setdefault("out_elements", sum(ctx.table.elements(o) for o in v.outputs))
    ctx.axes.propagate(v.op, kind, v.act_in, v.outputs, attrs)
    return G.Layer(
        name=name, op=v.op, kind=kind, inputs=v.act_in, outputs=v.outputs,
        attrs=tuple(sorted((k, hashable(x)) for k, x in attrs.items())),
        module=module_path(n, ctx.index), **fields,
    )


def _count_trained_operand(ctx: LayerContext, v: NodeView, fields: Fields, attrs: Attrs) -> None:
    """A learned tensor an elementwise op or a Concat reads (a position table added, a norm scale
    multiplied, a cls token joined) is a parameter of that layer: ``weight_elements`` and the
    ``weight`` attribute: the tensor as read, so that one tensor read twice counts once, while
    TorchScript's copies of equal initializers, named apart through Identity, count apart. Not after
    a BatchNormalization: Caffe-style BN + Scale pairs (the ONNX zoo's DenseNet, Inception-v2) stand
    for one per-channel affine, counted once, on the BN."""
    for t in ([] if any(_affine_after_batchnorm(ctx, t) for t in v.act_in) else v.const_in):
        n = ctx.index.trained_elements(t)
        if n:
            fields["weight_elements"] = n
            attrs["weight"] = t
            return


def _affine_after_batchnorm(ctx: LayerContext, t: str, steps: int = 3) -> bool:
    """Is activation ``t`` a BatchNormalization's output, or that output scaled / shifted by
    constants (a chain of at most ``steps`` Mul / Add / Sub / Div with one activation operand)?"""
    node = ctx.index.producer.get(t, (0, None))[1]
    if node is None:
        return False
    if node.op_type == "BatchNormalization":
        return True
    acts = [x for x in node.input if x and ctx.is_act(x)]
    return (steps > 0 and node.op_type in ("Mul", "Add", "Sub", "Div") and len(acts) == 1
            and _affine_after_batchnorm(ctx, acts[0], steps - 1))


# -- builders of the non-weighted kinds ----------------------------------------------------------


def _batchnorm(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """BatchNormalization: scale and bias counted as weight and bias."""
    fields: Fields = {}
    ctx.optional_weight(v, 1, fields, "weight_elements")
    ctx.optional_weight(v, 2, fields, "bias_elements")
    return fields, pick(v.attrs, ("epsilon", "momentum"))


def _featurenorm(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Normalisations over features: ``axis`` normalised (last axis for LayerNorm by
    default); scale input counted as the weight, the other parameter inputs (a shift, and a skip
    norm's bias added before normalising) together as the bias. A skip norm's skip input is an
    activation."""
    attrs = pick(v.attrs, _FEATURENORM_ATTRS)
    x = ctx.shape(v.act_in[0], v.name)
    if "axis" in attrs:
        attrs["axis"] = norm_axis(int(attrs["axis"]), len(x))
    elif v.op == "LayerNormalization":
        attrs["axis"] = len(x) - 1
    fields: Fields = {}
    if v.op in _FEATURENORM_UNWEIGHTED:
        return fields, attrs
    params = v.node.input[2:] if v.op in _SKIP_NORMS else v.node.input[1:]
    p = [t for t in params if t and not ctx.is_act(t)]
    if p:
        fields["weight_elements"] = ctx.weight_elements(p[0], v.name)
    if len(p) > 1:
        fields["bias_elements"] = sum(ctx.weight_elements(t, v.name) for t in p[1:])
    return fields, attrs


def _softmax(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Softmax family: ``axis`` normalised (default -1 from opset 13, 1 before)."""
    r = len(ctx.shape(v.act_in[0], v.name))
    default = -1 if ctx.opset >= 13 else 1
    return {}, {"axis": norm_axis(int(v.attrs.get("axis", default)), r)}


def _reduce(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Reductions and ArgMax / ArgMin: sorted normalised ``axes`` (all when none are given,
    unless noop_with_empty_axes) and ``keepdims``."""
    a = v.attrs
    r = len(ctx.shape(v.node.input[0], v.name))
    if v.op in ("ArgMax", "ArgMin"):
        axes = (a.get("axis", 0),)
    else:
        axes = ctx.axes_operand(v)
    if axes is None or (isinstance(axes, tuple) and len(axes) == 0):
        axes = () if a.get("noop_with_empty_axes", 0) else tuple(range(r))
    return {}, {
        "axes": tuple(sorted(norm_axis(int(x), r) for x in axes)),
        "keepdims": int(a.get("keepdims", 1)),
    }


def _reshape(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Reshape family: the output ``shape`` plus the op's own ``perm`` / ``axis`` / ``axes`` /
    ``blocksize``."""
    a = v.attrs
    x = ctx.shape(v.act_in[0], v.name)
    attrs: Attrs = {}
    if v.op == "Transpose":
        attrs["perm"] = tuple(a.get("perm", tuple(reversed(range(len(x))))))
    elif v.op == "Flatten":
        attrs["axis"] = norm_axis(int(a.get("axis", 1)), len(x))
    elif v.op in ("Squeeze", "Unsqueeze"):
        axes = ctx.axes_operand(v)
        if axes is not None:
            r = len(x) + (len(axes) if v.op == "Unsqueeze" else 0)
            attrs["axes"] = tuple(sorted(norm_axis(int(i), r) for i in axes))
    elif v.op in ("DepthToSpace", "SpaceToDepth"):
        attrs["blocksize"] = a.get("blocksize")
    attrs["shape"] = ctx.shape(v.node.output[0], v.name)
    return {}, attrs


def _concat(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Concat: normalised ``axis``."""
    r = len(ctx.shape(v.node.output[0], v.name))
    return {}, {"axis": norm_axis(int(v.attrs.get("axis", 0)), r)}


# A Gather's constant indices are recorded (attribute ``indices``) up to this many.
MAX_RECORDED_INDICES = 64


def _split(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Split (``axis``, ``split`` sizes), Slice (``starts`` / ``ends`` / ``axes`` / ``steps``
    where known) and the Gathers (``axis``; a Gather's constant ``indices`` when there are at most
    :data:`MAX_RECORDED_INDICES`: an int for a scalar index, a tuple for a 1-D one)."""
    r = len(ctx.shape(v.node.input[0], v.name))
    if v.op == "Split":
        return {}, _split_attrs(ctx, v, r)
    if v.op == "Slice":
        return {}, _slice_attrs(ctx, v, r)
    attrs: Attrs = {"axis": norm_axis(int(v.attrs.get("axis", 0)), r)}
    idx = ctx.constants.value(v.input(1)) if v.op == "Gather" and v.input(1) else None
    if idx is not None and idx.ndim <= 1 and idx.size <= MAX_RECORDED_INDICES:
        n = ctx.shape(v.node.input[0], v.name)[attrs["axis"]]
        flat = tuple(int(i) % n for i in idx.reshape(-1))
        attrs["indices"] = flat[0] if idx.ndim == 0 else flat
    return {}, attrs



def _split_attrs(ctx: LayerContext, v: NodeView, r: int) -> Attrs:
    """Split's axis and sizes: the attribute, else input 1, else the output shapes."""
    axis = norm_axis(int(v.attrs.get("axis", 0)), r)
    sizes = v.attrs.get("split")
    if sizes is None and v.input(1):
        sizes = ctx.ints(v.input(1))
    if sizes is None:
        sizes = tuple(ctx.shape(o, v.name)[axis] for o in v.node.output if o)
    return {"axis": axis, "split": tuple(sizes)}


def _slice_attrs(ctx: LayerContext, v: NodeView, r: int) -> Attrs:
    """Slice's parameters from attributes (opset < 10) or constant inputs; unknown ones left
    out (axes default to 0.., steps to 1 when the starts are known)."""
    a = v.attrs
    if "starts" in a:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", tuple(range(len(starts))))
        steps = (1,) * len(starts)
    else:
        starts, ends, axes, steps = (ctx.ints(v.input(i)) for i in range(1, 5))
        if axes is None:
            axes = tuple(range(len(starts))) if starts else None
        if steps is None:
            steps = (1,) * len(starts) if starts else None
    attrs: Attrs = {}
    if axes is not None:
        attrs["axes"] = tuple(norm_axis(int(x), r) for x in axes)
    for key, vals in (("starts", starts), ("ends", ends), ("steps", steps)):
        if vals is not None:
            attrs[key] = tuple(int(x) for x in vals)
    return attrs


def _elementwise(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Unary ops keep their parameters (alpha, approximate, ...); binary ops none, but a Pow of an
    activation keeps its ``exponent`` when it is a constant scalar (a decomposed norm's square)
    and an Expand its output ``shape`` (the broadcast target); a Pad its constant ``pads``
    (begins then ends, per axis) and ``value`` (0 when absent) when known."""
    attrs = pick(v.attrs, _UNARY_ATTRS) if v.op in UNARY else {}
    if v.op == "Expand":
        attrs["shape"] = tuple(ctx.shape(v.node.output[0], v.name))
    if v.op == "Pad" and v.input(1) and "axes" not in v.attrs and not v.input(3):
        pads = ctx.ints(v.input(1))
        value = ctx.scalar(v.input(2)) if v.input(2) else 0.0
        if pads is not None and value is not None:
            attrs["pads"], attrs["value"] = tuple(int(p) for p in pads), value
    if v.op == "Pow" and v.input(1) and not ctx.is_act(v.input(1)):
        exponent = ctx.scalar(v.input(1))
        if exponent is not None:
            attrs["exponent"] = exponent
    if v.op == "RotaryEmbedding":
        attrs.update(_rotary_attrs(ctx, v))
    return {}, attrs


def _rotary_attrs(ctx: LayerContext, v: NodeView) -> Attrs:
    """A RotaryEmbedding's ``interleaved`` (0: the halves of each head's rotated part pair up, 1:
    neighbours), ``rotary_head`` (elements of the last axis one rotation spans: the head size --
    the last axis of a 4-D (batch, heads, sequence, head) input, else hidden / ``num_heads``, else
    twice the cos cache's last axis) and ``rotary_dim`` (the rotated leading part of each head:
    twice the cos cache's last axis), when the shapes are known."""
    cos = v.input(2 if v.node.domain == "com.microsoft" else 1)
    attrs: Attrs = {"interleaved": int(v.attrs.get("interleaved", 0))}
    try:
        x, half = ctx.shape(v.act_in[0], v.name), ctx.weight_shape(cos, v.name)[-1]
    except ShapeError:                  # unknown shapes: the simulator refuses the op
        return attrs
    heads = int(v.attrs.get("num_heads", 0))
    head = x[-1] if len(x) == 4 else (x[-1] // heads if heads else 2 * half)
    attrs.update(rotary_head=int(head), rotary_dim=int(2 * half))
    return attrs


def _opaque(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Unknown op: its plain attributes."""
    return {}, {k: x for k, x in v.attrs.items() if isinstance(x, (int, float, str, tuple))}


BUILDERS: dict[str, Builder] = {
    G.CONV: decision_layers.conv,
    G.GEMM: decision_layers.gemm,
    G.MATMUL_ACT: decision_layers.matmul_act,
    G.EMBEDDING: decision_layers.embedding,
    G.BATCHNORM: _batchnorm,
    G.FEATURENORM: _featurenorm,
    G.SOFTMAX: _softmax,
    G.REDUCE: _reduce,
    G.POOL: lambda ctx, v: ({}, pick(v.attrs, _POOL_ATTRS)),
    G.RESHAPE: _reshape,
    G.CONCAT: _concat,
    G.SPLIT: _split,
    G.BINARY: _elementwise,
    G.ELEMENTWISE: _elementwise,
    G.OPAQUE: _opaque,
}
