"""The level ILP on tiny problems whose optimum is known in closed form."""

import re

import numpy as np
import pytest

from hypar.ilp import backends, isolate
from hypar.ilp import solve as driver
from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import solve_brute_force
from hypar.ilp.problem import GroupTerm, LevelProblem
from hypar.ilp.backends import available_backends
from hypar.ilp.model import build_ilp
from hypar.ilp.solve import solve, solve_ilp, status_of

A = np.array
MISMATCH = A([[0.0, 1.0], [1.0, 0.0]])      # not separable: needs pair variables

BACKENDS = available_backends()


def chain3() -> LevelProblem:
    return LevelProblem(
        ["a", "b", "c"], [("I", "II")] * 3,
        [A([0.0, 10.0]), A([5.0, 1.0]), A([0.0, 0.0])],
        edges=[(0, 1), (1, 2)], edge_cost=[3 * MISMATCH, 4 * MISMATCH])


def diamond() -> LevelProblem:
    # 0 -> 1 -> 3 and 0 -> 2 -> 3. Node 1 wants II, node 2 wants I (4 otherwise), so the two
    # branches disagree: nodes 0 and 3 each pay one mismatch whatever they take (a tie, I wins).
    return LevelProblem(
        ["in", "left", "right", "out"], [("I", "II")] * 4,
        [A([0.0, 0.0]), A([4.0, 0.0]), A([0.0, 4.0]), A([0.0, 0.0])],
        edges=[(0, 1), (0, 2), (1, 3), (2, 3)], edge_cost=[MISMATCH] * 4)


def shared_fanout() -> LevelProblem:
    # A tensor from node 0 is converted once per distinct layout its consumers use (6 each).
    # Apart: 0 + 0 + 6 + 6 = 12; both A: 1.5 + 6; both B: 1 + 6 = 7 (best).
    return LevelProblem(
        ["src", "c1", "c2"], [("X",), ("A", "B"), ("A", "B")],
        [A([0.0]), A([0.0, 1.0]), A([1.5, 0.0])],
        groups=[GroupTerm(6.0, ((1, 0), (2, 0))), GroupTerm(6.0, ((1, 1), (2, 1)))])


def anchored(anchor=(0, 1)) -> LevelProblem:
    # The conversion (cost 5) is only needed when the producer takes II and a consumer takes A.
    # Producer I: 3 + 0 + 0 = 3 (best). Producer II: both B 0 + 2 + 2 = 4; any A >= 5.
    return LevelProblem(
        ["prod", "c1", "c2"], [("I", "II"), ("A", "B"), ("A", "B")],
        [A([3.0, 0.0]), A([0.0, 2.0]), A([0.0, 2.0])],
        groups=[GroupTerm(5.0, ((1, 0), (2, 0)), anchor)])


ELIMINATE = [pytest.param(False, id="full-ilp"), pytest.param(True, id="eliminated")]


@pytest.mark.parametrize("eliminate", ELIMINATE)
@pytest.mark.parametrize("backend", BACKENDS)
def test_chain_known_best_path(backend, eliminate):
    sol = solve_ilp(chain3(), backend=backend, eliminate=eliminate)
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 4.0
    assert sol.status == "optimal"
    assert sol.backend == backend
    if eliminate:
        assert sol.n_variables == 0                  # a chain needs no ILP at all
    else:
        assert sol.n_variables == 6 + 8 and sol.n_constraints == 3 + 2 * 3


@pytest.mark.parametrize("eliminate", ELIMINATE)
@pytest.mark.parametrize("backend", BACKENDS)
def test_diamond(backend, eliminate):
    sol = solve_ilp(diamond(), backend=backend, eliminate=eliminate)
    assert sol.objective == 2.0
    assert sol.assignment == (0, 1, 0, 0)


@pytest.mark.parametrize("eliminate", ELIMINATE)
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_term_makes_sharing_cheaper(backend, eliminate):
    sol = solve_ilp(shared_fanout(), backend=backend, eliminate=eliminate)
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 7.0


@pytest.mark.parametrize("eliminate", ELIMINATE)
@pytest.mark.parametrize("backend", BACKENDS)
def test_anchored_group(backend, eliminate):
    sol = solve_ilp(anchored(), backend=backend, eliminate=eliminate)
    assert sol.assignment == (0, 0, 0)
    assert sol.objective == 3.0


