"""Exact solvers of a :class:`~hypar.ilp.problem.LevelProblem` that need no ILP backend.

- :func:`solve_chain_dp`: dynamic programming over a chain, O(L*T^2) — the HyPar method.
- :func:`solve_brute_force`: every assignment, for checking the others on small graphs.

Both break ties the same way: the lowest objective, then the lexicographically smallest
assignment (node 0 most significant). Objectives within a relative 1e-12 of the best count as
ties, so the order in which floats are summed does not decide between equal plans.
"""

from __future__ import annotations

import math
import time

import numpy as np

from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.problem import LevelProblem, memory_limit
from hypar.ilp.solution import LevelSolution

#: Relative tolerance under which two objectives are considered equal (tie-breaking only).
TIE_RTOL = 1e-12


def check_problem(problem: LevelProblem) -> None:
    """Check that a problem is well formed before solving it.

    Parameters
    ----------
    problem : LevelProblem

    Raises
    ------
    ValueError
        When sizes disagree, an index is out of range, a cost is not finite, a group cost is
        negative (the ILP's "charged once" linearisation needs non-negative group costs), or a
        factor term repeats a node, has a table of the wrong shape, or a negative or non-finite
        entry.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a"], [("I", "II")], [np.array([1.0, 2.0])])
    >>> check_problem(p)
    """
    sizes = _check_nodes(problem)
    index = _Indices(sizes)
    _check_edges(problem, index)
    _check_groups(problem, index)
    _check_factors(problem, index)
    _check_memory(problem, sizes)


