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
from hypar.cost.sharing import (Conversion, Conversions, full_conversions, share_by, share_conversions,
                                slot_layouts)
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
        self.made = Conversions()

    def share(self, edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], h: int) -> Shared:
        """The tensor's conversions at level h with who needs them (per (view, layout))."""
        return share_conversions(edges, choices, h, self.model.nodes, self.model.edge_view, self.made)

    def cost(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """``conv`` (from :meth:`share` at the one level of ``levels``) with the producer taking
        ``ptypes``; a partial error ignores the producer."""
        costs = [self.model.convert_cost(h, conv.view, *conv.layouts(
                     None if conv.consumer_only else self.model.nodes[producer].strategy(ptypes[h])),
                     conv.width_bytes)
                 for h in levels]
        return costs[0] if len(costs) == 1 else sum(costs, ZERO)

    def table(self, levels: tuple[int, ...], convs: Sequence[Conversion], producer: int,
              ptypes_list: Sequence[tuple], field: str) -> list[list[float]]:
        """Cost field ``field`` (``bytes``, ``seconds`` or ``joules``) of :meth:`cost` for each of
        ``convs`` (rows) with the producer taking each of ``ptypes_list`` (columns)."""
        return [[getattr(self.cost(levels, conv, producer, pt), field) for pt in ptypes_list] for conv in convs]

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

    Memoises tensor signatures per edge, each consumer slot's layouts per label, one object per
    distinct conversion (:class:`Conversions`), the producer's layout tuples per (node, types)
    and summed prices per (conversion, levels) and producer layouts: every value is a function
    of its key (nodes and array never change), so the memos are exact.
    """

    def __init__(self, nodes: list[NodeModel], pricer: HierarchicalPricer):
        self.nodes = nodes
        self.pricer = pricer
        self._signatures: dict[int, tuple[int, int, int, int, int]] = {}
        self._slot_layouts: dict[tuple[int, int], tuple[dict, dict]] = {}
        self.made = Conversions()
        self._out_layouts: dict[int, tuple[dict, dict]] = {}
        self._layouts: dict[tuple, tuple[tuple, tuple]] = {}
        self._prices: dict[tuple[Conversion, tuple], dict[tuple, Cost]] = {}

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
        """The conversions edge ``e`` needs with its consumer taking ``types``."""
        layouts = self._slot_layouts.get((e.c, e.slot))
        if layouts is None:
            layouts = self._slot_layouts[(e.c, e.slot)] = slot_layouts(self.nodes[e.c], e.slot)
        return full_conversions(e, layouts, types, self.signature(e), self.made)

    def share(self, edges: list[EdgeModel], choices: Sequence[Sequence[tuple]], h: int = 0) -> Shared:
        """The tensor's conversions (per full tuple; the same at every level h) with who needs them."""
        return share_by(edges, choices, self._edge_keys)

    def producer_tuples(self, producer: int, ptypes: tuple) -> tuple[tuple, tuple]:
        """(output layouts, needed error layouts) of node ``producer`` under ``ptypes``, one per
        level (None where undecided)."""
        key = (producer, ptypes)
        hit = self._layouts.get(key)
        if hit is None:
            out, err = self._out_layouts.get(producer) or self._producer_maps(producer)
            hit = self._layouts[key] = (tuple(map(out.__getitem__, ptypes)), tuple(map(err.__getitem__, ptypes)))
        return hit

    def _producer_maps(self, producer: int) -> tuple[dict, dict]:
        """Per label of node ``producer`` (and None: None), its output's layout and the layout it
        needs its output's error in; memoised."""
        out: dict = {None: None}
        err: dict = {None: None}
        for st in self.nodes[producer].strategies:
            out[st.label], err[st.label] = st.out_layout, st.out_err_layout
        self._out_layouts[producer] = out, err
        return out, err

    def cost(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """``conv`` summed over ``levels`` with the producer taking ``ptypes`` (levels after the
        lowest of ``levels`` may be None). ValueError for a pair this convention does not price
        (:func:`hypar.cost.hierarchical.check_pair`)."""
        out, err = self._layouts.get((producer, ptypes)) or self.producer_tuples(producer, ptypes)
        side = (err if conv.backward else out)[:max(levels) + 1]
        prices = self._prices.get((conv, levels))
        hit = None if prices is None else prices.get(side)
        return self._priced_row(levels, conv, [side])[0] if hit is None else hit

    def table(self, levels: tuple[int, ...], convs: Sequence[Conversion], producer: int,
              ptypes_list: Sequence[tuple], field: str) -> list[list[float]]:
        """Cost field ``field`` (``bytes``, ``seconds`` or ``joules``) of :meth:`cost` for each of
        ``convs`` (rows) with the producer taking each of ``ptypes_list`` (columns): the producer's
        layouts read once per choice. ValueError as :meth:`cost`."""
        depth = max(levels) + 1
        tuples = [self._layouts.get((producer, pt)) or self.producer_tuples(producer, pt) for pt in ptypes_list]
        outs = [out[:depth] for out, _err in tuples]
        errs = [err[:depth] for _out, err in tuples]
        return [[getattr(c, field) for c in self._priced_row(levels, conv, errs if conv.backward else outs)]
                for conv in convs]

    def _priced_row(self, levels: tuple[int, ...], conv: Conversion, sides: list[tuple]) -> list[Cost]:
        """``conv`` over ``levels`` with each of ``sides`` (the producer's layouts through the
        lowest level: the source of a forward conversion, the target of a backward one), from the
        memo of ``conv``'s prices by producer side."""
        prices = self._prices.get((conv, levels))
        if prices is None:
            prices = self._prices[(conv, levels)] = {}
        row = []
        for side in sides:
            hit = prices.get(side)
            if hit is None:
                fixed = conv.layout[:len(side)]
                pair = (fixed, side) if conv.backward else (side, fixed)
                hit = prices[side] = self._sum(conv.view, *pair, levels, conv.width_bytes)
            row.append(hit)
        return row

    def _sum(self, view: tuple, src: tuple, dst: tuple, levels: tuple[int, ...], width_bytes: int | None) -> Cost:
        """The price of ``src -> dst`` (prefixes through the lowest of ``levels``, ``width_bytes``
        per element) summed over ``levels`` in order; the pair checked first (ValueError, see
        :meth:`cost`)."""
        if PARTIAL in src:
            check_pair(src, dst)
        total = ZERO
        for h in levels:
            total = total + self.pricer.level_cost(h, view, src, dst, width_bytes)
        return total

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
