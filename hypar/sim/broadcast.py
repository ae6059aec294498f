"""Ops whose operands and output differ in shape, on every PE's blocks: elementwise ops of two
activations under numpy broadcasting (the attention mask added to the scores, a decomposed
LayerNorm's ``x - mean`` and ``d / std``), an Expand of one activation to a larger shape (its
error summed back over the broadcast axes), and reductions keeping the reduced axes as size 1
(ReduceMean / ReduceSum).

Where a plan splits an axis such an op sums over, every PE's result is a partial sum over its
share of that axis, partial at the levels splitting it: a reduction over a split axis (forward),
and the error of an operand broadcast along a split axis of the output (backward: the operand is
whole on every PE there, its error the sum over the PE's share). The shard context all-reduces
these partial levels as a counted step, as it does normalisation statistics
(:meth:`hypar.sim.sharded.ShardContext.allreduce_stats`); the cost model prices them as the node's
intra quantities ``reduced`` and ``operand_err<slot>`` (:mod:`hypar.cost.strategies`).

The broadcasting rule (checked before any step by :func:`broadcast_problem`): one operand has the
output's shape and gives the output its layouts; every other operand, aligned right, has each axis
of the output's size or of size 1; where its axis of the output's size lies at the output's batch
(feature) axis, it is the operand's own batch (feature) axis (so a plan splits it exactly as the
output's); a size-1 axis is whole on every PE.
"""

from __future__ import annotations

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.errors import SimulationError, Unsupported
from hypar.sim.kernels import reduce_bwd, reduce_fwd, unbroadcast
from hypar.sim.ledger import StatsKey
from hypar.sim.mesh import Dist, region_key
from hypar.sim.ops import backward_op, forward_op, is_add, is_binary

ROLES = ("batch", "feature")


def is_elementwise_pair(lay: G.Layer) -> bool:
    """An elementwise op of activations the simulator runs (residual Add / Sum, Mul / Sub / Div)."""
    return is_add(lay) or is_binary(lay)


def broadcasting(lay: G.Layer, shapes: list[tuple]) -> bool:
    """Is ``lay`` an elementwise op of activations whose operand ``shapes`` differ."""
    return is_elementwise_pair(lay) and len({tuple(s) for s in shapes}) > 1


def _operand_problem(name: str, t, out_shape: tuple, out_axes: tuple) -> str | None:
    """Why operand ``t`` (a graph.Tensor) cannot be broadcast on blocks against an output of
    ``out_shape`` with (batch, feature) ``out_axes`` (module docstring), or None."""
    lead = len(out_shape) - len(t.shape)
    for role, oax, tax in zip(ROLES, out_axes, (t.batch_axis, t.feature_axis)):
        if oax is not None and out_shape[oax] > 1 and oax - lead >= 0:
            a = oax - lead
            if t.shape[a] != 1 and a != tax:
                return (f"{name}: operand {t.name} {t.shape} has the output's {role} axis (size {out_shape[oax]}) "
                        f"as its axis {a}, which is not its {role} axis")
        if oax is not None and tax is not None and t.shape[tax] == out_shape[oax] and tax + lead != oax:
            return (f"{name}: operand {t.name} {t.shape} has its {role} axis {tax} of the output's {role} size "
                    f"where the output {out_shape} has another axis")
    return None


def broadcast_problem(lay: G.Layer, meta: dict) -> str | None:
    """Why the simulator cannot run ``lay`` (an elementwise op of activations of different shapes)
    on blocks, naming it, or None when it can (``meta``: tensor name -> graph.Tensor)."""
    ins = [meta[t] for t in lay.inputs]
    shapes = [tuple(t.shape) for t in ins]
    where = f"{lay.name} ({lay.op})"
    try:
        out_shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return f"{where}: operands {shapes} do not broadcast"
    if out_shape not in shapes:
        return f"{where}: broadcasting where no operand has the output's shape {out_shape}"
    full = ins[shapes.index(out_shape)]
    out = meta.get(lay.outputs[0], full)
    for t in ins:
        if tuple(t.shape) != out_shape:
            why = _operand_problem(where, t, out_shape, (out.batch_axis, out.feature_axis))
            if why:
                return why
    return None


def _check_aligned(lay: G.Layer, xs: list[Dist], full: Dist) -> None:
    """SimulationError unless every operand's split axes hold the output's indices on every PE."""
    for x in xs:
        if x is full:
            continue
        for p in range(full.mesh.P):
            for have, want in zip(x.index(p), full.index(p)):
                if have is not None and (want is None or not np.array_equal(have, want)):
                    raise SimulationError(f"{lay.name}: operand blocks do not line up with the output's on PE {p}")


def broadcast_forward(lay: G.Layer, xs: list[Dist], out_axes: tuple) -> Dist:
    """The op on every PE's blocks, numpy broadcasting the smaller operands; the output takes the
    layouts of the operand of the output's shape."""
    shape = tuple(np.broadcast_shapes(*(x.shape for x in xs)))
    full = next(x for x in xs if x.shape == shape)
    _check_aligned(lay, xs, full)
    blocks = [forward_op(lay, [x.blocks[p] for x in xs], None) for p in range(full.mesh.P)]
    return Dist(full.mesh, shape, full.layouts, axes=out_axes, blocks=blocks)


def _dense_axes(d: Dist) -> tuple:
    """d's (batch, feature) axes without a size-1 one (whole everywhere: never a split to use)."""
    return tuple(None if a is None or d.shape[a] == 1 else a for a in d.axes)


