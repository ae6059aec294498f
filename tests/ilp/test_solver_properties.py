"""Property tests: ILP == chain DP == brute force on random small problems.

Costs are drawn from exact binary fractions (plus zeros and repeats, so ties are common), then
the whole problem is scaled: two plans that differ do so by far more than the MIP gap, and
equal plans are exactly equal.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypar.errors import InfeasibleError
from hypar.ilp.exact import solve_brute_force, solve_chain_dp
from hypar.ilp.problem import GroupTerm, LevelProblem
from hypar.ilp.backends import available_backends
from hypar.ilp.solve import solve_ilp

COST = st.sampled_from([0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 40.0])
SCALE = st.sampled_from([1.0, 1.0, 1e-7, 3e9])
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)


def _matrix(draw, rows: int, cols: int, scale: float) -> np.ndarray:
    kind = draw(st.sampled_from(["random", "random", "zero", "separable", "mismatch"]))
    if kind == "zero":
        return np.zeros((rows, cols))
    if kind == "separable":
        a = np.array(draw(st.lists(COST, min_size=rows, max_size=rows)))
        b = np.array(draw(st.lists(COST, min_size=cols, max_size=cols)))
        return (a[:, None] + b[None, :]) * scale
    if kind == "mismatch":
        w = draw(COST)
        return np.array([[0.0 if s == t else w for t in range(cols)] for s in range(rows)]) * scale
    vals = draw(st.lists(COST, min_size=rows * cols, max_size=rows * cols))
    return np.array(vals).reshape(rows, cols) * scale


def _node_costs(draw, sizes, scale):
    return [np.array(draw(st.lists(COST, min_size=t, max_size=t))) * scale for t in sizes]


@st.composite
def chains(draw):
    n = draw(st.integers(2, 12))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    scale = draw(SCALE)
    return LevelProblem(
        [f"layer{i}" for i in range(n)], [tuple(f"c{c}" for c in range(t)) for t in sizes],
        _node_costs(draw, sizes, scale), edges=[(i, i + 1) for i in range(n - 1)],
        edge_cost=[_matrix(draw, sizes[i], sizes[i + 1], scale) for i in range(n - 1)])


@st.composite
def dags(draw, memory=True, with_scale=False):
    """Random small DAG problems; ``with_scale``: (problem, the scale its costs were drawn at)."""
    n = draw(st.integers(1, 7))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    scale = draw(SCALE)
    edges = []
    for v in range(1, n):
        # a chain edge most of the time, plus skips / fan-out from any earlier node
        parents = draw(st.sets(st.integers(0, v - 1), max_size=3))
        if draw(st.booleans()):
            parents.add(v - 1)
        for u in sorted(parents):
            edges.append((v, u) if draw(st.integers(0, 9)) == 0 else (u, v))  # some reversed
    if edges and draw(st.booleans()):
        edges.append(draw(st.sampled_from(edges)))                          # a parallel edge
    edge_cost = [_matrix(draw, sizes[u], sizes[v], scale) for u, v in edges]
    groups = []
    for _ in range(draw(st.integers(0, 4))):
        members = draw(st.lists(
            st.integers(0, n - 1).flatmap(
                lambda v: st.tuples(st.just(v), st.integers(0, sizes[v] - 1))),
            min_size=1, max_size=4))
        anchor = None
        if draw(st.booleans()):
            a = draw(st.integers(0, n - 1))
            anchor = (a, draw(st.integers(0, sizes[a] - 1)))
        groups.append(GroupTerm(draw(COST) * scale, tuple(members), anchor))
    rows = []
    if memory and draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 2))):
            coef = [np.array(draw(st.lists(st.integers(0, 9), min_size=t, max_size=t)),
                             dtype=float) * 1e6 for t in sizes]
            least = sum(float(c.min()) for c in coef)
            cap = least + draw(st.integers(-2, 12)) * 1e6     # sometimes impossible
            rows.append((coef, cap))
    p = LevelProblem([f"op/{i}" for i in range(n)],
                     [tuple(f"c{c}" for c in range(t)) for t in sizes],
                     _node_costs(draw, sizes, scale), edges, edge_cost, groups, rows)
    return (p, scale) if with_scale else p


def _brute_or_infeasible(p):
    try:
        return solve_brute_force(p)
    except InfeasibleError:
        return None


def check_ilp_equals_brute(p, eliminations=(False, True), proven=True):
    """The ILP (with and without elimination) finds brute force's optimum, or both say infeasible."""
    brute = _brute_or_infeasible(p)
    for eliminate in eliminations:
        if brute is None:
            with pytest.raises(InfeasibleError):
                solve_ilp(p, eliminate=eliminate)
            continue
        ilp = solve_ilp(p, eliminate=eliminate)
        assert close(ilp.objective, brute.objective)
        assert ilp.objective == p.objective(ilp.assignment)
        assert p.feasible(ilp.assignment)
        if proven:
            assert ilp.status == "optimal"


