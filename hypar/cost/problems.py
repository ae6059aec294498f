"""One level of a cost model (or all levels at once) as a :class:`hypar.ilp.problem.LevelProblem`.

Every node chooses among candidate type tuples (one label per level). The problem's terms:

- node costs: the node's own collectives, its compute (objectives other than ``comm``), the
  partial-error reductions only its choice decides, and with ``lower="fixed"`` the levels below;
- per tensor leaving a producer, its conversions at each level of the problem, shared as
  :mod:`hypar.cost.sharing` says, laid out forward ones first, then backward ones:

  - one consumer: a producer x consumer cost matrix (pair term);
  - a few consumers (a table of at most :data:`FACTOR_MAX_ENTRIES`): one exact factor term;
  - more: group terms, each charged once when any consumer choice needing it is chosen.

An optional memory row bounds each PE's bytes (:meth:`CostModel.memory_bytes`).
"""

from __future__ import annotations

import itertools
import math
from typing import Protocol

import numpy as np

from hypar.cost.price import OBJECTIVES, ZERO, Cost
from hypar.cost.sharing import Conversion, edge_conversions, share_conversions
from hypar.cost.strategies import Strategy
from hypar.cost.structure import EdgeModel, Structure
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem

FACTOR_MAX_ENTRIES = 729   # a fanned-out tensor becomes one exact factor term up to this table size

Shared = dict[Conversion, list[tuple[int, int]]]   # as share_conversions returns


class PricedModel(Protocol):
    """What building a problem reads from a cost model (:class:`hypar.cost.model.CostModel`)."""

    structure: Structure
    n_levels: int
    use_factors: bool   # fanned-out tensors as factor terms when small enough (else group terms)

    def labels(self, i: int) -> tuple[str, ...]:
        """Node i's labels (CostModel.labels)."""

    def intra_cost(self, i: int, types: tuple, h: int) -> Cost:
        """Node i's own collectives at level h (CostModel.intra_cost)."""

    def compute_cost(self, i: int, types: tuple) -> Cost:
        """Node i's compute (CostModel.compute_cost)."""

    def memory_bytes(self, i: int, types: tuple) -> float:
        """Node i's largest per-PE bytes (CostModel.memory_bytes)."""

    def edge_view(self, e: EdgeModel, ctypes: tuple, h: int) -> tuple:
        """Edge e's tensor in its consumer's view at level h (CostModel.edge_view)."""

    def convert_cost(self, h: int, sig: tuple, src: str, dst: str) -> Cost:
        """One conversion at level h (CostModel.convert_cost)."""


def _check_objective(objective: str) -> None:
    """Raise ValueError unless ``objective`` is one of :data:`OBJECTIVES`."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")


def level_problem(model: PricedModel, assignment: list[tuple], h: int, objective: str = "comm",
                  lower: str = "ideal", allowed: list[tuple[str, ...] | None] | None = None,
                  memory_cap_bytes: float | None = None) -> LevelProblem:
    """Level h as a LevelProblem with levels above fixed from ``assignment``.

    ``lower="ideal"``: levels below are undecided (greedy; compute spread ideally below).
    ``lower="fixed"``: levels below keep ``assignment``'s types; their costs enter the node costs
    per consumer view (not shared across consumers there, so the caller re-evaluates).
    ``allowed[i]``: the labels node i may take (None: all); the problem's choices are those labels.
    ``memory_cap_bytes``: per-PE capacity, a memory row over ``memory_bytes`` (levels below
    ideal or fixed as above). Raises ValueError for an unknown objective.
    """
    _check_objective(objective)
    n = len(model.structure.nodes)
    labels = [model.labels(i) if allowed is None or allowed[i] is None else tuple(allowed[i]) for i in range(n)]
    undecided_below = lower == "ideal"
    choices = [[_with_label(assignment[i], h, t, undecided_below, model.n_levels) for t in labels[i]] for i in range(n)]
    node_cost = [np.array([_level_node_cost(model, assignment, h, objective, lower == "fixed", i, ct).value(objective)
                           for ct in choices[i]], dtype=float) for i in range(n)]
    return _build_problem(model, choices, labels, [h], objective, node_cost, memory_cap_bytes)


def _with_label(types: tuple, h: int, label: str, undecided_below: bool, n_levels: int) -> tuple:
    """``types`` with ``label`` at level h (and None for levels h+1..n_levels-1 when ``undecided_below``)."""
    out = list(types)
    out[h] = label
    if undecided_below:
        out[h + 1:] = [None] * (n_levels - h - 1)
    return tuple(out)


def _level_node_cost(model: PricedModel, assignment: list[tuple], h: int, objective: str, fixed_below: bool,
                     i: int, types: tuple) -> Cost:
    """Node i's own level-h cost under ``types`` (see :func:`level_problem`)."""
    c = model.intra_cost(i, types, h)
    if objective != "comm":
        c = c + model.compute_cost(i, types)
    if fixed_below:
        for g in range(h + 1, model.n_levels):
            c = c + model.intra_cost(i, types, g) + _lower_edges_as_consumer(model, assignment, i, types, g)
    return c


