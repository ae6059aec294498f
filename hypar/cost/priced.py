"""What building level problems reads from a cost model (:class:`PricedModel`), and the memo
of their tables kept per model across problems."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from hypar.cost.price import Cost
from hypar.cost.repeats import Twins
from hypar.cost.sharing import Conversion
from hypar.cost.structure import EdgeModel, Structure

Shared = dict[Conversion, list[tuple[int, int]]]   # as share_conversions returns


class PricedModel(Protocol):
    """What building a problem reads from a cost model (:class:`hypar.cost.model.CostModel`)."""

    structure: Structure
    n_levels: int
    use_factors: bool   # fanned-out tensors as factor terms when small enough (else group terms)
    twins: Twins        # twin classes and the tied runs (hypar.cost.repeats)

    def labels(self, i: int) -> tuple[str, ...]:
        """Node i's labels (CostModel.labels)."""

    def intra_cost(self, i: int, types: tuple, h: int) -> Cost:
        """Node i's own collectives at level h (CostModel.intra_cost)."""

    def compute_cost(self, i: int, types: tuple) -> Cost:
        """Node i's compute (CostModel.compute_cost)."""

    def memory_bytes(self, i: int, types: tuple) -> float:
        """Node i's largest per-PE bytes (CostModel.memory_bytes)."""

    def share(self, edges: list[EdgeModel], choices, h: int) -> Shared:
        """One tensor's conversions at level h with who needs them (CostModel.share)."""

    def conversion_costs(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """One conversion summed over ``levels`` (CostModel.conversion_costs)."""

    def conversion_values(self, levels: tuple[int, ...], convs: Sequence[Conversion], producer: int,
                          ptypes_list: Sequence[tuple], objective: str) -> np.ndarray:
        """Conversions x producer choices values (CostModel.conversion_values)."""

    def pricing_passes(self, levels: list[int]) -> list[tuple[int, ...]]:
        """Levels whose conversions share one key set (CostModel.pricing_passes)."""

    def producer_levels(self, levels: tuple[int, ...]) -> set[int]:
        """Producer levels a pass's prices read (CostModel.producer_levels)."""



#: Per cost model, what its problems' tables are built from, memoised across problems (exact: a
#: value is a function of its key and the model, which does not change): node costs by (level,
#: objective, levels below fixed, node, types); a tensor's charges (or, on one edge with the
#: producer's levels fixed, its consumer's costs) by (levels, the tensor's edges, objective,
#: whether the producer's levels are fixed, the producer's and each consumer's choices).
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def memo_of(model: PricedModel) -> dict:
    """``model``'s memo (created empty)."""
    try:
        return _MEMO.setdefault(model, {})
    except TypeError:                      # a model that takes no weak reference: no memo
        return {}


