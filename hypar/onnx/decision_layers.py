"""Builders of the decision layers (the layers a plan partitions): their matrix view (batch,
d_in, d_out, spatial sizes), element counts, weights and multiply-accumulates.

Each builder takes a :class:`LayerContext` and a :class:`NodeView` and returns the
``hypar.graph.Layer`` fields and attributes of the layer.
"""

from __future__ import annotations

from math import prod

from hypar.onnx.layer_context import Attrs, Fields, LayerContext, NodeView, pick
from hypar.onnx.protos import norm_axis

_CONV_ATTRS = ("strides", "pads", "dilations", "auto_pad", "output_padding")
_GEMM_ATTRS = ("transA", "transB", "alpha", "beta")


def conv(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Conv / ConvTranspose (NCHW): Di = input channels, Do = output channels, grouped."""
    n, a = v.node, v.attrs
    x = ctx.shape(n.input[0], v.name)
    y = ctx.shape(n.output[0], v.name)
    w = ctx.weight_shape(n.input[1], v.name)
    g = int(a.get("group", 1))
    k = tuple(w[2:])
    cin, cout = x[1], y[1]
    if n.op_type == "Conv":
        macs = x[0] * cout * prod(y[2:]) * (cin // g) * prod(k)
    else:  # each input pixel scatters a (Cout/g) x kernel patch
        macs = x[0] * cin * prod(x[2:]) * (cout // g) * prod(k)
    fields: Fields = dict(
        batch=x[0], d_in=cin, d_out=cout, in_spatial=tuple(x[2:]), out_spatial=tuple(y[2:]),
        kernel=k, groups=g, in_elements=prod(x), out_elements=prod(y),
        weight_elements=prod(w), macs=macs,
    )
    ctx.optional_weight(v, 2, fields, "bias_elements")
    attrs = pick(a, _CONV_ATTRS)
    attrs["group"] = g
    attrs["weight"] = ctx.weight_source(n.input[1])
    return fields, attrs


def gemm(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Gemm, or MatMul with one weight operand (on either side): Di = contracted size,
    Do = output features; rows split into batch and spatial (sequence) sizes."""
    n, a, act = v.node, v.attrs, v.act_in[0]
    wpos = 1 if n.input[0] == act else 0
    wname = n.input[wpos]
    x = ctx.shape(act, v.name)
    y = ctx.shape(n.output[0], v.name)
    w = ctx.weight_shape(wname, v.name)
    if n.op_type == "Gemm":
        k, nout, batch, spatial = _gemm_dims(a, wpos, x, w)
    else:
        k, nout, batch, spatial = _matmul_dims(wpos, x, w, ctx.axes_of(act, (0, None))[0])
    fields: Fields = dict(
        batch=batch, d_in=k, d_out=nout, in_spatial=spatial, out_spatial=spatial,
        in_elements=prod(x), out_elements=prod(y), weight_elements=prod(w),
        macs=prod(y) * k,
    )
    if n.op_type == "Gemm":
        ctx.optional_weight(v, 2, fields, "bias_elements")
    attrs: Attrs = {"weight": ctx.weight_source(wname)}
    if n.op_type == "Gemm":
        attrs.update(pick(a, _GEMM_ATTRS))
    if wpos == 0:
        attrs["weight_left"] = 1
    return fields, attrs


Dims4 = tuple[int, int, int, tuple[int, ...]]  # (d_in, d_out, batch, spatial)


def _gemm_dims(a: dict[str, object], wpos: int, x: tuple[int, ...], w: tuple[int, ...]) -> Dims4:
    """Gemm with the weight at input ``wpos``: the activation's rows are the batch."""
    trans_x = int(a.get("transA" if wpos == 1 else "transB", 0))
    trans_w = int(a.get("transB" if wpos == 1 else "transA", 0))
    if wpos == 1:
        k = x[0] if trans_x else x[1]
        rows = x[1] if trans_x else x[0]
        nout = w[0] if trans_w else w[1]
    else:  # weight on the left: columns of the activation are the rows
        k = x[1] if trans_x else x[0]
        rows = x[0] if trans_x else x[1]
        nout = w[1] if trans_w else w[0]
    return k, nout, rows, ()


def _matmul_dims(wpos: int, x: tuple[int, ...], w: tuple[int, ...], ba: int | None) -> Dims4:
    """MatMul with the weight at input ``wpos``; ``ba`` is the activation's batch axis."""
    if wpos == 1:
        k = x[-1]
        nout = w[-1]
        lead = x[:-1]
    else:  # W (.., M, K) x X (.., K, N): rows are X's columns
        k = x[-2] if len(x) >= 2 else x[0]
        nout = w[-2] if len(w) >= 2 else 1
        lead = x[:-2] + x[-1:] if len(x) >= 2 else ()
    if not lead:
        return k, nout, 1, ()
    b = ba if ba is not None and ba < len(lead) else 0
    return k, nout, lead[b], tuple(d for i, d in enumerate(lead) if i != b)


def matmul_act(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Activation x activation MatMul / Gemm (attention scores and context): Di = contracted
    size, Do = columns of the right operand, rows = the left operand's rows; heads when the
    left operand's feature axis is a leading axis."""
    n, a = v.node, v.attrs
    lhs = ctx.shape(n.input[0], v.name)
    rhs = ctx.shape(n.input[1], v.name)
    y = ctx.shape(n.output[0], v.name)
    if n.op_type == "Gemm":
        lhs2 = lhs[::-1] if a.get("transA", 0) else lhs
        rhs2 = rhs[::-1] if a.get("transB", 0) else rhs
    else:
        lhs2 = lhs if len(lhs) >= 2 else (1,) + lhs
        rhs2 = rhs if len(rhs) >= 2 else rhs + (1,)
    m, k = lhs2[-2], lhs2[-1]
    nn = rhs2[-1]
    lead = tuple(y[:-2]) if len(y) >= 2 else ()
    ba, fa = ctx.axes_of(n.input[0], (0, None))
    r = len(lhs)
    if ba is not None and ba < r - 2:
        batch = lhs[ba]
    elif r <= 2:
        batch = lhs[0] if ba == 0 else 1
    else:
        batch = lhs[0]
    heads = lhs[fa] if fa is not None and fa < r - 2 and fa != ba else 1
    fields: Fields = dict(
        batch=batch, d_in=k, d_out=nn, in_spatial=(m,), out_spatial=(m,), heads=heads,
        in_elements=prod(lhs), out_elements=prod(y), macs=prod(lead) * m * k * nn,
    )
    return fields, {"lhs_shape": lhs, "rhs_shape": rhs}


def embedding(ctx: LayerContext, v: NodeView) -> tuple[Fields, Attrs]:
    """Gather on a weight table: Di = table rows, Do = row size; batch from the indices, 1 when
    they are constant (position ids, a relative-position index: every row of the batch reads
    the same rows, so the indices' dims are all spatial)."""
    n = v.node
    data = ctx.weight_shape(n.input[0], v.name)
    idx = ctx.shape(n.input[1], v.name)
    y = ctx.shape(n.output[0], v.name)
    axis = norm_axis(int(v.attrs.get("axis", 0)), len(data))
    ba = ctx.axes_of(n.input[1], (0, None))[0]
    if not v.act_in:
        batch, spatial = 1, tuple(idx)
    elif idx:
        b = ba if ba is not None and ba < len(idx) else 0
        batch = idx[b]
        spatial = tuple(d for i, d in enumerate(idx) if i != b)
    else:
        batch, spatial = 1, ()
    fields: Fields = dict(
        batch=batch, d_in=data[axis], d_out=prod(data) // data[axis], in_spatial=spatial,
        out_spatial=spatial, in_elements=prod(idx), out_elements=prod(y),
        weight_elements=prod(data), macs=0,
    )
    return fields, {"axis": axis, "weight": ctx.weight_source(n.input[0])}