@settings(max_examples=120, **SETTINGS)
@given(chains())
def test_chain_ilp_equals_dp_equals_brute(p):
    assert p.is_chain()
    dp = solve_chain_dp(p)
    brute = solve_brute_force(p)
    ilp = solve_ilp(p, eliminate=False)                 # the full ILP
    eliminated = solve_ilp(p)                           # leaves eliminated: no ILP left
    assert dp.assignment == brute.assignment            # same tie-breaking
    assert close(dp.objective, brute.objective)
    assert close(ilp.objective, dp.objective)
    assert close(eliminated.objective, dp.objective)
    assert eliminated.n_variables == 0
    assert ilp.status == eliminated.status == "optimal"
    assert ilp.objective == p.objective(ilp.assignment)
    assert dp.objective == p.objective(dp.assignment)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(dags())
def test_dag_ilp_equals_brute(p):
    check_ilp_equals_brute(p)


@pytest.mark.skipif("cbc" not in available_backends(), reason="CBC not installed")
@settings(max_examples=25, **SETTINGS)
@given(dags())
def test_backends_agree(p):
    brute = _brute_or_infeasible(p)
    if brute is None:
        for backend in ("highs", "cbc"):
            with pytest.raises(InfeasibleError):
                solve_ilp(p, backend=backend, eliminate=False)
        return
    highs = solve_ilp(p, backend="highs", eliminate=False)
    cbc = solve_ilp(p, backend="cbc", eliminate=False)
    assert close(highs.objective, cbc.objective)
    assert close(cbc.objective, brute.objective)
    assert cbc.objective == p.objective(cbc.assignment)


@settings(max_examples=30, **SETTINGS)
@given(dags(memory=False))
def test_repeated_solves_identical(p):
    assert solve_ilp(p, eliminate=False).assignment == solve_ilp(p, eliminate=False).assignment
    assert solve_ilp(p).assignment == solve_ilp(p).assignment


@settings(max_examples=40, **SETTINGS)
@given(dags())
def test_incumbent_never_makes_it_worse(p):
    brute = _brute_or_infeasible(p)
    if brute is None:
        return
    first = tuple(0 for _ in p.names)                  # often a poor plan
    start = first if p.feasible(first) else brute.assignment
    sol = solve_ilp(p, incumbent=start, eliminate=False)
    assert close(sol.objective, brute.objective)
    assert sol.status == "optimal"


@settings(max_examples=60, **SETTINGS)
@given(dags())
def test_dag_mip_path_equals_brute(p):
    # The same check with HiGHS's LP-first shortcut off: every model goes through the MIP.
    from hypar.ilp import backends

    brute = _brute_or_infeasible(p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "LP_FIRST", False)
        if brute is None:
            with pytest.raises(InfeasibleError):
                solve_ilp(p, eliminate=False)
            return
        ilp = solve_ilp(p, eliminate=False)
    assert close(ilp.objective, brute.objective)
    assert ilp.status == "optimal"


@st.composite
def larger_dags(draw, with_scale=False):
    """10-40 nodes, mostly series structure with residual skips and a few groups: the shape
    elimination works on, too big for brute force."""
    n = draw(st.integers(10, 40))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    edges = [(i, i + 1) for i in range(n - 1)]
    for _ in range(draw(st.integers(0, n // 3))):
        u = draw(st.integers(0, n - 3))
        edges.append((u, draw(st.integers(u + 2, min(n - 1, u + 6)))))
    groups = []
    for _ in range(draw(st.integers(0, 3))):
        v = draw(st.integers(0, n - 1))
        members = ((v, draw(st.integers(0, sizes[v] - 1))),
                   (min(v + 1, n - 1), 0))
        groups.append(GroupTerm(draw(COST), members, None if draw(st.booleans()) else (0, 0)))
    p = LevelProblem([str(i) for i in range(n)],
                     [tuple(str(c) for c in range(t)) for t in sizes],
                     _node_costs(draw, sizes, 1.0), edges,
                     [_matrix(draw, sizes[u], sizes[v], 1.0) for u, v in edges], groups)
    return (p, 1.0) if with_scale else p


@settings(max_examples=40, **SETTINGS)
@given(larger_dags())
def test_elimination_keeps_the_optimum(p):
    full = solve_ilp(p, eliminate=False)
    reduced = solve_ilp(p)
    assert close(full.objective, reduced.objective)
    assert reduced.n_variables <= full.n_variables
    assert reduced.objective == p.objective(reduced.assignment)
    if not p.groups and len(p.edges) == len(p.names) - 1:       # a plain chain
        assert reduced.n_variables == 0
