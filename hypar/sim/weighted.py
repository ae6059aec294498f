"""Weighted layers (GEMM / MatMul with a weight, Conv, embedding) on every PE's shard: local
products on the PE's (batch, input, output) block, then the intra-layer all-reduces -- the partial
output over the levels that split the input features (type II), the weight gradient over the
levels that split the batch (type I); the input error stays partial over the levels that split
the output features (type III)."""

from __future__ import annotations

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import SimulationError
from hypar.sim.ledger import IntraKey, Ledger
from hypar.sim.mesh import Dist, axis_mask
from hypar.sim.ops import backward_op, forward_op, weight_grad

# the split axis of each level's strategy -> the layout of the local output there
_OUT_LAYOUT = {"b": ROWS, "i": PARTIAL, "o": COLS}


def _take(a: np.ndarray, masks: dict) -> np.ndarray:
    """The block of ``a`` selected by boolean ``masks`` per axis (None axes ignored)."""
    for ax, m in masks.items():
        if ax is not None:
            a = a.compress(m, axis=ax)
    return a


def _ix(shape: tuple, masks: dict) -> tuple:
    """An open-mesh index of the block ``masks`` selects (other axes whole)."""
    return np.ix_(*[np.flatnonzero(masks[ax]) if ax in masks else np.arange(n) for ax, n in enumerate(shape)])


class _Blocks:
    """Which (batch, input feature, output feature) indices each PE owns under one node's strategy."""

    def __init__(self, x: Dist, w: np.ndarray, strat: list):
        self.mesh = x.mesh
        self.sizes = (x.shape[x.axes[0]], w.shape[0], w.shape[1])
        self.levels = tuple([h for h in range(len(strat)) if strat[h].split_axis == a] for a in "bio")

    def masks(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PE p's (batch, input, output) masks."""
        return tuple(axis_mask(self.mesh, n, lv, p) for n, lv in zip(self.sizes, self.levels))


def _input_block(lay: G.Layer, x: Dist, p: int, masks: dict, what: str) -> np.ndarray:
    """PE p's block of x; raises SimulationError when it lacks part of it."""
    blk = _take(x.vals[p], masks)
    if np.isnan(blk).any():
        raise SimulationError(f"{lay.name}: PE {p} lacks part of its {what}")
    return blk


def weighted_forward(ledger: Ledger, i: int, lay: G.Layer, w: np.ndarray, x: Dist, strat: list,
                     out_shape: tuple, out_axes: tuple) -> Dist:
    """Node i's output: local products on every PE's shard, then the all-reduce of the partial
    output (type II levels; counted as ``IntraKey(i, "F_out")``). ``strat``: the node's strategy
    per level. Raises SimulationError when the output's layouts are not the strategy's."""
    mesh = x.mesh
    (bax, fax), (obax, ofax) = x.axes, out_axes
    blocks = _Blocks(x, w, strat)
    vals = []
    for p in range(mesh.P):
        rm, im, om = blocks.masks(p)
        v = np.full(out_shape, np.nan)
        if lay.kind == G.EMBEDDING:
            ids = _input_block(lay, x, p, {bax: rm}, "ids").astype(int)
            blk = np.where(im[ids][..., None], w[:, om][ids], 0.0)    # rows of other PEs' vocabulary: 0
        else:
            xb = _input_block(lay, x, p, {bax: rm, fax: im}, "input shard")
            blk = forward_op(lay, [xb], w[np.ix_(im, om)])
        v[_ix(out_shape, {obax: rm, ofax: om})] = blk
        vals.append(v)
    lays = tuple(_OUT_LAYOUT[s.split_axis] for s in strat)
    d = Dist(mesh, out_shape, lays, vals, out_axes)
    d = ledger.run(IntraKey(i, "F_out"), "intra", "F_out", i, lambda: ledger.comm.allreduce_levels(d))
    out_l = tuple(s.out_layout for s in strat)
    if d.layouts != out_l:
        raise SimulationError(f"{lay.name}: output layouts {d.layouts} differ from the strategy's {out_l}")
    return d


class WeightGrad:
    """A weight gradient as the PEs hold it: per PE the (input, output) index sets of its block of
    W and the block's values (full sums after the all-reduce)."""

    def __init__(self, index: list[tuple[np.ndarray, np.ndarray]], blocks: list[np.ndarray]):
        self.index, self.blocks = index, blocks

    def max_abs_error(self, ref: np.ndarray) -> float:
        """max |block - reference block| over every PE (inf for a missing value)."""
        err = 0.0
        for (im, om), blk in zip(self.index, self.blocks):
            diff = np.abs(blk - ref[np.ix_(im, om)])
            if diff.size:
                err = max(err, float(diff.max()))
            if np.isnan(diff).any():
                return float("inf")
        return err


def weighted_backward(ledger: Ledger, i: int, lay: G.Layer, w: np.ndarray, x: Dist, eo: Dist,
                      strat: list) -> tuple[WeightGrad, Dist | None]:
    """(dW, E_in) of node i for output error ``eo``: dW on every PE's block, all-reduced over
    type I levels (counted as ``IntraKey(i, "dW")``); E_in left partial over type III levels
    (None for an embedding: token ids take no error).

    The all-reduce runs on the blocks themselves (a tensor of the block's shape, partial at the
    type-I levels): the PEs of one type-I group hold the same block, so it sends exactly what the
    same all-reduce on W-shaped arrays NaN outside the block sends, without P copies of W."""
    mesh = x.mesh
    (bax, fax), (obax, ofax) = x.axes, eo.axes
    blocks = _Blocks(x, w, strat)
    index, dw_vals, ei_vals = [], [], []
    for p in range(mesh.P):
        rm, im, om = blocks.masks(p)
        eb = _input_block(lay, eo, p, {obax: rm, ofax: om}, "output-error shard")
        index.append((np.flatnonzero(im), np.flatnonzero(om)))
        if lay.kind == G.EMBEDDING:
            ids = _take(x.vals[p], {bax: rm})
            dw_vals.append(weight_grad(lay, ids, eb, w.shape[0])[im])
        else:
            xb = _take(x.vals[p], {bax: rm, fax: im})
            dw_vals.append(weight_grad(lay, xb, eb))
            u = np.full(x.shape, np.nan)
            u[_ix(x.shape, {bax: rm, fax: im})] = backward_op(lay, [xb], eb, w[np.ix_(im, om)])[0]
            ei_vals.append(u)
    lays = tuple(PARTIAL if s.split_axis == "b" else FULL for s in strat)
    dw = Dist(mesh, dw_vals[0].shape, lays, dw_vals)
    dw = ledger.run(IntraKey(i, "dW"), "intra", "dW", i, lambda: ledger.comm.allreduce_levels(dw))
    grad = WeightGrad(index, dw.vals)
    if lay.kind == G.EMBEDDING:
        return grad, None
    return grad, Dist(mesh, x.shape, tuple(s.in_err_layouts[0] for s in strat), ei_vals, x.axes)
