"""2-D convolution kernels (numpy): forward, weight gradient and input gradient of an ONNX Conv
with weights laid out (Ci, Co, kh, kw), one batch element at a time as a single matrix product
against its im2col matrix (each kernel position's strided view of the padded input copied in
turn: no 6-D transposes, memory bounded by one element's columns)."""

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
        """x zero-padded."""
        p = self.pads
        return np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))

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


def _flat_weight(w: np.ndarray) -> np.ndarray:
    """(Ci, Co, kh, kw) -> (Co, kh*kw*Ci), kernel position major (the im2col row order)."""
    return w.transpose(1, 2, 3, 0).reshape(w.shape[1], w.shape[0] * w.shape[2] * w.shape[3])


def conv_forward(x: np.ndarray, w: np.ndarray, lay: G.Layer) -> np.ndarray:
    """x (B, Ci, H, W), w (Ci, Co, kh, kw) -> (B, Co, Ho, Wo)."""
    g = _Geometry(x.shape, lay)
    xp = g.padded(x)
    wf = _flat_weight(w)
    out = np.empty((x.shape[0], w.shape[1], g.Ho * g.Wo))
    buf = np.empty((wf.shape[1], g.Ho * g.Wo))
    for b in range(x.shape[0]):
        np.matmul(wf, g.columns(xp[b], buf), out=out[b])
    return out.reshape(x.shape[0], w.shape[1], g.Ho, g.Wo)


def conv_weight_grad(x: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """dW (Ci, Co, kh, kw) of conv_forward for input x and output error e (B, Co, Ho, Wo)."""
    g = _Geometry(x.shape, lay)
    xp = g.padded(x)
    Ci, Co = x.shape[1], e.shape[1]
    dwf = np.zeros((Co, g.k[0] * g.k[1] * Ci))
    buf = np.empty((dwf.shape[1], g.Ho * g.Wo))
    for b in range(x.shape[0]):
        dwf += e[b].reshape(Co, g.Ho * g.Wo) @ g.columns(xp[b], buf).T
    return dwf.reshape(Co, g.k[0], g.k[1], Ci).transpose(3, 0, 1, 2).copy()


def conv_input_grad(x: np.ndarray, w: np.ndarray, e: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error (B, Ci, H, W) of conv_forward for the output error e: the columns' error
    (kh*kw*Ci, Ho*Wo) of each batch element, added back at each kernel position (col2im)."""
    g = _Geometry(x.shape, lay)
    Ci = x.shape[1]
    wf = _flat_weight(w)
    dxp = np.zeros((x.shape[0], Ci, g.Hp, g.Wp))
    for b in range(x.shape[0]):
        dcols = (wf.T @ e[b].reshape(e.shape[1], g.Ho * g.Wo)).reshape(g.k[0] * g.k[1], Ci, g.Ho, g.Wo)
        for i in range(g.k[0]):
            for j in range(g.k[1]):
                rows, cs = g.window(i, j)
                dxp[b][:, rows, cs] += dcols[i * g.k[1] + j]
    p = g.pads
    return dxp[:, :, p[0]:p[0] + g.H, p[1]:p[1] + g.W].copy()
