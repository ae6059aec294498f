"""The seams between the ILP's parts: cost-table algebra, elimination, reduction and its way
back, the model's size bookkeeping, and the isolation timing rules."""

import itertools

import numpy as np
import pytest

from hypar.errors import InfeasibleError
from hypar.ilp import isolate
from hypar.ilp.eliminate import eliminate_nodes
from hypar.ilp.exact import solve_brute_force
from hypar.ilp.model import build_model
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.reduce import reduce_problem
from hypar.ilp.tables import (fold_pair_into_nodes, fold_table_into_nodes, is_separable,
                              is_separable_table)

A = np.array
MISMATCH = A([[0.0, 1.0], [1.0, 0.0]])


def test_separable_pair_folds_into_node_costs_exactly():
    m = A([1.0, 4.0])[:, None] + A([0.5, 2.0, 8.0])[None, :]
    assert is_separable(m) and not is_separable(MISMATCH)
    lin = [np.zeros(2), np.zeros(3)]
    fold_pair_into_nodes(lin, 0, 1, m)
    assert all(lin[0][s] + lin[1][t] == m[s, t] for s in range(2) for t in range(3))


def test_separable_table_folds_into_node_costs_exactly():
    a, b, c = A([1.0, 2.0]), A([0.0, 4.0, 8.0]), A([0.25, 0.5])
    t = a[:, None, None] + b[None, :, None] + c[None, None, :]
    assert is_separable_table(t)
    assert not is_separable_table(t + np.eye(2)[:, None, :])
    lin = [np.zeros(2), np.zeros(3), np.zeros(2)]
    fold_table_into_nodes(lin, (0, 1, 2), t)
    for j in itertools.product(range(2), range(3), range(2)):
        assert lin[0][j[0]] + lin[1][j[1]] + lin[2][j[2]] == t[j]


def test_eliminating_a_chain_leaves_its_optimum_on_the_last_node():
    node_cost = [A([0.0, 10.0]), A([5.0, 1.0]), A([0.0, 0.0])]
    p = LevelProblem(["a", "b", "c"], [("I", "II")] * 3, node_cost,
                     edges=[(0, 1), (1, 2)], edge_cost=[3 * MISMATCH, 4 * MISMATCH])
    lin = [c.copy() for c in node_cost]
    pairs = {(0, 1): 3 * MISMATCH, (1, 2): 4 * MISMATCH}
    eliminated = eliminate_nodes(lin, pairs, pinned=set(), fixed={})
    assert [e.node for e in eliminated] == [0, 1] and pairs == {}
    best = solve_brute_force(p)
    assert float(np.min(lin[2])) == best.objective
    assignment = [0, 0, int(np.argmin(lin[2]))]
    for e in reversed(eliminated):
        e.restore(assignment)
    assert tuple(assignment) == best.assignment


def test_pinned_nodes_are_not_eliminated():
    lin = [np.zeros(2) for _ in range(3)]
    pairs = {(0, 1): MISMATCH.copy(), (1, 2): 2 * MISMATCH}
    eliminated = eliminate_nodes(lin, pairs, pinned={0, 1, 2}, fixed={})
    assert eliminated == [] and set(pairs) == {(0, 1), (1, 2)}


def test_reduction_keeps_the_objective():
    # Node 1 has one choice (a constant), the 0-2 matrix is separable, a group and a factor
    # remain: const + reduced objective == problem objective for every assignment.
    rng = np.random.default_rng(3)
    sizes = [2, 1, 3, 2, 2]
    p = LevelProblem([str(i) for i in range(5)], [tuple("abc"[:t]) for t in sizes],
                     [rng.integers(0, 4, t).astype(float) for t in sizes],
                     edges=[(0, 1), (0, 2), (2, 3), (3, 4), (4, 2)],
                     edge_cost=[A([[1.0], [2.0]]), A([1.0, 2.0])[:, None] + A([0.0, 1.0, 3.0]),
                                rng.integers(0, 4, (3, 2)).astype(float), 2 * MISMATCH,
                                rng.integers(0, 4, (2, 3)).astype(float)],
                     groups=[GroupTerm(1.5, ((3, 1), (0, 1)), (2, 0))],
                     factors=[FactorTerm((4, 0, 3), rng.integers(0, 4, (2, 2, 2)).astype(float))])
    red = reduce_problem(p, eliminate=False)
    assert 1 in red.fixed and red.free == [0, 2, 3, 4]
    for choice in itertools.product(*(range(sizes[i]) for i in red.free)):
        chosen = dict(zip(red.free, choice))
        a = red.expand(chosen)
        value = red.const + sum(float(red.lin[i][c]) for i, c in chosen.items())
        value += sum(float(m[a[u], a[v]]) for u, v, m in red.pairs)
        value += sum(g.cost for g in red.groups
                     if (g.anchor is None or a[g.anchor[0]] == g.anchor[1])
                     and any(a[v] in ts for v, ts in g.members))
        value += sum(float(f.table[tuple(a[v] for v in f.nodes)]) for f in red.factors)
        assert value == pytest.approx(p.objective(a), rel=1e-12)


def test_memory_row_below_its_smallest_use_is_infeasible():
    p = LevelProblem(["a"], [("I", "II")], [A([0.0, 0.0])], memory=[([A([3.0, 2.0])], 1.0)])
    with pytest.raises(InfeasibleError, match="raise the per-PE capacity"):
        reduce_problem(p)


def test_built_model_counts_its_variables_and_rows():
    p = LevelProblem(["a", "b", "c"], [("I", "II")] * 3, [np.zeros(2)] * 3,
                     edges=[(0, 1), (1, 2), (0, 2)], edge_cost=[MISMATCH] * 3,
                     groups=[GroupTerm(1.0, ((1, 0), (2, 1)), (0, 1))])
    red = reduce_problem(p, eliminate=False)
    built = build_model(red)
    assert built.n_variables == len(built.lp.variables())
    assert built.n_constraints == built.lp.numConstraints()
    assert red.estimated_variables() == built.n_variables


def test_isolation_rules():
    assert isolate.hard_deadline(10.0, 2.0) == 10.0 + 2.0 * 1.05 + isolate.HARD_STOP_MARGIN_SECONDS
    assert not isolate.is_short(60.0, 100)
    assert isolate.is_short(0.01, 100)
    assert isolate.estimated_seconds(200) > isolate.estimated_seconds(100)


@pytest.mark.skipif(not isolate.can_fork(), reason="needs os.fork")
def test_run_forked_returns_the_result_or_raises_the_error():
    import time

    assert isolate.run_forked(lambda: 6 * 7, time.perf_counter() + 30) == 42
    with pytest.raises(ZeroDivisionError):
        isolate.run_forked(lambda: 1 / 0, time.perf_counter() + 30)
    with pytest.raises(TimeoutError):
        isolate.run_forked(lambda: time.sleep(30), time.perf_counter() + 0.2)
