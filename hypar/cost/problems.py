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
  - a few consumers (a table of at most :data:`hypar.cost.terms.FACTOR_MAX_ENTRIES`): one exact factor term;
  - more: group terms, each charged once when any consumer choice needing it is chosen.

An optional memory row bounds each PE's bytes (:meth:`CostModel.memory_bytes`); on arrays with
weights-stationary (compute-in-memory) PEs a weight-capacity row bounds each PE's weights
(:func:`hypar.cost.stationary.weight_row`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hypar.cost.price import OBJECTIVES, ZERO, Cost
from hypar.cost.priced import PricedModel, memo_of
from hypar.cost.repeats import Ties
from hypar.cost.stationary import weight_row
from hypar.cost.structure import EdgeModel
from hypar.cost.terms import Terms
from hypar.ilp.problem import LevelProblem




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
    variables = _Variables.of(model.twins.ties if tie else None, assignment, labels)
    rep_choices = [[_with_label(assignment[i], h, t, not fixed_below, model.n_levels) for t in labels[i]]
                   for i in variables.rep]
    choices = [rep_choices[v] for v in variables.var]      # a problem node's nodes share its choices
    memo = memo_of(model)
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


def _with_label(types: tuple, h: int, label: str, undecided_below: bool, n_levels: int) -> tuple:
    """``types`` with ``label`` at level h (and None for levels h+1..n_levels-1 when ``undecided_below``)."""
    if undecided_below:
        return tuple(types[:h]) + (label,) + (None,) * (n_levels - h - 1)
    return tuple(types[:h]) + (label,) + tuple(types[h + 1:])


@dataclass(frozen=True, slots=True)
class _Variables:
    """A problem's nodes: ``var[i]`` is node i's problem node; problem node v stands for
    ``count[v]`` nodes, the first ``rep[v]``. Tied nodes share a problem node when their types
    and labels are the same (so are their choices); ``split``: some tie class spans several
    problem nodes (its nodes' types differ)."""

    var: tuple[int, ...]
    rep: tuple[int, ...]
    count: tuple[int, ...]
    tied: bool
    split: bool = False

    @classmethod
    def of(cls, ties: Ties | None, assignment: list[tuple], labels: list[tuple[str, ...]]) -> "_Variables":
        """One problem node per tie class of ``ties``, types and labels (one per node when None)."""
        n = len(labels)
        if ties is None or not ties.runs:
            return cls(tuple(range(n)), tuple(range(n)), (1,) * n, False)
        ids: dict = {}
        var, rep, count = [], [], []
        for i, (cls_i, inside) in enumerate(zip(ties.node_class, ties.in_run)):
            key = (cls_i, assignment[i], labels[i]) if inside else i
            v = ids.get(key)
            if v is None:
                v = ids[key] = len(rep)
                rep.append(i)
                count.append(0)
            var.append(v)
            count[v] += 1
        return cls(tuple(var), tuple(rep), tuple(count), len(rep) < n, len(rep) > ties.n_classes)


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
                          _Variables.of(None, [], choices))


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
    terms = Terms(model, choices, objective, node_cost, free, variables.var, variables.tied)
    for levels_of_pass in model.pricing_passes(levels):
        for (p, edges), count in _tensor_groups(model, variables):
            terms.add_tensor(levels_of_pass, p, edges, count)
    memory = []
    if memory_cap_bytes is not None:
        coef = [np.array([model.memory_bytes(i, ct) for ct in choices[i]], dtype=float) * m
                for i, m in zip(variables.rep, variables.count)]
        memory.append((coef, float(memory_cap_bytes)))
    capacity = weight_row(model, choices, variables.rep, variables.count)
    if capacity is not None:
        memory.append(capacity)
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
    if not variables.split:                 # problem nodes are the tie classes: groups known
        for key, members in model.twins.tied_tensor_groups():
            yield (key[0], model.twins.twin_edges(key)), len(members)
        return
    var, groups = variables.var, {}
    for key, edges in tensor_edges.items():
        group = (model.twins.tensor_sig[key], var[key[0]], tuple(var[e.c] for e in edges))
        hit = groups.get(group)
        if hit is None:
            groups[group] = [(key[0], _tied_edges(model, key, edges, var)), 1]
        else:
            hit[1] += 1
    for first, count in groups.values():
        yield first, count


def _tied_edges(model: PricedModel, key: tuple[int, str], edges: list[EdgeModel], var: tuple[int, ...]) -> list[EdgeModel]:
    """``edges`` less the twin edges into nodes of one problem node (kept: the first of each):
    such edges need equal conversions, which sharing converts once, so pricing one is exact.
    ``edges`` itself when its twin edges' consumers do not share problem nodes."""
    fewer = model.twins.twin_edges(key)
    if fewer is edges:
        return edges
    first_var: dict[tuple, int] = {}
    for e in edges:
        twin = model.twins.edge_twin(e)
        if first_var.setdefault(twin, var[e.c]) != var[e.c]:
            return edges
    return fewer
