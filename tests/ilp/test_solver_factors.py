"""Factor terms (a cost table over the joint choice of a few nodes): validation, brute force,
the ILP's local-polytope linearisation and its reductions, against closed forms and brute force.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_solver_properties import (COST, SETTINGS, _brute_or_infeasible, check_ilp_equals_brute, close, dags,
                                    larger_dags)

from hypar.ilp import backends
from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import check_problem, solve_brute_force, solve_chain_dp
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.backends import available_backends
from hypar.ilp.model import build_ilp
from hypar.ilp.polish import polish
from hypar.ilp.solve import solve_ilp

BACKENDS = [b for b in ("highs", "cbc") if b in available_backends()]


def _problem(sizes, node_cost, factors=(), edges=(), edge_cost=(), groups=(), memory=()):
    return LevelProblem([f"n{i}" for i in range(len(sizes))],
                        [tuple(f"c{c}" for c in range(t)) for t in sizes],
                        [np.asarray(c, dtype=float) for c in node_cost], list(edges),
                        [np.asarray(m, dtype=float) for m in edge_cost], list(groups),
                        list(memory), list(factors))


def _fanout(conv=3.0):
    """Producer 0 (prefers layout 0), consumers 1 (strongly prefers 1) and 2 (mildly prefers
    1). Converting the tensor costs ``conv`` once per distinct layout other than the
    producer's: converting once pays off only when both consumers agree on layout 1."""
    grid = np.indices((2, 2, 2))
    p, c1, c2 = grid
    distinct = (c1 != p).astype(float) + ((c2 != p) & (c2 != c1)).astype(float)
    return _problem([2, 2, 2], [[0, 4], [5, 0], [1, 0]],
                    [FactorTerm((0, 1, 2), conv * distinct)])


# ---------------------------------------------------------------------------------------------
# Validation, brute force, DP

@pytest.mark.parametrize("factor, match", [
    (FactorTerm((0, 0), np.zeros((2, 2))), "repeat"),
    (FactorTerm((0, 5), np.zeros((2, 2))), "not in"),
    (FactorTerm((0, 1), np.zeros((2, 2))), "shape"),
    (FactorTerm((0, 1), np.zeros((2, 3, 1))), "shape"),
    (FactorTerm((0, 1), np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])), "non-negative"),
    (FactorTerm((0, 1), np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]])), "finite"),
    (FactorTerm((0, 1), np.array([[0.0, np.inf, 0.0], [0.0, 0.0, 0.0]])), "finite"),
    (FactorTerm((), np.zeros(())), "no node"),
])
def test_check_problem_rejects_bad_factors(factor, match):
    p = _problem([2, 3], [[0, 0], [0, 0, 0]], [factor])
    with pytest.raises(ValueError, match=match):
        check_problem(p)
    with pytest.raises(ValueError, match=match):
        solve_ilp(p)


def test_check_problem_accepts_a_good_factor():
    check_problem(_problem([2, 3, 1], [[0, 0], [0, 0, 0], [0]],
                           [FactorTerm((2, 0, 1), np.ones((1, 2, 3)))]))


def test_brute_force_includes_factors():
    sol = solve_brute_force(_fanout())
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 3.0


def test_dp_refuses_factors():
    p = _problem([2, 2], [[0, 0], [0, 0]], [FactorTerm((0, 1), np.eye(2))],
                 edges=[(0, 1)], edge_cost=[np.zeros((2, 2))])
    assert not p.is_chain()
    with pytest.raises(SolverError, match="factor"):
        solve_chain_dp(p)


# ---------------------------------------------------------------------------------------------
# Closed forms

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eliminate", [False, True])
def test_fanout_converts_once_when_consumers_agree(backend, eliminate):
    # (0,1,1): 0 + 0 + 0 + one conversion 3 = 3; (0,1,0): 0+0+1+3 = 4; (1,1,1): 4; (0,0,0): 6.
    p = _fanout()
    sol = solve_ilp(p, backend=backend, eliminate=eliminate)
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 3.0 == p.objective(sol.assignment)
    assert sol.status == "optimal"
    # Dearer conversions: the producer moves to layout 1 (1,1,1) = 4 beats (0,1,1) = 0 + conv.
    sol = solve_ilp(_fanout(conv=10.0), backend=backend, eliminate=eliminate)
    assert sol.assignment == (1, 1, 1) and sol.objective == 4.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_factor_is_exact_where_pairwise_edges_overcount(backend):
    # The same fan-out charged per consumer edge instead would pick a different plan.
    p = _fanout()
    edges = _problem([2, 2, 2], [[0, 4], [5, 0], [1, 0]], edges=[(0, 1), (0, 2)],
                     edge_cost=[3 * (1 - np.eye(2))] * 2)
    # Per edge: (0,1,1) = 6, while (0,1,0) = (1,1,1) = 4 (the lowest index wins the tie).
    sol = solve_ilp(edges, backend=backend)
    assert sol.assignment == (0, 1, 0) and sol.objective == 4.0
    assert solve_ilp(p, backend=backend).assignment == (0, 1, 1)


