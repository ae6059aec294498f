"""The numpy kernels of one device's training step: forward values and input errors of the layer
ops (convolution as im2col, pooling, activations, normalisations, softmax) and the tables of
elementwise ops. Each works on whole arrays, or on a PE's shard of them (NaN outside it)."""

from __future__ import annotations

import math

import numpy as np

from hypar import graph as G
from hypar.sim.errors import SimulationError

# ----------------------------------------------------------------------------- pooling

def pool_supported(lay: G.Layer) -> bool:
    """2-D pooling without dilations; ceil_mode only for MaxPool (an average over a window cut by
    the border would divide by fewer elements)."""
    k = tuple(lay.attr("kernel_shape") or ())
    if len(k) != 2 or tuple(lay.attr("dilations") or (1, 1)) != (1, 1):
        return False
    return not (lay.attr("ceil_mode", 0) and lay.op != "MaxPool")


def _ceil_extra(n: int, pad_begin: int, padded: int, k: int, st: int) -> int:
    """Rows (columns) added at the end so ceil_mode's last window fits: ONNX / PyTorch's rule, the
    last window starting inside the input or its leading padding."""
    out = -(-(padded - k) // st) + 1
    if (out - 1) * st >= n + pad_begin:
        out -= 1
    return max(0, (out - 1) * st + k - padded)


def _pool_windows(x: np.ndarray, lay: G.Layer, fill: float):
    """(windows (B, C, Ho, Wo, kh, kw), kernel, strides, pads, padded shape) of a 2-D pooling; the
    pads returned include ceil_mode's extra rows and columns at the end."""
    k = tuple(lay.attr("kernel_shape"))
    st_ = tuple(lay.attr("strides") or (1,) * len(k))
    pads = list(lay.attr("pads") or (0,) * (2 * len(k)))
    if not pool_supported(lay):
        raise SimulationError(f"{lay.name}: only 2-D pooling without dilations (ceil_mode: MaxPool) is simulated")
    if lay.attr("ceil_mode", 0):
        for a in (0, 1):
            padded = x.shape[2 + a] + pads[a] + pads[a + 2]
            pads[a + 2] += _ceil_extra(x.shape[2 + a], pads[a], padded, k[a], st_[a])
    pads = tuple(pads)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=(2, 3))[:, :, ::st_[0], ::st_[1]]
    return win, k, st_, pads, xp.shape


def _unpad(dx: np.ndarray, pads: tuple, pshape: tuple) -> np.ndarray:
    """The unpadded part of a padded (B, C, H, W) gradient."""
    return dx[:, :, pads[0]:pshape[2] - pads[2], pads[1]:pshape[3] - pads[3]]


def maxpool(x: np.ndarray, lay: G.Layer) -> np.ndarray:
    """2-D max pooling of x (B, C, H, W) (NaN where a window holds one): the maximum over the
    kernel positions' strided views, one position at a time (not a reduction over window axes,
    which numpy runs slowly on these strides)."""
    win, k, *_ = _pool_windows(x, lay, -np.inf)
    out = win[..., 0, 0].copy()
    for i in range(k[0]):
        for j in range(k[1]):
            if i or j:
                np.maximum(out, win[..., i, j], out=out)
    return out


