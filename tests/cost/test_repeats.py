"""Repeated blocks (hypar.cost.repeats): twins, runs, and tied level problems and evaluations that
are exactly the untied sums restricted to tied plans."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hypar import api, synthetic
from hypar.array import array_from_levels
from hypar.config import SolverSettings
from hypar.cost import CostModel
from hypar.cost.repeats import Run, find_runs
from hypar.ilp.solve import solve_ilp
from hypar.search import search
from tests.paths import MODELS, FIXTURES


def test_find_runs_picks_the_period_that_removes_most_nodes():
    #           blocks: A B x 5, then a tail; every node a decision layer
    sigs = [9] + [1, 2] * 5 + [7]
    runs = find_runs(sigs, [True] * len(sigs))
    assert runs == [Run(start=1, period=2, count=5)]
    assert runs[0].tied_blocks == 3 and list(runs[0].tied_range) == [3, 4, 5, 6, 7, 8]


def test_find_runs_needs_two_decision_layers_per_block():
    sigs = [1, 2] * 8
    # only the first node of each block decides: a block of 2 holds 1, a block of 4 holds 2
    assert find_runs(sigs, [True, False] * 8) == [Run(start=0, period=4, count=4)]
    assert find_runs([1, 2] * 6, [True, False] * 6) == []    # 3 blocks of 4: one inner block only


def test_find_runs_finds_disjoint_stages():
    sigs = [1, 2] * 5 + [5] + [3, 4] * 5
    assert find_runs(sigs, [True] * len(sigs)) == [Run(0, 2, 5), Run(11, 2, 5)]


def test_fewer_than_four_blocks_are_not_tied():
    """Only blocks between two twins of themselves are tied: three blocks leave one, nothing to share."""
    assert find_runs([1, 2, 3] * 3, [True] * 9) == []
    assert find_runs([1, 2] * 4, [True] * 8) == []           # would take 2 nodes off: met by chance
    assert find_runs([1, 2, 3, 4] * 4, [True] * 16) == [Run(0, 4, 4)]


def test_no_runs_in_a_chain_of_distinct_layers():
    g = synthetic.gemm_chain([16, 32, 48, 64, 80], batch=8)
    m = CostModel(g, array_from_levels([2, 2]), "full", convention="hierarchical")
    assert m.ties.runs == () and m.ties.n_classes == len(m.nodes)


def _chain_model(convention: str = "hierarchical", fanouts=(2, 2)) -> CostModel:
    """Five blocks of (64 -> 128, 128 -> 64) after a stem: one run of 5 blocks of 2 layers, the
    three inner ones tied."""
    g = synthetic.gemm_chain([32] + [64, 128] * 5 + [64], batch=16)
    return CostModel(g, array_from_levels(list(fanouts)), "full", convention=convention)


def test_the_chain_of_blocks_ties_its_inner_blocks():
    m = _chain_model()
    assert m.ties.runs == (Run(start=1, period=2, count=5),)
    #                          stem, block 0, blocks 1-3 (tied to block 1), block 4
    assert m.ties.node_class == (0, 1, 2, 3, 4, 3, 4, 3, 4, 9, 10)
    summary = m.ties.summary(m.structure, tied=True)
    assert summary["blocks_tied"] == 3
    assert summary["untied_size"]["problem_nodes"] == 11 and summary["tied_size"]["problem_nodes"] == 7


def _tied_assignment(m: CostModel, rng: random.Random) -> list[tuple]:
    """A random full assignment giving every tie class one tuple of labels."""
    per_class: dict[int, tuple] = {}
    out = []
    for i, c in enumerate(m.ties.node_class):
        if c not in per_class:
            per_class[c] = tuple(rng.choice(m.labels(i)) for _ in range(m.n_levels))
        out.append(per_class[c])
    return out


def _check_tied_equals_untied(m: CostModel, rng: random.Random, trials: int = 2) -> None:
    """Every level problem, ideal and fixed below, with a memory row: the tied problem's objective
    and memory use of every sampled assignment equal the untied problem's of the same plan."""
    for _ in range(trials):
        asg = _tied_assignment(m, rng)
        for h in range(m.n_levels):
            for lower in ("ideal", "fixed"):
                untied = m.level_problem(asg, h, "time", lower=lower, memory_cap_bytes=1e15)
                tied = m.level_problem(asg, h, "time", lower=lower, memory_cap_bytes=1e15, tie=True)
                assert len(tied.names) < len(untied.names)
                for _ in range(4):
                    a = [rng.randrange(len(c)) for c in tied.choices]
                    b = untied.incumbent(tied.node_labels(a))
                    assert tied.objective(a) == pytest.approx(untied.objective(b), rel=1e-12)
                    used = [sum(float(coef[v][x]) for v, x in enumerate(a)) for coef, _ in tied.memory]
                    need = [sum(float(coef[v][x]) for v, x in enumerate(b)) for coef, _ in untied.memory]
                    assert used == pytest.approx(need, rel=1e-12)


