"""How each convention shares and prices the conversions of tensors between layers
(SPEC.md §3 "Several levels: two conventions"; :mod:`hypar.cost.sharing` states both rules).

A :class:`CostModel` holds one of these and asks it, per tensor, which conversions its edges
need (:meth:`share`) and what one costs over some levels (:meth:`cost`); the problem builder
(:mod:`hypar.cost.problems`) also asks which levels a problem must hold (:meth:`passes`) and
which producer levels a price reads (:meth:`producer_levels`).

- :class:`ReferenceEdges`: the papers' code -- each level in the consuming layer's view, shared
  per (view, layout) at that level, priced by :mod:`hypar.cost.collectives`.
- :class:`HierarchicalEdges`: what an execution with hierarchical collectives sends -- shared
  per full layout tuple, priced level by level by :mod:`hypar.cost.hierarchical`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hypar.cost.hierarchical import HierarchicalPricer, check_pair
from hypar.cost.price import ZERO, Cost
from hypar.cost.sharing import Conversion, full_conversions, share_by, share_conversions
from hypar.cost.strategies import PARTIAL, NodeModel, tensor_grid
from hypar.cost.structure import EdgeModel

Shared = dict[Conversion, list[tuple[int, int]]]   # as sharing.share_by returns


class ViewModel(Protocol):
    """What the reference rule reads from a cost model (:class:`hypar.cost.model.CostModel`)."""

    nodes: list[NodeModel]

    def edge_view(self, e: EdgeModel, ctypes: tuple, h: int) -> tuple:
        """Edge e's tensor in its consumer's view at level h."""

    def convert_cost(self, h: int, sig: tuple, src: str, dst: str, width_bytes: int | None = None) -> Cost:
        """One conversion at level h in that view (``width_bytes`` per element; None: training)."""


class ReferenceEdges:
    """The ``reference`` convention for the cost model ``model``."""

    def __init__(self, model: ViewModel):
        self.model = model

    def share(self, edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], h: int) -> Shared:
        """The tensor's conversions at level h with who needs them (per (view, layout))."""
        return share_conversions(edges, choices, h, self.model.nodes, self.model.edge_view)

    def cost(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """``conv`` (from :meth:`share` at the one level of ``levels``) with the producer taking
        ``ptypes``; a partial error ignores the producer."""
        costs = [self.model.convert_cost(h, conv.view, *conv.layouts(
                     None if conv.consumer_only else self.model.nodes[producer].strategy(ptypes[h])),
                     conv.width_bytes)
                 for h in levels]
        return costs[0] if len(costs) == 1 else sum(costs, ZERO)

    @staticmethod
    def passes(levels: list[int]) -> list[tuple[int, ...]]:
        """One pass per level: views differ per level, and a level above the problem's is priced
        the same whatever the problem chooses."""
        return [(g,) for g in levels]

    @staticmethod
    def producer_levels(levels: tuple[int, ...]) -> set[int]:
        """A price at level g reads the producer's level g only."""
        return set(levels)


class HierarchicalEdges:
    """The ``hierarchical`` convention for a model with kept nodes ``nodes`` on ``pricer``'s array.

    Memoises tensor signatures per edge, conversions per (edge, consumer types), the producer's
    layout tuples per (node, types) and summed prices per (signature, tuples, levels).
    """

    def __init__(self, nodes: list[NodeModel], pricer: HierarchicalPricer):
        self.nodes = nodes
        self.pricer = pricer
        self._signatures: dict[int, tuple[int, int, int, int, int]] = {}
        self._keys: dict[tuple, tuple[Conversion, ...]] = {}
        self._layouts: dict[tuple, tuple[tuple, tuple]] = {}
        self._sums: dict[tuple, Cost] = {}

    def signature(self, e: EdgeModel) -> tuple[int, int, int, int, int]:
        """Edge e's tensor at the root: (elements, batch size, feature size, batch unit, feature
        unit), the grid :mod:`hypar.cost.hierarchical` splits (size and unit 1 for an axis the
        tensor lacks). The tensor's own axes, not the consumer's: a reshape consumer that has no
        axis for the features its producer splits (heads merged into the batch) still receives
        a tensor split along them."""
        hit = self._signatures.get(id(e))
        if hit is None:
            hit = self._signatures[id(e)] = tensor_grid(e.tensor)
        return hit

    def _edge_keys(self, e: EdgeModel, types: tuple) -> tuple[Conversion, ...]:
        """The conversions edge ``e`` needs with its consumer taking ``types`` (memoised)."""
        key = (id(e), types)
        hit = self._keys.get(key)
        if hit is None:
            hit = self._keys[key] = full_conversions(e, self.nodes[e.c], types, self.signature(e))
        return hit

    def share(self, edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], h: int = 0) -> Shared:
        """The tensor's conversions (per full tuple; the same at every level h) with who needs them."""
        return share_by(edges, choices, self._edge_keys)

    def producer_tuples(self, producer: int, ptypes: tuple) -> tuple[tuple, tuple]:
        """(output layouts, needed error layouts) of node ``producer`` under ``ptypes``, one per
        level (None where undecided)."""
        key = (producer, ptypes)
        hit = self._layouts.get(key)
        if hit is None:
            node = self.nodes[producer]
            strategies = [None if label is None else node.strategy(label) for label in ptypes]
            hit = self._layouts[key] = (tuple(st and st.out_layout for st in strategies),
                                        tuple(st and st.out_err_layout for st in strategies))
        return hit

    def cost(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """``conv`` summed over ``levels`` with the producer taking ``ptypes`` (levels after the
        lowest of ``levels`` may be None). ValueError for a pair this convention does not price
        (:func:`hypar.cost.hierarchical.check_pair`)."""
        out_layouts, err_layouts = self.producer_tuples(producer, ptypes)
        src, dst = (conv.layout, err_layouts) if conv.backward else (out_layouts, conv.layout)
        depth = max(levels) + 1
        src, dst = src[:depth], dst[:depth]
        key = (conv.view, src, dst, levels, conv.width_bytes)
        hit = self._sums.get(key)
        if hit is None:
            if PARTIAL in src:
                check_pair(src, dst)
            hit = ZERO
            for h in levels:
                hit = hit + self.pricer.level_cost(h, conv.view, src, dst, conv.width_bytes)
            self._sums[key] = hit
        return hit

    @staticmethod
    def passes(levels: list[int]) -> list[tuple[int, ...]]:
        """One pass over every level down to the lowest of ``levels``, the levels above included:
        conversions are shared per full tuple, so consumers that agree down to a level above but
        split at a level of the problem are charged separately above too."""
        return [tuple(range(max(levels) + 1))]

    @staticmethod
    def producer_levels(levels: tuple[int, ...]) -> set[int]:
        """A price at level g reads the producer's levels 0..g."""
        return set(range(max(levels) + 1))
