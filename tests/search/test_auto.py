"""The default search, ``auto`` (issue 10): refine first, then the joint problem where it fits,
keeping the better exactly evaluated plan; the plan says what it reached and why joint was
skipped. ``greedy``, ``refine`` and ``joint`` keep their meanings."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypar import api
from hypar import search as S
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.errors import SolverError
from hypar.search import SolverSettings, joint_size, search
from hypar.synthetic import gemm_chain, random_dag
from hypar.vocab import Convention, Reached, Search

SET = SolverSettings()
HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A 3-layer chain on 2x2 where refine stops 10.5 % above the joint optimum (reference convention).
CHAIN, BATCH = [512, 512, 1024, 128], 512


def value(model: CostModel, asg, objective: str = "comm") -> float:
    return model.evaluate(asg).objective(objective)


def optimum(model: CostModel, objective: str = "comm") -> float:
    """The smallest evaluated objective over every full assignment (tiny models only)."""
    per_node = [list(itertools.product(model.labels(i), repeat=model.n_levels)) for i in range(len(model.nodes))]
    return min(value(model, list(a), objective) for a in itertools.product(*per_node))


def chain_model(convention: str = "reference") -> CostModel:
    return CostModel(gemm_chain(CHAIN, BATCH), array_from_levels([2, 2]), "accpar", convention=convention)


def test_auto_is_the_default_and_first():
    assert list(Search)[0] is Search.AUTO
    assert list(Reached) == [Reached.JOINT_OPTIMAL, Reached.JOINT_FEASIBLE, Reached.REFINE_FIXPOINT,
                             Reached.REFINE_STOPPED, Reached.GREEDY]


def test_auto_reaches_the_joint_optimum_where_refine_stops_above_it():
    model = chain_model()
    best = optimum(model)
    refined = search(model, Search.REFINE, "comm", SET)
    auto = search(model, Search.AUTO, "comm", SET)
    assert value(model, refined["plan"]) > best * 1.10                       # refine: 10.5 % above
    assert refined["reached"] is Reached.REFINE_FIXPOINT
    assert math.isclose(value(model, auto["plan"]), best, rel_tol=1e-12)
    assert auto["reached"] is Reached.JOINT_OPTIMAL and auto["joint_skipped"] is False
    assert auto["joint_skipped_why"] is None


@settings(max_examples=12, **HYP)
@given(dims=st.lists(st.sampled_from([8, 16, 64, 256, 1024]), min_size=3, max_size=4),
       batch=st.sampled_from([8, 64, 512]), objective=st.sampled_from(["comm", "time"]),
       convention=st.sampled_from(Convention.values()))
def test_auto_equals_the_brute_force_optimum_on_small_chains(dims, batch, objective, convention):
    model = CostModel(gemm_chain(dims, batch), array_from_levels([2, 2]), "accpar", convention=convention)
    found = search(model, Search.AUTO, objective, SET)
    assert found["reached"] is Reached.JOINT_OPTIMAL
    assert math.isclose(value(model, found["plan"], objective), optimum(model, objective), rel_tol=1e-9)


def test_auto_solves_a_chains_joint_problem_by_dp_past_the_ilps_limit():
    model = chain_model()
    no_ilp = SolverSettings(joint_max_pairs=10)
    auto = search(model, Search.AUTO, "comm", no_ilp)
    assert auto["reached"] is Reached.JOINT_OPTIMAL and auto["joint_skipped"] is False
    assert math.isclose(value(model, auto["plan"]), optimum(model), rel_tol=1e-12)
    # joint keeps its meaning: the ILP where small enough, else refine's plan
    joint = search(model, Search.JOINT, "comm", no_ilp)
    assert joint["joint_skipped"] is True and joint["reached"] is Reached.REFINE_FIXPOINT


def test_no_dp_for_a_dag_or_under_a_memory_cap():
    dag = CostModel(random_dag(4, seed=5, batch=32, width_choices=(64,), skip_prob=1.0), array_from_levels([2, 2]),
                    "accpar")
    assert [(e.p, e.c) for e in dag.edges] != [(i, i + 1) for i in range(len(dag.nodes) - 1)]
    assert search(dag, Search.AUTO, "comm", SolverSettings(joint_max_pairs=10))["joint_skipped"] is True
    capped = SolverSettings(joint_max_pairs=10, memory_cap_gb=1e3)
    assert search(chain_model(), Search.AUTO, "comm", capped)["joint_skipped"] is True


def test_too_large_joint_keeps_refines_plan_and_says_why():
    model = chain_model()
    tiny = SolverSettings(joint_max_pairs=10, joint_dp_max_pairs=10)
    auto = search(model, Search.AUTO, "comm", tiny)
    refined = search(model, Search.REFINE, "comm", tiny)
    assert auto["plan"] == refined["plan"] and auto["reached"] is Reached.REFINE_FIXPOINT
    assert auto["joint_skipped"] is True
    assert auto["joint_skipped_why"] == (f"the joint problem needs {joint_size(model):,} pair variables, "
                                         "above joint_max_pairs 10")
    # joint means what it meant: the same fallback
    assert search(model, Search.JOINT, "comm", tiny)["plan"] == refined["plan"]


def test_a_failing_joint_solve_keeps_refines_plan_under_auto_only(monkeypatch):
    def fail(*args, **kwargs):
        raise SolverError("backend exploded")

    model = chain_model()
    refined = search(model, Search.REFINE, "comm", SET)
    monkeypatch.setattr(S, "_solve_joint", fail)
    auto = search(model, Search.AUTO, "comm", SET)
    assert auto["plan"] == refined["plan"] and auto["reached"] is Reached.REFINE_FIXPOINT
    assert auto["joint_skipped_why"] == "the joint solve failed: backend exploded"
    with pytest.raises(SolverError, match="backend exploded"):
        search(model, Search.JOINT, "comm", SET)


def test_greedy_and_refine_say_what_they_reached():
    model = chain_model()
    assert search(model, Search.GREEDY, "comm", SET)["reached"] is Reached.GREEDY
    starts = [search(model, Search.GREEDY, "comm", SET)["plan"]]
    assert S._refine(model, starts, "comm", SET, None, max_rounds=0)[1] is Reached.REFINE_STOPPED
    assert S._refine(model, starts, "comm", SET, None, max_rounds=10)[1] is Reached.REFINE_FIXPOINT


def test_partition_records_what_the_default_search_reached():
    plan = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"), objective="comm",
                         convention="reference")
    assert plan["search"] == "auto"
    solver = plan["solver"]
    assert solver["reached"] == "joint-optimal" and solver["joint_skipped"] is False
    assert solver["joint_skipped_why"] is None
    small = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"), objective="comm",
                          settings=SolverSettings(joint_max_pairs=1, joint_dp_max_pairs=1))
    assert small["solver"]["reached"] in ("refine-fixpoint", "refine-stopped")
    assert small["solver"]["joint_skipped_why"].startswith("the joint problem needs ")