class _Indices:
    """Checks node and choice indices against a problem's choice counts."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes

    def node(self, i: int, what: str) -> None:
        """Raise ValueError (naming ``what``) unless ``i`` is a node index."""
        n = len(self.sizes)
        if not (isinstance(i, (int, np.integer)) and 0 <= i < n):
            raise ValueError(f"{what}: node index {i!r} is not in 0..{n - 1}")

    def choice(self, i: int, c: int, what: str) -> None:
        """Raise ValueError (naming ``what``) unless ``c`` is a choice index of node ``i``."""
        self.node(i, what)
        if not (isinstance(c, (int, np.integer)) and 0 <= c < self.sizes[i]):
            raise ValueError(f"{what}: choice {c!r} of node {i} is not in 0..{self.sizes[i] - 1}")


def _check_nodes(problem: LevelProblem) -> list[int]:
    """Check names, choices and node costs agree; returns the choice count per node."""
    n = len(problem.choices)
    if len(problem.names) != n or len(problem.node_cost) != n:
        raise ValueError(
            f"problem has {len(problem.names)} names, {n} choice lists and "
            f"{len(problem.node_cost)} node-cost arrays; give one of each per node")
    sizes = [len(c) for c in problem.choices]
    for i, (t, cost) in enumerate(zip(sizes, problem.node_cost)):
        if t == 0:
            raise ValueError(f"node {i} has no choice; give every node at least one")
        arr = np.asarray(cost, dtype=float)
        if arr.shape != (t,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"node {i}: node_cost must be {t} finite floats, got {cost!r}")
    return sizes


def _check_edges(problem: LevelProblem, index: _Indices) -> None:
    """Check each edge joins two distinct nodes with a finite matrix of the right shape."""
    if len(problem.edges) != len(problem.edge_cost):
        raise ValueError(f"{len(problem.edges)} edges but {len(problem.edge_cost)} edge-cost "
                         "matrices; give one matrix per edge")
    sizes = index.sizes
    for e, ((u, v), m) in enumerate(zip(problem.edges, problem.edge_cost)):
        index.node(u, f"edge {e}")
        index.node(v, f"edge {e}")
        if u == v:
            raise ValueError(f"edge {e} joins node {u} to itself; fold it into node_cost")
        arr = np.asarray(m, dtype=float)
        if arr.shape != (sizes[u], sizes[v]) or not np.all(np.isfinite(arr)):
            raise ValueError(f"edge {e} ({u}, {v}): cost must be a finite "
                             f"{sizes[u]}x{sizes[v]} matrix, got shape {arr.shape}")


def _check_groups(problem: LevelProblem, index: _Indices) -> None:
    """Check group costs are finite and non-negative, members and anchors valid choices."""
    for g, term in enumerate(problem.groups):
        if not (math.isfinite(term.cost) and term.cost >= 0):
            raise ValueError(f"group {g}: cost {term.cost!r} must be finite and non-negative")
        for v, t in term.members:
            index.choice(v, t, f"group {g} member")
        if term.anchor is not None:
            index.choice(term.anchor[0], term.anchor[1], f"group {g} anchor")


def _check_factors(problem: LevelProblem, index: _Indices) -> None:
    """Check factors have distinct valid nodes and a finite, non-negative table that fits."""
    for f, term in enumerate(problem.factors):
        nodes = tuple(term.nodes)
        if not nodes:
            raise ValueError(f"factor {f}: no node; give at least one (or fold it into a "
                             "constant)")
        for v in nodes:
            index.node(v, f"factor {f}")
        if len(set(int(v) for v in nodes)) != len(nodes):
            raise ValueError(f"factor {f}: nodes {nodes!r} repeat a node; give distinct nodes")
        arr = np.asarray(term.table, dtype=float)
        want = tuple(index.sizes[v] for v in nodes)
        if arr.shape != want:
            raise ValueError(f"factor {f} over nodes {nodes!r}: table shape {arr.shape} does "
                             f"not match the nodes' choice counts {want}")
        if not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
            raise ValueError(f"factor {f}: table entries must be finite and non-negative")


def _check_memory(problem: LevelProblem, sizes: list[int]) -> None:
    """Check each memory row has finite coefficients per node and choice, capacity not NaN."""
    n = len(sizes)
    for r, (coef, cap) in enumerate(problem.memory):
        if len(coef) != n:
            raise ValueError(f"memory row {r}: {len(coef)} coefficient arrays for {n} nodes")
        for i, (t, c) in enumerate(zip(sizes, coef)):
            arr = np.asarray(c, dtype=float)
            if arr.shape != (t,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"memory row {r}, node {i}: need {t} finite floats")
        if math.isnan(cap):
            raise ValueError(f"memory row {r}: capacity is NaN")


def _is_tie(value: float, best: float) -> bool:
    """True when ``value`` is within TIE_RTOL (relative) above ``best``."""
    return value <= best + TIE_RTOL * abs(best)


def solve_chain_dp(problem: LevelProblem) -> LevelSolution:
    """Solve a chain problem exactly by dynamic programming in O(L*T^2).

    Parameters
    ----------
    problem : LevelProblem
        Must satisfy ``problem.is_chain()``: edges (0,1), (1,2), ... only, no group terms, no
        factor terms and no memory rows.

    Returns
    -------
    LevelSolution
        status "optimal", backend "dp"; among equal-cost assignments the lexicographically
        smallest.

    Raises
    ------
    SolverError
        When the problem is not a chain (use the ILP: ``solve(problem, method="ilp")``).
    ValueError
        When the problem is malformed.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a", "b"], [("I", "II"), ("I", "II")],
    ...                  [np.array([0.0, 1.0]), np.array([3.0, 0.0])],
    ...                  edges=[(0, 1)], edge_cost=[np.array([[0.0, 2.0], [5.0, 4.0]])])
    >>> sol = solve_chain_dp(p)
    >>> sol.assignment, sol.objective
    ((0, 1), 2.0)
    """
    start = time.perf_counter()
    check_problem(problem)
    if not problem.is_chain():
        raise SolverError(
            "chain DP needs edges (0,1), (1,2), ... and no group terms, factor terms or "
            "memory rows; "
            "use the ILP for this problem (method='ilp')")
    n = len(problem.choices)
    if n == 0:
        return LevelSolution((), 0.0, "optimal", "dp", time.perf_counter() - start)
    mats = [None] * max(n - 1, 0)
    for (u, _v), m in zip(problem.edges, problem.edge_cost):
        mats[u] = np.asarray(m, dtype=float)
    node = [np.asarray(c, dtype=float) for c in problem.node_cost]
    # go[i][s]: best cost of nodes i..n-1 (and edges between them) given node i takes s.
    go: list[np.ndarray] = [None] * n  # type: ignore[list-item]
    go[n - 1] = node[n - 1].copy()
    for i in range(n - 2, -1, -1):
        go[i] = node[i] + np.min(mats[i] + go[i + 1][None, :], axis=1)
    assignment = []
    best = float(np.min(go[0]))
    prev = next(s for s in range(len(go[0])) if _is_tie(float(go[0][s]), best))
    assignment.append(prev)
    for i in range(n - 1):
        step = mats[i][prev] + go[i + 1]
        best = float(np.min(step))
        prev = next(t for t in range(len(step)) if _is_tie(float(step[t]), best))
        assignment.append(prev)
    result = tuple(assignment)
    return LevelSolution(result, problem.objective(result), "optimal", "dp",
                         time.perf_counter() - start)


def count_assignments(problem: LevelProblem) -> int:
    """Number of assignments of a problem (the product of the choice counts)."""
    return math.prod(len(c) for c in problem.choices)


def solve_brute_force(problem: LevelProblem, max_assignments: int = 200_000) -> LevelSolution:
    """Solve any problem exactly by evaluating every assignment (memory rows respected).

    Parameters
    ----------
    problem : LevelProblem
    max_assignments : int
        Refuse problems with more assignments than this.

    Returns
    -------
    LevelSolution
        status "optimal", backend "brute"; among equal-cost feasible assignments the
        lexicographically smallest.

    Raises
    ------
    SolverError
        When the problem has more than ``max_assignments`` assignments.
    InfeasibleError
        When no assignment satisfies the memory rows.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a"], [("I", "II")], [np.array([1.0, 1.0])])
    >>> solve_brute_force(p).assignment
    (0,)
    """
    start = time.perf_counter()
    check_problem(problem)
    total = count_assignments(problem)
    if total > max_assignments:
        raise SolverError(
            f"brute force would enumerate {total} assignments (limit {max_assignments}); "
            "use the ILP (method='ilp') or raise max_assignments")
    sizes = [len(c) for c in problem.choices]
    n = len(sizes)
    if n == 0:
        return LevelSolution((), 0.0, "optimal", "brute", time.perf_counter() - start)
    # All assignments in lexicographic order (node 0 most significant), one row each.
    grid = np.indices(sizes, dtype=np.int32).reshape(n, -1).T
    obj = _grid_objectives(problem, grid)
    feasible = _grid_feasible(problem, grid)
    if not feasible.any():
        raise InfeasibleError(
            "no assignment satisfies the memory rows; raise the per-PE capacity")
    obj = np.where(feasible, obj, np.inf)
    best = float(obj.min())
    k = int(np.argmax(obj <= best + TIE_RTOL * abs(best)))
    result = tuple(int(c) for c in grid[k])
    return LevelSolution(result, problem.objective(result), "optimal", "brute",
                         time.perf_counter() - start)


def _grid_objectives(problem: LevelProblem, grid: np.ndarray) -> np.ndarray:
    """The objective of every assignment, one per row of ``grid`` (rows: choice per node)."""
    obj = np.zeros(len(grid))
    for i in range(grid.shape[1]):
        obj += np.asarray(problem.node_cost[i], dtype=float)[grid[:, i]]
    for (u, v), m in zip(problem.edges, problem.edge_cost):
        obj += np.asarray(m, dtype=float)[grid[:, u], grid[:, v]]
    for g in problem.groups:
        active = np.zeros(len(grid), dtype=bool)
        for v, t in g.members:
            active |= grid[:, v] == t
        if g.anchor is not None:
            active &= grid[:, g.anchor[0]] == g.anchor[1]
        obj += np.where(active, g.cost, 0.0)
    for f in problem.factors:
        table = np.asarray(f.table, dtype=float)
        obj += table[tuple(grid[:, v] for v in f.nodes)]
    return obj


def _grid_feasible(problem: LevelProblem, grid: np.ndarray) -> np.ndarray:
    """Whether each assignment (a row of ``grid``) satisfies every memory row."""
    feasible = np.ones(len(grid), dtype=bool)
    for coef, cap in problem.memory:
        used = np.zeros(len(grid))
        for i in range(grid.shape[1]):
            used += np.asarray(coef[i], dtype=float)[grid[:, i]]
        feasible &= used <= memory_limit(cap)
    return feasible
