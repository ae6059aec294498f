"""The ILP built as arrays (hypar.ilp.arrays) is the PuLP-built model, column for column and
row for row, and both paths (and CBC through PuLP) reach the same optimum on random DAGs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypar.errors import InfeasibleError
from hypar.ilp.arrays import build_arrays
from hypar.ilp.backends import available_backends
from hypar.ilp.highs import _lp_arrays
from hypar.ilp.model import build_model
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.reduce import reduce_problem
from hypar.ilp.solve import solve_ilp
from test_solver_properties import COST, SETTINGS, close, dags

FIELDS = ("cost", "lower", "upper", "integer", "row_lower", "row_upper", "starts", "index",
          "value")


def assert_same_model(p: LevelProblem, eliminate: bool) -> None:
    """build_arrays and the PuLP model hand HiGHS identical arrays."""
    red = reduce_problem(p, eliminate)
    ours = build_arrays(red)
    built = build_model(red)
    theirs = _lp_arrays(built.lp, built.lp.variables())
    for name in FIELDS:
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.shape == b.shape and np.array_equal(a, b), name
    assert (ours.n_variables, ours.n_constraints) == (built.n_variables, built.n_constraints)
    index = {var.name: var.index for var in built.lp.variables()}
    for i, xs in built.x.items():
        assert [index[v.name] for v in xs] == list(ours.x[i])


@st.composite
def dags_with_factors(draw):
    """A random DAG problem plus up to two factor terms over three of its nodes (costs drawn
    at the problem's scale, so that distinct plans differ by far more than the MIP gap)."""
    p, scale = draw(dags(with_scale=True))
    n = len(p.names)
    if n >= 3:
        for _ in range(draw(st.integers(0, 2))):
            nodes = tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=3, max_size=3))))
            shape = tuple(len(p.choices[v]) for v in nodes)
            vals = draw(st.lists(COST, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
            p.factors.append(FactorTerm(nodes, np.array(vals).reshape(shape) * scale))
    return p


@settings(max_examples=80, **SETTINGS)
@given(dags_with_factors(), st.booleans())
def test_arrays_are_the_pulp_model(p, eliminate):
    try:
        assert_same_model(p, eliminate)
    except InfeasibleError:
        pass


def test_choice_ten_sorts_before_choice_two():
    # PuLP sorts x_0_10 before x_0_2: the arrays follow its name order, not the choice order.
    sizes = [12, 11, 3]
    rng = np.random.default_rng(0)
    p = LevelProblem(["a", "b", "c"], [tuple(f"c{k}" for k in range(t)) for t in sizes],
                     [rng.integers(0, 9, t).astype(float) for t in sizes],
                     [(0, 1), (1, 2), (0, 2)],
                     [rng.integers(0, 9, (sizes[u], sizes[v])).astype(float)
                      for u, v in [(0, 1), (1, 2), (0, 2)]],
                     [GroupTerm(2.0, ((1, 10), (2, 1)), (0, 11))])
    assert_same_model(p, eliminate=False)
    assert list(build_arrays(reduce_problem(p, False)).x[0][:3]) != [0, 1, 2]


@settings(max_examples=60, **SETTINGS)
@given(dags_with_factors())
def test_both_paths_reach_the_same_optimum(p):
    answers = []
    for kwargs in ({}, {"via_pulp": True}) + (
            ({"backend": "cbc"},) if "cbc" in available_backends() else ()):
        try:
            sol = solve_ilp(p, eliminate=False, **kwargs)
        except InfeasibleError:
            answers.append(None)
            continue
        assert sol.status == "optimal"
        answers.append(sol)
    if answers[0] is None:
        assert all(a is None for a in answers)
        return
    arrays, pulp_built = answers[0], answers[1]
    assert (arrays.assignment, arrays.objective) == (pulp_built.assignment, pulp_built.objective)
    assert (arrays.n_variables, arrays.n_constraints) == (pulp_built.n_variables,
                                                          pulp_built.n_constraints)
    for other in answers[2:]:
        assert close(other.objective, arrays.objective)


def test_warm_start_column_values():
    p = LevelProblem(["a", "b"], [("I", "II"), ("I", "II", "III")],
                     [np.array([0.0, 1.0]), np.array([3.0, 0.0, 1.0])],
                     edges=[(0, 1)], edge_cost=[np.array([[0.0, 2.0, 1.0], [5.0, 4.0, 0.0]])])
    model = build_arrays(reduce_problem(p, eliminate=False))
    col = model.start((1, 2))
    assert col.sum() == 3.0                              # x_a, x_b and the one y that holds
    assert model.chosen(col) == {0: 1, 1: 2}
    assert col[model.y[0][2][1, 2]] == 1.0
