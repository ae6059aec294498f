"""Unweighted layer ops on every PE's shards: elementwise, pooling, reshapes, splits, products of
two activations -- each PE computes on its own shard, no messages -- and the normalisations, whose
statistics are all-reduced over the levels that split their axis (BatchNorm: the batch;
LayerNorm: a split last feature axis). A softmax over a split feature axis is unsupported."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import Unsupported
from hypar.sim.hierorder import run_order
from hypar.sim.kernels import bn_shape
from hypar.sim.ledger import Ledger, StatsKey
from hypar.sim.mesh import Dist, held, mask_to_layout, shard_mask
from hypar.sim.ops import backward_op, forward_op, is_layernorm, is_shape_op, is_softmax, is_split, split_slice
from hypar.sim.result import SimResult


class Charge(NamedTuple):
    """Who pays for a local op's statistics: ``kind`` "intra" (a kept node's own op) or "fold"
    (a folded op run for a consumer), the node charged, and where it ran ("node", "post",
    "pre:<producer>")."""

    kind: str
    node: int
    where: str


class ShardContext:
    """What a local op may need: the parameters (by layer name), the tensors' (batch, feature)
    axes (by tensor name), and a way to talk -- normalisation statistics are all-reduced as a
    counted step (the kept node's intra-layer traffic, or ``fold`` traffic of the consumer that
    runs a folded normalisation); known differences from the cost model go to ``res.notes``."""

    def __init__(self, ledger: Ledger, params: dict, res: SimResult, axes: dict, hierarchical: bool = False):
        """``params``: by layer name; ``axes``: (batch axis, feature axis) by tensor name;
        ``hierarchical``: the statistics all-reduce follows the hierarchical convention."""
        self.ledger, self.comm, self.params, self.res = ledger, ledger.comm, params, res
        self.axes = axes
        self.hierarchical = hierarchical

    def allreduce_stats(self, key: StatsKey, charge: Charge, st: Dist) -> Dist:
        """All-reduce the PARTIAL levels of statistics ``st`` as the counted step ``key``.

        ``reference``: :meth:`Comm.allreduce_levels` (every replica of a level below a partial
        one reduces its own copy: noted). ``hierarchical`` (SPEC §3): the order with the levels
        replicated in both sliced virtually first, so each replica reduces only its slice and the
        relay gathers the slices -- it sends the closed form of the pair with those levels read as
        shards (tests/sim/test_hier_sim.py)."""
        what = f"{key.layer} statistics"
        if self.hierarchical:
            tgt = tuple(FULL if l == PARTIAL else l for l in st.layouts)
            return self.ledger.run(key, charge.kind, what, charge.node,
                                   lambda: run_order(self.comm, st, tgt, virtual_first=True))
        self._note_differences(charge, what, st.layouts)
        return self.ledger.run(key, charge.kind, what, charge.node, lambda: self.comm.allreduce_levels(st))

    def _note_differences(self, charge: Charge, what: str, lays: tuple) -> None:
        """The reference convention's known differences from the cost model, in ``res.notes``."""
        for h, l in enumerate(lays):
            if l != PARTIAL:
                continue
            if any(lays[g] == FULL for g in range(h + 1, len(lays))):
                self.res.notes.append((charge.node, h, f"{what}: every replica below level {h} all-reduces its own "
                                       "copy (the cost model prices one per subgroup; no schedule avoids the extra "
                                       "copies or an all-gather below)"))
            if any(lays[u] == COLS for u in range(h)):
                self.res.notes.append((charge.node, h, f"{what}: the channels are split above level {h}, but the cost "
                                       "model all-reduces statistics of all channels (hypar/strategies.py quantity, "
                                       "Q_STATS_BN uses node.size('f'), not the view's channels)"))

    def recomputed_stats(self, st: Dist) -> Dist:
        """All-reduce statistics the forward pass already has (uncounted: they are kept)."""
        with self.comm.counting(None):
            return self.comm.allreduce_levels(st)


