"""Normalisations on every PE's block: per-PE partial sums of the statistics, all-reduced over the
levels that split the summed axis (BatchNorm: the batch, per channel; LayerNorm and RMSNorm: a
split last feature axis, per row), then the affine map (forward) or the input error (backward) on
the block; and the one-device RMSNorm (:func:`rms_norm`, :func:`rms_norm_bwd`).

The statistics are a tensor of their own (BatchNorm (2, C): sum and sum of squares per channel;
LayerNorm (..., 2) per row; RMSNorm (..., 1) per row: the sum of squares forward, the sum of
e x scale x x backward), partial at the levels that split the summed axis, split like the kept
axis elsewhere; the context (:class:`hypar.sim.sharded.ShardContext`) all-reduces them as a
counted step.
"""

from __future__ import annotations

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import SimulationError
from hypar.sim.kernels import bn_shape
from hypar.sim.ledger import StatsKey
from hypar.sim.mesh import Dist, TensorAxes, per_pe, same_regions, units_of


class NormShards:
    """A normalisation on blocks (subclasses fix the statistics axis)."""

    tag = ""           # StatsKey.stat
    summed = ""        # the layout splitting the summed axis (its levels leave the statistics partial)

    def count(self, shape: tuple) -> int:
        """Elements summed into each statistic (of the whole tensor)."""
        raise NotImplementedError

    def sums(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(sum of a, sum of a x b) over the summed axes, stacked on the statistics axis (no a x b
        temporary)."""
        raise NotImplementedError

    def stats_frame(self, x: Dist) -> tuple[tuple, tuple]:
        """(shape, axes) of the statistics tensor of x."""
        raise NotImplementedError

    def stat(self, s: np.ndarray, k: int, blk: np.ndarray) -> np.ndarray:
        """Statistic k (0: sum, 1: sum of squares / products) of a block of statistics, broadcastable
        against x's block ``blk``."""
        raise NotImplementedError

    def param(self, a: np.ndarray, cols, blk: np.ndarray) -> np.ndarray:
        """A per-feature parameter cut to the PE's features ``cols``, broadcastable against ``blk``."""
        raise NotImplementedError

    def stats(self, x: Dist, parts: list[np.ndarray]) -> Dist:
        """Per-PE sums as a tensor, partial over the levels that split the summed axis (a partial
        level of x stays unreduced: FULL here)."""
        lays = tuple(PARTIAL if l == self.summed else (FULL if l == PARTIAL else l) for l in x.layouts)
        shape, axes = self.stats_frame(x)
        return Dist(x.mesh, shape, lays, axes=axes, blocks=parts)

    def _x_stats(self, x: Dist) -> Dist:
        """Per-PE (sum, sum of squares) of x."""
        return self.stats(x, per_pe(x.mesh.P, lambda p: (id(x.blocks[p]),), lambda p: self.sums(x.blocks[p], x.blocks[p])))

    @staticmethod
    def _key(x: Dist, p: int, *stats: Dist) -> tuple:
        """What PE p's normalisation of its block reads: the block (by identity), its features and
        the values of its statistics (small), so replicas holding one block compute once."""
        cols = x.index(p)[1]
        return (id(x.blocks[p]), None if cols is None else cols.tobytes()) + tuple(s.blocks[p].tobytes() for s in stats)

    def forward(self, ctx, lay: G.Layer, x: Dist, charge) -> Dist:
        """The normalised output on every PE (statistics all-reduced by ``ctx``, counted)."""
        gamma, beta = ctx.params[lay.name]
        eps = float(lay.attr("epsilon", 1e-5))
        n = self.count(x.shape)
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "fwd", charge.where), charge,
                                 self._x_stats(x))

        def normalised(p: int) -> np.ndarray:
            blk = x.blocks[p]
            mean = self.stat(st.blocks[p], 0, blk) / n
            var = self.stat(st.blocks[p], 1, blk) / n - mean ** 2
            cols = x.index(p)[1]
            scale = self.param(gamma, cols, blk) / np.sqrt(var + eps)
            y = blk * scale                                   # gamma (x - mean) / std + beta, in two passes
            y += self.param(beta, cols, blk) - mean * scale
            return y

        out = per_pe(x.mesh.P, lambda p: self._key(x, p, st), normalised)
        return Dist(x.mesh, x.shape, x.layouts, axes=x.axes, blocks=out)

    def backward(self, ctx, lay: G.Layer, x: Dist, e: Dist, charge) -> Dist:
        """The input error on every PE (in e's layouts; backward statistics all-reduced, counted)."""
        if not same_regions(x, e):
            raise SimulationError(f"{lay.name}: input in {x.layouts}, output error in {e.layouts}")
        gamma, _beta = ctx.params[lay.name]
        eps = float(lay.attr("epsilon", 1e-5))
        n = self.count(x.shape)
        stx = ctx.recomputed_stats(self._x_stats(x))

        def centred(p: int) -> tuple:
            blk = x.blocks[p]
            mean = self.stat(stx.blocks[p], 0, blk) / n
            inv = 1.0 / np.sqrt(self.stat(stx.blocks[p], 1, blk) / n - mean ** 2 + eps)
            xhat = blk - mean
            xhat *= inv
            g_ = self.carrier(e.blocks[p], self.param(gamma, x.index(p)[1], blk))
            return xhat, inv, g_, self.sums(g_, xhat)

        key = lambda p: self._key(x, p, stx) + (id(e.blocks[p]),)           # noqa: E731
        xh = per_pe(x.mesh.P, key, centred)
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "bwd", charge.where), charge,
                                 self.stats(e, [t[3] for t in xh]))

        def error(p: int) -> np.ndarray:
            blk = x.blocks[p]
            xhat, inv, g_, _part = xh[p]
            s0, s1 = self.stat(st.blocks[p], 0, blk), self.stat(st.blocks[p], 1, blk)
            inner = xhat * (-s1 / n)                          # g - s0 / n - xhat s1 / n, in place
            inner += g_
            inner -= s0 / n
            return self.scaled(inner, self.param(gamma, x.index(p)[1], blk), inv)

        out = per_pe(x.mesh.P, lambda p: key(p) + (st.blocks[p].tobytes(),), error)
        return Dist(x.mesh, x.shape, e.layouts, axes=x.axes, blocks=out)

    def carrier(self, e: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        """The error quantity summed in the backward statistics."""
        raise NotImplementedError

    def scaled(self, inner: np.ndarray, gamma: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """The input error from the centred error ``inner``."""
        raise NotImplementedError


class BatchNormShards(NormShards):
    """Per-channel statistics (axis 1), summed over the batch and spatial axes."""

    tag, summed = "bn", ROWS

    def count(self, shape):
        return shape[0] * int(np.prod(shape[2:]))

    def sums(self, a, b):
        shape = (a.shape[0], a.shape[1], int(np.prod(a.shape[2:])))
        ar, br = a.reshape(shape), b.reshape(shape)
        return np.stack([ar.sum(axis=(0, 2)), np.einsum("bcn,bcn->c", ar, br)])

    def stats_frame(self, x):
        return (2, x.shape[1]), TensorAxes((0, 1), (1, units_of(x.axes)[1]))

    def stat(self, s, k, blk):
        return s[k].reshape(bn_shape(blk))

    def param(self, a, cols, blk):
        return (a if cols is None else a[cols]).reshape(bn_shape(blk))

    def carrier(self, e, gamma):
        return e

    def scaled(self, inner, gamma, inv):
        inner *= gamma * inv
        return inner


class LayerNormShards(NormShards):
    """Per-row statistics over the last (feature) axis."""

    tag, summed = "ln", COLS

    def count(self, shape):
        return shape[-1]

    def sums(self, a, b):
        return np.stack([a.sum(axis=-1), np.einsum("...d,...d->...", a, b)], axis=-1)

    def stats_frame(self, x):
        return x.shape[:-1] + (2,), TensorAxes((x.axes[0], None), (units_of(x.axes)[0], 1))

    def stat(self, s, k, blk):
        return s[..., k:k + 1]

    def param(self, a, cols, blk):
        return a if cols is None else a[cols]

    def carrier(self, e, gamma):
        return e * gamma

    def scaled(self, inner, gamma, inv):
        inner *= inv
        return inner


def rms_axes(lay: G.Layer, ndim: int) -> tuple[int, ...]:
    """The axes an RMSNorm normalises over: ``axis`` (default -1) to the last."""
    return tuple(range(int(lay.attr("axis", -1)) % ndim, ndim))


def rms_norm(x: np.ndarray, scale: np.ndarray, lay: G.Layer) -> np.ndarray:
    """RMSNorm of x over :func:`rms_axes`: ``x / sqrt(mean(x^2) + epsilon) * scale`` (``scale``
    shaped like the normalised axes)."""
    axes = rms_axes(lay, x.ndim)
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + float(lay.attr("epsilon", 1e-5)))
    return x * inv * scale


def rms_norm_bwd(x: np.ndarray, e: np.ndarray, scale: np.ndarray, lay: G.Layer) -> np.ndarray:
    """The input error of :func:`rms_norm` for the output error e: with g = e x scale, r = 1 /
    sqrt(mean(x^2) + epsilon) and n the elements normalised together,
    ``dx = r (g - x r^2 sum(g x) / n)`` (d r / d x_j = -r^3 x_j / n)."""
    axes = rms_axes(lay, x.ndim)
    n = int(np.prod([x.shape[a] for a in axes]))
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + float(lay.attr("epsilon", 1e-5)))
    g = e * scale
    return inv * (g - x * (inv ** 2 * np.sum(g * x, axis=axes, keepdims=True) / n))


