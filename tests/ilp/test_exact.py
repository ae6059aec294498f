"""Chain DP and brute force on tiny problems with a known answer."""

import numpy as np
import pytest

from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.exact import check_problem, solve_brute_force, solve_chain_dp
from hypar.ilp.problem import GroupTerm, LevelProblem
from hypar.ilp.solution import LevelSolution

A = np.array


def chain3() -> LevelProblem:
    # (0,1,1) costs 0 + 1 + 0 + 3 + 0 = 4; every other path costs more (closed form below).
    return LevelProblem(
        ["a", "b", "c"], [("I", "II")] * 3,
        [A([0.0, 10.0]), A([5.0, 1.0]), A([0.0, 0.0])],
        edges=[(0, 1), (1, 2)],
        edge_cost=[A([[0.0, 3.0], [3.0, 0.0]]), A([[0.0, 4.0], [4.0, 0.0]])])


def test_chain_dp_finds_the_known_best_path():
    sol = solve_chain_dp(chain3())
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 4.0
    assert sol.status == "optimal" and sol.backend == "dp"


def test_brute_force_finds_the_known_best_path():
    sol = solve_brute_force(chain3())
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 4.0
    assert sol.backend == "brute"


def test_chain_edges_given_out_of_order():
    p = chain3()
    p.edges.reverse()
    p.edge_cost.reverse()
    assert solve_chain_dp(p).assignment == (0, 1, 1)


def test_dp_breaks_ties_lexicographically():
    p = LevelProblem(["a", "b", "c"], [("I", "II", "III")] * 3, [np.zeros(3)] * 3,
                     edges=[(0, 1), (1, 2)], edge_cost=[np.ones((3, 3)) - np.eye(3)] * 2)
    assert solve_chain_dp(p).assignment == (0, 0, 0)
    assert solve_brute_force(p).assignment == (0, 0, 0)


def test_dp_tie_on_later_node_picks_smallest():
    # Node 0 must be II (index 1); node 1 is indifferent between I and III.
    p = LevelProblem(["a", "b"], [("I", "II"), ("I", "II", "III")],
                     [A([1.0, 0.0]), A([2.0, 5.0, 2.0])],
                     edges=[(0, 1)], edge_cost=[A([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])])
    assert solve_chain_dp(p).assignment == (1, 0)


def test_single_node_and_empty_problem():
    one = LevelProblem(["a"], [("I", "II", "III")], [A([3.0, 1.0, 2.0])])
    assert solve_chain_dp(one).assignment == (1,)
    empty = LevelProblem([], [], [])
    assert solve_chain_dp(empty).assignment == ()
    assert solve_brute_force(empty).objective == 0.0


def test_dp_refuses_a_dag():
    p = chain3()
    p.edges.append((0, 2))
    p.edge_cost.append(np.zeros((2, 2)))
    with pytest.raises(SolverError, match="ILP"):
        solve_chain_dp(p)


def test_dp_refuses_groups_and_memory():
    p = chain3()
    p.groups.append(GroupTerm(1.0, ((1, 0),)))
    with pytest.raises(SolverError):
        solve_chain_dp(p)


def test_brute_force_respects_memory():
    p = LevelProblem(["a", "b"], [("I", "II")] * 2, [A([0.0, 1.0]), A([0.0, 1.0])],
                     memory=[([A([10.0, 2.0]), A([10.0, 2.0])], 12.0)])
    sol = solve_brute_force(p)
    assert sol.assignment == (0, 1)   # (0,0) needs 20 > 12; (0,1) and (1,0) tie at cost 1
    assert sol.objective == 1.0


def test_brute_force_infeasible_memory():
    p = LevelProblem(["a"], [("I", "II")], [A([0.0, 1.0])], memory=[([A([3.0, 2.0])], 1.0)])
    with pytest.raises(InfeasibleError, match="capacity"):
        solve_brute_force(p)


def test_brute_force_counts_groups_once():
    p = LevelProblem(["a", "b", "c"], [("X",), ("A", "B"), ("A", "B")],
                     [A([0.0]), A([0.0, 1.0]), A([1.5, 0.0])],
                     groups=[GroupTerm(6.0, ((1, 0), (2, 0))), GroupTerm(6.0, ((1, 1), (2, 1)))])
    sol = solve_brute_force(p)
    assert sol.assignment == (0, 1, 1)
    assert sol.objective == 7.0


def test_brute_force_limit():
    p = LevelProblem([str(i) for i in range(10)], [("I", "II", "III")] * 10, [np.zeros(3)] * 10)
    with pytest.raises(SolverError, match="59049 assignments"):
        solve_brute_force(p, max_assignments=1000)


def test_solution_is_frozen():
    sol = solve_chain_dp(chain3())
    assert isinstance(sol, LevelSolution)
    with pytest.raises(AttributeError):
        sol.objective = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("bad, match", [
    (lambda p: p.node_cost.__setitem__(0, A([1.0])), "node_cost"),
    (lambda p: p.node_cost.__setitem__(0, A([1.0, np.nan])), "finite"),
    (lambda p: p.edges.__setitem__(0, (0, 0)), "itself"),
    (lambda p: p.edges.__setitem__(0, (0, 7)), "not in"),
    (lambda p: p.edge_cost.__setitem__(0, np.zeros((3, 2))), "matrix"),
    (lambda p: p.groups.append(GroupTerm(-1.0, ((0, 0),))), "non-negative"),
    (lambda p: p.groups.append(GroupTerm(1.0, ((0, 5),))), "choice"),
    (lambda p: p.memory.append(([A([1.0, 1.0])], 3.0)), "memory row"),
])
def test_check_problem_rejects_malformed(bad, match):
    p = chain3()
    bad(p)
    with pytest.raises(ValueError, match=match):
        check_problem(p)
