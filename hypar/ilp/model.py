"""The PuLP model of a :class:`~hypar.ilp.reduce.ReducedProblem` (SPEC §5), minimised:

- ``x_i_c`` binary, one-hot per free node (``sum_c x_i_c = 1``).
- ``y_u_v_s_t`` in [0, 1] per pair cost, with the marginal constraints ``sum_t y = x_u_s`` and
  ``sum_s y = x_v_t`` (the last column's is implied); the one-hots make them integral.
- Group terms, members grouped per node (``m_v = sum of x_v_t over the member choices of v``):
  without an anchor ``w_g >= m_v`` and the cost on ``w_g``; with an anchor ``(a, s)``,
  ``z_g >= sum_{t in member choices} y_a_v_s_t`` (pair variables are added for the anchor and
  each member node when no cost links them) and the cost on ``z_g`` -- as tight as the
  pairwise linearisation, where ``z_g >= x_a_s + m_v - 1`` is weak.
- Factor terms, the local-polytope linearisation: ``q_f_j`` in [0, 1] per joint entry ``j`` of
  the table, with ``sum_{j: j[n] = t} q_f_j = x_n_t`` for each member node n and choice t and
  the cost ``table[j]`` on ``q_f_j``. With one-hot binary x the marginals force q to the
  indicator of the chosen joint entry, so the model is exact.
- Memory rows ``sum coef * x <= rhs``, each scaled so that its largest coefficient is 1.

Variables are named by index only. The objective is scaled so that its largest coefficient
is 1 (``model objective * scale + reduced const = problem objective``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pulp

from hypar.ilp.arrays import objective_scale, pairs_with_anchor_links
from hypar.ilp.exact import check_problem
from hypar.ilp.problem import LevelProblem
from hypar.ilp.reduce import ReducedGroup, ReducedProblem, reduce_problem

#: (variable, coefficient) terms of a linear expression.
Terms = list[tuple[pulp.LpVariable, float]]


@dataclass
class BuiltModel:
    """A model and its variables by role, to read a solution back or set a start."""

    lp: pulp.LpProblem
    x: dict[int, list[pulp.LpVariable]]                               # node -> one per choice
    y: list[tuple[int, int, list[list[pulp.LpVariable]]]]             # u, v, [s][t]
    q: list[tuple[tuple[int, ...], tuple[int, ...], list[pulp.LpVariable]]]   # nodes, shape, flat
    aux: list[tuple[ReducedGroup, pulp.LpVariable]]                  # w_g or z_g per group
    n_variables: int
    n_constraints: int
    scale: float = 1.0            # model objective * scale + reduced const = problem objective

    def chosen(self) -> dict[int, int]:
        """Each free node's choice in the solved model (its largest x; the first on ties)."""
        return {i: int(np.argmax([v.varValue or 0.0 for v in xs])) for i, xs in self.x.items()}

    def set_start(self, assignment: tuple[int, ...]) -> None:
        """Give every variable the value it takes under ``assignment`` (a warm start)."""
        for i, xs in self.x.items():
            for c, var in enumerate(xs):
                var.setInitialValue(1.0 if assignment[i] == c else 0.0)
        for u, v, ys in self.y:
            for s, row in enumerate(ys):
                for t, var in enumerate(row):
                    var.setInitialValue(1.0 if (assignment[u], assignment[v]) == (s, t) else 0.0)
        for nodes, shape, qs in self.q:
            on = int(np.ravel_multi_index(tuple(assignment[v] for v in nodes), shape))
            for j, var in enumerate(qs):
                var.setInitialValue(1.0 if j == on else 0.0)
        for g, var in self.aux:
            on = any(assignment[v] in ts for v, ts in g.members)
            if g.anchor is not None:
                on = on and assignment[g.anchor[0]] == g.anchor[1]
            var.setInitialValue(1.0 if on else 0.0)


def build_model(red: ReducedProblem) -> BuiltModel:
    """The model of a reduced problem (variables and rows in a fixed, deterministic order)."""
    return _ModelBuilder(red).build()


def build_ilp(problem: LevelProblem, eliminate: bool = True) -> pulp.LpProblem:
    """The PuLP model :func:`hypar.ilp.solve.solve_ilp` would solve (after its exact
    reductions), unsolved.

    For inspection and debugging, e.g. ``build_ilp(p).writeLP("level.lp")``. Constant parts
    (single-choice nodes, folded costs) are not in the model's objective.

    Raises
    ------
    ValueError
        When the problem is malformed.
    InfeasibleError
        When a memory row cannot hold whatever the choices.
    """
    check_problem(problem)
    return build_model(reduce_problem(problem, eliminate)).lp


def _digits(count: int) -> int:
    """Digits of the largest index below ``count`` (at least 1): the zero-padding of names."""
    return len(str(max(count - 1, 0)))