class RMSNormShards(NormShards):
    """RMSNorm over the last (feature) axis: one statistic per row each way (forward the sum of
    squares, backward the sum of e x scale x x), half of LayerNorm's; its parameter is the scale
    alone (``ctx.params[name]``, one value per feature)."""

    tag, summed = "rms", COLS

    def count(self, shape):
        return shape[-1]

    def sums(self, a, b):
        """Sum of a x b over the last axis, kept as a size-1 axis (the one statistic)."""
        return np.einsum("...d,...d->...", a, b)[..., None]

    def stats_frame(self, x):
        return x.shape[:-1] + (1,), (x.axes[0], None)

    def param(self, a, cols, blk):
        return a if cols is None else a[cols]

    @staticmethod
    def _inv(st: np.ndarray, n: int, eps: float) -> np.ndarray:
        """1 / sqrt(mean square + eps) per row from the all-reduced sums of squares."""
        return 1.0 / np.sqrt(st / n + eps)

    def forward(self, ctx, lay: G.Layer, x: Dist, charge) -> Dist:
        """The normalised output on every PE (the sums of squares all-reduced by ``ctx``, counted)."""
        scale = ctx.params[lay.name]
        eps, n = float(lay.attr("epsilon", 1e-5)), self.count(x.shape)
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "fwd", charge.where), charge,
                                 self._x_stats(x))

        def normalised(p: int) -> np.ndarray:
            blk = x.blocks[p]
            y = blk * self._inv(st.blocks[p], n, eps)
            y *= self.param(scale, x.index(p)[1], blk)
            return y

        out = per_pe(x.mesh.P, lambda p: self._key(x, p, st), normalised)
        return Dist(x.mesh, x.shape, x.layouts, axes=x.axes, blocks=out)

    def backward(self, ctx, lay: G.Layer, x: Dist, e: Dist, charge) -> Dist:
        """The input error on every PE (in e's layouts; the per-row sums of e x scale x x
        all-reduced, counted): :func:`rms_norm_bwd` on the blocks."""
        if not same_regions(x, e):
            raise SimulationError(f"{lay.name}: input in {x.layouts}, output error in {e.layouts}")
        scale = ctx.params[lay.name]
        eps, n = float(lay.attr("epsilon", 1e-5)), self.count(x.shape)
        stx = ctx.recomputed_stats(self._x_stats(x))

        def carried(p: int) -> tuple:
            blk = x.blocks[p]
            g_ = e.blocks[p] * self.param(scale, x.index(p)[1], blk)
            return self._inv(stx.blocks[p], n, eps), g_, self.sums(g_, blk)

        key = lambda p: self._key(x, p, stx) + (id(e.blocks[p]),)           # noqa: E731
        parts = per_pe(x.mesh.P, key, carried)
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "bwd", charge.where), charge,
                                 self.stats(e, [t[2] for t in parts]))

        def error(p: int) -> np.ndarray:
            inv, g_, _part = parts[p]
            inner = x.blocks[p] * (-(inv ** 2) * st.blocks[p] / n)       # g - x r^2 s / n, in place
            inner += g_
            inner *= inv
            return inner

        out = per_pe(x.mesh.P, lambda p: key(p) + (st.blocks[p].tobytes(),), error)
        return Dist(x.mesh, x.shape, e.layouts, axes=x.axes, blocks=out)


BATCHNORM, LAYERNORM, RMSNORM = BatchNormShards(), LayerNormShards(), RMSNormShards()