def test_group_without_anchor_is_always_charged():
    sol = solve_ilp(anchored(anchor=None))
    assert sol.assignment == (1, 1, 1)    # 0 + 2 + 2 = 4 beats 3 + 5 and 0 + 5
    assert sol.objective == 4.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_row_forces_a_costlier_choice(backend):
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 1.5])],
                     edges=[(0, 1)], edge_cost=[MISMATCH],
                     memory=[([A([10.0, 2.0]), A([10.0, 2.0])], 12.0)])
    sol = solve_ilp(p, backend=backend, eliminate=False)
    # (0,0) costs 0 but needs 20 > 12; (1,0) costs 1 + 1; (0,1) 1.5 + 1; (1,1) 2.5.
    assert sol.objective == 2.0
    assert sol.assignment == (1, 0)
    assert p.feasible(sol.assignment)


def test_memory_row_with_capacity_exactly_met():
    # (0,0) needs 12 > 10; (0,1) needs exactly 10 and costs 0.5; (1,0) costs 1.
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 0.5])],
                     memory=[([A([7.0, 3.0]), A([5.0, 3.0])], 10.0)])
    assert solve_ilp(p).assignment == (0, 1)


def test_infeasible_memory_raises():
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 1.0])],
                     memory=[([A([10.0, 8.0]), A([10.0, 8.0])], 12.0)])
    with pytest.raises(InfeasibleError, match="capacity"):
        solve_ilp(p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_only_jointly(backend):
    # Each row alone can hold; together they ask node 0 to be both I and II.
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 1.0])],
                     edges=[(0, 1)], edge_cost=[MISMATCH],
                     memory=[([A([10.0, 0.0]), A([0.0, 0.0])], 5.0),
                             ([A([0.0, 10.0]), A([0.0, 0.0])], 5.0)])
    with pytest.raises(InfeasibleError):
        solve_ilp(p, backend=backend)
    with pytest.raises(InfeasibleError):
        solve_brute_force(p)


def test_single_choice_node_gets_no_variable():
    p = LevelProblem(["a", "b", "c"], [("I", "II"), ("I",), ("I", "II")],
                     [A([0.0, 1.0]), A([2.0]), A([3.0, 0.0])],
                     edges=[(0, 1), (1, 2), (0, 2)],
                     edge_cost=[A([[0.0], [5.0]]), A([[1.0, 0.0]]), 2 * MISMATCH])
    names = [v.name for v in build_ilp(p, eliminate=False).variables()]
    assert names and not any(n.startswith("x_1_") for n in names)
    assert {n for n in names if n.startswith("x_")} == {"x_0_0", "x_0_1", "x_2_0", "x_2_1"}
    sol = solve_ilp(p, eliminate=False)
    assert sol.objective == solve_brute_force(p).objective == 2.0 + 2.0
    assert sol.n_variables == len(names)


def test_all_fixed_problem_needs_no_model():
    p = LevelProblem(["a", "b"], [("I",), ("II",)], [A([1.0]), A([2.0])],
                     edges=[(0, 1)], edge_cost=[A([[3.0]])])
    sol = solve_ilp(p)
    assert sol.assignment == (0, 0) and sol.objective == 6.0
    assert sol.n_variables == 0 and sol.status == "optimal"


def test_separable_edge_is_folded_into_node_costs():
    # M[s,t] = a[s] + b[t]: no pair variables, nodes then independent: no model at all.
    sep = A([[1.0, 2.0], [4.0, 5.0]])
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 0.0]), A([0.0, 0.0])],
                     edges=[(0, 1)], edge_cost=[sep])
    sol = solve_ilp(p)
    assert sol.assignment == (0, 0) and sol.objective == 1.0
    assert sol.n_variables == 0


def test_parallel_and_reversed_edges_are_merged():
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 0.5]), A([0.0, 0.0])],
                     edges=[(0, 1), (1, 0)], edge_cost=[A([[0.0, 3.0], [0.0, 0.0]]),
                                                       A([[2.0, 0.0], [0.0, 0.0]])])
    names = [v.name for v in build_ilp(p, eliminate=False).variables()]
    assert sum(n.startswith("y_") for n in names) == 4       # one 2x2 block, not two
    sol = solve_ilp(p)
    assert sol.assignment == (1, 0)            # (0,0) 2, (0,1) 3, (1,0) 0.5, (1,1) 0.5
    assert sol.objective == solve_brute_force(p).objective == 0.5


def test_variables_are_named_by_index_only():
    p = diamond()
    p.names[:] = ["conv/1.weight", "fc[2]", "a-b", "x y"]
    p.groups.append(GroupTerm(1.0, ((1, 0), (2, 0)), (0, 1)))
    p.groups.append(GroupTerm(1.0, ((1, 1), (3, 0))))
    names = [v.name for v in build_ilp(p, eliminate=False).variables()]
    assert any(n.startswith("z_") for n in names) and any(n.startswith("w_") for n in names)
    assert all(re.fullmatch(r"[xyzw](_\d+)+", n) for n in names), names