def maxpool_bwd(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error of maxpool for the output error e (NaN where x is NaN)."""
    missing = np.isnan(x)
    win, k, st_, pads, pshape = _pool_windows(np.where(missing, -np.inf, x), lay, -np.inf)
    B, C, Ho, Wo = e.shape
    arg = win.reshape(B, C, Ho, Wo, -1).argmax(axis=-1)           # NaN counts as -inf
    dx = np.zeros(pshape, e.dtype)
    for a in range(k[0] * k[1]):
        i, j = divmod(a, k[1])
        contrib = np.where(arg == a, e, 0.0)
        dx[:, :, i:i + st_[0] * Ho:st_[0], j:j + st_[1] * Wo:st_[1]] += contrib
    return np.where(missing, np.nan, _unpad(dx, pads, pshape))


def avgpool(x: np.ndarray, lay: G.Layer) -> np.ndarray:
    """2-D average pooling of x (B, C, H, W); padding only when counted (count_include_pad)."""
    if lay.attr("pads") and any(lay.attr("pads")) and not lay.attr("count_include_pad", 0):
        raise SimulationError(f"{lay.name}: padded average pooling is not simulated")
    win, *_ = _pool_windows(x, lay, 0.0)
    return win.mean(axis=(4, 5))


def avgpool_bwd(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error of avgpool for the output error e (NaN where x is NaN)."""
    win, k, st_, pads, pshape = _pool_windows(x, lay, 0.0)
    B, C, Ho, Wo = e.shape
    dx = np.zeros(pshape, e.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            dx[:, :, i:i + st_[0] * Ho:st_[0], j:j + st_[1] * Wo:st_[1]] += e / (k[0] * k[1])
    return np.where(np.isnan(x), np.nan, _unpad(dx, pads, pshape))


# ----------------------------------------------------------------------------- activations

_SERIES = 30      # terms of erf's series (|x| <= 2); both give erf to ~1e-15 in float64
_FRACTION = 40    # depth of erfc's continued fraction (|x| > 2)
# the series' coefficients 2^n / (1 3 5 ... (2n+1)), highest first (Horner)
_COEF = [2.0 ** n / math.prod(range(1, 2 * n + 2, 2)) for n in range(_SERIES)][::-1]


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise in x's float type (vectorised: a series below |x| = 2,
    erfc's continued fraction above; within ~1e-15 of math.erf in float64)."""
    x = np.asarray(x)
    out = np.empty_like(x)
    a = np.abs(x)
    small = a <= 2.0
    xs = x[small]
    xx = xs * xs
    s = np.full_like(xs, _COEF[0])
    for c in _COEF[1:]:                          # sum (2x^2)^n / (2n+1)!!, Horner in x^2, in place
        s *= xx
        s += c
    np.negative(xx, out=xx)
    np.exp(xx, out=xx)
    s *= xx
    s *= xs
    out[small] = s * (2.0 / math.sqrt(math.pi))
    big = ~small
    ab = a[big]
    f = ab.copy()
    for k in range(_FRACTION, 0, -1):            # x + (1/2) / (x + 1 / (x + (3/2) / ...)), in place
        np.divide(0.5 * k, f, out=f)
        f += ab
    out[big] = np.copysign(1.0 - np.exp(-ab * ab) / (math.sqrt(math.pi) * f), x[big])
    return out


def _gelu(x: np.ndarray, lay: G.Layer) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_bwd(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    return e * (0.5 * (1.0 + _erf(x * (1.0 / math.sqrt(2.0)))) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))


# Local ops (no communication: they act on each (batch, channel) slice), by ONNX op:
# (forward(x, layer), input error(x, e, layer), changes the shape).
LOCAL = {
    "Relu": (lambda x, l: np.maximum(x, 0.0), lambda x, e, l: e * (x > 0), False),
    "Identity": (lambda x, l: x, lambda x, e, l: e, False),
    "Dropout": (lambda x, l: x, lambda x, e, l: e, False),          # inference semantics
    # a QDQ pair simulated straight-through (docs/precision.md): values stay float, so distributed
    # and reference agree whatever order they sum in; what is sent is counted in the int8 width
    "QuantizeLinear": (lambda x, l: x, lambda x, e, l: e, False),
    "DequantizeLinear": (lambda x, l: x, lambda x, e, l: e, False),
    "Tanh": (lambda x, l: np.tanh(x), lambda x, e, l: e * (1.0 - np.tanh(x) ** 2), False),
    "Sigmoid": (lambda x, l: 1.0 / (1.0 + np.exp(-x)),
                lambda x, e, l: e * np.exp(-x) / (1.0 + np.exp(-x)) ** 2, False),
    "MaxPool": (maxpool, maxpool_bwd, True),
    "AveragePool": (avgpool, avgpool_bwd, True),
    "GlobalAveragePool": (lambda x, l: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True),
                          lambda x, e, l: np.broadcast_to(e, x.shape) / int(np.prod(x.shape[2:])), True),
    "Flatten": (lambda x, l: x.reshape(x.shape[0], -1), lambda x, e, l: e.reshape(x.shape), True),
    "Gelu": (_gelu, _gelu_bwd, False),
    # Clip's bounds are constant inputs the importer does not record: run as ReLU6 (0, 6), the
    # common case; the bounds do not change what is sent, and the reference uses the same
    "Clip": (lambda x, l: np.clip(x, 0.0, 6.0), lambda x, e, l: e * ((x > 0.0) & (x < 6.0)), False),
    "Erf": (lambda x, l: _erf(x), lambda x, e, l: e * (2.0 / math.sqrt(math.pi)) * np.exp(-x * x), False),
    "Sqrt": (lambda x, l: np.sqrt(x), lambda x, e, l: e / (2.0 * np.sqrt(x)), False),
    "Neg": (lambda x, l: -x, lambda x, e, l: -e, False),
    "Reciprocal": (lambda x, l: 1.0 / x, lambda x, e, l: -e / (x * x), False),
    # Where(condition, value, x) with a constant condition and value (a causal mask filled in):
    # run as x (which elements are masked does not change what is sent; the reference does the same)
    "Where": (lambda x, l: x, lambda x, e, l: e, False),
}

# Elementwise ops with one constant operand: run as ``x op c`` with a seeded scalar c (the
# constant's values do not change what is sent; the reference uses the same c) -- except Pow,
# run with the exponent the importer read (a seeded one could take roots of negative numbers).
# op: (forward(x, c), input error(x, e, c)).
CONST_OPS = {
    "Add": (lambda x, c: x + c, lambda x, e, c: e),
    "Sub": (lambda x, c: x - c, lambda x, e, c: e),
    "Mul": (lambda x, c: x * c, lambda x, e, c: e * c),
    "Div": (lambda x, c: x / c, lambda x, e, c: e / c),
    "Pow": (lambda x, c: x ** c, lambda x, e, c: e * c * x ** (c - 1.0)),
}
# Elementwise ops of two activations (numpy broadcasting; the errors here have the output's shape,
# :func:`unbroadcast` sums them down to each operand's): op: (forward(a, b), [error of a, error of b]).
BINARY_OPS = {
    "Mul": (lambda a, b: a * b, lambda a, b, e: [e * b, e * a]),
    "Sub": (lambda a, b: a - b, lambda a, b, e: [e, -e]),
    "Div": (lambda a, b: a / b, lambda a, b, e: [e / b, -e * a / (b * b)]),
}
SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")
# Reductions whose partial results over the parts of an axis add up (run with kept dims).
REDUCE_OPS = ("ReduceMean", "ReduceSum")


def unbroadcast(e: np.ndarray, shape: tuple) -> np.ndarray:
    """The error of an operand of ``shape`` broadcast to ``e``'s shape: ``e`` summed over the
    leading axes the operand lacks and over the axes where it has size 1 (numpy's rule)."""
    shape = tuple(shape)
    lead = e.ndim - len(shape)
    out = e.sum(axis=tuple(range(lead))) if lead else e
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and out.shape[a] != 1)
    return (out.sum(axis=axes, keepdims=True) if axes else out).reshape(shape)


