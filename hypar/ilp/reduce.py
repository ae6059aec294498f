"""Exact reductions of a :class:`~hypar.ilp.problem.LevelProblem` before a model is built: an
equivalent, smaller problem (:class:`ReducedProblem`) and the way back to a full assignment.

In order: parallel edges are merged; group terms with constant anchors or members are resolved
(one member node: a node or pair cost), equal ones summed; factor terms lose their fixed nodes
(0, 1 or 2 nodes left: a constant, a node or a pair cost) and are summed per node set, a factor
over a subset of another's nodes into the larger table; group terms and pair costs whose nodes
all lie in a factor join its table (one joint table per node set is the tightest LP over those
nodes); zero and separable pair costs and factor tables become node costs; memory rows move
their constant parts to the right-hand side and go when they always hold. Then (optionally)
leaf and series nodes are eliminated (:mod:`hypar.ilp.eliminate`), and nodes touched by
nothing but their own costs take their cheapest choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hypar.errors import InfeasibleError
from hypar.ilp.eliminate import EliminatedNode, eliminate_nodes
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem, memory_limit
from hypar.ilp.tables import (fold_pair_into_nodes, fold_table_into_nodes, is_separable,
                              is_separable_table, on_nodes)



@dataclass
class ReducedGroup:
    """A group term over free nodes: ``cost`` once when the anchor (if any) and a member hold."""

    cost: float
    members: list[tuple[int, tuple[int, ...]]]   # (free node, member choices), node ascending
    anchor: tuple[int, int] | None               # (free node, choice) or None

    def nodes(self) -> set[int]:
        """The member nodes and the anchor's node."""
        nodes = {v for v, _ in self.members}
        if self.anchor is not None:
            nodes.add(self.anchor[0])
        return nodes


@dataclass
class ReducedProblem:
    """The problem with constants folded out. Objective = ``const`` + the free part.

    Costs are in the problem's units; node indices are the problem's. ``pairs`` hold matrices
    with u's choices as rows; ``factors`` tables over >= 3 free nodes (ascending); ``memory``
    rows ``sum_i row[i][a[i]] <= rhs`` over free nodes.
    """

    sizes: list[int]
    fixed: dict[int, int]                         # node -> choice, no variable
    free: list[int]                               # nodes with variables, ascending
    const: float = 0.0
    lin: dict[int, np.ndarray] = field(default_factory=dict)        # free node -> costs
    pairs: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # u < v, both free
    groups: list[ReducedGroup] = field(default_factory=list)
    factors: list[FactorTerm] = field(default_factory=list)         # >= 3 free nodes each
    memory: list[tuple[dict[int, np.ndarray], float]] = field(default_factory=list)
    eliminated: list[EliminatedNode] = field(default_factory=list)  # in elimination order
    eliminated_nodes: set[int] = field(default_factory=set)

    def estimated_variables(self) -> int:
        """About how many variables the model of this problem has (for time estimates)."""
        return sum(self.sizes[i] for i in self.free) + len(self.groups) + sum(
            m.size for _, _, m in self.pairs) + sum(f.table.size for f in self.factors)

    def expand(self, chosen: dict[int, int]) -> list[int]:
        """The full assignment from the free nodes' choices ``chosen``: fixed nodes, then
        eliminated nodes (best choice given their already assigned neighbours)."""
        assignment = [0] * len(self.sizes)
        for i, c in self.fixed.items():
            assignment[i] = c
        for i, c in chosen.items():
            assignment[i] = c
        for node in reversed(self.eliminated):
            node.restore(assignment)
        return assignment

    def movable(self) -> list[int]:
        """Nodes with more than one choice, ascending."""
        return [i for i, t in enumerate(self.sizes) if t > 1]