@pytest.mark.parametrize("convention", ["hierarchical", "reference"])
def test_tied_problems_are_the_untied_sums_on_the_chain(convention):
    _check_tied_equals_untied(_chain_model(convention), random.Random(1))


@pytest.mark.parametrize("path, space, dims", [(MODELS / "resnet50.onnx", "accpar", None),
                                               (MODELS / "bert_base.onnx", "full", None),
                                               (MODELS / "gpt2_small.onnx", "full", None)])
def test_tied_problems_are_the_untied_sums_on_real_models(path, space, dims):
    g = api.load_graph(str(path), batch=4, dims=dims)
    m = CostModel(g, array_from_levels([2, 2]), space, convention="hierarchical")
    assert m.ties.runs, f"{path.name} has repeated blocks in space {space}"
    _check_tied_equals_untied(m, random.Random(2), trials=1)


def test_evaluate_of_a_tied_plan_prices_each_tensor_group_once_and_the_same():
    m = _chain_model()
    asg = _tied_assignment(m, random.Random(3))
    assert m.is_tied(asg)
    fresh = _chain_model()
    fresh.is_tied = lambda assignment: False          # the per-tensor path, every tensor priced
    for h in range(m.n_levels):
        tied = m.level_edge_costs(asg, h)
        each = fresh.level_edge_costs(asg, h)
        assert set(tied) == set(each)
        for c in tied:
            assert tied[c].bytes == pytest.approx(each[c].bytes)
            assert tied[c].seconds == pytest.approx(each[c].seconds)


def test_incumbent_of_an_untied_plan_is_none():
    m = _chain_model()
    asg = [("I", "I")] * len(m.nodes)
    prob = m.level_problem(asg, 0, "time", lower="fixed", tie=True)
    labels = ["I"] * len(m.nodes)
    assert prob.incumbent(labels) is not None
    labels[5] = "III"                              # one inner block apart from its twins
    assert prob.incumbent(labels) is None


def test_tied_level_optimum_equals_untied_where_the_blocks_agree():
    """On the chain of blocks the untied optimum gives every block the same types, so the tied
    optimum (a restriction) reaches it; in general it can only be at least the untied one."""
    m = _chain_model()
    asg = [(None, None)] * len(m.nodes)
    untied = solve_ilp(m.level_problem(asg, 0, "time"))
    tied = solve_ilp(m.level_problem(asg, 0, "time", tie=True))
    labels = m.level_problem(asg, 0, "time").node_labels(untied.assignment)
    assert labels[3:9:2] == [labels[3]] * 3 and labels[4:9:2] == [labels[4]] * 3   # the inner blocks agree
    assert tied.objective == pytest.approx(untied.objective, rel=1e-12)


def test_search_with_and_without_ties_on_resnet50():
    """The whole search, tied and untied, on resnet50 (stage 3's inner blocks tied in space
    accpar): the tied plan ties its blocks and costs the same as the untied search's here."""
    g = api.load_graph(str(MODELS / "resnet50.onnx"), batch=8)
    m = CostModel(g, array_from_levels([4, 2]), "accpar", convention="reference")
    tied = search(m, "refine", "time", SolverSettings())
    untied = search(m, "refine", "time", SolverSettings(tie_blocks=False))
    assert m.is_tied(tied["plan"])
    t, u = (m.evaluate(x["plan"]).objective("time") for x in (tied, untied))
    assert t == pytest.approx(u, rel=1e-12)
    assert np.isfinite(t)
