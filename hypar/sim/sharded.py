"""Unweighted layer ops on every PE's shards: elementwise, pooling, reshapes, splits, products of
two activations -- each PE computes on its own shard, no messages -- and the normalisations
(:mod:`hypar.sim.norms`), whose statistics the :class:`ShardContext` all-reduces over the levels
that split their axis (BatchNorm: the batch; LayerNorm: a split last feature axis). A softmax over
a split feature axis is unsupported. Reductions and elementwise ops of operands of different
shapes run on the blocks in :mod:`hypar.sim.broadcast` (their partial sums all-reduced here too).

Ops that keep the batch and feature axes (elementwise, pooling, softmax, a LayerNorm over whole
features, products of two activations, Flatten of whole channels) run on the blocks; reshapes and
splits run on full-shape arrays (NaN outside each PE's shard), the shards checked to map through.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.broadcast import (broadcast_backward, broadcast_forward, broadcasting, expand_backward, expand_forward,
                                 reduce_backward, reduce_forward)
from hypar.sim.errors import Unsupported
from hypar.sim.fused import check_whole_heads, is_rotary, is_skip_norm, norm_view, skip_norm_sum
from hypar.sim.hierorder import run_order
from hypar.sim.ledger import Ledger, StatsKey
from hypar.sim.mesh import Dist, add, per_pe, region_key, same_regions, shard_mask, units_of
from hypar.sim.norms import BATCHNORM, LAYERNORM, RMSNORM
from hypar.sim.ops import (backward_op, concat_axis, forward_op, is_concat, is_expand, is_layernorm, is_lrn,
                           is_pad, is_reduce, is_rmsnorm, is_shape_op, is_softmax, is_split, pad_widths,
                           split_slice)
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
        one reduces its own copy: noted). ``hierarchical`` (SPEC §3, "norm statistics with a
        replicated level below"): the order with the levels replicated below a partial one sliced
        virtually first, so each replica reduces only its slice and the relay gathers the slices;
        replicated levels above every partial one stay independent groups, each reducing its own
        copy. Without a replicated level below a partial one this sends exactly what today's
        all-reduce sends; the amounts are tests/sim/test_hier_sim.py's ``stats_amounts``."""
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


def _norm_over_split_features(lay: G.Layer, x: Dist) -> bool:
    """A LayerNorm / RMSNorm / Softmax whose (last) feature axis is split: its statistics need
    messages."""
    return (is_layernorm(lay) or is_rmsnorm(lay) or is_softmax(lay)) and x.axes[1] == len(x.shape) - 1 and COLS in x.layouts


def _split_forward(lay: G.Layer, x0: Dist, ctx: ShardContext, out: str | None) -> Dist:
    """Output ``out`` of a Split on every PE (its slice of the input, in the input's layouts)."""
    out_t = out or lay.outputs[0]
    sl = split_slice(lay, len(x0.shape), out_t)
    vals = [v[sl].copy() for v in x0.vals]
    res = Dist(x0.mesh, vals[0].shape, x0.layouts, vals, ctx.axes.get(out_t, x0.axes))
    if lay.op != "Split":
        _check_mapped(lay, x0, res, f"a split axis of {x0.shape} cut or moved to {res.shape}")
    return res.compact()


def _check_mapped(lay: G.Layer, x0: Dist, res: Dist, what: str) -> None:
    """Unsupported (naming ``what`` happened to the shards) unless every PE holds exactly its
    shard of ``res`` (``lay``'s output from its full-shape values, NaN outside): an op that cuts,
    moves or regroups a split axis may leave a PE other indices than its shard of the output (the
    cost model assumes it does not)."""
    if not any(l in (ROWS, COLS) for l in x0.layouts):
        return
    for p, v in enumerate(res.vals):
        if not np.array_equal(~np.isnan(v), shard_mask(res.mesh, res.shape, res.layouts, p, res.axes)):
            raise Unsupported(f"{lay.name} ({lay.op}): the shards do not map through it ({what}); "
                              "the cost model assumes they do")


def _check_local(lay: G.Layer, xs: list[Dist]) -> None:
    """Unsupported for a local op over an axis the layouts split: a Pad of a split axis (each
    block would be padded), an LRN across split channels (each channel needs its neighbours), a
    Concat along a split axis (the joined shards are not the output's), a rotary embedding cutting
    a head (:func:`hypar.sim.fused.check_whole_heads`)."""
    x0 = xs[0]
    if is_rotary(lay):
        check_whole_heads(lay, x0)
    if is_pad(lay):
        widths = pad_widths(lay)
        for ax, idx_of in zip(x0.axes, (0, 1)):
            if ax is not None and any(widths[ax]) and any(x0.index(p)[idx_of] is not None for p in range(x0.mesh.P)):
                raise Unsupported(f"{lay.name} (Pad): padding a split axis")
    if is_lrn(lay) and x0.axes[1] == 1 and any(x0.index(p)[1] is not None for p in range(x0.mesh.P)):
        raise Unsupported(f"{lay.name} (LRN): normalisation across split channels")
    if is_concat(lay):
        ax = concat_axis(lay, len(x0.shape))
        for x in xs:
            for a, idx_of in ((x.axes[0], 0), (x.axes[1], 1)):
                if a == ax and any(x.index(p)[idx_of] is not None for p in range(x.mesh.P)):
                    raise Unsupported(f"{lay.name} (Concat): joining along a split axis")