@pytest.mark.parametrize("eliminate", ELIMINATE)
@pytest.mark.parametrize("problem", [chain3, diamond, shared_fanout, anchored])
def test_reported_objective_is_the_problems(problem, eliminate):
    p = problem()
    sol = solve_ilp(p, eliminate=eliminate)
    assert sol.objective == p.objective(sol.assignment)
    assert sol.objective == solve_brute_force(p).objective


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(SolverError) as err:
        solve_ilp(chain3(), backend="gurobi")
    msg = str(err.value)
    assert "gurobi" in msg and "HiGHS" in msg and "pip install highspy" in msg


def test_unavailable_backend(monkeypatch):
    monkeypatch.setattr(backends, "available_backends", lambda: ["cbc"])
    with pytest.raises(SolverError, match="not available"):
        solve_ilp(chain3(), backend="highs")


def test_dispatcher():
    p = chain3()
    assert solve(p, "dp").assignment == solve(p, "brute").assignment == solve(p).assignment
    assert solve(p, "ilp", backend=BACKENDS[0]).backend == BACKENDS[0]
    with pytest.raises(SolverError, match="unknown solve method"):
        solve(p, "anneal")


def test_repeated_solves_are_identical():
    rng = np.random.default_rng(7)
    n = 40
    edges = [(i, i + 1) for i in range(n - 1)] + [(i, i + 3) for i in range(n - 3)]
    p = LevelProblem([str(i) for i in range(n)], [("I", "II", "III")] * n,
                     [rng.integers(0, 2, 3).astype(float) for _ in range(n)], edges=edges,
                     edge_cost=[rng.integers(0, 2, (3, 3)).astype(float) for _ in edges])
    first = solve_ilp(p, eliminate=False)
    assert first.n_variables > 0
    for _ in range(3):
        again = solve_ilp(p, eliminate=False)
        assert again.assignment == first.assignment
        assert again.objective == first.objective


def test_incumbent_is_not_returned_when_the_solver_does_better():
    p = chain3()
    sol = solve_ilp(p, incumbent=(1, 0, 0), eliminate=False)
    assert sol.assignment == (0, 1, 1) and sol.status == "optimal"


def test_bad_incumbent_rejected():
    with pytest.raises(ValueError, match="incumbent"):
        solve_ilp(chain3(), incumbent=(0, 2, 0))


class _FakeLp:
    def __init__(self, status, sol_status):
        self.status, self.sol_status = status, sol_status


@pytest.mark.parametrize("status, sol_status, expected", [
    (1, 1, "optimal"),
    (1, 2, "feasible"),       # a time-limited run: "Optimal" status, merely feasible solution
    (0, 0, "none"),
    (-1, -1, "infeasible"),
    (0, 2, "feasible"),
])
def test_status_reads_both_fields(status, sol_status, expected):
    assert status_of(_FakeLp(status, sol_status)) == expected


def test_bad_options():
    with pytest.raises(ValueError):
        solve_ilp(chain3(), time_limit_seconds=0)
    with pytest.raises(ValueError):
        solve_ilp(chain3(), gap=-1)


def frustrated_triangle() -> LevelProblem:
    # Every edge charges 1 when its ends agree: an odd cycle must have one agreeing edge. The
    # LP relaxation (all halves) costs 0, so this needs the MIP, not the LP-first shortcut.
    same = A([[1.0, 0.0], [0.0, 1.0]])
    return LevelProblem(["a", "b", "c"], [("I", "II")] * 3, [np.zeros(2)] * 3,
                        edges=[(0, 1), (1, 2), (0, 2)], edge_cost=[same] * 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fractional_relaxation_still_solved_exactly(backend):
    sol = solve_ilp(frustrated_triangle(), backend=backend, eliminate=False)
    assert sol.n_variables > 0
    assert sol.objective == 1.0 and sol.status == "optimal"
    assert len(set(sol.assignment)) == 2


@pytest.mark.parametrize("lp_first", [True, False])
def test_lp_first_switch_gives_same_plans(monkeypatch, lp_first):
    monkeypatch.setattr(backends, "LP_FIRST", lp_first)
    for make in (chain3, diamond, shared_fanout, anchored, frustrated_triangle):
        p = make()
        assert solve_ilp(p, eliminate=False).objective == solve_brute_force(p).objective


def test_changing_thread_count_between_solves():
    # HiGHS keeps one global thread pool; a new thread count must not break later solves.
    p = frustrated_triangle()
    for threads in (2, 1, 2, None):
        assert solve_ilp(p, threads=threads, eliminate=False).objective == 1.0


fork_only = pytest.mark.skipif(not isolate.can_fork(), reason="needs os.fork")


@fork_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_isolated_solve_matches_in_process(backend):
    for make in (chain3, diamond, anchored, frustrated_triangle):
        p = make()
        inside = solve_ilp(p, backend=backend, isolate=False, eliminate=False)
        forked = solve_ilp(p, backend=backend, isolate=True, eliminate=False)
        assert (forked.assignment, forked.objective, forked.status, forked.n_variables) == (
            inside.assignment, inside.objective, inside.status, inside.n_variables)


@fork_only
def test_isolated_solve_raises_the_childs_error():
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 1.0])],
                     edges=[(0, 1)], edge_cost=[MISMATCH],
                     memory=[([A([10.0, 0.0]), A([0.0, 0.0])], 5.0),
                             ([A([0.0, 10.0]), A([0.0, 0.0])], 5.0)])
    with pytest.raises(InfeasibleError):
        solve_ilp(p, isolate=True, eliminate=False)


