"""Weighted layers (GEMM / MatMul with a weight, Conv, embedding) on every PE's shard: local
products on the PE's (batch, input, output) block, then the intra-layer all-reduces -- the partial
output over the levels that split the input features (type II), the weight gradient over the
levels that split the batch (type I); the input error stays partial over the levels that split
the output features (type III)."""

from __future__ import annotations

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import SimulationError, Unsupported
from hypar.sim.ledger import IntraKey, Ledger
from hypar.sim.mesh import MAX_PIECES, Dist, as_cut, axis_mask, max_abs_diff, runs, sub_block, units_of
from hypar.sim.kernels import embedding_grad
from hypar.sim.ops import backward_op, forward_op, weight_grad

# the split axis of each level's strategy -> the layout of the local output there (None: a
# replicated constant-index lookup)
OUT_LAYOUT = {"b": ROWS, "i": PARTIAL, "o": COLS, "g": COLS, None: FULL}


class _Blocks:
    """Which (batch, input feature, output feature) indices each PE owns under one node's strategy.

    A grouped Conv splits (batch, groups) instead: a PE owns the input and output channels of its
    groups, its weight block is every group input channel (W is (Ci/G, Co, kh, kw)) by its output
    channels.

    Units (:mod:`hypar.shards` "Units"): the batch and W's rows take the units of the input's
    batch and feature axes, W's columns that of the output's features (``out``: the output or its
    error, whose axes carry it); groups take 1."""

    def __init__(self, lay: G.Layer, x: Dist, w: np.ndarray, strat: list, out: tuple):
        self.mesh, self.name = x.mesh, lay.name
        self.grouped = lay.kind == G.CONV and lay.groups > 1
        (bu, fu), out_unit = units_of(x.axes), units_of(out)[1]
        if self.grouped:
            self.cin, self.cout = w.shape[0], w.shape[1] // lay.groups
            self.sizes = (x.shape[x.axes[0]], lay.groups, lay.groups)
            self.units = (bu, 1, 1)
            axes = "bgg"
        else:
            self.sizes = (x.shape[x.axes[0]], w.shape[0], w.shape[1])
            in_unit = fu if x.axes[1] is not None and x.shape[x.axes[1]] == w.shape[0] else 1
            self.units = (bu, in_unit, out_unit)
            axes = "bio"
        self.levels = tuple([h for h in range(len(strat)) if strat[h].split_axis == a] for a in axes)
        self._index: dict[int, tuple] = {}

    def masks(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PE p's (batch, input, output) masks (a grouped Conv: batch, groups, groups)."""
        return tuple(axis_mask(self.mesh, n, lv, p, u) for n, lv, u in zip(self.sizes, self.levels, self.units))

    def index(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PE p's (batch, input, output) indices (a grouped Conv: its groups' channels); computed
        once per PE (read-only)."""
        hit = self._index.get(p)
        if hit is None:
            ri, ii, oi = (np.flatnonzero(m) for m in self.masks(p))
            if self.grouped:
                ii = (ii[:, None] * self.cin + np.arange(self.cin)).ravel()
                oi = (oi[:, None] * self.cout + np.arange(self.cout)).ravel()
            hit = self._index[p] = (ri, ii, oi)
        return hit

    def weight(self, w: np.ndarray, ii: np.ndarray, oi: np.ndarray) -> np.ndarray:
        """The weight block a PE with input indices ``ii`` and output indices ``oi`` uses (a view
        when both are contiguous ranges; do not write into it)."""
        return block_of(w, np.arange(w.shape[0]) if self.grouped else ii, oi)

    def weight_index(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """PE p's (row, column) indices in W (for the weight gradient)."""
        _ri, ii, oi = self.index(p)
        return (np.arange(self.cin), oi) if self.grouped else (ii, oi)

    def check_channels(self, d: Dist, p: int, want: np.ndarray, what: str) -> None:
        """Unsupported when a grouped Conv's ``what`` channel shard on PE p is not its groups'."""
        have = d.index(p)[1]
        if self.grouped and have is not None and not np.array_equal(have, want):
            raise Unsupported(f"{self.name} (grouped Conv): the {what} channel shards do not map onto its "
                              "group shards (channels per group do not fit the channel digits)")


def block_of(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[rows][:, cols]`` (first two axes), a view where the indices are contiguous ranges."""
    r, c = as_cut(rows), as_cut(cols)
    if isinstance(c, slice):
        return a[r, c] if isinstance(r, slice) else a[:, c][r]
    return a[r].take(c, axis=1) if isinstance(r, slice) else a[np.ix_(r, c)]   # (not a[r][:, c]: slow)


def _pieces(rows: np.ndarray, cols: np.ndarray) -> list | None:
    """The (row run, column run) pairs covering the block ``a[rows][:, cols]`` (None when more
    than :data:`MAX_PIECES`): each a view of ``a``, so nothing is copied."""
    rr, rc = runs(rows), runs(cols)
    return [(r, c) for r in rr for c in rc] if len(rr) * len(rc) <= MAX_PIECES else None


def gemm_forward(x: np.ndarray, w: np.ndarray, ii: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """x (..., len(ii)) @ W[ii][:, oi], one product per pair of runs on views of W."""
    pieces = _pieces(ii, oi)
    if pieces is None:
        return x @ block_of(w, ii, oi)
    out = np.zeros(x.shape[:-1] + (len(oi),), np.result_type(x, w))
    for (pi, si, li), (po, so, lo) in pieces:
        out[..., po:po + lo] += x[..., pi:pi + li] @ w[si:si + li, so:so + lo]
    return out


def gemm_input_error(e: np.ndarray, w: np.ndarray, ii: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """e (..., len(oi)) @ W[ii][:, oi].T, one product per pair of runs on views of W."""
    pieces = _pieces(ii, oi)
    if pieces is None:
        return e @ block_of(w, ii, oi).T
    out = np.zeros(e.shape[:-1] + (len(ii),), np.result_type(e, w))
    for (pi, si, li), (po, so, lo) in pieces:
        out[..., pi:pi + li] += e[..., po:po + lo] @ w[si:si + li, so:so + lo].T
    return out


def _input_block(lay: G.Layer, x: Dist, p: int, want: tuple, what: str) -> np.ndarray:
    """PE p's block of x at the (batch, feature) indices ``want``; raises SimulationError when it
    lacks part of it."""
    blk = sub_block(x, p, want)
    if np.isnan(blk).any():
        raise SimulationError(f"{lay.name}: PE {p} lacks part of its {what}")
    return blk


def reduced_blocks(ledger: Ledger, key: IntraKey, blocks: list[np.ndarray], layouts: tuple) -> list[np.ndarray]:
    """The blocks all-reduced over the PARTIAL levels of ``layouts`` (counted under ``key``). The
    all-reduce runs on the blocks themselves: the PEs of one partial group hold the same block, so
    it sends exactly what it sends on full-shape arrays NaN outside the block."""
    d = Dist(ledger.comm.mesh, blocks[0].shape, layouts, blocks)
    return ledger.run(key, "intra", key.what, key.node, lambda: ledger.comm.allreduce_levels(d)).vals


def _readers(blocks: _Blocks, P: int) -> list[list[int]]:
    """The PEs grouped by the input block they read (equal batch and input indices), in order.
    They differ only at type-III levels, so their output indices are disjoint."""
    groups: dict[tuple, list[int]] = {}
    for p in range(P):
        ri, ii, _oi = blocks.index(p)
        groups.setdefault((ri.tobytes(), ii.tobytes()), []).append(p)
    return list(groups.values())


def _shared_input(lay: G.Layer, x: Dist, blocks: _Blocks, members: list[int], what: str) -> np.ndarray:
    """The input block the ``members`` read, checked equal on each of them (SimulationError)."""
    ri, ii, _oi = blocks.index(members[0])
    xb = _input_block(lay, x, members[0], (ri, ii), what)
    for q in members[1:]:
        if not np.array_equal(_input_block(lay, x, q, (ri, ii), what), xb):
            raise SimulationError(f"{lay.name}: replicas of an {what} disagree")
    return xb


def _split_cols(a: np.ndarray, axis: int, parts: list[np.ndarray]) -> list[np.ndarray]:
    """``a`` cut along ``axis`` into consecutive pieces as long as each of ``parts``."""
    return np.split(a, np.cumsum([len(q) for q in parts])[:-1], axis=axis)


def _forward_blocks(lay: G.Layer, w: np.ndarray, x: Dist, blocks: _Blocks, out_axes: tuple) -> list[np.ndarray]:
    """Every PE's local output block. PEs reading the same input block compute together (one
    product over their output columns side by side, then cut apart): the same values, and an
    im2col of a replicated input built once."""
    out: list = [None] * x.mesh.P
    for members in _readers(blocks, x.mesh.P):
        ii = blocks.index(members[0])[1]
        if lay.kind == G.EMBEDDING:
            for p in members:
                rm, im, om = blocks.masks(p)
                ids = _input_block(lay, x, p, (blocks.index(p)[0], None), "ids").astype(int)
                rows = w[ids]
                cut = as_cut(np.flatnonzero(om))
                rows = rows[..., cut] if isinstance(cut, slice) else rows.take(cut, axis=-1)
                out[p] = np.where(im[ids][..., None], rows, 0.0)             # other PEs' vocabulary: 0
            continue
        blocks.check_channels(x, members[0], ii, "input")
        xb = _shared_input(lay, x, blocks, members, "input shard")
        cols = [blocks.index(p)[2] for p in members]
        oi = np.concatenate(cols)
        both = gemm_forward(xb, w, ii, oi) if lay.kind == G.GEMM else forward_op(lay, [xb], blocks.weight(w, ii, oi))
        for p, part in zip(members, _split_cols(both, out_axes[1], cols)):
            out[p] = part
    return out


def weighted_forward(ledger: Ledger, i: int, lay: G.Layer, w: np.ndarray, x: Dist, strat: list,
                     out_shape: tuple, out_axes: tuple) -> Dist:
    """Node i's output: local products on every PE's shard, then the all-reduce of the partial
    output (type II levels; counted as ``IntraKey(i, "F_out")``). ``strat``: the node's strategy
    per level. Raises SimulationError when the output's layouts are not the strategy's."""
    blocks = _Blocks(lay, x, w, strat, out_axes)
    out_blocks = _forward_blocks(lay, w, x, blocks, out_axes)
    lays = tuple(OUT_LAYOUT[s.split_axis] for s in strat)
    reduced = reduced_blocks(ledger, IntraKey(i, "F_out"), out_blocks, lays)
    out_l = tuple(FULL if l == PARTIAL else l for l in lays)
    if out_l != tuple(s.out_layout for s in strat):
        raise SimulationError(f"{lay.name}: output layouts {out_l} differ from the strategy's")
    out = Dist(x.mesh, out_shape, out_l, axes=out_axes, blocks=reduced)
    for p in range(x.mesh.P):
        blocks.check_channels(out, p, blocks.index(p)[2], "output")
    return out


class WeightGrad:
    """A weight gradient as the PEs hold it: per PE the (input, output) index sets of its block of
    W and the block's values (full sums after the all-reduce)."""

    def __init__(self, index: list[tuple[np.ndarray, np.ndarray]], blocks: list[np.ndarray]):
        self.index, self.blocks = index, blocks

    def max_abs_error(self, ref: np.ndarray) -> float:
        """max |block - reference block| over every PE (inf for a missing value)."""
        err = 0.0
        for (im, om), blk in zip(self.index, self.blocks):
            pieces = _pieces(im, om)
            if pieces is None:
                diffs = [max_abs_diff(blk, block_of(ref, im, om))]
            else:                                       # views of the reference, no copy
                diffs = [max_abs_diff(blk[pi:pi + li, po:po + lo], ref[si:si + li, so:so + lo])
                         for (pi, si, li), (po, so, lo) in pieces]
            if any(np.isnan(d) for d in diffs):
                return float("inf")
            err = max([err] + diffs)
        return err


def _gradient_blocks(lay: G.Layer, w: np.ndarray, x: Dist, eo: Dist, blocks: _Blocks) -> tuple[list, list]:
    """Every PE's (dW block, input-error block) for the output error ``eo``; the dW blocks of PEs
    reading the same input block in one product (their error blocks side by side)."""
    P = x.mesh.P
    dw: list = [None] * P
    ei: list = [None] * P
    for members in _readers(blocks, P):
        ri, ii, _oi = blocks.index(members[0])
        cols = [blocks.index(p)[2] for p in members]
        ebs = [_input_block(lay, eo, p, (ri, oi), "output-error shard") for p, oi in zip(members, cols)]
        if lay.kind == G.EMBEDDING:
            ids = sub_block(x, members[0], (ri, None))
            for p, eb in zip(members, ebs):
                dw[p] = embedding_grad(ids, eb, np.flatnonzero(blocks.masks(p)[1]))
            continue
        xb = _shared_input(lay, x, blocks, members, "input shard")
        both = weight_grad(lay, xb, np.concatenate(ebs, axis=eo.axes[1]))
        for p, part, eb, oi in zip(members, _split_cols(both, 1, cols), ebs, cols):
            dw[p] = part
            ei[p] = (gemm_input_error(eb, w, ii, oi) if lay.kind == G.GEMM
                     else backward_op(lay, [xb], eb, blocks.weight(w, ii, oi))[0])
    return dw, ei


def weighted_backward(ledger: Ledger, i: int, lay: G.Layer, w: np.ndarray, x: Dist, eo: Dist,
                      strat: list) -> tuple[WeightGrad, Dist | None]:
    """(dW, E_in) of node i for output error ``eo``: dW on every PE's block, all-reduced over
    type I levels (counted as ``IntraKey(i, "dW")``, on the blocks as :func:`reduced_blocks` says);
    E_in left partial over type III levels (None for an embedding: token ids take no error)."""
    blocks = _Blocks(lay, x, w, strat, eo.axes)
    dw_vals, ei_blocks = _gradient_blocks(lay, w, x, eo, blocks)
    lays = tuple(PARTIAL if s.split_axis == "b" else FULL for s in strat)
    index = [blocks.weight_index(p) for p in range(x.mesh.P)]
    grad = WeightGrad(index, reduced_blocks(ledger, IntraKey(i, "dW"), dw_vals, lays))
    if lay.kind == G.EMBEDDING:
        return grad, None
    return grad, Dist(x.mesh, x.shape, tuple(s.in_err_layouts[0] for s in strat), axes=x.axes, blocks=ei_blocks)