class _ModelBuilder:
    """The model under construction: the problem, its objective terms and rows so far."""

    def __init__(self, red: ReducedProblem):
        self.red = red
        self.lp = pulp.LpProblem("level", pulp.LpMinimize)
        self.width = _digits(len(red.sizes))
        self.scale = objective_scale(red)
        self.obj: Terms = []
        self.n_constraints = 0
        self.x: dict[int, list[pulp.LpVariable]] = {}
        self.ypos: dict[tuple[int, int], list[list[pulp.LpVariable]]] = {}

    def build(self) -> BuiltModel:
        """Every part in order: one-hots, pairs, factors, groups, memory rows, objective."""
        self.add_one_hots()
        y = self.add_pairs()
        q = self.add_factors()
        aux = self.add_groups()
        self.add_memory_rows()
        self.lp.setObjective(pulp.LpAffineExpression(self.obj))
        n_vars = sum(len(v) for v in self.x.values()) \
            + sum(len(ys) * len(ys[0]) for _, _, ys in y) \
            + len(aux) + sum(len(qs) for _, _, qs in q)
        return BuiltModel(self.lp, self.x, y, q, aux, n_vars, self.n_constraints, self.scale)

    def var(self, name: str, low: float, up: float,
            cat: str = pulp.LpContinuous) -> pulp.LpVariable:
        """A new variable of the model."""
        if hasattr(self.lp, "add_variable"):               # PuLP >= 3.3
            return self.lp.add_variable(name, low, up, cat=cat)
        return pulp.LpVariable(name, low, up, cat)

    def row(self, terms: Terms, sense: int, rhs: float) -> None:
        """Add the row ``terms sense rhs`` (sense: a pulp.LpConstraint* value)."""
        self.lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, rhs=rhs))
        self.n_constraints += 1

    def cost(self, var: pulp.LpVariable, value: float) -> None:
        """Put ``value`` (problem units) on ``var`` in the scaled objective."""
        self.obj.append((var, value / self.scale))

    def add_one_hots(self) -> None:
        """x per free node and choice, its costs, and ``sum_c x_i_c = 1``."""
        red, w = self.red, self.width
        for i in red.free:
            xs = [self.var(f"x_{i:0{w}d}_{c}", 0, 1, pulp.LpBinary) for c in range(red.sizes[i])]
            self.x[i] = xs
            for c in range(len(xs)):
                if red.lin[i][c] != 0:
                    self.cost(xs[c], float(red.lin[i][c]))
            self.row([(v, 1.0) for v in xs], pulp.LpConstraintEQ, 1.0)

    def add_pairs(self) -> list[tuple[int, int, list[list[pulp.LpVariable]]]]:
        """y per pair and joint choice, its costs, and the marginal rows; returns the y."""
        w = self.width
        y = []
        for u, v, m in pairs_with_anchor_links(self.red):
            tu, tv = m.shape
            ys = [[self.var(f"y_{u:0{w}d}_{v:0{w}d}_{s}_{t}", 0, 1) for t in range(tv)]
                  for s in range(tu)]
            y.append((u, v, ys))
            self.ypos[(u, v)] = ys
            for s in range(tu):
                for t in range(tv):
                    if m[s, t] != 0:
                        self.cost(ys[s][t], float(m[s, t]))
            for s in range(tu):
                terms = [(ys[s][t], 1.0) for t in range(tv)] + [(self.x[u][s], -1.0)]
                self.row(terms, pulp.LpConstraintEQ, 0.0)
            for t in range(tv - 1):                  # the last column's marginal is implied
                terms = [(ys[s][t], 1.0) for s in range(tu)] + [(self.x[v][t], -1.0)]
                self.row(terms, pulp.LpConstraintEQ, 0.0)
        return y

    def add_factors(self) -> list[tuple[tuple[int, ...], tuple[int, ...], list[pulp.LpVariable]]]:
        """q per factor and joint entry, its costs, and marginals on every member node (the
        first node's full set sums q to 1; for the others the last choice's is implied)."""
        q = []
        fwidth = _digits(len(self.red.factors))
        for k, f in enumerate(self.red.factors):
            nodes, t = f.nodes, f.table
            flat = t.ravel()
            jwidth = _digits(flat.size)
            qs = [self.var(f"q_{k:0{fwidth}d}_{j:0{jwidth}d}", 0, 1) for j in range(flat.size)]
            q.append((nodes, t.shape, qs))
            for j in range(flat.size):
                if flat[j] != 0:
                    self.cost(qs[j], float(flat[j]))
            grid = np.indices(t.shape).reshape(len(nodes), -1)
            for a, v in enumerate(nodes):
                for c in range(t.shape[a] - (1 if a else 0)):
                    terms = [(qs[j], 1.0) for j in np.flatnonzero(grid[a] == c)]
                    self.row(terms + [(self.x[v][c], -1.0)], pulp.LpConstraintEQ, 0.0)
        return q

    def add_groups(self) -> list[tuple[ReducedGroup, pulp.LpVariable]]:
        """w (no anchor) or z (anchored) per group, its cost, and one bound row per member
        node; returns the (group, variable) pairs."""
        aux = []
        gwidth = _digits(len(self.red.groups))
        for k, g in enumerate(self.red.groups):
            name = "z" if g.anchor is not None else "w"
            var = self.var(f"{name}_{k:0{gwidth}d}", 0, 1)
            aux.append((g, var))
            self.cost(var, g.cost)
            for v, ts in g.members:
                self.row([(var, 1.0)] + self._member_terms(g, v, ts), pulp.LpConstraintGE, 0.0)
        return aux

    def _member_terms(self, g: ReducedGroup, v: int, ts: tuple[int, ...]) -> Terms:
        """``-(the member indicator of node v)``: its x, or with an anchor its pair y."""
        if g.anchor is None:
            return [(self.x[v][t], -1.0) for t in ts]
        a, s_ = g.anchor
        if (a, v) in self.ypos:
            return [(self.ypos[(a, v)][s_][t], -1.0) for t in ts]
        return [(self.ypos[(v, a)][t][s_], -1.0) for t in ts]

    def add_memory_rows(self) -> None:
        """One row per memory constraint, divided by its largest coefficient."""
        for row, rhs in self.red.memory:
            top = max(float(np.max(c)) for c in row.values())
            terms = [(self.x[i][c], float(coef[c]) / top)
                     for i, coef in sorted(row.items()) for c in range(len(coef)) if coef[c] != 0]
            self.row(terms, pulp.LpConstraintLE, rhs / top)