def _blockwise(lay: G.Layer, xs: list[Dist], out_axes: tuple) -> bool:
    """Can the op run on the blocks: it keeps the batch and feature axes where they are (a Flatten
    only of whole channels), its inputs' blocks line up and none is empty."""
    x0 = xs[0]
    if is_shape_op(lay) or is_split(lay) or tuple(out_axes) != tuple(x0.axes) or units_of(out_axes) != units_of(x0.axes):
        return False
    if lay.op == "Flatten" and any(x0.index(p)[1] is not None for p in range(x0.mesh.P)):
        return False
    if not any(all(x.blocks[p].size for x in xs) for p in range(x0.mesh.P)):
        return False                        # every share empty: nothing to shape the outputs by
    return all(same_regions(x, x0) for x in xs[1:]) or _joined_along(lay, xs)


def _on_blocks(P: int, xs: list[Dist], fn, like) -> list[np.ndarray]:
    """``fn(p)`` on every PE whose input blocks all hold data (once per distinct arrays); a PE
    with an empty share (uneven split: the kernels want data) gets an empty block shaped
    ``like(p, proto)`` after a computed one."""
    full = [p for p in range(P) if all(x.blocks[p].size for x in xs)]
    done = dict(zip(full, per_pe(len(full), lambda k: tuple(id(x.blocks[full[k]]) for x in xs),
                                 lambda k: fn(full[k]))))
    proto = done[full[0]]
    return [done[p] if p in done else np.empty(like(p, proto), proto.dtype) for p in range(P)]


def _block_shape(x: Dist, p: int, proto: np.ndarray) -> tuple:
    """PE p's block shape of an op keeping x's (batch, feature) axes, from another PE's ``proto``."""
    shape = list(proto.shape)
    for ax, idx in zip(x.axes, x.index(p)):
        if ax is not None and idx is not None:
            shape[ax] = len(idx)
    return tuple(shape)


def _joined_along(lay: G.Layer, ds: list[Dist]) -> bool:
    """A Concat whose inputs (and output error) hold the same indices of every axis but the joined
    one, which no PE splits: their blocks join and split as the whole tensors do."""
    if not is_concat(lay):
        return False
    ax, d0 = concat_axis(lay, len(ds[0].shape)), ds[0]
    for d in ds:
        if region_key(d.layouts) != region_key(d0.layouts) or tuple(d.axes) != tuple(d0.axes) \
                or units_of(d.axes) != units_of(d0.axes):
            return False
        if any(a is not None and a != ax and d.shape[a] != d0.shape[a] for a in d.axes):
            return False
    return all(idx is None for d in ds for p in range(d.mesh.P) for a, idx in zip(d.axes, d.index(p)) if a == ax)


def _block_frame(x0: Dist, blk: np.ndarray, p: int) -> tuple:
    """The whole tensor's shape for PE p's output block ``blk`` of an op keeping x0's axes."""
    shape = list(blk.shape)
    for ax, idx in zip(x0.axes, x0.index(p)):
        if ax is not None and idx is not None:
            shape[ax] = x0.shape[ax]
    return tuple(shape)


def local_forward(lay: G.Layer, xs: list[Dist], ctx: ShardContext, charge: Charge, out: str | None = None) -> Dist:
    """An op on every PE's shards (the output keeps the inputs' layouts; ``out``: which output of a
    Split). BatchNorm and a LayerNorm over a split feature axis talk (statistics); raises
    Unsupported for a softmax over a split axis or a reshape the shards do not map through."""
    x0 = xs[0]
    if is_reduce(lay):
        return reduce_forward(lay, x0, ctx, charge, ctx.axes.get(lay.outputs[0], x0.axes))
    if broadcasting(lay, [x.shape for x in xs]):
        return broadcast_forward(lay, xs, ctx.axes.get(lay.outputs[0], x0.axes))
    if is_expand(lay):
        return expand_forward(lay, x0, ctx.axes.get(lay.outputs[0], x0.axes))
    if lay.kind == G.BATCHNORM:
        return BATCHNORM.forward(ctx, lay, x0, charge)
    if is_split(lay):
        return _split_forward(lay, x0, ctx, out)
    if _norm_over_split_features(lay, x0):
        if is_softmax(lay):
            raise Unsupported(f"{lay.name} (Softmax): softmax over a split feature axis")
        return (RMSNORM if is_rmsnorm(lay) else LAYERNORM).forward(ctx, lay, x0, charge)
    _check_local(lay, xs)
    w = ctx.params.get(lay.name)
    out_axes = ctx.axes.get(lay.outputs[0], x0.axes)
    if _blockwise(lay, xs, out_axes):
        blocks = _on_blocks(x0.mesh.P, xs, lambda p: forward_op(lay, [x.blocks[p] for x in xs], w),
                            lambda p, proto: _block_shape(x0, p, proto))
        return Dist(x0.mesh, _block_frame(x0, blocks[0], 0), x0.layouts, axes=out_axes, blocks=blocks)
    vals = [forward_op(lay, [x.vals[p] for x in xs], w) for p in range(x0.mesh.P)]
    res = Dist(x0.mesh, vals[0].shape, x0.layouts, vals, out_axes)
    if is_shape_op(lay) or lay.op == "Flatten":
        _check_mapped(lay, x0, res, f"uneven split of {x0.shape} vs {res.shape}")
    return res.compact()