def test_factor_with_only_fixed_nodes_is_a_constant():
    p = _problem([1, 1, 1, 2], [[1], [0], [0], [0, 1]],
                 [FactorTerm((2, 0, 1), np.full((1, 1, 1), 7.0))])
    sol = solve_ilp(p)
    assert sol.objective == 8.0 and sol.assignment == (0, 0, 0, 0)
    assert sol.n_variables == 0


def test_fixed_nodes_are_sliced_out():
    # Over one free node after slicing: a node cost, no model at all.
    t = np.zeros((1, 3, 1))
    t[0, :, 0] = [5.0, 0.0, 2.0]
    p = _problem([1, 3, 1], [[0], [0, 1, 0], [0]], [FactorTerm((0, 1, 2), t)])
    sol = solve_ilp(p)
    assert sol.assignment == (0, 1, 0) and sol.objective == 1.0 and sol.n_variables == 0
    # Over two free nodes: a pair cost (y variables, no q).
    t = np.arange(2 * 1 * 3, dtype=float).reshape(2, 1, 3)[::-1].copy()
    t[0, 0, 0] = 0.0
    p = _problem([2, 1, 3], [[0, 0], [0], [1, 1, 0]], [FactorTerm((0, 1, 2), t)])
    names = [v.name for v in build_ilp(p, eliminate=False).variables()]
    assert not any(n.startswith("q_") for n in names)
    assert any(n.startswith("y_") for n in names)
    assert close(solve_ilp(p, eliminate=False).objective, solve_brute_force(p).objective)


def test_separable_factor_becomes_node_costs():
    a, b, c = np.array([0.0, 2.0]), np.array([1.0, 0.0, 3.0]), np.array([4.0, 0.0])
    t = a[:, None, None] + b[None, :, None] + c[None, None, :]
    p = _problem([2, 3, 2], [[0, 0], [0, 0, 0], [0, 0]], [FactorTerm((0, 1, 2), t)])
    sol = solve_ilp(p)
    assert sol.n_variables == 0
    assert sol.assignment == (0, 1, 1) and sol.objective == 0.0


def test_factor_model_is_named_by_index():
    p = _fanout()
    names = sorted(v.name for v in build_ilp(p, eliminate=False).variables())
    assert [n for n in names if n.startswith("q_")] == [f"q_0_{j}" for j in range(8)]
    assert all(n[0] in "xq" for n in names)


def test_pairs_and_groups_inside_a_factor_fold_into_it():
    p = _fanout()
    p.edges, p.edge_cost = [(1, 2)], [np.array([[0.0, 9.0], [9.0, 0.0]])]
    p.groups = [GroupTerm(2.0, ((1, 0), (2, 0)), anchor=(0, 1))]
    model = build_ilp(p, eliminate=False)
    names = [v.name for v in model.variables()]
    assert not any(n[0] in "yzw" for n in names)       # all in the one joint table
    sol = solve_ilp(p, eliminate=False)
    brute = solve_brute_force(p)
    assert sol.assignment == brute.assignment and sol.objective == brute.objective


def test_factor_nodes_are_not_eliminated():
    # A chain 0-1-2-3-4 (elimination would remove it entirely) with a factor over 1, 2, 3.
    rng = np.random.default_rng(3)
    sizes = [2, 3, 2, 3, 2]
    edges = [(i, i + 1) for i in range(4)]
    t = rng.integers(0, 6, size=(3, 2, 3)).astype(float)
    p = _problem(sizes, [rng.integers(0, 4, size=s).astype(float) for s in sizes],
                 [FactorTerm((1, 2, 3), t)], edges,
                 [rng.integers(0, 5, size=(sizes[u], sizes[v])).astype(float) for u, v in edges])
    brute = solve_brute_force(p)
    for eliminate in (False, True):
        sol = solve_ilp(p, eliminate=eliminate)
        assert sol.objective == brute.objective == p.objective(sol.assignment)
        assert sol.assignment == brute.assignment


@pytest.mark.parametrize("backend", BACKENDS)
def test_incumbent_and_hard_stop_path(backend):
    p = _fanout()
    sol = solve_ilp(p, backend=backend, incumbent=(1, 1, 1), eliminate=False)
    assert sol.assignment == (0, 1, 1) and sol.objective == 3.0
    forked = solve_ilp(p, backend=backend, isolate=True, eliminate=False)
    assert forked.assignment == (0, 1, 1) and forked.objective == 3.0


