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
  three of 1 per row -- max and sum forward, one dot backward; ``Q_ROWS2``: an RMS norm, two of
  1 per row -- the sum of squares forward, the sum of e x scale x x backward): B x 1 cells, B the
  batch size, a cell holding the statistics of every row (position) of one sample.

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

The same order prices the partial output (``F_out``) of a constant-index lookup whose type I
(R: nothing split, every replica holds the same partial output) lies below a type II level
(P): :func:`replicated_out_level_cost`. The R level is sliced virtually first, so over the type
II level each replica reduces only its slice -- one copy in all, as a GEMM's type II above type I
(the level below splits the batch) -- and the type I level gathers the slices: on 2x2, (II, I)
sends 2A elements at level 0 (what the F_out all-reduce is priced everywhere else) and 2A at
level 1 (A the output's elements), where each replica all-reducing its own copy would send 4A at
level 0. Checked against the simulator's execution (hypar.sim.lookup) for every type pair on 2x2
(tests/sim/test_cover_ops.py).

Bytes are exact for every split (even or not): every step here is a reduce-scatter, an
all-gather or a relay of nothing, whose total over a level does not depend on how the levels
above split the grid; the time (slowest member) follows the pricer's split rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar.cost.hierarchical import HierarchicalPricer
from hypar.cost.price import ZERO, Cost
from hypar.cost.strategies import (COLS, FULL, PARTIAL, Q_OUT, Q_ROWS2, Q_ROWS3, Q_ROWS4, Q_STATS_BN, ROWS, NodeModel,
                                   stats_elements, tensor_units, tensor_view)

STATS_QUANTITIES = (Q_STATS_BN, Q_ROWS4, Q_ROWS3, Q_ROWS2)


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
    elements, batch, features = tensor_view(node, node.sizes, out, node.out_map, stats_elements(node))
    batch_unit = tensor_units(node, node.out_map)[0]
    if q == Q_STATS_BN:
        channels, unit = (node.size("f"), node.unit("f")) if "f" in node.axes else (out.shape[1], 1)
        return ((2 * channels, 2, channels, 1, unit),) * 2
    rows = elements // max(features, 1)
    if q == Q_ROWS4:
        return ((2 * rows, batch, 1, batch_unit, 1),) * 2
    return ((rows, batch, 1, batch_unit, 1),) * (2 if q == Q_ROWS2 else 3)


def stats_layouts(summed: str, layouts: tuple) -> tuple[tuple, tuple]:
    """(source, target) layouts of the statistics, one per level, for a node with ``layouts``
    (its layout at each level, top first): P where the node has ``summed``, else the node's
    layout; the target R at every P level; in the source, a level R in both below a partial
    level reads S(b) (sliced virtually first, module docstring)."""
    return _virtual_first(tuple(PARTIAL if x == summed else x for x in layouts), ROWS)


def _virtual_first(partial: tuple, virtual: str) -> tuple[tuple, tuple]:
    """(source, target) of converting a tensor with per-level layouts ``partial`` (P where
    partial) to R at its P levels, a level R in both below a P level read as ``virtual`` (the
    shard it is sliced into first) in the source."""
    src, tgt = [], []
    for s in partial:
        t = FULL if s == PARTIAL else s
        if s == t == FULL and PARTIAL in src:
            s = virtual
        src.append(s)
        tgt.append(t)
    return tuple(src), tuple(tgt)


def replicates_out(node: NodeModel) -> bool:
    """Whether some type tuple of ``node`` makes :func:`replicated_out_level_cost` price anything:
    it has an output, a strategy leaving the output partial (F_out all-reduced) and one leaving it
    replicated without a reduction. False: that function returns None for every tuple."""
    partial = [PARTIAL if Q_OUT in st.intra else st.out_layout for st in node.strategies]
    return node.out_tensor is not None and PARTIAL in partial and FULL in partial


def quiet_labels(node: NodeModel, hierarchical: bool) -> frozenset[str]:
    """The labels of ``node`` whose level costs no collective inside the node whatever its other
    levels take: no quantity all-reduced; under ``hierarchical`` (statistics and a replicated
    F_out priced here) none for a node with statistics (:func:`stats_term`) or one that
    :func:`replicates_out`, its statistics quantities set aside otherwise."""
    if hierarchical and (stats_term(node) is not None or replicates_out(node)):
        return frozenset()
    return frozenset(st.label for st in node.strategies
                     if not any(not hierarchical or q not in STATS_QUANTITIES for q in st.intra))


def replicated_out_level_cost(pricer: HierarchicalPricer, node: NodeModel, types: tuple, h: int) -> Cost | None:
    """Level-h cost of the F_out conversion of ``node`` with ``types`` (levels 0..h read) when a
    level R in both (a strategy splitting nothing: a constant-index lookup's type I) lies below a
    partial one at or above h (module docstring); None otherwise (the F_out all-reduce's usual
    price holds). The virtual slice runs along the output's batch axis, else its features (the
    simulator's rule, hypar.sim.hierorder.free_axes)."""
    strategies = [node.strategy(label) for label in types[:h + 1]]
    partial = tuple(PARTIAL if Q_OUT in st.intra else st.out_layout for st in strategies)
    out = node.out_tensor
    if out is None or not any(x == PARTIAL and FULL in partial[g + 1:] for g, x in enumerate(partial)):
        return None
    src, tgt = _virtual_first(partial, ROWS if out.batch_axis is not None else COLS)
    sig = tensor_view(node, node.sizes, out, node.out_map, node.layer.out_elements or None) + \
        tensor_units(node, node.out_map)
    return pricer.level_cost(h, sig, src, tgt, out.elem_bytes)


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

