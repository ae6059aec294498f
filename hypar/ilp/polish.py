"""Local improvement of an assignment: a deterministic single-node descent towards lower
choice indices that never raises the objective (beyond float noise) and keeps every memory row.

It canonicalises equal-cost plans (whichever optimum a backend returns, the same plan comes
out) and improves a merely feasible one.
"""

from __future__ import annotations

from hypar.ilp.problem import LevelProblem, memory_limit

#: Relative rise of the objective that all equal-cost moves together may cause (float noise).
POLISH_RTOL = 1e-12
#: Passes over the nodes at most.
POLISH_PASSES = 3


class _LocalCost:
    """The part of a problem's objective that depends on one node, by incidence lists."""

    def __init__(self, problem: LevelProblem):
        self.problem = problem
        n = len(problem.choices)
        self.edges: list[list[int]] = [[] for _ in range(n)]
        for e, (u, v) in enumerate(problem.edges):
            self.edges[u].append(e)
            self.edges[v].append(e)
        self.groups: list[list[int]] = [[] for _ in range(n)]
        for k, g in enumerate(problem.groups):
            nodes = {v for v, _ in g.members}
            if g.anchor is not None:
                nodes.add(g.anchor[0])
            for v in nodes:
                self.groups[v].append(k)
        self.factors: list[list[int]] = [[] for _ in range(n)]
        for k, f in enumerate(problem.factors):
            for v in f.nodes:
                self.factors[v].append(k)

    def at(self, i: int, a: list[int]) -> float:
        """Node i's cost plus every edge, group and factor term touching i, under ``a``."""
        p = self.problem
        total = float(p.node_cost[i][a[i]])
        for e in self.edges[i]:
            u, v = p.edges[e]
            total += float(p.edge_cost[e][a[u], a[v]])
        for k in self.groups[i]:
            g = p.groups[k]
            if g.anchor is not None and a[g.anchor[0]] != g.anchor[1]:
                continue
            if any(a[v] == t for v, t in g.members):
                total += g.cost
        for k in self.factors[i]:
            f = p.factors[k]
            total += float(f.table[tuple(a[v] for v in f.nodes)])
        return total


class _MemoryUse:
    """Each memory row's use under the current assignment, updated move by move."""

    def __init__(self, problem: LevelProblem, assignment: list[int]):
        self.rows = problem.memory
        n = len(assignment)
        self.used = [sum(float(coef[i][assignment[i]]) for i in range(n))
                     for coef, _ in self.rows]

    def fits(self, i: int, current: int, c: int) -> bool:
        """True when moving node i from ``current`` to ``c`` keeps every row within capacity."""
        return all(
            self.used[r] - float(coef[i][current]) + float(coef[i][c]) <= memory_limit(cap)
            for r, (coef, cap) in enumerate(self.rows))

    def move(self, i: int, current: int, c: int) -> None:
        """Record that node i moved from ``current`` to ``c``."""
        for r, (coef, _) in enumerate(self.rows):
            self.used[r] += float(coef[i][c]) - float(coef[i][current])


def polish(problem: LevelProblem, assignment: list[int], movable: list[int]) -> list[int]:
    """Move single nodes to lower choice indices while the objective does not rise.

    Parameters
    ----------
    problem : LevelProblem
    assignment : list of int
        A feasible assignment; changed in place and returned.
    movable : list of int
        The nodes that may move, in the order they are tried.

    Returns
    -------
    list of int
        ``assignment``, polished: never worse than ``POLISH_RTOL`` relative, memory rows kept.
    """
    cost = _LocalCost(problem)
    memory = _MemoryUse(problem, assignment)
    # Equal-cost moves may raise the objective by float noise; cap the total rise.
    budget = POLISH_RTOL * abs(problem.objective(assignment))
    for _ in range(POLISH_PASSES):
        changed = False
        for i in movable:
            current = assignment[i]
            if current == 0:
                continue
            base = cost.at(i, assignment)
            for c in range(current):
                assignment[i] = c
                delta = cost.at(i, assignment) - base
                if memory.fits(i, current, c) and delta <= budget:
                    budget -= max(delta, 0.0)
                    memory.move(i, current, c)
                    changed = True
                    break
                assignment[i] = current
        if not changed:
            break
    return assignment