def reduce_scale(op: str, x_shape: tuple, axes: tuple) -> float:
    """What a reduction's sums are multiplied by: 1 / (elements summed into each result) for a
    mean over ``axes`` of a tensor of ``x_shape``, 1 for a sum."""
    return 1.0 / float(np.prod([x_shape[a] for a in axes])) if op == "ReduceMean" else 1.0


def reduce_fwd(x: np.ndarray, lay: G.Layer, full_shape: tuple | None = None) -> np.ndarray:
    """ReduceMean / ReduceSum of x over the layer's axes (dims kept as size 1, or dropped when the
    layer's ``keepdims`` is 0); ``full_shape``: the whole tensor's shape when x is a part of it
    (the mean divides by the whole axis, so the parts' results add up)."""
    axes = tuple(a % x.ndim for a in lay.attr("axes"))
    return x.sum(axis=axes, keepdims=lay.attr("keepdims", 1) == 1) * reduce_scale(lay.op, full_shape or x.shape, axes)


def reduce_bwd(x: np.ndarray, e: np.ndarray, lay: G.Layer, full_shape: tuple | None = None) -> np.ndarray:
    """The input error of :func:`reduce_fwd` (x's shape) for the output error e."""
    axes = tuple(a % x.ndim for a in lay.attr("axes"))
    if lay.attr("keepdims", 1) != 1:
        e = np.expand_dims(e, axes)
    return np.broadcast_to(e * reduce_scale(lay.op, full_shape or x.shape, axes), x.shape).copy()


# ----------------------------------------------------------------------------- embedding

def embedding_grad(ids: np.ndarray, e: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (increasing vocabulary indices) of an embedding's weight gradient: for each,
    the sum of the output errors ``e`` (..., d) of the tokens ``ids`` (...) reading it, in token
    order (what ``np.add.at`` gives, by one sort and one segmented sum). An empty block (no
    rows, or d = 0: a PE holding none of a split axis) gives an empty (len(rows), d) gradient."""
    flat = ids.astype(np.int64).ravel()
    err = e.reshape(flat.size, e.shape[-1])
    pos = np.searchsorted(rows, flat)
    mine = pos < len(rows)
    mine[mine] &= rows[pos[mine]] == flat[mine]
    pos, err = pos[mine], err[mine]
    order = np.argsort(pos, kind="stable")
    pos, err = pos[order], err[order]
    dw = np.zeros((len(rows), e.shape[-1]), e.dtype)
    if len(pos):
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        dw[pos[starts]] = np.add.reduceat(err, starts, axis=0)
    return dw


# ----------------------------------------------------------------------------- normalisations

def _eps(lay: G.Layer) -> float:
    return float(lay.attr("epsilon", 1e-5))


def bn_shape(x: np.ndarray) -> tuple:
    """The shape broadcasting a per-channel vector over x (channels on axis 1)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def layernorm(x: np.ndarray, w: tuple, lay: G.Layer) -> np.ndarray:
    """LayerNorm over the last axis with (gamma, beta) = w."""
    gamma, beta = w
    xhat = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + _eps(lay))
    return gamma * xhat + beta