def allreduce_partial(ctx, key: StatsKey, charge, d: Dist) -> Dist:
    """``d`` with its partial levels all-reduced by ``ctx`` as the counted step ``key`` (FULL
    there); ``d`` itself when it has none."""
    if PARTIAL not in d.layouts:
        return d
    st = ctx.allreduce_stats(key, charge, Dist(d.mesh, d.shape, d.layouts, axes=_dense_axes(d), blocks=d.blocks))
    return Dist(d.mesh, d.shape, st.layouts, axes=d.axes, blocks=st.blocks)


def broadcast_backward(lay: G.Layer, xs: list[Dist], e: Dist, k: int, layouts: tuple, ctx, charge) -> Dist:
    """The error of operand k in ``layouts``: the op's error on every PE's blocks summed down to
    the operand's block; for an operand broadcast along an axis the output error splits, a partial
    sum at those levels, all-reduced by ``ctx`` (a counted step charged to ``charge``)."""
    xk = xs[k]
    blocks = [np.asarray(backward_op(lay, [x.blocks[p] for x in xs], e.blocks[p], None)[k], dtype=float)
              for p in range(e.mesh.P)]
    if xk.shape == e.shape:
        return Dist(e.mesh, xk.shape, layouts, axes=xk.axes, blocks=blocks)
    lays = tuple(PARTIAL if el != xl and xl == FULL else xl for el, xl in zip(e.layouts, xk.layouts))
    d = Dist(e.mesh, xk.shape, lays, axes=xk.axes, blocks=blocks)
    d = allreduce_partial(ctx, StatsKey("operand", charge.node, lay.name, f"bwd{k}", charge.where), charge, d)
    return d.relabelled(layouts)


def _expanded_axes(lay: G.Layer, x: Dist, out_axes: tuple) -> tuple[int, list[bool]]:
    """(leading axes an Expand adds, per input axis: is it broadcast). Unsupported when the
    output's batch or feature axis is not the input's (shifted by the added axes) while the input
    splits it, or when a split axis is broadcast."""
    shape = tuple(lay.attr("shape"))
    lead = len(shape) - len(x.shape)
    bcast = [n != shape[a + lead] for a, n in enumerate(x.shape)]
    for role, xa, oa, split in zip(ROLES, x.axes, out_axes, (ROWS, COLS)):
        if split not in x.layouts or xa is None:
            continue
        if oa != xa + lead or bcast[xa]:
            raise Unsupported(f"{lay.name} (Expand): its input's split {role} axis {xa} is not the output's "
                              f"{role} axis ({oa}) or is broadcast")
    return lead, bcast


def expand_forward(lay: G.Layer, x: Dist, out_axes: tuple) -> Dist:
    """An Expand on every PE's block: each block broadcast to the output's shape along the
    broadcast axes (its own share along the others); the output keeps x's layouts."""
    shape = tuple(lay.attr("shape"))
    lead, bcast = _expanded_axes(lay, x, out_axes)

    def grown(b: np.ndarray) -> np.ndarray:
        target = shape[:lead] + tuple(shape[a + lead] if bc else n for a, (n, bc) in enumerate(zip(b.shape, bcast)))
        return np.array(np.broadcast_to(b, target))

    return Dist(x.mesh, shape, x.layouts, axes=out_axes, blocks=[grown(b) for b in x.blocks])


def expand_backward(lay: G.Layer, x: Dist, e: Dist, layouts: tuple) -> Dist:
    """The input error of an Expand on every PE (no messages: the broadcast axes are whole on
    every PE, so each PE sums its block of the output error over them to its input block)."""
    _expanded_axes(lay, x, e.axes)
    if region_key(e.layouts) != region_key(x.layouts):
        raise SimulationError(f"{lay.name} (Expand): output error in {e.layouts}, input in {x.layouts}")
    blocks = [unbroadcast(eb, xb.shape) for xb, eb in zip(x.blocks, e.blocks)]
    return Dist(x.mesh, x.shape, layouts, axes=x.axes, blocks=blocks)


def _reduced_levels(lay: G.Layer, x: Dist) -> list[bool]:
    """Per level: does x's layout split an axis the reduction sums over."""
    axes = {a % len(x.shape) for a in lay.attr("axes")}
    return [(l == ROWS and x.axes[0] in axes) or (l == COLS and x.axes[1] in axes) for l in x.layouts]


def reduce_forward(lay: G.Layer, x: Dist, ctx, charge, out_axes: tuple) -> Dist:
    """ReduceMean / ReduceSum on every PE's block (reduced dims kept as size 1 or dropped); the
    levels splitting a reduced axis leave partial sums, all-reduced by ``ctx`` (the output is whole there)."""
    axes = {a % len(x.shape) for a in lay.attr("axes")}
    keep = lay.attr("keepdims", 1) == 1
    shape = tuple(1 if a in axes else n for a, n in enumerate(x.shape) if keep or a not in axes)
    lays = tuple(PARTIAL if red else l for red, l in zip(_reduced_levels(lay, x), x.layouts))
    d = Dist(x.mesh, shape, lays, axes=out_axes, blocks=[reduce_fwd(b, lay, x.shape) for b in x.blocks])
    return allreduce_partial(ctx, StatsKey("reduce", charge.node, lay.name, "fwd", charge.where), charge, d)


def reduce_backward(lay: G.Layer, x: Dist, e: Dist, layouts: tuple) -> Dist:
    """The input error of a reduction on every PE (no messages: the output error is whole along
    the reduced axes, every PE keeps its share of the input's)."""
    blocks = [reduce_bwd(b, eb, lay, x.shape) for b, eb in zip(x.blocks, e.blocks)]
    return Dist(x.mesh, x.shape, layouts, axes=x.axes, blocks=blocks)