class _NormShards:
    """A normalisation on shards: per-PE partial sums of its statistics axis, all-reduced."""

    tag = ""           # StatsKey.stat
    keep = ""          # the split that selects which statistics a PE holds (the other axis is summed)

    def count(self, shape: tuple) -> int:
        """Elements summed into each statistic."""
        raise NotImplementedError

    def sums(self, held_mask: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
        """Per-statistic sums of each array over the PE's elements (NaN where it holds none)."""
        raise NotImplementedError

    def stats(self, x: Dist, parts: list[np.ndarray]) -> Dist:
        """Per-PE sums as a tensor, partial over the levels that split the summed axis."""
        raise NotImplementedError

    def stat(self, s: np.ndarray, k: int) -> np.ndarray:
        """Statistic k (0: sum, 1: sum of squares / products) of a PE's stats array."""
        raise NotImplementedError

    def col(self, a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """A statistic broadcastable against v."""
        raise NotImplementedError

    def affine(self, v, mean, var, gamma, beta, eps):
        """The forward output of v for its statistics."""
        raise NotImplementedError

    def carrier(self, e: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        """The error quantity summed in the backward statistics."""
        raise NotImplementedError

    def scaled(self, inner: np.ndarray, gamma: np.ndarray, inv: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The input error from the centred error ``inner``."""
        raise NotImplementedError

    def _x_stats(self, x: Dist) -> Dist:
        """Per-PE (sum, sum of squares) of x, partial over the levels that split the summed axis."""
        return self.stats(x, [self.sums(held(x, p, self.keep), v, v * v) for p, v in enumerate(x.vals)])

    def forward(self, ctx: ShardContext, lay: G.Layer, x: Dist, charge: Charge) -> Dist:
        """The normalised output on every PE (statistics all-reduced, counted)."""
        gamma, beta = ctx.params[lay.name]
        eps = float(lay.attr("epsilon", 1e-5))
        n = self.count(x.shape)
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "fwd", charge.where), charge,
                                 self._x_stats(x))
        out = []
        for p, v in enumerate(x.vals):
            mean = self.stat(st.vals[p], 0) / n
            var = self.stat(st.vals[p], 1) / n - mean ** 2
            out.append(self.affine(v, mean, var, gamma, beta, eps))
        return Dist(x.mesh, x.shape, x.layouts, out, x.axes)

    def backward(self, ctx: ShardContext, lay: G.Layer, x: Dist, e: Dist, charge: Charge) -> Dist:
        """The input error on every PE (in e's layouts; backward statistics all-reduced, counted)."""
        gamma, _beta = ctx.params[lay.name]
        eps = float(lay.attr("epsilon", 1e-5))
        n = self.count(x.shape)
        stx = ctx.recomputed_stats(self._x_stats(x))
        xh, parts = [], []
        for p, v in enumerate(x.vals):
            mean = self.stat(stx.vals[p], 0) / n
            inv = 1.0 / np.sqrt(self.stat(stx.vals[p], 1) / n - mean ** 2 + eps)
            xhat = (v - self.col(mean, v)) * self.col(inv, v)
            g_ = self.carrier(e.vals[p], gamma)
            xh.append((xhat, inv, g_))
            parts.append(self.sums(held(x, p, self.keep), g_, g_ * xhat))
        st = ctx.allreduce_stats(StatsKey(self.tag, charge.node, lay.name, "bwd", charge.where), charge,
                                 self.stats(e, parts))
        out = []
        for p, v in enumerate(x.vals):
            xhat, inv, g_ = xh[p]
            s0, s1 = self.col(self.stat(st.vals[p], 0), v), self.col(self.stat(st.vals[p], 1), v)
            out.append(self.scaled(g_ - s0 / n - xhat * s1 / n, gamma, inv, v))
        return Dist(x.mesh, x.shape, e.layouts, out, x.axes)


class _BatchNormShards(_NormShards):
    """Per-channel statistics (axis 1), summed over the batch and spatial axes."""

    tag, keep = "bn", COLS

    def count(self, shape):
        return shape[0] * int(np.prod(shape[2:]))

    def sums(self, held_mask, *arrays):
        axes = tuple(a for a in range(held_mask.ndim) if a != 1)
        hold = held_mask.any(axis=axes)
        return np.stack([np.where(hold, np.nansum(a, axis=axes), np.nan) for a in arrays])

    def stats(self, x, parts):
        lays = tuple(PARTIAL if l == ROWS else (FULL if l == PARTIAL else l) for l in x.layouts)
        return Dist(x.mesh, parts[0].shape, lays, parts)

    def stat(self, s, k):
        return s[k]

    def col(self, a, v):
        return a.reshape(bn_shape(v))

    def affine(self, v, mean, var, gamma, beta, eps):
        xhat = (v - mean.reshape(bn_shape(v))) / np.sqrt(var + eps).reshape(bn_shape(v))
        return gamma.reshape(bn_shape(v)) * xhat + beta.reshape(bn_shape(v))

    def carrier(self, e, gamma):
        return e

    def scaled(self, inner, gamma, inv, v):
        return gamma.reshape(bn_shape(v)) * inv.reshape(bn_shape(v)) * inner


class _LayerNormShards(_NormShards):
    """Per-row statistics over the last (feature) axis."""

    tag, keep = "ln", ROWS

    def count(self, shape):
        return shape[-1]

    def sums(self, held_mask, *arrays):
        hold = held_mask.any(axis=-1)
        return np.stack([np.where(hold, np.nansum(a, axis=-1), np.nan) for a in arrays], axis=-1)

    def stats(self, x, parts):
        lays = tuple(PARTIAL if l == COLS else (FULL if l == PARTIAL else l) for l in x.layouts)
        return Dist(x.mesh, parts[0].shape, lays, parts, (x.axes[0], None))

    def stat(self, s, k):
        return s[..., k:k + 1]

    def col(self, a, v):
        return a

    def affine(self, v, mean, var, gamma, beta, eps):
        return gamma * (v - mean) / np.sqrt(var + eps) + beta

    def carrier(self, e, gamma):
        return e * gamma

    def scaled(self, inner, gamma, inv, v):
        return inv * inner


BATCHNORM, LAYERNORM = _BatchNormShards(), _LayerNormShards()


def _norm_over_split_features(lay: G.Layer, x: Dist) -> bool:
    """A LayerNorm / Softmax whose (last) feature axis is split: its statistics need messages."""
    return (is_layernorm(lay) or is_softmax(lay)) and x.axes[1] == len(x.shape) - 1 and COLS in x.layouts


def _split_forward(lay: G.Layer, x0: Dist, ctx: ShardContext, out: str | None) -> Dist:
    """Output ``out`` of a Split on every PE (its slice of the input, in the input's layouts)."""
    out_t = out or lay.outputs[0]
    sl = split_slice(lay, len(x0.shape), out_t)
    vals = [v[sl].copy() for v in x0.vals]
    return Dist(x0.mesh, vals[0].shape, x0.layouts, vals, ctx.axes.get(out_t, x0.axes))


def local_forward(lay: G.Layer, xs: list[Dist], ctx: ShardContext, charge: Charge, out: str | None = None) -> Dist:
    """An op on every PE's shards (the output keeps the inputs' layouts; ``out``: which output of a
    Split). BatchNorm and a LayerNorm over a split feature axis talk (statistics); raises
    Unsupported for a softmax over a split axis or a reshape the shards do not map through."""
    x0 = xs[0]
    if lay.kind == G.BATCHNORM:
        return BATCHNORM.forward(ctx, lay, x0, charge)
    if is_split(lay):
        return _split_forward(lay, x0, ctx, out)
    if _norm_over_split_features(lay, x0):
        if is_softmax(lay):
            raise Unsupported(f"{lay.name} (Softmax): softmax over a split feature axis")
        return LAYERNORM.forward(ctx, lay, x0, charge)
    w = ctx.params.get(lay.name)
    vals = [forward_op(lay, [x.vals[p] for x in xs], w) for p in range(x0.mesh.P)]
    res = Dist(x0.mesh, vals[0].shape, x0.layouts, vals, ctx.axes.get(lay.outputs[0], x0.axes))
    if is_shape_op(lay) and any(l in (ROWS, COLS) for l in x0.layouts):
        for p, v in enumerate(res.vals):
            if not np.array_equal(~np.isnan(v), shard_mask(res.mesh, res.shape, res.layouts, p, res.axes)):
                raise Unsupported(f"{lay.name} ({lay.op}): the shards do not map through it (uneven split "
                                  f"of {x0.shape} vs {res.shape}); the cost model assumes they do")
    return res


def _split_backward(lay: G.Layer, x0: Dist, e: Dist, layouts: tuple, out: str | None) -> Dist:
    """The input error of a Split from the error of its output ``out`` (zero elsewhere)."""
    sl = split_slice(lay, len(x0.shape), out or lay.outputs[0])
    vals = []
    for p, v in enumerate(x0.vals):
        u = np.where(np.isnan(v), np.nan, 0.0)
        u[sl] = e.vals[p]
        vals.append(u)
    return Dist(x0.mesh, x0.shape, layouts, vals, x0.axes)


def local_backward(lay: G.Layer, xs: list[Dist], e: Dist, k: int, layouts: tuple, ctx: ShardContext,
                   charge: Charge, out: str | None = None) -> Dist:
    """The error of input k of a local op on every PE, in ``layouts`` (for a Split: from the error
    of output ``out``)."""
    x0 = xs[0]
    if is_split(lay):
        return _split_backward(lay, x0, e, layouts, out)
    if lay.kind == G.BATCHNORM:
        return BATCHNORM.backward(ctx, lay, x0, e, charge).relabelled(layouts)
    if is_layernorm(lay) and _norm_over_split_features(lay, x0):
        return LAYERNORM.backward(ctx, lay, x0, e, charge).relabelled(layouts)
    w = ctx.params.get(lay.name)
    vals = [backward_op(lay, [x.vals[p] for x in xs], e.vals[p], w)[k] for p in range(e.mesh.P)]
    d = Dist(e.mesh, vals[0].shape, layouts, vals, xs[k].axes)
    return mask_to_layout(d) if lay.kind == G.MATMUL_ACT else d
