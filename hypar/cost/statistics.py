"""Norm statistics under the ``hierarchical`` convention: the statistics tensors a node's
normalisation (or softmax) all-reduces, their layouts at every level, and their price at one level
(SPEC.md §3 "Several levels": "norm statistics with a replicated level below"; HIER_SEMANTICS.md §4).

A normalisation sums over one axis of its input and keeps the other: BatchNorm sums the batch
(and spatial) axes per channel, a LayerNorm / RMS norm / Softmax the last feature axis per row.
Its statistics are a small tensor of their own, a grid of cells as :mod:`hypar.cost.hierarchical`
prices them, one per all-reduce (what hypar.sim.norms builds):

- BatchNorm (``Q_STATS_BN``): 2 x C, rows the two statistics (sum, sum of squares forward; two
  error sums backward), columns the C channels; two tensors (forward, backward).
- per-row statistics (``Q_ROWS4``: a norm, two tensors of 2 per row; ``Q_ROWS3``: a softmax,
  three of 1 per row -- max and sum forward, one dot backward): B x 1 cells, B the batch size,
  a cell holding the statistics of every row (position) of one sample.

At a level where the node shards the summed axis the statistics are partial sums (P), where it
shards the kept axis they are sharded like it (BatchNorm: channels, the grid's columns; per-row:
the batch, its rows), where it replicates they are replicated (R). They are converted P -> R
(t: every P level becomes R) by the SPEC's order with one change, the one the simulator executes
(hypar.sim.hierorder.run_order with ``virtual_first``): a level R in both that lies below a
partial level is sliced virtually *before* the reduce-scatters (each replica reduces one slice
only; step 4 gathers the slices), so it is priced as a level that shards the grid's rows and goes
to R. A level R in both above every partial level keeps the order: its replicas are independent
groups, each reducing its own copy -- :class:`hypar.cost.hierarchical.HierarchicalPricer`'s
regions give exactly that (a group's region is whole along such a level), so no extra term is
added. Checked against the executed sends for every layout tuple on 2x2, 3x2, 2x3, 4x2, 2x2x2
(tests/sim/test_hier_sim.py ``stats_amounts``, tests/sim/test_stats_price.py).

Prefix property: the source layout of level g (sliced virtually or not) depends on the node's
layouts at levels 0..g only, and the pricer's level-h price reads levels 0..h of both tuples, so
level h's price depends on the node's types at levels 0..h only -- what
:meth:`hypar.cost.model.CostModel.intra_cost` memoises on and the level problems
(:mod:`hypar.cost.problems`) assume.

Bytes are exact for every split (even or not): every step here is a reduce-scatter, an
all-gather or a relay of nothing, whose total over a level does not depend on how the levels
above split the grid; the time (slowest member) follows the pricer's split rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar.cost.hierarchical import HierarchicalPricer
from hypar.cost.price import ZERO, Cost
from hypar.cost.strategies import FULL, PARTIAL, Q_ROWS3, Q_ROWS4, Q_STATS_BN, ROWS, NodeModel, tensor_units, tensor_view

STATS_QUANTITIES = (Q_STATS_BN, Q_ROWS4, Q_ROWS3)


@dataclass(frozen=True, slots=True)
class StatsTerm:
    """A node's statistics: ``summed``, the node layout that splits the summed axis (its levels
    leave the statistics partial); ``tensors``, the signature (elements, grid rows, grid columns,
    row unit, column unit) of each statistics tensor all-reduced, one all-reduce each: BatchNorm's
    columns in the channels' unit, the rows of per-row statistics in the batch's."""

    summed: str
    tensors: tuple[tuple[int, int, int, int, int], ...]


def stats_term(node: NodeModel) -> StatsTerm | None:
    """The statistics node ``node`` all-reduces (module docstring), or None when no strategy of
    it carries a statistics quantity."""
    for strat in node.strategies:
        for q in strat.intra:
            if q in STATS_QUANTITIES:
                return StatsTerm(strat.out_layout, _tensors(node, q))
    return None


def _tensors(node: NodeModel, q: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """The statistics tensors' signatures of quantity ``q`` on ``node`` (whole tensor)."""
    out = node.out_tensor
    if out is None:
        return ()
    elements, batch, features = tensor_view(node, node.sizes, out, node.out_map, node.layer.out_elements or None)
    batch_unit = tensor_units(node, node.out_map)[0]
    if q == Q_STATS_BN:
        channels, unit = (node.size("f"), node.unit("f")) if "f" in node.axes else (out.shape[1], 1)
        return ((2 * channels, 2, channels, 1, unit),) * 2
    rows = elements // max(features, 1)
    if q == Q_ROWS4:
        return ((2 * rows, batch, 1, batch_unit, 1),) * 2
    return ((rows, batch, 1, batch_unit, 1),) * 3


def stats_layouts(summed: str, layouts: tuple) -> tuple[tuple, tuple]:
    """(source, target) layouts of the statistics, one per level, for a node with ``layouts``
    (its layout at each level, top first): P where the node has ``summed``, else the node's
    layout; the target R at every P level; in the source, a level R in both below a partial
    level reads S(b) (sliced virtually first, module docstring)."""
    src, tgt = [], []
    for x in layouts:
        s = PARTIAL if x == summed else x
        t = FULL if s == PARTIAL else s
        if s == t == FULL and PARTIAL in src:
            s = ROWS
        src.append(s)
        tgt.append(t)
    return tuple(src), tuple(tgt)


def stats_level_cost(pricer: HierarchicalPricer, term: StatsTerm, layouts: tuple, h: int) -> Cost:
    """Level-h cost of every all-reduce of ``term`` for a node with ``layouts`` (levels 0..h
    read; later entries may be None)."""
    src, tgt = stats_layouts(term.summed, tuple(layouts[:h + 1]))
    if PARTIAL not in src:
        return ZERO
    total = ZERO
    for sig in term.tensors:
        total = total + pricer.level_cost(h, sig, src, tgt)
    return total

