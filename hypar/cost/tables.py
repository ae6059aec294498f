"""One tensor's conversion costs in a level problem, built a tensor at a time: its shared
conversions priced for every producer choice in one pass (:meth:`CostModel.conversion_values`),
and, for a tensor with one consumer, the (producer choice x consumer choice) matrix added up with
numpy instead of cell by cell.

What :mod:`hypar.cost.problems` lays out as pair, factor and group terms (its docstring): a
:class:`Charge` per shared conversion of the tensor (:mod:`hypar.cost.sharing` says which and who
needs each), forward ones first, each with its objective value per producer choice summed over a
pass's levels. Every number is the one the cell-by-cell path gives, added in the same order
(charges in order into each cell, starting from 0.0): the tables are equal to the last bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hypar.cost.sharing import Conversion
from hypar.cost.structure import EdgeModel

Shared = dict[Conversion, list[tuple[int, int]]]   # as hypar.cost.sharing.share_by returns


class TableModel(Protocol):
    """What building a tensor's tables reads from a cost model (:class:`hypar.cost.model.CostModel`)."""

    def share(self, edges: list[EdgeModel], choices, h: int) -> Shared:
        """One tensor's conversions at level h with who needs them (CostModel.share)."""

    def conversion_values(self, levels: tuple[int, ...], convs: Sequence[Conversion], producer: int,
                          ptypes_list: Sequence[tuple], objective: str) -> np.ndarray:
        """Conversions x producer choices values (CostModel.conversion_values)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One shared conversion of a tensor in a problem: who needs it, and its objective value per
    producer choice (summed over the pass's levels)."""

    needers: tuple[tuple[int, int], ...]   # (consumer, choice index), first needed first
    values: np.ndarray | float       # per producer choice; one float when ``independent``
    independent: bool                # the value does not depend on the producer's choice

    def per_producer(self, n_choices: int) -> np.ndarray:
        """The values as one per producer choice."""
        return np.full(n_choices, self.values) if self.independent else self.values


@dataclass(frozen=True, slots=True)
class TensorCharges:
    """A tensor's charges in a problem, in order: per charge, who needs it, its values and whether
    they are independent of the producer (:class:`Charge`'s fields, one tuple each). Iterating
    yields the :class:`Charge` s.

    Why not a list of Charge: a problem memo keeps every tensor's charges (about 150k on
    bert_base at 1,024 PEs); each Charge object is followed by every full garbage collection,
    while these tuples of tuples, floats and arrays are dropped from the collector's lists once
    seen, so the tensor costs it one object."""

    needers: tuple[tuple[tuple[int, int], ...], ...]
    values: tuple[np.ndarray | float, ...]
    independent: tuple[bool, ...]

    @staticmethod
    def of(charges: Iterable[Charge]) -> "TensorCharges":
        """The charges ``charges`` (in order) kept compact."""
        charges = list(charges)
        return TensorCharges(tuple(ch.needers for ch in charges), tuple(ch.values for ch in charges),
                             tuple(ch.independent for ch in charges))

    def mapped(self, var: Sequence[int], count: int) -> "TensorCharges":
        """The charges on a tied problem's nodes (:mod:`hypar.cost.terms`): needer (c, t) as
        (var[c], t), repeats dropped, each value ``count`` times."""
        needers = tuple(tuple(dict.fromkeys((var[c], t) for c, t in ns)) for ns in self.needers)
        values = self.values if count == 1 else tuple(v * count for v in self.values)
        return TensorCharges(needers, values, self.independent)

    def __iter__(self) -> Iterator[Charge]:
        return map(Charge, self.needers, self.values, self.independent)

    def __len__(self) -> int:
        return len(self.needers)


def tensor_charges(model: TableModel, levels: tuple[int, ...], p: int, edges: list[EdgeModel],
                   choices: Sequence[Sequence[tuple]], objective: str, fixed_producer: bool) -> TensorCharges:
    """The shared conversions at ``levels`` of the tensor producer ``p`` sends along ``edges``
    (forward ones first, each in first-needed order), with their values per producer choice.

    ``choices[i]``: node i's candidate type tuples; ``fixed_producer``: the pass reads none of
    the producer's free levels, so each value is priced once, at the producer's first choice
    (as is a conversion that is :attr:`Conversion.consumer_only`); those charges are
    ``independent`` with one float. Raises KeyError for an unknown objective."""
    shared = model.share(edges, choices, levels[0])
    items = sorted(shared.items(), key=lambda item: item[0].backward)
    ptypes_list = choices[p][:1] if fixed_producer else choices[p]
    rows = model.conversion_values(levels, [conv for conv, _needers in items], p, ptypes_list, objective)
    independent = tuple(fixed_producer or conv.consumer_only for conv, _needers in items)
    return TensorCharges(tuple(tuple(needers) for _conv, needers in items),
                         tuple(float(row[0]) if alone else row for row, alone in zip(rows, independent)),
                         independent)


def consumer_costs(model: TableModel, levels: tuple[int, ...], p: int, e: EdgeModel, ptypes: tuple,
                   ctypes_list: Sequence[tuple], objective: str) -> list[float]:
    """A tensor on one edge ``e`` whose price reads none of the producer's free levels (the
    producer ``p`` taken at ``ptypes``): per consumer choice in ``ctypes_list``, the sum of its
    conversions' values at ``levels`` in first-needed order, from 0.0."""
    per_choice = [list(model.share([e], {e.c: [types]}, levels[0])) for types in ctypes_list]
    flat = [conv for convs in per_choice for conv in convs]
    values = model.conversion_values(levels, flat, p, [ptypes], objective)[:, 0].tolist()
    own, at = [], 0
    for convs in per_choice:
        total = 0.0
        for v in values[at:at + len(convs)]:
            total += v
        own.append(total)
        at += len(convs)
    return own


def pair_costs(charges: TensorCharges, n_producer: int, n_consumer: int) -> tuple[list[float], np.ndarray | None]:
    """A tensor with one consumer as (consumer's own costs, producer x consumer matrix): the
    independent charges added into the consumer choices needing them, the others into the
    matrix columns of those choices (the matrix is None when every charge is independent).
    ``n_producer`` / ``n_consumer``: the two nodes' numbers of choices.

    Each cell adds, from 0.0, the charges its consumer choice needs in charge order: the columns
    are filled by one unbuffered ``np.add.at`` over (column, values) pairs listed in that order."""
    own = [0.0] * n_consumer
    columns: list[int] = []
    values: list[np.ndarray] = []
    for needers, row, independent in zip(charges.needers, charges.values, charges.independent):
        if independent:
            for _c, t in needers:
                own[t] += row
            continue
        for _c, t in needers:
            columns.append(t)
            values.append(row)
    if not columns:
        return own, None
    mat = np.zeros((n_producer, n_consumer))
    np.add.at(mat.T, columns, values)
    return own, mat
