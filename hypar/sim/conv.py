"""2-D convolution kernels (numpy): forward, weight gradient and input gradient of an ONNX Conv
with weights laid out (Ci/G, Co, kh, kw) for G groups (G = 1: an ordinary Conv; G = Ci:
depthwise), one batch element at a time as one matrix product per group against its im2col
matrix (each kernel position's strided view of the padded input copied in turn: no 6-D
transposes, memory bounded by one element's columns). A block of a grouped Conv (some of its
groups) runs as a grouped Conv of that many groups."""

from __future__ import annotations

import numpy as np

from hypar import graph as G


class _Geometry:
    """Strides, pads (top, left, bottom, right), kernel and output size of a Conv on input x."""

    def __init__(self, x_shape: tuple, lay: G.Layer):
        self.st = tuple(lay.attr("strides") or (1, 1))
        self.pads = tuple(lay.attr("pads") or (0, 0, 0, 0))
        self.k = tuple(lay.kernel)
        self.H, self.W = x_shape[2], x_shape[3]
        self.Hp, self.Wp = self.H + self.pads[0] + self.pads[2], self.W + self.pads[1] + self.pads[3]
        self.Ho = (self.Hp - self.k[0]) // self.st[0] + 1
        self.Wo = (self.Wp - self.k[1]) // self.st[1] + 1

    def padded(self, x: np.ndarray) -> np.ndarray:
        """x zero-padded (x itself without pads)."""
        p = self.pads
        if not any(p):
            return x
        xp = np.zeros(x.shape[:2] + (self.Hp, self.Wp), x.dtype)
        xp[:, :, p[0]:p[0] + self.H, p[1]:p[1] + self.W] = x
        return xp

    def window(self, i: int, j: int) -> tuple:
        """The (rows, cols) slices of the padded input kernel position (i, j) meets."""
        return (slice(i, i + self.st[0] * (self.Ho - 1) + 1, self.st[0]),
                slice(j, j + self.st[1] * (self.Wo - 1) + 1, self.st[1]))

    def columns(self, xp_b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The im2col matrix (kh*kw*C, Ho*Wo) of one padded batch element (C, Hp, Wp), into ``out``."""
        C = xp_b.shape[0]
        cols = out.reshape(self.k[0] * self.k[1], C, self.Ho, self.Wo)
        for i in range(self.k[0]):
            for j in range(self.k[1]):
                rows, cs = self.window(i, j)
                cols[i * self.k[1] + j] = xp_b[:, rows, cs]
        return out


def _grouped_weight(w: np.ndarray, G: int) -> np.ndarray:
    """(Ci/G, Co, kh, kw) -> (G, Co/G, kh*kw*Ci/G): each group's weight, kernel position major
    (the im2col row order)."""
    cin, co, kh, kw = w.shape
    return w.reshape(cin, G, co // G, kh * kw).transpose(1, 2, 3, 0).reshape(G, co // G, kh * kw * cin)


def _grouped_columns(cols: np.ndarray, taps: int, G: int) -> np.ndarray:
    """An im2col matrix (taps*C, HoWo) regrouped per group: (G, taps*C/G, HoWo)."""
    n = cols.shape[1]
    return cols.reshape(taps, G, -1, n).transpose(1, 0, 2, 3).reshape(G, -1, n) if G > 1 else cols[None]


def _groups(x_channels: int, cin: int) -> int:
    """How many groups a block of ``x_channels`` input channels holds (``cin`` channels each; 0 for
    an empty block of a grouped Conv)."""
    return x_channels // cin if cin else 1


def _pointwise(g: _Geometry) -> bool:
    """A 1x1 kernel without padding: the columns are the (strided) input itself."""
    return g.k == (1, 1) and not any(g.pads)


def _sampled(x: np.ndarray, g: _Geometry, G_: int) -> np.ndarray:
    """A pointwise Conv's columns of every batch element: (B, G, C/G, Ho*Wo)."""
    xs = x[:, :, ::g.st[0], ::g.st[1]] if g.st != (1, 1) else x
    return xs.reshape(x.shape[0], G_, x.shape[1] // G_, g.Ho * g.Wo)


def conv_forward(x: np.ndarray, w: np.ndarray, lay: G.Layer) -> np.ndarray:
    """x (B, Ci, H, W), w (Ci/G, Co, kh, kw) -> (B, Co, Ho, Wo); G groups (as many as x holds:
    Ci / w's input channels), each its own product."""
    g = _Geometry(x.shape, lay)
    G_ = _groups(x.shape[1], w.shape[0])
    if not G_:
        return np.zeros((x.shape[0], w.shape[1], g.Ho, g.Wo), np.result_type(x, w))
    wg = _grouped_weight(w, G_)
    if _pointwise(g):
        return np.matmul(wg, _sampled(x, g, G_)).reshape(x.shape[0], w.shape[1], g.Ho, g.Wo)
    xp = g.padded(x)
    taps = g.k[0] * g.k[1]
    dt = np.result_type(x, w)
    out = np.empty((x.shape[0], G_, w.shape[1] // G_, g.Ho * g.Wo), dt)
    buf = np.empty((taps * x.shape[1], g.Ho * g.Wo), dt)
    for b in range(x.shape[0]):
        np.matmul(wg, _grouped_columns(g.columns(xp[b], buf), taps, G_), out=out[b])
    return out.reshape(x.shape[0], w.shape[1], g.Ho, g.Wo)


def conv_weight_grad(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """dW (Ci/G, Co, kh, kw) of conv_forward for input x and output error e (B, Co, Ho, Wo)."""
    g = _Geometry(x.shape, lay)
    xp = g.padded(x)
    cin = lay.d_in // max(lay.groups, 1) if lay.groups > 1 else x.shape[1]
    G_, Co, taps = _groups(x.shape[1], cin), e.shape[1], g.k[0] * g.k[1]
    dt = np.result_type(x, e)
    if not G_:
        return np.zeros((cin, Co, g.k[0], g.k[1]), dt)
    if _pointwise(g):
        eg = e.reshape(x.shape[0], G_, Co // G_, g.Ho * g.Wo)
        dwg = np.matmul(eg, _sampled(x, g, G_).transpose(0, 1, 3, 2)).sum(axis=0)
    else:
        dwg = np.zeros((G_, Co // G_, taps * cin), dt)
        buf = np.empty((taps * x.shape[1], g.Ho * g.Wo), dt)
        for b in range(x.shape[0]):
            eg = e[b].reshape(G_, Co // G_, g.Ho * g.Wo)
            dwg += eg @ _grouped_columns(g.columns(xp[b], buf), taps, G_).transpose(0, 2, 1)
    dw = dwg.reshape(G_, Co // G_, g.k[0], g.k[1], cin).transpose(4, 0, 1, 2, 3)
    return dw.reshape(cin, Co, g.k[0], g.k[1]).copy()


def conv_input_grad(x: np.ndarray, w: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error (B, Ci, H, W) of conv_forward for the output error e: the columns' error
    (kh*kw*Ci, Ho*Wo) of each batch element, added back at each kernel position (col2im)."""
    g = _Geometry(x.shape, lay)
    Ci, Co = x.shape[1], e.shape[1]
    G_ = _groups(Ci, w.shape[0])
    if not G_:
        return np.zeros(x.shape, np.result_type(w, e))
    wg = _grouped_weight(w, G_)
    taps = g.k[0] * g.k[1]
    if _pointwise(g):
        ds = np.matmul(wg.transpose(0, 2, 1), e.reshape(x.shape[0], G_, Co // G_, g.Ho * g.Wo))
        if g.st == (1, 1):
            return ds.reshape(x.shape)
        dx = np.zeros(x.shape, ds.dtype)
        dx[:, :, ::g.st[0], ::g.st[1]] = ds.reshape(x.shape[0], Ci, g.Ho, g.Wo)
        return dx
    dxp = np.zeros((x.shape[0], Ci, g.Hp, g.Wp), np.result_type(w, e))
    for b in range(x.shape[0]):
        dg = wg.transpose(0, 2, 1) @ e[b].reshape(G_, Co // G_, g.Ho * g.Wo)     # (G, taps*cin, HoWo)
        dcols = dg.reshape(G_, taps, Ci // G_, g.Ho, g.Wo).transpose(1, 0, 2, 3, 4).reshape(taps, Ci, g.Ho, g.Wo)
        for i in range(g.k[0]):
            for j in range(g.k[1]):
                rows, cs = g.window(i, j)
                dxp[b][:, rows, cs] += dcols[i * g.k[1] + j]
    p = g.pads
    return dxp[:, :, p[0]:p[0] + g.H, p[1]:p[1] + g.W].copy() if any(p) else dxp