def _split_backward(lay: G.Layer, x0: Dist, e: Dist, layouts: tuple, out: str | None) -> Dist:
    """The input error of a Split from the error of its output ``out`` (zero elsewhere)."""
    sl = split_slice(lay, len(x0.shape), out or lay.outputs[0])
    vals = []
    for p, v in enumerate(x0.vals):
        u = np.where(np.isnan(v), np.nan, 0.0)
        u[sl] = e.vals[p]
        vals.append(u)
    return Dist(x0.mesh, x0.shape, layouts, vals, x0.axes).compact()


def local_backward(lay: G.Layer, xs: list[Dist], e: Dist, k: int, layouts: tuple, ctx: ShardContext,
                   charge: Charge, out: str | None = None) -> Dist:
    """The error of input k of a local op on every PE, in ``layouts`` (for a Split: from the error
    of output ``out``)."""
    x0 = xs[0]
    if is_split(lay):
        return _split_backward(lay, x0, e, layouts, out)
    if is_reduce(lay):
        return reduce_backward(lay, x0, e, layouts)
    if broadcasting(lay, [x.shape for x in xs]):
        return broadcast_backward(lay, xs, e, k, layouts, ctx, charge)
    if is_expand(lay):
        return expand_backward(lay, x0, e, layouts)
    if lay.kind == G.BATCHNORM:
        return BATCHNORM.backward(ctx, lay, x0, e, charge).relabelled(layouts)
    if (is_layernorm(lay) or is_rmsnorm(lay)) and _norm_over_split_features(lay, x0):
        return (RMSNORM if is_rmsnorm(lay) else LAYERNORM).backward(ctx, lay, x0, e, charge).relabelled(layouts)
    w = ctx.params.get(lay.name)
    grads_axes = xs[k].axes
    if _blockwise(lay, xs, e.axes) and (same_regions(e, x0) or _joined_along(lay, xs + [e])) \
            and region_key(layouts) == region_key(e.layouts):
        blocks = _on_blocks(e.mesh.P, xs + [e],
                            lambda p: np.asarray(backward_op(lay, [x.blocks[p] for x in xs], e.blocks[p], w)[k],
                                                 dtype=e.dtype),
                            lambda p, proto: xs[k].blocks[p].shape)
        return Dist(e.mesh, xs[k].shape, layouts, axes=grads_axes, blocks=blocks)
    vals = [backward_op(lay, [x.vals[p] for x in xs], e.vals[p], w)[k] for p in range(e.mesh.P)]
    return Dist(e.mesh, vals[0].shape, layouts, vals, grads_axes).compact()


def several_forward(lay: G.Layer, xs: list[Dist], ctx: ShardContext, charge: Charge) -> dict[str, Dist]:
    """Every output of a Split (its parts) or a skip norm (the norm of x + skip, and the sum when
    it has that output) on every PE, by output name."""
    if not is_skip_norm(lay):
        return {o: local_forward(lay, xs, ctx, charge, out=o) for o in lay.outputs}
    s = skip_norm_sum(lay, xs)
    return dict(zip(lay.outputs, (local_forward(norm_view(lay), [s], ctx, charge), s)))


def several_backward(lay: G.Layer, xs: list[Dist], errs: dict[str, Dist], layouts: list[tuple], ctx: ShardContext,
                     charge: Charge) -> list[Dist]:
    """The error of every input of a Split or a skip norm from the errors of all its outputs
    (``errs`` by output name, every output there), input k's in ``layouts[k]``. A skip norm's
    inputs share one error: the norm's input error (its statistics all-reduced once) plus the
    sum's."""
    if not is_skip_norm(lay):
        tot = None
        for o in lay.outputs:
            tot = add(tot, local_backward(lay, xs, errs[o], 0, layouts[0], ctx, charge, out=o))
        return [tot]
    s = skip_norm_sum(lay, xs)
    e_y = errs[lay.outputs[0]]
    d = local_backward(norm_view(lay), [s], e_y, 0, e_y.layouts, ctx, charge)
    if len(lay.outputs) > 1:
        d = add(d, errs[lay.outputs[1]].relabelled(e_y.layouts))
    return [d.relabelled(l) for l in layouts]
