"""Integer linear program of one level (SPEC §5), solved with PuLP. The only module importing pulp.

Formulation (minimise; every group cost is non-negative):

- ``x_i_c`` binary, one-hot per node (``sum_c x_i_c = 1``). A node with one choice is a constant
  and gets no variable; so is a node that touches nothing but its own costs (it takes its
  cheapest choice directly).
- ``y_u_v_s_t`` in [0, 1] per pair of nodes joined by a cost matrix that is neither zero nor
  additively separable (``M[s,t] = a[s] + b[t]``, folded into node costs), with the marginal
  constraints ``sum_t y = x_u_s`` and ``sum_s y = x_v_t``; the one-hots make them integral.
  Parallel edges are merged first.
- Group terms ("charged once if any member is active"), members grouped per node
  (``m_v = sum of x_v_t over the member choices of v``): without an anchor ``w_g >= m_v`` and the
  cost on ``w_g``; with an anchor ``(a, s)``, ``z_g >= sum_{t in member choices} y_a_v_s_t`` (pair
  variables are added for the anchor and each member node when no cost links them) and the cost
  on ``z_g`` -- as tight as the pairwise linearisation, where ``z_g >= x_a_s + m_v - 1`` is weak.
  A group with one member node and no anchor is a node cost; with an anchor, a pair cost.
- Factor terms (a cost table over the joint choice of k nodes), the local-polytope
  linearisation: ``q_f_j`` in [0, 1] per joint entry ``j`` of the table, with the marginal
  constraints ``sum_{j: j[n] = t} q_f_j = x_n_t`` for each member node n and choice t, and the
  cost ``table[j]`` on ``q_f_j``. With one-hot binary x the marginals force q to the indicator
  of the chosen joint entry, so the model is exact. Fixed (single-choice) nodes are sliced out
  of the table first; a factor left with no node is a constant, with one a node cost, with two
  a pair cost, and an additively separable table becomes node costs. Factors over the same or
  a smaller node set are summed into one table, and so are pair costs and group terms whose
  nodes all lie in a factor: one joint table per node set is the tightest LP over those nodes.
- Memory rows ``sum coef * x <= capacity`` (constant parts moved to the right-hand side).

Exact shrinking before the model is built (``eliminate=True``, the default): nodes in no group
term, factor term and no memory row whose pair-degree is 1 (leaves) or 2 (series) are eliminated as a DP
would, so chains, trees and residual blocks need no ILP at all; their choices are restored
after the solve.

Solver variables are named by index only. The objective handed to the backend is scaled so
that its largest coefficient is 1; the reported objective is always recomputed exactly with
:meth:`LevelProblem.objective`, and equal-cost plans are canonicalised by a deterministic
single-node descent towards lower choice indices.

HiGHS runs in process; the model is passed in bulk and the LP relaxation is tried first (it
is integral, hence optimal, on most real levels). Measured on a loaded 2-core box: a fork costs
5-15 ms against 2-4 ms for a small in-process solve, so the default is in process, and a forked
child (killed at the time limit plus a margin, the hard wall-clock stop) is used only when the
time limit is short for the model's size, or when asked (``isolate=True``).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pulp

from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import check_problem, solve_brute_force, solve_chain_dp
from hypar.ilp.problem import LevelProblem
from hypar.ilp.solution import LevelSolution

#: hypar backend name -> PuLP solver name.
BACKENDS = {"highs": "HiGHS", "cbc": "PULP_CBC_CMD"}

#: HiGHS: try the LP relaxation first (exact when it comes out integral; see _HiGHS).
_LP_FIRST = True

_SEPARABLE_RTOL = 1e-12
_MEMORY_RTOL = 1e-12  # same slack as LevelProblem.feasible


# ---------------------------------------------------------------------------------------------
# Backends

@functools.lru_cache(maxsize=1)
def _installed() -> tuple[str, ...]:
    return tuple(pulp.listSolvers(onlyAvailable=True))


def available_backends() -> list[str]:
    """Names of the ILP backends that can run here, in preference order.

    Examples
    --------
    >>> "highs" in available_backends()
    True
    """
    found = set(_installed())
    names = []
    if "HiGHS" in found:
        names.append("highs")
    if "PULP_CBC_CMD" in found or "COIN_CMD" in found:
        names.append("cbc")
    return names


def _backend_error(backend: str, why: str) -> SolverError:
    installed = list(_installed())
    return SolverError(
        f"ILP backend {backend!r} {why}; hypar backends are {sorted(BACKENDS)}, "
        f"installed PuLP solvers: {installed or 'none'}; "
        "install HiGHS with `pip install highspy` (CBC comes with `pip install pulp`)")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise _backend_error(backend, "is unknown")
    if backend not in available_backends():
        raise _backend_error(backend, "is not available")


class _HiGHS(pulp.HiGHS):  # type: ignore[misc,valid-type]
    """pulp.HiGHS with a bulk model transfer, an LP-first pass and an optional warm start.

    - The model goes to highspy as whole arrays (PuLP's own glue adds one column at a time).
    - LP first: the relaxation is solved (no presolve) and, when every integer variable comes
      out integral, that vertex is optimal for the ILP as well — true for every chain and tree,
      where the marginal (local) polytope is integral. Otherwise the MIP runs as usual.
    - ``warm_start``: the values set on the variables (``setInitialValue``) seed the MIP.

    Status is reported like PuLP's HiGHS: (Optimal, Optimal) when proven; (Optimal,
    IntegerFeasible) when stopped with a plan; (NotSolved, NoSolutionFound) otherwise.
    """

    def __init__(self, *args, warm_start: bool = False, lp_first: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.warm_start = warm_start
        self.lp_first = lp_first
        self.lp_first_integral: bool | None = None       # for inspection and tests
        self.error: str | None = None                    # why HiGHS gave up, if it failed

    def actualSolve(self, lp, **kwargs):  # noqa: N802 - PuLP's name
        # HiGHS's thread pool is process-global: one HiGHS solve at a time per process.
        with _HIGHS_LOCK:
            return self._solve_locked(lp)

    def _solve_locked(self, lp):
        import highspy

        started = time.perf_counter()
        _use_highs_threads(self.threads or 1)
        self.createAndConfigureSolver(lp)
        h = lp.solverModel
        inf = highspy.kHighsInf
        variables = lp.variables()
        for k, var in enumerate(variables):
            var.index = k
        n = len(variables)
        cost = np.array([lp.objective.get(var, 0.0) for var in variables], dtype=float)
        lower = np.array([-inf if v.lowBound is None else v.lowBound for v in variables], float)
        upper = np.array([inf if v.upBound is None else v.upBound for v in variables], float)
        h.addCols(n, cost, lower, upper, 0, np.zeros(n, np.int32), np.zeros(0, np.int32),
                  np.zeros(0, float))
        row_lo, row_up, starts, index, value = [], [], [], [], []
        for k, con in enumerate(lp._constraints.values()):
            con.index = k
            starts.append(len(index))
            for var, coef in con.items():
                if coef != 0:
                    index.append(var.index)
                    value.append(coef)
            lb, ub = con.getLb(), con.getUb()
            row_lo.append(-inf if lb is None else lb)
            row_up.append(inf if ub is None else ub)
        h.addRows(len(row_lo), np.array(row_lo, float), np.array(row_up, float), len(index),
                  np.array(starts, np.int32), np.array(index, np.int32), np.array(value, float))
        ints = np.array([v.index for v in variables if v.cat == pulp.LpInteger], np.int32)
        model = highspy.HighsModelStatus
        if self.lp_first and len(ints):
            h.setOptionValue("presolve", "off")
            if h.run() == highspy.HighsStatus.kError:
                self.error = h.modelStatusToString(h.getModelStatus())
                return self._finish(lp, variables, None, pulp.LpStatusNotSolved,
                                    pulp.LpSolutionNoSolutionFound)
            if h.getModelStatus() == model.kOptimal:
                col = np.asarray(h.getSolution().col_value)
                self.lp_first_integral = bool(
                    np.all(np.abs(col[ints] - np.round(col[ints])) <= 1e-9))
                if self.lp_first_integral:
                    return self._finish(lp, variables, col, pulp.LpStatusOptimal,
                                        pulp.LpSolutionOptimal)
            elif h.getModelStatus() in (model.kInfeasible, model.kUnboundedOrInfeasible):
                return self._finish(lp, variables, None, pulp.LpStatusInfeasible,
                                    pulp.LpSolutionInfeasible)
            h.setOptionValue("presolve", "choose")
            if self.timeLimit is not None:
                left = self.timeLimit - (time.perf_counter() - started)
                h.setOptionValue("time_limit", max(left, 1e-3))
        if len(ints):
            h.changeColsIntegrality(len(ints), ints,
                                    np.full(len(ints), highspy.HighsVarType.kInteger.value,
                                            np.uint8))
        if self.warm_start:
            start = np.array([v.varValue if v.varValue is not None else 0.0
                              for v in variables], float)
            h.setSolution(n, np.arange(n, dtype=np.int32), start)
        if h.run() == highspy.HighsStatus.kError:
            self.error = h.modelStatusToString(h.getModelStatus())
        status = h.getModelStatus()
        has_plan = h.getInfo().primal_solution_status == 2        # kSolutionStatusFeasible
        col = np.asarray(h.getSolution().col_value) if has_plan else None
        if status == model.kOptimal:
            return self._finish(lp, variables, col, pulp.LpStatusOptimal, pulp.LpSolutionOptimal)
        if status in (model.kInfeasible, model.kUnboundedOrInfeasible):
            return self._finish(lp, variables, None, pulp.LpStatusInfeasible,
                                pulp.LpSolutionInfeasible)
        if has_plan:
            return self._finish(lp, variables, col, pulp.LpStatusOptimal,
                                pulp.LpSolutionIntegerFeasible)
        return self._finish(lp, variables, None, pulp.LpStatusNotSolved,
                            pulp.LpSolutionNoSolutionFound)

    @staticmethod
    def _finish(lp, variables, col, status, sol_status):
        for k, var in enumerate(variables):
            var.varValue = None if col is None else float(col[k])
        lp.assignStatus(status, sol_status)
        return status


def _make_solver(backend: str, time_limit: float, gap: float, threads: int, warm: bool,
                 tmp_dir: str | None = None):
    if backend == "highs":
        return _HiGHS(msg=False, timeLimit=time_limit, gapRel=gap, gapAbs=1e-9,
                      threads=threads, warm_start=warm, lp_first=_LP_FIRST, random_seed=0)
    found = _installed()
    kwargs = dict(msg=False, timeLimit=time_limit, gapRel=gap, gapAbs=1e-9, threads=threads,
                  warmStart=warm, options=["randomSeed 1", "randomCbcSeed 1"])
    if "COIN_CMD" in found:
        cbc = pulp.COIN_CMD(**kwargs)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cbc = pulp.PULP_CBC_CMD(**kwargs)
    if tmp_dir is not None:
        cbc.tmpDir = tmp_dir          # a killed run leaves its files here; the caller removes it
    return cbc


# ---------------------------------------------------------------------------------------------
# Reduction: an equivalent, smaller model

@dataclass
class _Group:
    cost: float
    members: list[tuple[int, tuple[int, ...]]]   # (free node, member choices), node ascending
    anchor: tuple[int, int] | None


@dataclass
class _Reduced:
    """The problem with constants folded out. Objective = const + the free part."""

    sizes: list[int]
    fixed: dict[int, int]                         # node -> choice, no variable
    free: list[int]                               # nodes with variables, ascending
    const: float = 0.0
    lin: dict[int, np.ndarray] = field(default_factory=dict)        # free node -> costs
    pairs: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # u < v, both free
    groups: list[_Group] = field(default_factory=list)
    factors: list[tuple[tuple[int, ...], np.ndarray]] = field(default_factory=list)  # >= 3 free
    memory: list[tuple[dict[int, np.ndarray], float]] = field(default_factory=list)
    # (node, neighbours, best choice per neighbour choices), in elimination order
    eliminated: list[tuple[int, tuple[int, ...], np.ndarray]] = field(default_factory=list)
    eliminated_nodes: set[int] = field(default_factory=set)


def _is_separable(m: np.ndarray) -> bool:
    resid = m - m[:, :1] - m[:1, :] + m[0, 0]
    scale = float(np.max(np.abs(m)))
    return bool(np.all(np.abs(resid) <= _SEPARABLE_RTOL * scale))


def _is_separable_table(t: np.ndarray) -> bool:
    """True when ``t[j] = sum_a g_a(j[a])`` (within the relative tolerance)."""
    k = t.ndim
    resid = t + (k - 1) * t[(0,) * k]
    for a in range(k):
        resid = resid - _axis_slice(t, a)
    scale = float(np.max(np.abs(t)))
    return bool(np.all(np.abs(resid) <= _SEPARABLE_RTOL * scale))


def _axis_slice(t: np.ndarray, a: int) -> np.ndarray:
    """``t`` at index 0 on every axis but ``a``, shaped to broadcast against ``t``."""
    idx = tuple(slice(None) if b == a else slice(0, 1) for b in range(t.ndim))
    return t[idx]


def _on_nodes(t: np.ndarray, nodes: tuple[int, ...], into: tuple[int, ...]) -> np.ndarray:
    """A table over ``nodes`` (ascending, a subset of ``into``) shaped to broadcast over ``into``."""
    shape = [1] * len(into)
    pos = {v: k for k, v in enumerate(into)}
    for v, size in zip(nodes, t.shape):
        shape[pos[v]] = size
    return t.reshape(shape)


def _reduce(problem: LevelProblem, eliminate: bool = True) -> _Reduced:
    """Fold everything that needs no variable into constants and node costs (exactly)."""
    sizes = [len(c) for c in problem.choices]
    n = len(sizes)
    fixed = {i: 0 for i in range(n) if sizes[i] == 1}
    red = _Reduced(sizes=sizes, fixed=fixed, free=[])
    lin = [np.array(problem.node_cost[i], dtype=float) for i in range(n)]
    pair: dict[tuple[int, int], np.ndarray] = {}

    def add_pair(u: int, v: int, m: np.ndarray) -> None:
        if u > v:
            u, v, m = v, u, m.T
        if (u, v) in pair:
            pair[(u, v)] = pair[(u, v)] + m
        else:
            pair[(u, v)] = np.array(m, dtype=float)

    for (u, v), m in zip(problem.edges, problem.edge_cost):
        add_pair(u, v, np.asarray(m, dtype=float))

    # Groups: constant anchors and members resolved, single-node groups become node/pair costs.
    merged: dict[tuple, float] = {}
    for g in problem.groups:
        if g.cost == 0:
            continue
        anchor = g.anchor
        if anchor is not None and anchor[0] in fixed:
            if fixed[anchor[0]] != anchor[1]:
                continue                       # never charged
            anchor = None                      # always satisfied
        per_node: dict[int, set[int]] = {}
        for v, t in g.members:
            per_node.setdefault(v, set()).add(t)
        always = False
        members: dict[int, set[int]] = {}
        for v, ts in per_node.items():
            if v in fixed:
                always = always or fixed[v] in ts
            elif len(ts) == sizes[v]:
                always = True
            elif anchor is not None and v == anchor[0]:
                # When the anchor holds, node v takes the anchor's choice.
                always = always or anchor[1] in ts
            else:
                members[v] = ts
        if always:
            if anchor is None:
                red.const += g.cost
            else:
                lin[anchor[0]][anchor[1]] += g.cost
            continue
        if not members:
            continue
        if len(members) == 1:
            (v, ts), = members.items()
            if anchor is None:
                for t in ts:
                    lin[v][t] += g.cost
            else:
                m = np.zeros((sizes[anchor[0]], sizes[v]))
                for t in ts:
                    m[anchor[1], t] = g.cost
                add_pair(anchor[0], v, m)
            continue
        key = (anchor, tuple(sorted((v, tuple(sorted(ts))) for v, ts in members.items())))
        merged[key] = merged.get(key, 0.0) + g.cost
    groups = [_Group(cost, list(members), anchor)
              for (anchor, members), cost in sorted(merged.items(), key=lambda kv: repr(kv[0]))]

    # Factors: fixed nodes sliced out, nodes ascending; 0, 1 or 2 nodes left: a constant, a node
    # cost or a pair cost. Tables over the same node set are summed.
    fac: dict[tuple[int, ...], np.ndarray] = {}
    for f in problem.factors:
        t = np.asarray(f.table, dtype=float)
        nodes = [int(v) for v in f.nodes]
        t = t[tuple(fixed[v] if v in fixed else slice(None) for v in nodes)]
        nodes = [v for v in nodes if v not in fixed]
        if not nodes:
            red.const += float(t)
            continue
        order = sorted(range(len(nodes)), key=lambda k: nodes[k])
        key = tuple(nodes[k] for k in order)
        t = np.transpose(t, order)
        if not np.any(t):
            continue
        if len(key) == 1:
            lin[key[0]] += t
        elif len(key) == 2:
            add_pair(key[0], key[1], t)
        elif key in fac:
            fac[key] = fac[key] + t
        else:
            fac[key] = np.array(t, dtype=float)
    # A factor over a subset of another's nodes is summed into the larger table.
    kept_fac: dict[tuple[int, ...], np.ndarray] = {}
    for key in sorted(fac, key=lambda k: (-len(k), k)):
        into = next((k for k in kept_fac if set(key) <= set(k)), None)
        if into is None:
            kept_fac[key] = fac[key]
        else:
            kept_fac[into] = kept_fac[into] + _on_nodes(fac[key], key, into)
    fac = kept_fac
    node_fac: dict[int, list[tuple[int, ...]]] = {}
    for key in sorted(fac):
        for v in key:
            node_fac.setdefault(v, []).append(key)

    def holder(nodes: set[int]) -> tuple[int, ...] | None:
        """The first factor (by node tuple) whose nodes include ``nodes``."""
        v = min(nodes)
        return next((k for k in node_fac.get(v, ()) if nodes <= set(k)), None)

    # Group terms whose nodes all lie in a factor become part of its table (exact, tighter).
    for g in groups:
        nodes = {v for v, _ in g.members} | ({g.anchor[0]} if g.anchor is not None else set())
        key = holder(nodes)
        if key is None:
            red.groups.append(g)
            continue
        grid = np.indices(fac[key].shape)
        pos = {v: k for k, v in enumerate(key)}
        active = np.zeros(fac[key].shape, dtype=bool)
        for v, ts in g.members:
            active |= np.isin(grid[pos[v]], ts)
        if g.anchor is not None:
            active &= grid[pos[g.anchor[0]]] == g.anchor[1]
        fac[key] = fac[key] + np.where(active, g.cost, 0.0)

    # Pairs: fold fixed ends, zero and separable matrices into node costs.
    kept: dict[tuple[int, int], np.ndarray] = {}
    for (u, v) in sorted(pair):
        m = pair[(u, v)]
        if u in fixed and v in fixed:
            red.const += float(m[fixed[u], fixed[v]])
        elif u in fixed:
            lin[v] += m[fixed[u], :]
        elif v in fixed:
            lin[u] += m[:, fixed[v]]
        elif not np.any(m):
            continue
        elif _is_separable(m):
            lin[u] += m[:, 0]
            lin[v] += m[0, :] - m[0, 0]
        elif (key := holder({u, v})) is not None:
            fac[key] = fac[key] + _on_nodes(m, (u, v), key)   # tighter inside the joint table
        else:
            kept[(u, v)] = m

    # Separable factor tables are node costs; the rest stay (>= 3 free nodes each).
    for key in sorted(fac):
        t = fac[key]
        if _is_separable_table(t):
            t0 = float(t[(0,) * t.ndim])
            for a, v in enumerate(key):
                lin[v] += _axis_slice(t, a).ravel() - (t0 if a else 0.0)
        else:
            red.factors.append((key, t))

    # Memory rows: constants to the right-hand side; drop rows that always hold.
    pinned: set[int] = set()            # in a group or memory row: never eliminated
    for coef, cap in problem.memory:
        rhs = cap + abs(cap) * _MEMORY_RTOL
        row: dict[int, np.ndarray] = {}
        for i in range(n):
            c = np.asarray(coef[i], dtype=float)
            if i in fixed:
                rhs -= float(c[fixed[i]])
                continue
            lo = float(np.min(c))
            rhs -= lo
            if np.any(c != lo):
                row[i] = c - lo
        worst = sum(float(np.max(c)) for c in row.values())
        if rhs < 0:
            raise InfeasibleError(
                f"memory capacity {cap:.6g} is below the smallest possible use "
                f"{cap - rhs:.6g} of the same row; raise the per-PE capacity")
        if worst <= rhs:
            continue
        red.memory.append((row, rhs))
        pinned.update(row)
    for g in red.groups:
        pinned.update(v for v, _ in g.members)
        if g.anchor is not None:
            pinned.add(g.anchor[0])
    for key, _ in red.factors:
        pinned.update(key)

    if eliminate:
        _eliminate(red, lin, kept, pinned)
    red.pairs = [(u, v, kept[(u, v)]) for (u, v) in sorted(kept)]

    # Nodes touched by no pair, group or memory row take their cheapest choice directly.
    involved = set(pinned)
    for u, v in kept:
        involved.update((u, v))
    for i in range(n):
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
    return red


def _eliminate(red: _Reduced, lin: list[np.ndarray], pairs: dict[tuple[int, int], np.ndarray],
               pinned: set[int]) -> None:
    """Eliminate free nodes of pair-degree 1 (leaves) and 2 (series) exactly, as in a DP.

    A leaf v next to u adds ``min_t M[s,t] + lin_v[t]`` to ``lin_u[s]``; a node v between u
    and w becomes the pair matrix ``min_t M_uv[s,t] + lin_v[t] + M_vw[t,r]`` on (u, w). The
    minimising choices are kept (lowest index on ties) and restored by :func:`_expand`. Nodes
    in a group term or a memory row are never eliminated. Chains, trees and series-parallel
    graphs (residual blocks) vanish entirely; the ILP is left with the rest. Nodes in a factor
    term are pinned as well.
    """
    import heapq

    fixed = red.fixed
    adj: dict[int, set[int]] = {}
    for u, v in pairs:
        adj.setdefault(u, set()).add(v)
        adj.setdefault(v, set()).add(u)

    def get(u: int, v: int) -> np.ndarray:            # rows: u's choices
        return pairs[(u, v)] if u < v else pairs[(v, u)].T

    def drop(u: int, v: int) -> None:
        del pairs[(min(u, v), max(u, v))]
        adj[u].discard(v)
        adj[v].discard(u)

    def put(u: int, v: int, m: np.ndarray) -> None:
        key, m = ((u, v), m) if u < v else ((v, u), m.T)
        if key in pairs:
            m = pairs[key] + m
        if not np.any(m) or _is_separable(m):
            lin[key[0]] += m[:, 0]
            lin[key[1]] += m[0, :] - m[0, 0]
            if key in pairs:
                drop(*key)
            return
        pairs[key] = m
        adj.setdefault(u, set()).add(v)
        adj.setdefault(v, set()).add(u)

    todo = [v for v in adj if v not in pinned and v not in fixed]
    heapq.heapify(todo)
    done = red.eliminated_nodes
    while todo:
        v = heapq.heappop(todo)
        if v in done or v in pinned:
            continue
        nbrs = sorted(adj.get(v, ()))
        if len(nbrs) == 1:
            (u,) = nbrs
            total = get(u, v) + lin[v][None, :]
            choice = np.argmin(total, axis=1)
            lin[u] += total[np.arange(len(choice)), choice]
            drop(u, v)
            red.eliminated.append((v, (u,), choice))
        elif len(nbrs) == 2:
            u, w = nbrs
            total = get(u, v)[:, :, None] + lin[v][None, :, None] + get(v, w)[None, :, :]
            choice = np.argmin(total, axis=1)                 # (T_u, T_w)
            best = np.take_along_axis(total, choice[:, None, :], axis=1)[:, 0, :]
            drop(u, v)
            drop(v, w)
            put(u, w, best)
            red.eliminated.append((v, (u, w), choice))
        else:
            continue
        done.add(v)
        for u in nbrs:
            if u not in pinned and u not in done:
                heapq.heappush(todo, u)
    # A neighbour left with no pair keeps its folded costs; the caller fixes it.


def _assemble(problem: LevelProblem, red: _Reduced, chosen: dict[int, int]) -> tuple[int, ...]:
    """The full assignment from the model's choices: fixed nodes, then eliminated nodes (best
    choice given their already assigned neighbours), then the tie-breaking polish."""
    assignment = [0] * len(red.sizes)
    for i, c in red.fixed.items():
        assignment[i] = c
    for i, c in chosen.items():
        assignment[i] = c
    for v, nbrs, choice in reversed(red.eliminated):
        assignment[v] = int(choice[tuple(assignment[u] for u in nbrs)])
    movable = [i for i, t in enumerate(red.sizes) if t > 1]
    return tuple(_polish(problem, assignment, movable))


# ---------------------------------------------------------------------------------------------
# Model building

@dataclass
class _Built:
    lp: pulp.LpProblem
    x: dict[int, list[pulp.LpVariable]]
    y: list[tuple[int, int, list[list[pulp.LpVariable]]]]
    q: list[tuple[tuple[int, ...], tuple[int, ...], list[pulp.LpVariable]]]   # nodes, shape, flat
    aux: list[tuple[_Group, pulp.LpVariable]]
    n_variables: int
    n_constraints: int
    scale: float = 1.0            # model objective * scale + reduced const = problem objective


def _var(lp: pulp.LpProblem, name: str, low: float, up: float,
         cat: str = pulp.LpContinuous) -> pulp.LpVariable:
    if hasattr(lp, "add_variable"):               # PuLP >= 3.3
        return lp.add_variable(name, low, up, cat=cat)
    return pulp.LpVariable(name, low, up, cat)


def _build(red: _Reduced) -> _Built:
    lp = pulp.LpProblem("level", pulp.LpMinimize)
    width = len(str(max(len(red.sizes) - 1, 0)))
    scale = 0.0
    for c in red.lin.values():
        scale = max(scale, float(np.max(c)))
    for _, _, m in red.pairs:
        scale = max(scale, float(np.max(np.abs(m))))
    for g in red.groups:
        scale = max(scale, g.cost)
    for _, t in red.factors:
        scale = max(scale, float(np.max(t)))
    scale = scale or 1.0

    obj: list[tuple[pulp.LpVariable, float]] = []
    x: dict[int, list[pulp.LpVariable]] = {}
    n_cons = 0
    for i in red.free:
        xs = [_var(lp, f"x_{i:0{width}d}_{c}", 0, 1, pulp.LpBinary)
              for c in range(red.sizes[i])]
        x[i] = xs
        obj.extend((xs[c], float(red.lin[i][c]) / scale)
                   for c in range(len(xs)) if red.lin[i][c] != 0)
        lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression([(v, 1.0) for v in xs]),
                                           pulp.LpConstraintEQ, rhs=1.0))
        n_cons += 1
    # Anchored groups are linked through pair variables (z >= sum_t y[anchor, v][s, t]), which is
    # as tight as the pairwise linearisation; x-based z >= x_a + m_v - 1 has a weak LP relaxation.
    pairs = list(red.pairs)
    have = {(u, v) for u, v, _ in pairs}
    for g in red.groups:
        if g.anchor is None:
            continue
        a = g.anchor[0]
        for v, _ts in g.members:
            if v != a and (a, v) not in have and (v, a) not in have:
                have.add((a, v))
                pairs.append((a, v, np.zeros((red.sizes[a], red.sizes[v]))))
    y = []
    ypos: dict[tuple[int, int], list[list[pulp.LpVariable]]] = {}
    for u, v, m in pairs:
        tu, tv = m.shape
        ys = [[_var(lp, f"y_{u:0{width}d}_{v:0{width}d}_{s}_{t}", 0, 1)
               for t in range(tv)] for s in range(tu)]
        y.append((u, v, ys))
        ypos[(u, v)] = ys
        obj.extend((ys[s][t], float(m[s, t]) / scale)
                   for s in range(tu) for t in range(tv) if m[s, t] != 0)
        for s in range(tu):
            terms = [(ys[s][t], 1.0) for t in range(tv)] + [(x[u][s], -1.0)]
            lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms),
                                               pulp.LpConstraintEQ, rhs=0.0))
        for t in range(tv - 1):                  # the last column's marginal is implied
            terms = [(ys[s][t], 1.0) for s in range(tu)] + [(x[v][t], -1.0)]
            lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms),
                                               pulp.LpConstraintEQ, rhs=0.0))
        n_cons += tu + tv - 1
    # Factors: q per joint entry, marginals on every member node (the first node's full set of
    # marginals sums q to 1; for the other nodes the last choice's marginal is implied).
    q = []
    fwidth = len(str(max(len(red.factors) - 1, 0)))
    for k, (nodes, t) in enumerate(red.factors):
        flat = t.ravel()
        jwidth = len(str(max(flat.size - 1, 0)))
        qs = [_var(lp, f"q_{k:0{fwidth}d}_{j:0{jwidth}d}", 0, 1) for j in range(flat.size)]
        q.append((nodes, t.shape, qs))
        obj.extend((qs[j], float(flat[j]) / scale) for j in range(flat.size) if flat[j] != 0)
        grid = np.indices(t.shape).reshape(len(nodes), -1)
        for a, v in enumerate(nodes):
            for c in range(t.shape[a] - (1 if a else 0)):
                terms = [(qs[j], 1.0) for j in np.flatnonzero(grid[a] == c)] + [(x[v][c], -1.0)]
                lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms),
                                                   pulp.LpConstraintEQ, rhs=0.0))
                n_cons += 1
    aux = []
    gwidth = len(str(max(len(red.groups) - 1, 0)))
    for k, g in enumerate(red.groups):
        name = "z" if g.anchor is not None else "w"
        var = _var(lp, f"{name}_{k:0{gwidth}d}", 0, 1)
        aux.append((g, var))
        obj.append((var, g.cost / scale))
        for v, ts in g.members:
            if g.anchor is None:
                terms = [(var, 1.0)] + [(x[v][t], -1.0) for t in ts]
            else:
                a, s_ = g.anchor
                if (a, v) in ypos:
                    terms = [(var, 1.0)] + [(ypos[(a, v)][s_][t], -1.0) for t in ts]
                else:
                    terms = [(var, 1.0)] + [(ypos[(v, a)][t][s_], -1.0) for t in ts]
            lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms),
                                               pulp.LpConstraintGE, rhs=0.0))
            n_cons += 1
    for row, rhs in red.memory:
        top = max(float(np.max(c)) for c in row.values())
        terms = [(x[i][c], float(coef[c]) / top)
                 for i, coef in sorted(row.items()) for c in range(len(coef)) if coef[c] != 0]
        lp.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms),
                                           pulp.LpConstraintLE, rhs=rhs / top))
        n_cons += 1
    lp.setObjective(pulp.LpAffineExpression(obj))
    n_vars = sum(len(v) for v in x.values()) + sum(len(ys) * len(ys[0]) for _, _, ys in y) \
        + len(aux) + sum(len(qs) for _, _, qs in q)
    return _Built(lp, x, y, q, aux, n_vars, n_cons, scale)


def build_ilp(problem: LevelProblem, eliminate: bool = True) -> pulp.LpProblem:
    """The PuLP model :func:`solve_ilp` would solve (after its exact reductions), unsolved.

    For inspection and debugging, e.g. ``build_ilp(p).writeLP("level.lp")``. Constant parts
    (single-choice nodes, folded costs) are not in the model's objective.

    Raises
    ------
    InfeasibleError
        When a memory row cannot hold whatever the choices.
    """
    check_problem(problem)
    return _build(_reduce(problem, eliminate)).lp


def _set_start(built: _Built, assignment: tuple[int, ...]) -> None:
    """Give every variable the value it takes under ``assignment`` (a warm start)."""
    for i, xs in built.x.items():
        for c, var in enumerate(xs):
            var.setInitialValue(1.0 if assignment[i] == c else 0.0)
    for u, v, ys in built.y:
        for s, row in enumerate(ys):
            for t, var in enumerate(row):
                var.setInitialValue(1.0 if (assignment[u], assignment[v]) == (s, t) else 0.0)
    for nodes, shape, qs in built.q:
        on = int(np.ravel_multi_index(tuple(assignment[v] for v in nodes), shape))
        for j, var in enumerate(qs):
            var.setInitialValue(1.0 if j == on else 0.0)
    for g, var in built.aux:
        on = any(assignment[v] in ts for v, ts in g.members)
        if g.anchor is not None:
            on = on and assignment[g.anchor[0]] == g.anchor[1]
        var.setInitialValue(1.0 if on else 0.0)


# ---------------------------------------------------------------------------------------------
# Tie-breaking

def _polish(problem: LevelProblem, assignment: list[int], movable: list[int]) -> list[int]:
    """Move single nodes to lower choice indices while the objective does not rise.

    A deterministic, cheap canonicalisation of equal-cost plans (and a local improvement of a
    merely feasible one). It never makes the objective worse than ``TIE_RTOL`` relative.
    """
    n = len(assignment)
    inc_edges: list[list[int]] = [[] for _ in range(n)]
    for e, (u, v) in enumerate(problem.edges):
        inc_edges[u].append(e)
        inc_edges[v].append(e)
    inc_groups: list[list[int]] = [[] for _ in range(n)]
    for k, g in enumerate(problem.groups):
        nodes = {v for v, _ in g.members}
        if g.anchor is not None:
            nodes.add(g.anchor[0])
        for v in nodes:
            inc_groups[v].append(k)
    inc_factors: list[list[int]] = [[] for _ in range(n)]
    for k, f in enumerate(problem.factors):
        for v in f.nodes:
            inc_factors[v].append(k)
    usage = [sum(float(coef[i][assignment[i]]) for i in range(n)) for coef, _ in problem.memory]

    def local(i: int, a: list[int]) -> float:
        total = float(problem.node_cost[i][a[i]])
        for e in inc_edges[i]:
            u, v = problem.edges[e]
            total += float(problem.edge_cost[e][a[u], a[v]])
        for k in inc_groups[i]:
            g = problem.groups[k]
            if g.anchor is not None and a[g.anchor[0]] != g.anchor[1]:
                continue
            if any(a[v] == t for v, t in g.members):
                total += g.cost
        for k in inc_factors[i]:
            f = problem.factors[k]
            total += float(f.table[tuple(a[v] for v in f.nodes)])
        return total

    # Equal-cost moves may raise the objective by float noise; cap the total rise.
    budget = 1e-12 * abs(problem.objective(assignment))
    for _ in range(3):
        changed = False
        for i in movable:
            current = assignment[i]
            if current == 0:
                continue
            base = local(i, assignment)
            for c in range(current):
                assignment[i] = c
                delta = local(i, assignment) - base
                fits = all(
                    usage[r] - float(coef[i][current]) + float(coef[i][c]) <= cap * (1 + 1e-12)
                    for r, (coef, cap) in enumerate(problem.memory))
                if fits and delta <= budget:
                    budget -= max(delta, 0.0)
                    for r, (coef, _) in enumerate(problem.memory):
                        usage[r] += float(coef[i][c]) - float(coef[i][current])
                    changed = True
                    break
                assignment[i] = current
        if not changed:
            break
    return assignment


# ---------------------------------------------------------------------------------------------
# Solving

def _status_of(lp: pulp.LpProblem) -> str:
    """'optimal', 'feasible', 'infeasible' or 'none' from PuLP's status and solution status.

    Both are read: a time-limited run may report status Optimal with a solution that is only
    integer-feasible.
    """
    if lp.status == pulp.LpStatusInfeasible or lp.sol_status == pulp.LpSolutionInfeasible:
        return "infeasible"
    if lp.status == pulp.LpStatusOptimal and lp.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if lp.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    return "none"


def _no_plan(problem, incumbent, backend, time_limit_seconds, gap, start, n_vars=0, n_cons=0,
             why=None):
    """The incumbent as a "feasible" plan, or the error that says how to get one."""
    if incumbent is None:
        raise SolverError(why or (
            f"ILP backend {backend!r} found no plan within {time_limit_seconds:g} s; "
            "raise --time-limit"))
    result = tuple(incumbent)
    return LevelSolution(result, problem.objective(result), "feasible", "incumbent",
                         time.perf_counter() - start, gap, n_vars, n_cons)


def _solve_reduced(problem: LevelProblem, red: _Reduced, backend: str, time_limit_seconds: float,
                   gap: float, threads: int, incumbent: tuple[int, ...] | None,
                   start: float, tmp_dir: str | None = None) -> LevelSolution:
    """Build and solve the reduced model in this process."""
    built = _build(red)
    warm = incumbent is not None
    if warm:
        _set_start(built, incumbent)
    left = max(time_limit_seconds - (time.perf_counter() - start), 1e-3)
    solver = _make_solver(backend, left, gap, threads, warm, tmp_dir)
    try:
        built.lp.solve(solver)
    except pulp.PulpSolverError as exc:
        raise SolverError(f"ILP backend {backend!r} failed: {exc}; try another backend "
                          f"(installed: {available_backends()})") from exc
    status = _status_of(built.lp)
    if status == "infeasible":
        raise InfeasibleError("no assignment satisfies the memory rows; "
                              "raise the per-PE capacity")
    if status == "none":
        why = getattr(solver, "error", None)
        return _no_plan(problem, incumbent, backend, time_limit_seconds, gap, start,
                        built.n_variables, built.n_constraints,
                        why=f"ILP backend {backend!r} failed ({why}); try backend='cbc'"
                        if why else None)
    chosen = {i: int(np.argmax([v.varValue or 0.0 for v in xs])) for i, xs in built.x.items()}
    result = _assemble(problem, red, chosen)
    if not problem.feasible(result):
        raise SolverError(f"ILP backend {backend!r} returned a plan that breaks a memory row "
                          "by more than the tolerance; try another backend")
    objective = problem.objective(result)
    if status != "optimal" and incumbent is not None:
        inc_obj = problem.objective(incumbent)
        if inc_obj < objective:
            result, objective, backend = tuple(incumbent), inc_obj, "incumbent"
    return LevelSolution(result, objective, status, backend, time.perf_counter() - start,
                         gap, built.n_variables, built.n_constraints)


# ---------------------------------------------------------------------------------------------
# Hard wall-clock stop: the backend runs in a forked child that can be killed

#: Seconds a forked solve may run beyond its time limit before it is killed (plus 5 % of the
#: limit). Model building counts against the time limit; this margin covers reading results.
HARD_STOP_MARGIN_SECONDS = 1.0

#: Rough in-process cost of the ILP per model variable (measured: 1.5e-5 s on LP-integral
#: chains, up to 1.5e-4 s on random DAGs whose relaxation is fractional), plus a fixed part.
_SECONDS_PER_VARIABLE = 1.5e-4
_SECONDS_FIXED = 0.01
#: Fork when the time limit is below this many times the estimate (a tight limit that the
#: backend may overrun); otherwise solve in process, which saves the ~5-10 ms of a fork.
_ISOLATE_BELOW_FACTOR = 20.0


def _estimated_seconds(red: _Reduced) -> float:
    n_vars = sum(red.sizes[i] for i in red.free) + len(red.groups) + sum(
        m.size for _, _, m in red.pairs) + sum(t.size for _, t in red.factors)
    return _SECONDS_FIXED + _SECONDS_PER_VARIABLE * n_vars


def _can_fork() -> bool:
    return hasattr(os, "fork") and hasattr(os, "killpg")


def _run_forked(fn, deadline: float):
    """Run ``fn()`` in a forked child; its result, its exception, or ``TimeoutError``.

    The child leads its own process group, so a CBC process it started dies with it.
    """
    import pickle
    import select
    import signal

    global _HIGHS_LOCK
    read_fd, write_fd = os.pipe()
    with _HIGHS_LOCK:               # no HiGHS solve or worker thread may exist at the fork
        _release_locked()
        pid = os.fork()
    if pid == 0:                                          # child
        code = 0
        try:
            _HIGHS_LOCK = threading.RLock()       # the inherited one is held by the parent
            os.close(read_fd)
            os.setpgid(0, 0)
            try:
                payload = ("ok", fn())
            except BaseException as exc:                  # noqa: BLE001 - sent to the parent
                payload = ("err", exc)
            try:
                data = pickle.dumps(payload)
            except Exception as exc:                      # noqa: BLE001
                data = pickle.dumps(("err", SolverError(f"solver child failed: {exc!r}")))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:                             # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass                                              # the child already did it
    chunks = []
    finished = False
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os.waitpid(pid, 0)
    if not finished or not chunks:
        raise TimeoutError("solver child did not answer in time")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "err":
        raise value
    return value


# ---------------------------------------------------------------------------------------------
# HiGHS keeps a thread pool per calling OS thread whose size is fixed at its first solve
# ("global scheduler has already been initialized to use N threads"): track it per thread and
# reset it when another size is asked for. Solves are serialised by a lock.

_highs_state = threading.local()
_HIGHS_LOCK = threading.RLock()


def _use_highs_threads(threads: int) -> None:
    if getattr(_highs_state, "threads", None) != threads:
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
        _highs_state.threads = threads


def _release_locked() -> None:
    """Join this thread's HiGHS workers (before a fork: the child would wait on them)."""
    if getattr(_highs_state, "threads", None) not in (None, 1):
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
        _highs_state.threads = None


