"""One level of a cost model (or all levels at once) as a :class:`hypar.ilp.problem.LevelProblem`.

Every node chooses among candidate type tuples (one label per level). The problem's terms:

- node costs: the node's own collectives (with ``lower="fixed"`` those of the levels below too),
  its compute (objectives other than ``comm``), and the conversions only its choice decides
  (partial errors under ``reference``; conversions whose price reads no free level of the producer);
- per tensor leaving a producer, its conversions at each level of the problem (with
  ``lower="fixed"``: the level and every level below), shared as :mod:`hypar.cost.sharing` says
  for the model's convention, laid out forward ones first, then backward ones; a pass of levels
  sharing one key set (:meth:`CostModel.pricing_passes`) adds each conversion once with its
  values summed over the pass:

  - one consumer: a producer x consumer cost matrix (pair term);
  - a few consumers (a table of at most :data:`FACTOR_MAX_ENTRIES`): one exact factor term;
  - more: group terms, each charged once when any consumer choice needing it is chosen.

An optional memory row bounds each PE's bytes (:meth:`CostModel.memory_bytes`).
"""

from __future__ import annotations

import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hypar.cost.price import OBJECTIVES, ZERO, Cost
from hypar.cost.repeats import Ties
from hypar.cost.sharing import Conversion
from hypar.cost.structure import EdgeModel, Structure
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem

FACTOR_MAX_ENTRIES = 729   # a fanned-out tensor becomes one exact factor term up to this table size

Shared = dict[Conversion, list[tuple[int, int]]]   # as share_conversions returns


class PricedModel(Protocol):
    """What building a problem reads from a cost model (:class:`hypar.cost.model.CostModel`)."""

    structure: Structure
    n_levels: int
    use_factors: bool   # fanned-out tensors as factor terms when small enough (else group terms)
    ties: Ties          # which nodes a tied problem gives one problem node (hypar.cost.repeats)
    tensor_sig: dict[tuple[int, str], int]   # per tensor, its twin class (hypar.cost.repeats)

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


def _memo(model: PricedModel) -> dict:
    """``model``'s memo (created empty)."""
    try:
        return _MEMO.setdefault(model, {})
    except TypeError:                      # a model that takes no weak reference: no memo
        return {}