@fork_only
def test_hard_stop_returns_the_incumbent(monkeypatch):
    import time

    def stuck(*args, **kwargs):          # a backend that ignores its time limit
        time.sleep(60)

    monkeypatch.setattr(driver, "_solve_reduced", stuck)
    monkeypatch.setattr(isolate, "HARD_STOP_MARGIN_SECONDS", 0.1)
    p = chain3()
    sol = solve_ilp(p, time_limit_seconds=0.2, incumbent=(1, 0, 0), isolate=True,
                    eliminate=False)
    assert sol.assignment == (1, 0, 0)
    assert sol.status == "feasible" and sol.backend == "incumbent"
    assert sol.objective == p.objective((1, 0, 0))
    assert sol.wall_seconds < 30
    with pytest.raises(SolverError, match="raise --time-limit"):
        solve_ilp(p, time_limit_seconds=0.2, isolate=True, eliminate=False)


def test_short_time_limit_on_a_large_model_isolates(monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "run_forked", lambda fn, deadline: calls.append(1) or fn())
    p = diamond()
    solve_ilp(p, time_limit_seconds=60, eliminate=False)
    assert calls == []
    # 60 s is "short" once the estimate per variable is large enough
    monkeypatch.setattr(isolate, "_SECONDS_PER_VARIABLE", 10.0)
    solve_ilp(p, time_limit_seconds=60, eliminate=False)
    assert calls == ([1] if isolate.can_fork() else [])


def test_elimination_removes_leaves_and_series_nodes_only():
    # A residual block 0 -> 1 -> 2 -> 3 plus the skip 0 -> 3, and node 4 in a group term:
    # nodes 1, 2 are series nodes, then 0 and 3 are leaves around the group; node 4 stays.
    p = LevelProblem([str(i) for i in range(5)], [("I", "II")] * 5,
                     [A([0.0, 1.0]), A([2.0, 0.0]), A([0.0, 3.0]), A([1.0, 0.0]), A([0.0, 0.0])],
                     edges=[(0, 1), (1, 2), (2, 3), (0, 3), (3, 4)],
                     edge_cost=[MISMATCH, 2 * MISMATCH, MISMATCH, 3 * MISMATCH, MISMATCH],
                     groups=[GroupTerm(0.5, ((4, 1), (3, 1)), (0, 0))])
    full = solve_ilp(p, eliminate=False)
    reduced = solve_ilp(p, eliminate=True)
    assert reduced.objective == full.objective == solve_brute_force(p).objective
    assert 0 < reduced.n_variables < full.n_variables


def test_concurrent_solves_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    p = frustrated_triangle()
    with ThreadPoolExecutor(4) as pool:
        sols = list(pool.map(lambda k: solve_ilp(p, threads=1 + k % 2, eliminate=False),
                             range(12)))
    assert all(s.objective == 1.0 and s.status == "optimal" for s in sols)


def _random_loopy_dag(n: int, seed: int) -> LevelProblem:
    """All nodes three-way, random skip edges: a relaxation that is not integral."""
    rng = np.random.default_rng(seed)
    edges = [(i, i + 1) for i in range(n - 1)]
    edges += [(int(u), int(u) + int(rng.integers(2, 6))) for u in rng.integers(0, n - 6, n // 2)]
    return LevelProblem([str(i) for i in range(n)], [("I", "II", "III")] * n,
                        [rng.random(3) for _ in range(n)], edges=edges,
                        edge_cost=[rng.random((3, 3)) for _ in edges])


@pytest.mark.parametrize("limit", [0.01, 0.05])
def test_time_limited_status_is_honest(limit):
    p = _random_loopy_dag(150, seed=0)
    best = solve_ilp(p, eliminate=False)
    start = tuple([0] * 150)
    sol = solve_ilp(p, time_limit_seconds=limit, eliminate=False, incumbent=start)
    assert sol.objective <= p.objective(start)
    if sol.status == "optimal":
        assert sol.objective == pytest.approx(best.objective, rel=1e-6)
    else:
        assert sol.status == "feasible"
        assert sol.objective >= best.objective * (1 - 1e-6)