def _check_incumbent(problem: LevelProblem, incumbent) -> tuple[int, ...] | None:
    if incumbent is None:
        return None
    inc = tuple(int(c) for c in incumbent)
    if len(inc) != len(problem.choices) or any(
            not 0 <= c < len(ch) for c, ch in zip(inc, problem.choices)):
        raise ValueError("incumbent must give one valid choice index per node")
    if not problem.feasible(inc):
        raise ValueError("incumbent breaks a memory row; pass a feasible plan or none")
    return inc


def solve_ilp(problem: LevelProblem, backend: str = "highs", time_limit_seconds: float = 60.0,
              gap: float = 1e-6, threads: int | None = None,
              incumbent: tuple[int, ...] | list[int] | None = None,
              isolate: bool | None = None, eliminate: bool = True) -> LevelSolution:
    """Solve one level exactly (to ``gap``) as an integer linear program.

    Parameters
    ----------
    problem : LevelProblem
    backend : {"highs", "cbc"}
        HiGHS runs in process (highspy); CBC is the binary bundled with PuLP.
    time_limit_seconds : float
        Wall-clock budget of the whole call (model building included); the backend gets what
        is left. When it stops early the best plan found is returned with status "feasible".
    gap : float
        Relative MIP gap at which the backend may stop and still report "optimal".
    threads : int, optional
        Backend threads; default 1 (deterministic).
    incumbent : sequence of int, optional
        A known feasible plan: the backend starts from it, and it is returned (status
        "feasible", backend "incumbent") when the backend finds nothing better in time.
    isolate : bool, optional
        Run the backend in a forked child that is killed ``HARD_STOP_MARGIN_SECONDS`` after the
        time limit, even if the backend overruns its own limit (POSIX only). Default: only when
        the time limit is short for the model's size; a fork costs about 5-10 ms.
    eliminate : bool
        Before the ILP, eliminate nodes that only have one or two pair neighbours (no group
        term, no memory row) exactly, as a DP would: chains, trees and residual blocks need no
        ILP at all. False keeps every multi-choice node in the model (for cross-checks).

    Returns
    -------
    LevelSolution

    Raises
    ------
    SolverError
        Unknown or missing backend (the message lists the installed ones), or no plan found in
        time and no incumbent.
    InfeasibleError
        No plan satisfies the memory rows.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a", "b"], [("I", "II"), ("I", "II")],
    ...                  [np.array([0.0, 1.0]), np.array([3.0, 0.0])],
    ...                  edges=[(0, 1)], edge_cost=[np.array([[0.0, 2.0], [5.0, 4.0]])])
    >>> sol = solve_ilp(p)
    >>> sol.assignment, sol.objective, sol.status
    ((0, 1), 2.0, 'optimal')
    """
    start = time.perf_counter()
    _check_backend(backend)
    if not (time_limit_seconds > 0 and math.isfinite(time_limit_seconds)):
        raise ValueError(f"time_limit_seconds must be a positive number, got "
                         f"{time_limit_seconds!r}")
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    threads = int(threads or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    check_problem(problem)
    inc = _check_incumbent(problem, incumbent)
    limit = float(time_limit_seconds)
    red = _reduce(problem, eliminate)
    if not red.free:
        result = _assemble(problem, red, {})
        if not problem.feasible(result):        # only the tolerance could cause this
            raise SolverError("the reduced plan breaks a memory row; retry with "
                              "eliminate=False")
        return LevelSolution(result, problem.objective(result), "optimal", backend,
                             time.perf_counter() - start, gap, 0, 0)
    if isolate is None:
        isolate = limit < _ISOLATE_BELOW_FACTOR * _estimated_seconds(red)
    if not (isolate and _can_fork()):
        return _solve_reduced(problem, red, backend, limit, gap, threads, inc, start)
    import shutil
    import tempfile

    deadline = start + limit * 1.05 + HARD_STOP_MARGIN_SECONDS
    tmp_dir = tempfile.mkdtemp(prefix="hypar-ilp-")
    try:
        return _run_forked(
            lambda: _solve_reduced(problem, red, backend, limit, gap, threads, inc, start,
                                   tmp_dir),
            deadline)
    except TimeoutError:
        return _no_plan(problem, inc, backend, limit, gap, start, why=(
            f"ILP backend {backend!r} overran its time limit of {limit:g} s and was stopped; "
            "raise --time-limit"))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def solve(problem: LevelProblem, method: str = "ilp", **opts) -> LevelSolution:
    """Solve one level with the named method.

    Parameters
    ----------
    problem : LevelProblem
    method : {"ilp", "dp", "brute"}
        "ilp": :func:`solve_ilp` (options: backend, time_limit_seconds, gap, threads,
        incumbent); "dp": :func:`hypar.ilp.exact.solve_chain_dp` (chains only);
        "brute": :func:`hypar.ilp.exact.solve_brute_force` (option: max_assignments).

    Raises
    ------
    SolverError
        Unknown method, or one that cannot solve this problem.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a"], [("I", "II")], [np.array([2.0, 1.0])])
    >>> solve(p, "dp").assignment
    (1,)
    """
    if method == "ilp":
        return solve_ilp(problem, **opts)
    if method == "dp":
        if opts:
            raise TypeError(f"method 'dp' takes no options, got {sorted(opts)}")
        return solve_chain_dp(problem)
    if method == "brute":
        return solve_brute_force(problem, **opts)
    raise SolverError(f"unknown solve method {method!r}; use 'ilp', 'dp' or 'brute'")