def test_polish_accounts_for_factors():
    # Node 0 is indifferent on its own; the factor makes choice 0 worse, so polishing towards
    # lower indices must not move it there.
    t = np.zeros((2, 2, 2))
    t[0] = 5.0
    p = _problem([2, 2, 2], [[0, 0], [0, 0], [0, 0]], [FactorTerm((0, 1, 2), t)])
    assignment = polish(p, [1, 0, 0], [0, 1, 2])
    assert assignment == [1, 0, 0]
    sol = solve_ilp(p, eliminate=False)
    assert sol.assignment == (1, 0, 0) and sol.objective == 0.0


# ---------------------------------------------------------------------------------------------
# Properties: random small DAGs with random factors, ILP == brute force

def _table(draw, shape, scale):
    size = int(np.prod(shape))
    kind = draw(st.sampled_from(["random", "random", "any", "separable", "zero", "sparse"]))
    if kind == "zero":
        return np.zeros(shape)
    if kind == "separable":
        out = np.zeros(shape)
        for a, t in enumerate(shape):
            vals = np.array(draw(st.lists(COST, min_size=t, max_size=t)))
            out = out + vals.reshape([t if b == a else 1 for b in range(len(shape))])
        return out * scale
    if kind == "any":      # charged once if any other node's choice differs from the first's
        grid = np.indices(shape)
        differs = np.zeros(shape, dtype=bool)
        for g in grid[1:]:
            differs |= g != np.minimum(grid[0], g.max())
        return np.where(differs, draw(COST), 0.0) * scale
    if kind == "sparse":
        out = np.zeros(size)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, size - 1))] = draw(COST)
        return out.reshape(shape) * scale
    return np.array(draw(st.lists(COST, min_size=size, max_size=size))).reshape(shape) * scale


@st.composite
def factor_dags(draw, memory=True, base=None):
    """A random DAG problem (``dags`` by default) plus 1-3 factors of arity 2-4 drawn at the
    same scale (some nodes have a single choice)."""
    p, scale = draw(base if base is not None else dags(memory=memory, with_scale=True))
    n = len(p.names)
    sizes = [len(c) for c in p.choices]
    factors = []
    if n >= 2:
        for _ in range(draw(st.integers(1, 3))):
            k = draw(st.integers(2, min(4, n)))
            nodes = draw(st.permutations(range(n)).map(lambda xs: tuple(xs[:k])))
            factors.append(FactorTerm(nodes, _table(draw, tuple(sizes[v] for v in nodes),
                                                    scale)))
    p.factors = factors
    return p


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(factor_dags())
def test_factor_dag_ilp_equals_brute(p):
    check_ilp_equals_brute(p)


@settings(max_examples=60, **SETTINGS)
@given(factor_dags())
def test_factor_dag_mip_path_equals_brute(p):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "LP_FIRST", False)
        check_ilp_equals_brute(p, proven=False)


@pytest.mark.slow
@pytest.mark.skipif("cbc" not in available_backends(), reason="CBC not installed")
@settings(max_examples=40, **SETTINGS)
@given(factor_dags())
def test_factor_dag_cbc_equals_brute(p):
    brute = _brute_or_infeasible(p)
    for eliminate in (False, True):
        if brute is None:
            with pytest.raises(InfeasibleError):
                solve_ilp(p, backend="cbc", eliminate=eliminate)
            continue
        ilp = solve_ilp(p, backend="cbc", eliminate=eliminate)
        assert close(ilp.objective, brute.objective)
        assert ilp.objective == p.objective(ilp.assignment)
        assert ilp.status == "optimal"


@settings(max_examples=30, **SETTINGS)
@given(factor_dags(memory=False))
def test_factor_repeated_solves_identical(p):
    assert solve_ilp(p, eliminate=False).assignment == solve_ilp(p, eliminate=False).assignment
    assert solve_ilp(p).assignment == solve_ilp(p).assignment


@settings(max_examples=40, **SETTINGS)
@given(factor_dags())
def test_factor_incumbent_never_makes_it_worse(p):
    brute = _brute_or_infeasible(p)
    if brute is None:
        return
    first = tuple(0 for _ in p.names)
    start = first if p.feasible(first) else brute.assignment
    sol = solve_ilp(p, incumbent=start, eliminate=False)
    assert close(sol.objective, brute.objective)
    assert sol.objective == p.objective(sol.assignment)


@settings(max_examples=30, **SETTINGS)
@given(factor_dags(base=larger_dags(with_scale=True)))
def test_factor_elimination_keeps_the_optimum(p):
    full = solve_ilp(p, eliminate=False)
    reduced = solve_ilp(p)
    assert close(full.objective, reduced.objective)
    assert reduced.n_variables <= full.n_variables
    assert reduced.objective == p.objective(reduced.assignment)