def _lower_edges_as_consumer(model: PricedModel, assignment: list[tuple], i: int, types: tuple, g: int) -> Cost:
    """Level-g conversions on node i's input edges with i's types ``types`` (producers' types from
    ``assignment``), every edge's own conversions in full: not shared across edges."""
    s = model.structure
    total = ZERO
    consumer = s.nodes[i].strategy(types[g])
    for e_idx in s.in_edges[i]:
        e = s.edges[e_idx]
        producer = s.nodes[e.p].strategy(assignment[e.p][g])
        view = model.edge_view(e, types, g)
        for conv in edge_conversions(e, consumer, view):
            total = total + model.convert_cost(g, view, *conv.layouts(producer))
    return total


def joint_choices(model: PricedModel) -> list[list[tuple]]:
    """Every node's full type tuples (one label per level), for the joint problem."""
    return [list(itertools.product(model.labels(i), repeat=model.n_levels)) for i in range(len(model.structure.nodes))]


def joint_problem(model: PricedModel, objective: str = "comm", memory_cap_bytes: float | None = None) -> LevelProblem:
    """All levels at once: each node chooses a whole tuple of types (exact, but 3^H choices),
    labelled "I/II/..." . Raises ValueError for an unknown objective."""
    _check_objective(objective)
    levels = list(range(model.n_levels))
    choices = joint_choices(model)
    node_cost = [np.array([_joint_node_cost(model, objective, i, ct).value(objective) for ct in ch], dtype=float)
                 for i, ch in enumerate(choices)]
    labels = [tuple("/".join(t) for t in ch) for ch in choices]
    return _build_problem(model, choices, labels, levels, objective, node_cost, memory_cap_bytes)


def _joint_node_cost(model: PricedModel, objective: str, i: int, types: tuple) -> Cost:
    """Node i's own cost over every level under ``types``."""
    c = ZERO
    for h in range(model.n_levels):
        c = c + model.intra_cost(i, types, h)
    if objective != "comm":
        c = c + model.compute_cost(i, types)
    return c


def _build_problem(model: PricedModel, choices: list[list[tuple]], labels: list[tuple[str, ...]], levels: list[int],
                   objective: str, node_cost: list[np.ndarray], memory_cap_bytes: float | None) -> LevelProblem:
    """A LevelProblem over per-node candidate type tuples, with the tensors' costs at ``levels``."""
    terms = _Terms(model, choices, objective, node_cost)
    for h in levels:
        for (p, _source), edges in model.structure.tensor_edges.items():
            terms.add_tensor(h, p, edges)
    memory = []
    if memory_cap_bytes is not None:
        coef = [np.array([model.memory_bytes(i, ct) for ct in ch], dtype=float) for i, ch in enumerate(choices)]
        memory.append((coef, float(memory_cap_bytes)))
    return LevelProblem(list(model.structure.names), [tuple(lab) for lab in labels], terms.node_cost, terms.edges,
                        terms.edge_cost, terms.groups, memory, terms.factors)


def _forward_first(shared: Shared) -> list[tuple[Conversion, list[tuple[int, int]]]]:
    """``shared``'s items, forward conversions before backward ones, each in first-needed order."""
    return sorted(shared.items(), key=lambda item: item[0].backward)


