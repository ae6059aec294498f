"""Edge conversions under each convention (SPEC.md §3 "Several levels: two conventions"): which
conversions run for a producer's tensor (forward) and for its consumers' errors (backward), which
of them share a step, and who is charged.

- :class:`ReferenceEdges` (``reference``): today's behaviour -- level-by-level orders realising
  the cost model's per-level amounts (:func:`hypar.sim.convert.convert`), errors folded so they
  are reduced once (:func:`hypar.sim.convert.fold_into_partials`).
- :class:`HierarchicalEdges` (``hierarchical``): the SPEC's fixed order executed
  (:func:`hypar.sim.hierorder.run_order`) with the sharing rule of HIER_SEMANTICS.md §3: forward,
  the producer's tensor is converted once per distinct full target tuple (edges with equal targets
  share it, charged to the first consumer in topological order); backward, consumers' errors with
  an equal full tuple of layouts are summed locally and converted once (charged to the first of
  those consumers), distinct tuples convert separately and are summed on the producer's side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from hypar.sim.convert import Conversion, ErrorItem, convert, fold_into_partials
from hypar.sim.ledger import Ledger
from hypar.sim.mesh import Dist, add
from hypar.sim.hierorder import run_order
from hypar.vocab import Convention

# (consumer index, edge index) -> (conversion base (producer, tensor key), label "<consumer> -> <producer>:<tensor>")
Describe = Callable[[int, int], tuple[tuple, str]]


class HierKey(NamedTuple):
    """The ledger key of one hierarchical conversion: direction, producer, tensor key, source and
    target layouts (full per-level tuples), and the tensor's elements (what the closed form of
    SPEC.md §3 is evaluated on)."""

    kind: str              # "fwd" / "bwd"
    producer: int
    tensor: str
    src: tuple
    tgt: tuple
    elements: int


class Converted(NamedTuple):
    """An error converted for its producer: the consumer charged, an edge it came along (its
    producer-side folded ops are the same for every edge of the group), the error."""

    consumer: int
    edge: int
    error: Dist


class ReferenceEdges:
    """The ``reference`` convention's conversions (today's simulator, byte for byte)."""

    def __init__(self, ledger: Ledger, flags: list):
        """``flags``: where conversions no order realises are listed (``SimResult.flags``)."""
        self.ledger, self.flags = ledger, flags
        self.memo: dict = {}                  # conversion step key -> state reached (forward)

    def forward(self, conv: Conversion, x: Dist, dst: tuple) -> Dist:
        """Producer tensor ``x`` converted to ``dst`` for ``conv.consumer``."""
        return convert(self.ledger, conv, x, dst, self.memo, self.flags)

    def end_forward(self) -> None:
        """Forget the forward states (memory: the converted tensors live on with their consumers)."""
        self.memo.clear()

    def backward(self, items: list[ErrorItem], tgt: tuple, describe: Describe) -> list[Converted]:
        """Every consumer's error converted to the producer's ``tgt`` layouts, one by one in
        (consumer, edge) order after folding replicas into partial sums."""
        base_of = {e: describe(c, e)[0] for c, e, _d in items}
        out = []
        for c, e_idx, src in sorted(fold_into_partials(items, base_of), key=lambda t: (t[0], t[1])):
            base, what = describe(c, e_idx)
            conv = Conversion("bwd", base, what, c, src.layouts)
            out.append(Converted(c, e_idx, convert(self.ledger, conv, src, tgt, None, self.flags)))
        return out


class HierarchicalEdges:
    """The ``hierarchical`` convention's conversions: the SPEC's order, shared per HIER_SEMANTICS §3."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.memo: dict[HierKey, Dist] = {}

    def forward(self, conv: Conversion, x: Dist, dst: tuple) -> Dist:
        """Producer tensor ``x`` converted to ``dst`` once per distinct ``dst``; a later consumer
        with the same target reuses the result (and is recorded, the first one being charged)."""
        key = HierKey("fwd", conv.base[0], conv.base[1], tuple(x.layouts), tuple(dst), int(np.prod(x.shape)))
        hit = self.memo.get(key)
        if hit is not None:
            self.ledger.run(key, "fwd", conv.what, conv.consumer, lambda: None)
            return hit
        out = self.ledger.run(key, "fwd", conv.what, conv.consumer, lambda: run_order(self.ledger.comm, x, dst))
        self.memo[key] = out
        return out

    def end_forward(self) -> None:
        """Forget the forward results (they live on with their consumers)."""
        self.memo.clear()

    def backward(self, items: list[ErrorItem], tgt: tuple, describe: Describe) -> list[Converted]:
        """Errors grouped by (conversion base, full source layouts): each group summed locally,
        converted once to ``tgt`` and charged to its first consumer; one result per group."""
        groups: dict[tuple, list[ErrorItem]] = {}
        for item in sorted(items, key=lambda t: (t[0], t[1])):
            base, _what = describe(item.consumer, item.edge)
            groups.setdefault((base, tuple(item.error.layouts)), []).append(item)
        out = []
        for (base, src), group in groups.items():
            total = None
            for item in group:
                total = add(total, item.error)
            first = group[0]
            what = describe(first.consumer, first.edge)[1]
            if len(group) > 1:
                what += f" (+{len(group) - 1} summed)"
            key = HierKey("bwd", base[0], base[1], src, tuple(tgt), int(np.prod(total.shape)))
            d = self.ledger.run(key, "bwd", what, first.consumer, lambda: run_order(self.ledger.comm, total, tgt))
            out.append(Converted(first.consumer, first.edge, d))
        return out


def edges_for(convention: str, ledger: Ledger, flags: list) -> ReferenceEdges | HierarchicalEdges:
    """The conversions of ``convention`` (a :class:`hypar.vocab.Convention` value)."""
    if convention == Convention.HIERARCHICAL:
        return HierarchicalEdges(ledger)
    return ReferenceEdges(ledger, flags)
