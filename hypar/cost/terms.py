"""The terms of one level problem under construction (:mod:`hypar.cost.problems`): per tensor,
its shared conversions priced on the nodes themselves and charged on the problem's nodes, as pair
matrices, factor tables or group terms (the module docstring of :mod:`hypar.cost.problems`
says which), ``count`` times for a group of twin tensors.
"""

from __future__ import annotations

import math

import numpy as np

from hypar.cost.priced import PricedModel, memo_of
from hypar.cost.structure import EdgeModel
from hypar.cost.tables import TensorCharges, consumer_costs, pair_costs, tensor_charges
from hypar.ilp.problem import FactorTerm, GroupTerm

FACTOR_MAX_ENTRIES = 729   # a fanned-out tensor becomes one exact factor term up to this table size


class Terms:
    """The terms of a problem under construction: node costs (added to in place), pair matrices
    per (producer, consumer) in first-charged order, group terms and factor terms, all over
    problem nodes (``var[i]``: node i's; ``tied``: some problem node stands for several nodes);
    tensors are priced on the nodes themselves."""

    def __init__(self, model: PricedModel, choices: list[list[tuple]], objective: str, node_cost: list[np.ndarray],
                 free: set[int], var: tuple[int, ...], tied: bool):
        self.model = model
        self.choices = choices
        self.objective = objective
        self.node_cost = node_cost
        self.free = free
        self.var = var
        self.tied = tied
        self.edge_index: dict[tuple[int, int], int] = {}
        self.edges: list[tuple[int, int]] = []
        self.edge_cost: list[np.ndarray] = []
        self.groups: list[GroupTerm] = []
        self.factors: list[FactorTerm] = []
        self.memo = memo_of(model)
        self.choice_keys: dict[int, tuple] = {}

    def _key(self, levels: tuple[int, ...], edges: list[EdgeModel], fixed_producer: bool) -> tuple:
        """The memo key of a tensor's terms (see :data:`hypar.cost.priced._MEMO`)."""
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
            hit = self.memo[key] = tensor_charges(self.model, levels, p, edges, self.choices, self.objective,
                                                  fixed_producer)
        charges = hit.mapped(self.var, count) if self.tied else hit
        P = self.var[p]
        if len(consumers) == 1:
            self._add_pair_costs(P, consumers[0], charges)
            return
        size = len(self.choices[p]) * math.prod(len(self.node_cost[c]) for c in consumers)
        if self.model.use_factors and size <= FACTOR_MAX_ENTRIES:
            self._add_factor(P, consumers, charges)
        else:
            self._add_groups(P, charges)

    def _consumer_costs(self, levels: tuple[int, ...], p: int, e: EdgeModel) -> list[float]:
        """A tensor on one edge priced without reading the producer's free levels
        (:func:`consumer_costs`)."""
        return consumer_costs(self.model, levels, p, e, self.choices[p][0], self.choices[e.c], self.objective)

    def _add_pair_costs(self, p: int, c: int, charges: TensorCharges) -> None:
        """A tensor with one consumer (problem node): a (producer x consumer) matrix; what does
        not depend on the producer (partial errors under ``reference``, fixed lower levels) on
        the consumer (:func:`pair_costs`)."""
        own, mat = pair_costs(charges, len(self.node_cost[p]), len(self.node_cost[c]))
        if any(own):
            self.node_cost[c] += own
        if mat is not None and mat.any():
            self._add_matrix(p, c, mat)

    def _add_factor(self, p: int, consumers: list[int], charges: TensorCharges) -> None:
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

    def _add_groups(self, p: int, charges: TensorCharges) -> None:
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