class _Terms:
    """The terms of a problem under construction: node costs (added to in place), pair matrices
    per (producer, consumer) in first-charged order, group terms and factor terms."""

    def __init__(self, model: PricedModel, choices: list[list[tuple]], objective: str, node_cost: list[np.ndarray]):
        self.model = model
        self.choices = choices
        self.objective = objective
        self.node_cost = node_cost
        self.edge_index: dict[tuple[int, int], int] = {}
        self.edges: list[tuple[int, int]] = []
        self.edge_cost: list[np.ndarray] = []
        self.groups: list[GroupTerm] = []
        self.factors: list[FactorTerm] = []

    def add_tensor(self, h: int, p: int, edges: list[EdgeModel]) -> None:
        """Charge the level-h conversions of the tensor producer ``p`` sends along ``edges``."""
        producer = [self.model.structure.nodes[p].strategy(types[h]) for types in self.choices[p]]
        consumers = sorted({e.c for e in edges})
        shared = share_conversions(edges, self.choices, h, self.model.structure.nodes, self.model.edge_view)
        if len(consumers) == 1:
            self._add_pair_costs(h, p, consumers[0], shared, producer)
            return
        size = len(self.choices[p]) * math.prod(len(self.choices[c]) for c in consumers)
        if self.model.use_factors and size <= FACTOR_MAX_ENTRIES:
            self._add_factor(h, p, consumers, shared, producer)
        else:
            self._add_groups(h, p, shared, producer)

    def _value(self, h: int, conv: Conversion, producer: Strategy | None) -> float:
        """The objective's value of ``conv`` at level h with the producer taking ``producer``."""
        return self.model.convert_cost(h, conv.view, *conv.layouts(producer)).value(self.objective)

    def _add_pair_costs(self, h: int, p: int, c: int, shared: Shared, producer: list[Strategy]) -> None:
        """A tensor with one consumer: a (producer x consumer) matrix, partial errors on the consumer."""
        mat = np.zeros((len(producer), len(self.choices[c])))
        own = np.zeros(len(self.choices[c]))
        for conv, needers in _forward_first(shared):
            ts = [t for _c, t in needers]
            if conv.consumer_only:
                own[ts] += self._value(h, conv, None)
            else:
                mat[:, ts] += np.array([self._value(h, conv, ps) for ps in producer])[:, None]
        self.node_cost[c] += own
        if mat.any():
            self._add_matrix(p, c, mat)

    def _add_factor(self, h: int, p: int, consumers: list[int], shared: Shared, producer: list[Strategy]) -> None:
        """A fanned-out tensor as one table over (producer, consumers...) choices: each conversion's
        cost wherever on the consumers' joint grid some needer is chosen, exactly as evaluate does."""
        pos = {c: j for j, c in enumerate(consumers)}
        grid = tuple(len(self.choices[c]) for c in consumers)
        n_p = len(producer)
        table = np.zeros((n_p,) + grid)
        lift = (n_p,) + (1,) * len(consumers)
        for conv, needers in _forward_first(shared):
            mask = np.zeros(grid, bool)
            for c, t in needers:
                where = [slice(None)] * len(consumers)
                where[pos[c]] = t
                mask[tuple(where)] = True
            cost = [self._value(h, conv, ps) for ps in producer]
            table += np.reshape(cost, lift) * mask[None]
        self.factors.append(FactorTerm((p,) + tuple(consumers), table))

    def _add_groups(self, h: int, p: int, shared: Shared, producer: list[Strategy]) -> None:
        """A widely fanned-out tensor: each conversion charged once per producer choice (once
        outright for a partial error) when any of its needers is chosen."""
        for conv, needers in _forward_first(shared):
            members = sorted(set(needers))
            if conv.consumer_only:
                self._charge(p, members, None, self._value(h, conv, None))
                continue
            for s, ps in enumerate(producer):
                self._charge(p, members, s, self._value(h, conv, ps))

    def _charge(self, p: int, members: list[tuple[int, int]], s: int | None, value: float) -> None:
        """Charge ``value`` once if any (consumer, choice) of ``members`` is chosen (and, when
        ``s`` is not None, producer p takes choice s): straight into the node or pair costs when
        the members belong to one consumer, else as a group term."""
        if value == 0:
            return
        if len({c for c, _ in members}) > 1:
            self.groups.append(GroupTerm(value, tuple(members), None if s is None else (p, s)))
            return
        for c, t in members:
            if s is None:
                self.node_cost[c][t] += value
            else:
                self._add_pair(p, c, s, t, value)

    def _add_pair(self, p: int, c: int, s: int, t: int, value: float) -> None:
        """Add ``value`` to the (p, c) pair matrix at (s, t), starting a zero matrix if new."""
        k = self.edge_index.get((p, c))
        if k is None:
            k = self.edge_index[(p, c)] = len(self.edges)
            self.edges.append((p, c))
            self.edge_cost.append(np.zeros((len(self.choices[p]), len(self.choices[c]))))
        self.edge_cost[k][s, t] += value

    def _add_matrix(self, p: int, c: int, mat: np.ndarray) -> None:
        """Add ``mat`` to the (p, c) pair matrix (a copy of it if new)."""
        k = self.edge_index.get((p, c))
        if k is None:
            self.edge_index[(p, c)] = len(self.edges)
            self.edges.append((p, c))
            self.edge_cost.append(mat.copy())
        else:
            self.edge_cost[k] += mat