def reduce_problem(problem: LevelProblem, eliminate: bool = True) -> ReducedProblem:
    """Fold everything that needs no variable into constants and node costs (exactly).

    Parameters
    ----------
    problem : LevelProblem
        A well-formed problem (:func:`hypar.ilp.exact.check_problem`).
    eliminate : bool
        Also eliminate leaf and series nodes (no group, factor or memory row) as a DP would.

    Returns
    -------
    ReducedProblem
        Equivalent: ``problem.objective(red.expand(chosen))`` equals ``red.const`` plus the
        reduced objective of ``chosen``.

    Raises
    ------
    InfeasibleError
        When a memory row cannot hold whatever the choices.
    """
    return _Reducer(problem).run(eliminate)


class _Reducer:
    """The state of one reduction: node costs, pair matrices and factor tables being folded."""

    def __init__(self, problem: LevelProblem):
        self.problem = problem
        sizes = [len(c) for c in problem.choices]
        self.fixed = {i: 0 for i in range(len(sizes)) if sizes[i] == 1}
        self.red = ReducedProblem(sizes=sizes, fixed=self.fixed, free=[])
        self.lin = [np.array(problem.node_cost[i], dtype=float) for i in range(len(sizes))]
        self.pair: dict[tuple[int, int], np.ndarray] = {}
        self.fac: dict[tuple[int, ...], np.ndarray] = {}
        self.node_fac: dict[int, list[tuple[int, ...]]] = {}
        for (u, v), m in zip(problem.edges, problem.edge_cost):
            self.add_pair(u, v, np.asarray(m, dtype=float))

    def run(self, eliminate: bool) -> ReducedProblem:
        """Every reduction step, in order; returns the reduced problem."""
        groups = self.fold_groups()
        self.fold_factors()
        self.merge_nested_factors()
        self.groups_into_factors(groups)
        kept = self.fold_pairs()
        self.split_factors()
        pinned = self.memory_rows()          # in a group, factor or memory row: never eliminated
        for g in self.red.groups:
            pinned.update(g.nodes())
        for f in self.red.factors:
            pinned.update(f.nodes)
        if eliminate:
            self.red.eliminated = eliminate_nodes(self.lin, kept, pinned, self.fixed)
            self.red.eliminated_nodes = {e.node for e in self.red.eliminated}
        self.red.pairs = [(u, v, kept[(u, v)]) for (u, v) in sorted(kept)]
        involved = set(pinned)
        for u, v in kept:
            involved.update((u, v))
        self.settle_nodes(involved)
        return self.red

    def add_pair(self, u: int, v: int, m: np.ndarray) -> None:
        """Add the pair matrix ``m`` (rows: u's choices) to the pair (u, v)."""
        if u > v:
            u, v, m = v, u, m.T
        if (u, v) in self.pair:
            self.pair[(u, v)] = self.pair[(u, v)] + m
        else:
            self.pair[(u, v)] = np.array(m, dtype=float)

    # -- group terms ------------------------------------------------------------------------

    def fold_groups(self) -> list[ReducedGroup]:
        """Resolve constant anchors and members; one-node groups become node or pair costs.
        Returns the other groups, equal ones summed, in a deterministic order."""
        merged: dict[tuple, float] = {}
        for g in self.problem.groups:
            key = self._fold_group(g)
            if key is not None:
                merged[key] = merged.get(key, 0.0) + g.cost
        return [ReducedGroup(cost, list(members), anchor)
                for (anchor, members), cost in sorted(merged.items(), key=lambda kv: repr(kv[0]))]

    def _fold_group(self, g: GroupTerm) -> tuple | None:
        """Fold ``g`` into constants and costs if it needs no variable, else its merge key."""
        if g.cost == 0:
            return None
        anchor = g.anchor
        if anchor is not None and anchor[0] in self.fixed:
            if self.fixed[anchor[0]] != anchor[1]:
                return None                    # never charged
            anchor = None                      # always satisfied
        always, members = self._group_members(g, anchor)
        if always:
            if anchor is None:
                self.red.const += g.cost
            else:
                self.lin[anchor[0]][anchor[1]] += g.cost
            return None
        if not members:
            return None
        if len(members) == 1:
            self._fold_one_member_group(g.cost, anchor, members)
            return None
        return (anchor, tuple(sorted((v, tuple(sorted(ts))) for v, ts in members.items())))

    def _group_members(self, g: GroupTerm, anchor: tuple[int, int] | None
                       ) -> tuple[bool, dict[int, set[int]]]:
        """(whether a member always holds given the anchor, the member choices per node left)."""
        per_node: dict[int, set[int]] = {}
        for v, t in g.members:
            per_node.setdefault(v, set()).add(t)
        always = False
        members: dict[int, set[int]] = {}
        for v, ts in per_node.items():
            if v in self.fixed:
                always = always or self.fixed[v] in ts
            elif len(ts) == self.red.sizes[v]:
                always = True
            elif anchor is not None and v == anchor[0]:
                # When the anchor holds, node v takes the anchor's choice.
                always = always or anchor[1] in ts
            else:
                members[v] = ts
        return always, members

    def _fold_one_member_group(self, cost: float, anchor: tuple[int, int] | None,
                               members: dict[int, set[int]]) -> None:
        """A group with one member node: a node cost, or with an anchor a pair cost."""
        (v, ts), = members.items()
        if anchor is None:
            for t in ts:
                self.lin[v][t] += cost
            return
        sizes = self.red.sizes
        m = np.zeros((sizes[anchor[0]], sizes[v]))
        for t in ts:
            m[anchor[1], t] = cost
        self.add_pair(anchor[0], v, m)

    # -- factor terms -----------------------------------------------------------------------

    def fold_factors(self) -> None:
        """Slice fixed nodes out of each factor, nodes ascending; 0, 1 or 2 nodes left: a
        constant, a node cost or a pair cost. Tables over the same node set are summed."""
        for f in self.problem.factors:
            t = np.asarray(f.table, dtype=float)
            nodes = [int(v) for v in f.nodes]
            t = t[tuple(self.fixed[v] if v in self.fixed else slice(None) for v in nodes)]
            nodes = [v for v in nodes if v not in self.fixed]
            if not nodes:
                self.red.const += float(t)
                continue
            order = sorted(range(len(nodes)), key=lambda k: nodes[k])
            key = tuple(nodes[k] for k in order)
            t = np.transpose(t, order)
            if not np.any(t):
                continue
            if len(key) == 1:
                self.lin[key[0]] += t
            elif len(key) == 2:
                self.add_pair(key[0], key[1], t)
            elif key in self.fac:
                self.fac[key] = self.fac[key] + t
            else:
                self.fac[key] = np.array(t, dtype=float)

    def merge_nested_factors(self) -> None:
        """Sum a factor over a subset of another's nodes into the larger table; index the
        factors by node."""
        kept: dict[tuple[int, ...], np.ndarray] = {}
        for key in sorted(self.fac, key=lambda k: (-len(k), k)):
            into = next((k for k in kept if set(key) <= set(k)), None)
            if into is None:
                kept[key] = self.fac[key]
            else:
                kept[into] = kept[into] + on_nodes(self.fac[key], key, into)
        self.fac = kept
        for key in sorted(self.fac):
            for v in key:
                self.node_fac.setdefault(v, []).append(key)

    def holder(self, nodes: set[int]) -> tuple[int, ...] | None:
        """The first factor (by node tuple) whose nodes include ``nodes``."""
        v = min(nodes)
        return next((k for k in self.node_fac.get(v, ()) if nodes <= set(k)), None)

    def groups_into_factors(self, groups: list[ReducedGroup]) -> None:
        """Group terms whose nodes all lie in a factor become part of its table (exact,
        tighter); the others are kept as groups."""
        for g in groups:
            key = self.holder(g.nodes())
            if key is None:
                self.red.groups.append(g)
                continue
            grid = np.indices(self.fac[key].shape)
            pos = {v: k for k, v in enumerate(key)}
            active = np.zeros(self.fac[key].shape, dtype=bool)
            for v, ts in g.members:
                active |= np.isin(grid[pos[v]], ts)
            if g.anchor is not None:
                active &= grid[pos[g.anchor[0]]] == g.anchor[1]
            self.fac[key] = self.fac[key] + np.where(active, g.cost, 0.0)

    def split_factors(self) -> None:
        """Separable factor tables become node costs; the rest stay (>= 3 free nodes each)."""
        for key in sorted(self.fac):
            t = self.fac[key]
            if is_separable_table(t):
                fold_table_into_nodes(self.lin, key, t)
            else:
                self.red.factors.append(FactorTerm(key, t))

    # -- pairs, memory rows, nodes ----------------------------------------------------------

    def fold_pairs(self) -> dict[tuple[int, int], np.ndarray]:
        """Fold fixed ends, zero and separable matrices into node costs and pairs inside a
        factor into its table; returns the pairs kept, keyed ``(u, v)`` with ``u < v``."""
        fixed, lin = self.fixed, self.lin
        kept: dict[tuple[int, int], np.ndarray] = {}
        for (u, v) in sorted(self.pair):
            m = self.pair[(u, v)]
            if u in fixed and v in fixed:
                self.red.const += float(m[fixed[u], fixed[v]])
            elif u in fixed:
                lin[v] += m[fixed[u], :]
            elif v in fixed:
                lin[u] += m[:, fixed[v]]
            elif not np.any(m):
                continue
            elif is_separable(m):
                fold_pair_into_nodes(lin, u, v, m)
            elif (key := self.holder({u, v})) is not None:
                self.fac[key] = self.fac[key] + on_nodes(m, (u, v), key)   # tighter, joint
            else:
                kept[(u, v)] = m
        return kept

    def memory_rows(self) -> set[int]:
        """Move constants to the right-hand side and drop rows that always hold; returns the
        nodes in the rows kept.

        Raises InfeasibleError when a row's smallest possible use exceeds its capacity.
        """
        nodes: set[int] = set()
        for coef, cap in self.problem.memory:
            row, rhs = self._memory_row(coef, cap)
            worst = sum(float(np.max(c)) for c in row.values())
            if worst <= rhs:
                continue
            self.red.memory.append((row, rhs))
            nodes.update(row)
        return nodes

    def _memory_row(self, coef: list[np.ndarray], cap: float
                    ) -> tuple[dict[int, np.ndarray], float]:
        """One row over free nodes, each shifted to a zero minimum, and its right-hand side."""
        rhs = memory_limit(cap)
        row: dict[int, np.ndarray] = {}
        for i in range(len(self.red.sizes)):
            c = np.asarray(coef[i], dtype=float)
            if i in self.fixed:
                rhs -= float(c[self.fixed[i]])
                continue
            lo = float(np.min(c))
            rhs -= lo
            if np.any(c != lo):
                row[i] = c - lo
        if rhs < 0:
            raise InfeasibleError(
                f"memory capacity {cap:.6g} is below the smallest possible use "
                f"{cap - rhs:.6g} of the same row; raise the per-PE capacity")
        return row, rhs

    def settle_nodes(self, involved: set[int]) -> None:
        """Fixed nodes' costs into the constant; nodes touched by no pair, group or memory row
        take their cheapest choice; the rest become free with costs shifted to a zero minimum."""
        red, lin, fixed = self.red, self.lin, self.fixed
        for i in range(len(red.sizes)):
            if i in fixed:
                red.const += float(lin[i][fixed[i]])
            elif i in red.eliminated_nodes:
                continue
            elif i not in involved:
                fixed[i] = int(np.argmin(lin[i]))     # first minimum: lowest index on ties
                red.const += float(lin[i][fixed[i]])
            else:
                lo = float(np.min(lin[i]))
                red.const += lo
                red.lin[i] = lin[i] - lo
                red.free.append(i)
