"""Regression: a level whose ILP came out "optimal" at 0.75 while brute force finds 0.5.

Found by Hypothesis (test_solver_properties.py::test_dag_ilp_equals_brute). One memory row is
used exactly to its cap by the best plan (node 3's choice 1 alone: 2e6 <= 2e6). HiGHS's presolve
reduces the level so that a MIP start costed 0.75 counts as 0.5 in the presolved model; HiGHS
then stopped with "Optimal" and returned the start itself. The start came either from the LP
relaxation HiGHS had kept (LP first, no warm start asked) or from the incumbent (warm start).
"""

import numpy as np
import pytest

from hypar.ilp import backends
from hypar.ilp.backends import available_backends, make_solver
from hypar.ilp.exact import solve_brute_force
from hypar.ilp.highs import _plan_within_gap
from hypar.ilp.model import build_model
from hypar.ilp.problem import LevelProblem
from hypar.ilp.reduce import reduce_problem
from hypar.ilp.solve import solve_ilp

A = np.array
BEST = 0.5
WRONG_PLAN = (1, 0, 0, 0, 0, 1, 2)          # 0.75: what HiGHS returned as "optimal"


def memory_at_cap() -> LevelProblem:
    """The saved Hypothesis example, literally."""
    z2, z3 = A([0.0, 0.0]), A([0.0, 0.0, 0.0])
    return LevelProblem(
        names=[f"op/{i}" for i in range(7)],
        choices=[("c0", "c1"), ("c0", "c1", "c2"), ("c0", "c1"), ("c0", "c1"),
                 ("c0", "c1", "c2"), ("c0", "c1"), ("c0", "c1", "c2")],
        node_cost=[z2, z3, z2, A([0.25, 0.0]), z3, z2, z3],
        edges=[(3, 2), (5, 0), (5, 4), (6, 5)],
        edge_cost=[A([[0.0, 0.0], [0.0, 0.0]]),
                   A([[0.0, 0.25], [0.25, 0.0]]),
                   A([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]),
                   A([[0.0, 0.0], [0.0, 0.0], [0.0, 0.5]])],
        memory=[([z2, z3, z2, A([0.0, 2e6]), A([0.0, 3e6, 3e6]), z2, A([3e6, 3e6, 0.0])],
                 2e6)])


def test_the_example_as_saved():
    p = memory_at_cap()
    brute = solve_brute_force(p)
    assert brute.objective == BEST
    assert brute.assignment == (0, 0, 0, 1, 0, 0, 2)
    assert p.feasible(brute.assignment)                  # 2e6 <= 2e6: exactly at the cap
    assert p.feasible(WRONG_PLAN) and p.objective(WRONG_PLAN) == 0.75


@pytest.mark.parametrize("incumbent", [None, WRONG_PLAN], ids=["cold", "warm"])
@pytest.mark.parametrize("lp_first", [True, False], ids=["lp-first", "mip-only"])
@pytest.mark.parametrize("eliminate", [False, True], ids=["full-ilp", "eliminated"])
@pytest.mark.parametrize("backend", available_backends())
def test_ilp_equals_brute_force(monkeypatch, backend, eliminate, lp_first, incumbent):
    monkeypatch.setattr(backends, "LP_FIRST", lp_first)
    p = memory_at_cap()
    sol = solve_ilp(p, backend=backend, eliminate=eliminate, incumbent=incumbent)
    assert sol.objective == solve_brute_force(p).objective == BEST
    assert sol.status == "optimal"
    assert sol.objective == p.objective(sol.assignment)
    assert p.feasible(sol.assignment)


def test_every_feasible_warm_start_gives_the_optimum():
    # Any start costed 0.75 (node 3 on c0, node 6 on c2) used to come back as "optimal".
    import itertools

    p = memory_at_cap()
    for start in itertools.product(*(range(len(c)) for c in p.choices)):
        if p.feasible(start):
            sol = solve_ilp(p, eliminate=False, incumbent=start)
            assert (sol.objective, sol.status) == (BEST, "optimal"), start


def test_plan_bound_check():
    # The guard itself: HiGHS's own optimum passes; a costlier plan against that bound fails.
    built = build_model(reduce_problem(memory_at_cap(), eliminate=False))
    solver = make_solver("highs", 60.0, 1e-6, 1, False)
    built.lp.solve(solver)
    h = built.lp.solverModel
    col = np.asarray(h.getSolution().col_value)
    assert _plan_within_gap(h, col)
    worse = np.zeros_like(col)
    for var in built.lp.variables():                     # WRONG_PLAN's columns
        worse[var.index] = 1.0 if var.name in {
            "x_0_1", "x_3_0", "x_4_0", "x_5_1", "x_6_2",
            "y_0_5_1_1", "y_4_5_0_1", "y_5_6_1_2"} else 0.0
    assert not _plan_within_gap(h, worse)