def _check_objective(objective: str) -> None:
    """Raise ValueError unless ``objective`` is one of :data:`OBJECTIVES`."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")


def level_problem(model: PricedModel, assignment: list[tuple], h: int, objective: str = "comm",
                  lower: str = "ideal", allowed: list[tuple[str, ...] | None] | None = None,
                  memory_cap_bytes: float | None = None, tie: bool = False) -> LevelProblem:
    """Level h as a LevelProblem with levels above fixed from ``assignment``.

    The constant the problem leaves out: the levels above h's own collectives, and under
    ``reference`` their conversions too (under ``hierarchical`` a level above is charged once
    per distinct full tuple, which level h's choices change: the problem holds it,
    :meth:`CostModel.pricing_passes`).

    ``lower="fixed"``: levels below keep ``assignment``'s types; the problem holds every other
    cost of levels h..H-1 (own collectives, compute, every tensor's conversions shared as the
    model's convention says), so its objective plus the constant is exactly
    :meth:`CostModel.evaluate` of the completed assignment. A conversion's cost that depends on
    the producer's and a consumer's level-h choices is a pair cost; one that depends on several
    consumers' choices (sharing) a factor or group term.
    ``lower="ideal"``: levels below are undecided (greedy): objective plus constant is a lower
    bound of ``evaluate`` over every completion -- level h's own collectives, the compute with
    each group's share split ideally below, and the conversions through level h with consumers
    that agree down to level h sharing one (a completion can only split them further); the
    conversions below level h and the lower levels' collectives count 0.
    ``allowed[i]``: the labels node i may take (None: all); the problem's choices are those labels.
    ``memory_cap_bytes``: per-PE capacity, a memory row over ``memory_bytes`` (levels below
    ideal or fixed as above). ``tie``: the nodes of each tied class (``model.ties``) that have
    the same choices share one problem node (``LevelProblem.node_var``); the problem is then
    the same sums restricted to tied assignments. Raises ValueError for an unknown objective.
    """
    _check_objective(objective)
    n = len(model.structure.nodes)
    labels = [model.labels(i) if allowed is None or allowed[i] is None else tuple(allowed[i]) for i in range(n)]
    fixed_below = lower == "fixed"
    choices = [[_with_label(assignment[i], h, t, not fixed_below, model.n_levels) for t in labels[i]] for i in range(n)]
    variables = _Variables.of(model.ties if tie else None, choices)
    memo = _memo(model)
    node_cost = []
    for i, count in zip(variables.rep, variables.count):
        values = []
        for ct in choices[i]:
            key = ("node", h, objective, fixed_below, i, ct)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = _level_node_cost(model, h, objective, fixed_below, i, ct).value(objective)
            values.append(hit)
        node_cost.append(np.array(values, dtype=float) * count)
    levels = list(range(h, model.n_levels)) if fixed_below else [h]
    return _build_problem(model, choices, labels, levels, {h}, objective, node_cost, memory_cap_bytes, variables)


@dataclass(frozen=True, slots=True)
class _Variables:
    """A problem's nodes: ``var[i]`` is node i's problem node; problem node v stands for
    ``count[v]`` nodes, the first ``rep[v]``. Nodes share a problem node only when tied and
    given the same choices."""

    var: tuple[int, ...]
    rep: tuple[int, ...]
    count: tuple[int, ...]
    tied: bool

    @classmethod
    def of(cls, ties: Ties | None, choices: list[list[tuple]]) -> "_Variables":
        """One problem node per class of ``ties`` and choices (one per node when None)."""
        n = len(choices)
        if ties is None or not ties.runs:
            return cls(tuple(range(n)), tuple(range(n)), (1,) * n, False)
        ids: dict = {}
        var, rep, count = [], [], []
        for i, (cls_i, inside) in enumerate(zip(ties.node_class, ties.in_run)):
            key = (cls_i, tuple(choices[i])) if inside else i
            v = ids.get(key)
            if v is None:
                v = ids[key] = len(rep)
                rep.append(i)
                count.append(0)
            var.append(v)
            count[v] += 1
        return cls(tuple(var), tuple(rep), tuple(count), len(rep) < n)


def _with_label(types: tuple, h: int, label: str, undecided_below: bool, n_levels: int) -> tuple:
    """``types`` with ``label`` at level h (and None for levels h+1..n_levels-1 when ``undecided_below``)."""
    out = list(types)
    out[h] = label
    if undecided_below:
        out[h + 1:] = [None] * (n_levels - h - 1)
    return tuple(out)


def _level_node_cost(model: PricedModel, h: int, objective: str, fixed_below: bool, i: int, types: tuple) -> Cost:
    """Node i's own cost at level h (and the levels below when ``fixed_below``) under ``types``:
    its collectives, and its compute for objectives other than ``comm``."""
    c = model.intra_cost(i, types, h)
    if objective != "comm":
        c = c + model.compute_cost(i, types)
    if fixed_below:
        for g in range(h + 1, model.n_levels):
            c = c + model.intra_cost(i, types, g)
    return c


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
    return _build_problem(model, choices, labels, levels, set(levels), objective, node_cost, memory_cap_bytes,
                          _Variables.of(None, choices))


def _joint_node_cost(model: PricedModel, objective: str, i: int, types: tuple) -> Cost:
    """Node i's own cost over every level under ``types``."""
    c = ZERO
    for h in range(model.n_levels):
        c = c + model.intra_cost(i, types, h)
    if objective != "comm":
        c = c + model.compute_cost(i, types)
    return c


def _build_problem(model: PricedModel, choices: list[list[tuple]], labels: list[tuple[str, ...]], levels: list[int],
                   free: set[int], objective: str, node_cost: list[np.ndarray],
                   memory_cap_bytes: float | None, variables: _Variables) -> LevelProblem:
    """A LevelProblem over ``variables`` (per node candidate type tuples ``choices``), with the
    tensors' costs at ``levels``; ``free``: the levels where the choices differ (the others are
    fixed); ``node_cost``: per problem node, its nodes' own costs."""
    terms = _Terms(model, choices, objective, node_cost, free, variables.var)
    for levels_of_pass in model.pricing_passes(levels):
        for (p, edges), count in _tensor_groups(model, variables):
            terms.add_tensor(levels_of_pass, p, edges, count)
    memory = []
    if memory_cap_bytes is not None:
        coef = [np.array([model.memory_bytes(i, ct) for ct in choices[i]], dtype=float) * m
                for i, m in zip(variables.rep, variables.count)]
        memory.append((coef, float(memory_cap_bytes)))
    names = [model.structure.names[i] for i in variables.rep]
    return LevelProblem(names, [tuple(labels[i]) for i in variables.rep], terms.node_cost, terms.edges,
                        terms.edge_cost, terms.groups, memory, terms.factors,
                        variables.var if variables.tied else None)


def _tensor_groups(model: PricedModel, variables: _Variables):
    """((producer, edges), count) per group of twin tensors (:mod:`hypar.cost.repeats`) whose
    producers and consumers, edge by edge, share problem nodes: such tensors' terms are equal, so
    the first is priced and counted ``count`` times. Untied: every tensor once, in order."""
    tensor_edges = model.structure.tensor_edges
    if not variables.tied:
        for key, edges in tensor_edges.items():
            yield (key[0], edges), 1
        return
    var, groups = variables.var, {}
    for key, edges in tensor_edges.items():
        group = (model.tensor_sig[key], var[key[0]], tuple(var[e.c] for e in edges))
        hit = groups.get(group)
        if hit is None:
            groups[group] = [(key[0], edges), 1]
        else:
            hit[1] += 1
    for first, count in groups.values():
        yield first, count


@dataclass(frozen=True, slots=True)
class _Charge:
    """One shared conversion of a tensor in a problem: who needs it, and its objective value per
    producer choice (summed over the pass's levels)."""

    needers: list[tuple[int, int]]   # (consumer, choice index), first needed first
    values: np.ndarray | float       # per producer choice; one float when ``independent``
    independent: bool                # the value does not depend on the producer's choice

    def mapped(self, var: tuple[int, ...], count: int) -> "_Charge":
        """The charge on problem nodes (needer (c, t) as (var[c], t), repeats dropped), ``count``
        times its value."""
        needers = list(dict.fromkeys((var[c], t) for c, t in self.needers))
        return _Charge(needers, self.values * count if count != 1 else self.values, self.independent)

    def per_producer(self, n_choices: int) -> np.ndarray:
        """The values as one per producer choice."""
        return np.full(n_choices, self.values) if self.independent else self.values


class _Terms:
    """The terms of a problem under construction: node costs (added to in place), pair matrices
    per (producer, consumer) in first-charged order, group terms and factor terms, all over
    problem nodes (``var[i]``: node i's); tensors are priced on the nodes themselves."""

    def __init__(self, model: PricedModel, choices: list[list[tuple]], objective: str, node_cost: list[np.ndarray],
                 free: set[int], var: tuple[int, ...]):
        self.model = model
        self.choices = choices
        self.objective = objective
        self.node_cost = node_cost
        self.free = free
        self.var = var
        self.edge_index: dict[tuple[int, int], int] = {}
        self.edges: list[tuple[int, int]] = []
        self.edge_cost: list[np.ndarray] = []
        self.groups: list[GroupTerm] = []
        self.factors: list[FactorTerm] = []
        self.memo = _memo(model)
        self.choice_keys: dict[int, tuple] = {}

    def _key(self, levels: tuple[int, ...], edges: list[EdgeModel], fixed_producer: bool) -> tuple:
        """The memo key of a tensor's terms (see :data:`_MEMO`)."""
        def choices_of(i: int) -> tuple:
            hit = self.choice_keys.get(i)
            if hit is None:
                hit = self.choice_keys[i] = tuple(self.choices[i])
            return hit
        return ("tensor", levels, id(edges), self.objective, fixed_producer, choices_of(edges[0].p),
                tuple(choices_of(e.c) for e in edges))

    def add_tensor(self, levels: tuple[int, ...], p: int, edges: list[EdgeModel], count: int = 1) -> None:
        """Charge ``count`` times the conversions at ``levels`` of the tensor producer ``p`` sends
        along ``edges``."""
        fixed_producer = not (self.model.producer_levels(levels) & self.free)
        key = self._key(levels, edges, fixed_producer)
        hit = self.memo.get(key)
        if len(edges) == 1 and fixed_producer:
            if hit is None:
                hit = self.memo[key] = self._consumer_costs(levels, p, edges[0])
            if any(hit):
                self.node_cost[self.var[edges[0].c]] += np.asarray(hit) * count
            return
        consumers = sorted({self.var[e.c] for e in edges})
        if hit is None:
            hit = self.memo[key] = self._charges(levels, p, edges)
        charges = hit if count == 1 and self.var[p] == p and all(self.var[e.c] == e.c for e in edges) \
            else [ch.mapped(self.var, count) for ch in hit]
        P = self.var[p]
        if len(consumers) == 1:
            self._add_pair_costs(P, consumers[0], charges)
            return
        size = len(self.choices[p]) * math.prod(len(self.node_cost[c]) for c in consumers)
        if self.model.use_factors and size <= FACTOR_MAX_ENTRIES:
            self._add_factor(P, consumers, charges)
        else:
            self._add_groups(P, charges)

    def _charges(self, levels: tuple[int, ...], p: int, edges: list[EdgeModel]) -> list[_Charge]:
        """The tensor's shared conversions (forward ones first, each in first-needed order) with
        their values per producer choice, summed over ``levels``."""
        shared = self.model.share(edges, self.choices, levels[0])
        fixed_producer = not (self.model.producer_levels(levels) & self.free)
        out = []
        for conv, needers in sorted(shared.items(), key=lambda item: item[0].backward):
            if conv.consumer_only or fixed_producer:
                out.append(_Charge(needers, self._value(levels, conv, p, self.choices[p][0]), True))
            else:
                values = np.array([self._value(levels, conv, p, pt) for pt in self.choices[p]])
                out.append(_Charge(needers, values, False))
        return out

    def _consumer_costs(self, levels: tuple[int, ...], p: int, e: EdgeModel) -> list[float]:
        """A tensor on one edge priced without reading the producer's free levels: each
        consumer choice's conversions, for its own node cost (the same sums as the general path)."""
        ptypes = self.choices[p][0]
        own = []
        for types in self.choices[e.c]:
            total = 0.0
            for conv in self.model.share([e], {e.c: [types]}, levels[0]):
                total += self._value(levels, conv, p, ptypes)
            own.append(total)
        return own

    def _value(self, levels: tuple[int, ...], conv: Conversion, p: int, ptypes: tuple) -> float:
        """The objective's value of ``conv`` over ``levels`` with the producer taking ``ptypes``."""
        return self.model.conversion_costs(levels, conv, p, ptypes).value(self.objective)

    def _add_pair_costs(self, p: int, c: int, charges: list[_Charge]) -> None:
        """A tensor with one consumer (problem node): a (producer x consumer) matrix; what does
        not depend on the producer (partial errors under ``reference``, fixed lower levels) on
        the consumer."""
        mat = None
        own = np.zeros(len(self.node_cost[c]))
        for ch in charges:
            if ch.independent:
                for _c, t in ch.needers:
                    own[t] += ch.values
                continue
            if mat is None:
                mat = np.zeros((len(self.node_cost[p]), len(self.node_cost[c])))
            mat[:, [t for _c, t in ch.needers]] += ch.values[:, None]
        if own.any():
            self.node_cost[c] += own
        if mat is not None and mat.any():
            self._add_matrix(p, c, mat)

    def _add_factor(self, p: int, consumers: list[int], charges: list[_Charge]) -> None:
        """A fanned-out tensor as one table over (producer, consumers...) choices: each conversion's
        cost wherever on the consumers' joint grid some needer is chosen, exactly as evaluate does."""
        pos = {c: j for j, c in enumerate(consumers)}
        grid = tuple(len(self.node_cost[c]) for c in consumers)
        n_p = len(self.node_cost[p])
        table = np.zeros((n_p,) + grid)
        lift = (n_p,) + (1,) * len(consumers)
        for ch in charges:
            mask = np.zeros(grid, bool)
            for c, t in ch.needers:
                where = [slice(None)] * len(consumers)
                where[pos[c]] = t
                mask[tuple(where)] = True
            table += np.reshape(ch.per_producer(n_p), lift) * mask[None]
        if p in pos:                        # the producer tied to a consumer: one axis, its diagonal
            j = 1 + pos[p]
            table = np.moveaxis(np.diagonal(table, axis1=0, axis2=j), -1, 0)
            consumers = [c for c in consumers if c != p]
        self.factors.append(FactorTerm((p,) + tuple(consumers), table))

    def _add_groups(self, p: int, charges: list[_Charge]) -> None:
        """A widely fanned-out tensor: each conversion charged once per producer choice (once
        outright when independent of the producer) when any of its needers is chosen."""
        for ch in charges:
            members = sorted(set(ch.needers))
            if ch.independent:
                self._charge(p, members, None, float(ch.values))
                continue
            for s, value in enumerate(ch.values):
                self._charge(p, members, s, float(value))

    def _charge(self, p: int, members: list[tuple[int, int]], s: int | None, value: float) -> None:
        """Charge ``value`` once if any (consumer, choice) of ``members`` is chosen (and, when
        ``s`` is not None, producer p takes choice s): straight into the node or pair costs when
        the members belong to one consumer, else as a group term. A member on p itself (tied
        to a consumer) is chosen with s exactly when it is (p, s)."""
        if value == 0:
            return
        if s is not None and any(c == p for c, _ in members):
            if (p, s) in members:
                self.node_cost[p][s] += value
                return
            members = [(c, t) for c, t in members if c != p]
            if not members:
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
        """Add ``value`` to the (p, c) pair matrix at (s, t), starting a zero matrix if new
        (``p != c``)."""
        k = self.edge_index.get((p, c))
        if k is None:
            k = self.edge_index[(p, c)] = len(self.edges)
            self.edges.append((p, c))
            self.edge_cost.append(np.zeros((len(self.node_cost[p]), len(self.node_cost[c]))))
        self.edge_cost[k][s, t] += value

    def _add_matrix(self, p: int, c: int, mat: np.ndarray) -> None:
        """Add ``mat`` to the (p, c) pair matrix (a copy of it if new); on one problem node
        (p tied to c) its diagonal to the node's costs."""
        if p == c:
            self.node_cost[p] += np.diagonal(mat)
            return
        k = self.edge_index.get((p, c))
        if k is None:
            self.edge_index[(p, c)] = len(self.edges)
            self.edges.append((p, c))
            self.edge_cost.append(mat.copy())
        else:
            self.edge_cost[k] += mat