def layernorm_bwd(x: np.ndarray, e: np.ndarray, w: tuple, lay: G.Layer) -> np.ndarray:
    """The input error of layernorm for the output error e."""
    gamma, _beta = w
    inv = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + _eps(lay))
    xhat = (x - x.mean(axis=-1, keepdims=True)) * inv
    g_ = e * gamma
    return inv * (g_ - g_.mean(axis=-1, keepdims=True) - xhat * (g_ * xhat).mean(axis=-1, keepdims=True))


def _channel_centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(x - its per-channel mean as (B, C, N), per-channel variance, N x B): BatchNorm's statistics
    over every axis but the channels (axis 1), two-pass."""
    B, C = x.shape[:2]
    xr = x.reshape(B, C, int(np.prod(x.shape[2:])))
    n = B * xr.shape[2]
    xc = xr - (xr.sum(axis=(0, 2)) / n)[:, None]
    return xc, np.einsum("bcn,bcn->c", xc, xc) / n, n


def batchnorm(x: np.ndarray, w: tuple, lay: G.Layer) -> np.ndarray:
    """Training-mode BatchNorm over every axis but the channels (axis 1) with (gamma, beta) = w."""
    gamma, beta = w
    xc, var, _n = _channel_centred(x)
    xc *= (gamma / np.sqrt(var + _eps(lay)))[:, None]
    xc += beta[:, None]
    return xc.reshape(x.shape)


def batchnorm_bwd(x: np.ndarray, e: np.ndarray, w: tuple, lay: G.Layer) -> np.ndarray:
    """The input error of batchnorm for the output error e: gamma inv (e - mean(e) - xhat
    mean(e xhat)), xhat = (x - mean) inv, inv = 1 / sqrt(var + eps)."""
    gamma, _beta = w
    xc, var, n = _channel_centred(x)
    inv = 1.0 / np.sqrt(var + _eps(lay))
    er = e.reshape(xc.shape)
    k = gamma * inv
    out = er * k[:, None]
    xc *= (k * inv * inv * np.einsum("bcn,bcn->c", er, xc) / n)[:, None]
    xc += (k * er.sum(axis=(0, 2)) / n)[:, None]
    out -= xc
    return out.reshape(x.shape)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (NaN entries ignored for the maximum)."""
    z = np.exp(x - np.max(np.where(np.isnan(x), -np.inf, x), axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def softmax_bwd(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The input error of softmax for the output error e."""
    y = softmax(x)
    return y * (e - (e * y).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- local response normalisation

def _lrn_window(lay: G.Layer) -> tuple[int, int]:
    """(channels before, channels after) each channel's LRN window reaches (ONNX: size-1 split
    floor before, ceil after)."""
    size = int(lay.attr("size", 1))
    return (size - 1) // 2, size // 2


def _channel_window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """For every channel c (axis 1), the sum of a over channels c - before .. c + after (clipped)."""
    C = a.shape[1]
    cs = np.concatenate([np.zeros_like(a[:, :1]), np.cumsum(a, axis=1)], axis=1)
    hi = np.minimum(np.arange(C) + after + 1, C)
    lo = np.maximum(np.arange(C) - before, 0)
    return cs[:, hi] - cs[:, lo]


def _lrn_scale(x: np.ndarray, lay: G.Layer) -> np.ndarray:
    """bias + alpha / size x (the window's sum of squares)."""
    before, after = _lrn_window(lay)
    alpha, bias, size = float(lay.attr("alpha", 1e-4)), float(lay.attr("bias", 1.0)), int(lay.attr("size", 1))
    return bias + alpha / size * _channel_window_sum(x * x, before, after)


def lrn(x: np.ndarray, lay: G.Layer) -> np.ndarray:
    """ONNX LRN across channels (axis 1): x / scale^beta."""
    return x * _lrn_scale(x, lay) ** -float(lay.attr("beta", 0.75))


def lrn_bwd(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error of lrn for the output error e: e s^-beta - (2 alpha beta / size) x W'(e x
    s^(-beta-1)), W' the window sum transposed (after and before swapped)."""
    beta, alpha, size = float(lay.attr("beta", 0.75)), float(lay.attr("alpha", 1e-4)), int(lay.attr("size", 1))
    s = _lrn_scale(x, lay)
    before, after = _lrn_window(lay)
    back = _channel_window_sum(e * x * s ** (-beta - 1.0), after, before)
    return e * s ** -beta - 2.0 * alpha * beta / size * x * back
