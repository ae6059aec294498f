"""The pricing convention (issue 10, SPEC.md §3 "Several levels: two conventions") as the library
carries it: checked once where it enters, given to every cost model the library builds, recorded
in the plan and read back (a plan is evaluated and verified under its own convention unless the
caller names one; a minimal plan takes the default; a full plan written before conventions
existed was priced as ``reference``)."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from hypar import api
from hypar.cost import CostModel
from hypar.errors import PlanError
from hypar.plan import Plan, dumps, load_plan, validate
from hypar.verify import verify_plan
from hypar.vocab import Convention

LENET = "models/lenet.onnx"
ARRAY = api.resolve_array(levels="2,2")


@lru_cache(maxsize=None)
def _plan_text(convention: str, space: str = "full") -> str:
    return dumps(api.partition(LENET, ARRAY, objective="comm", space=space, search_how="greedy",
                               convention=convention))


def plan_of(convention: str, space: str = "full") -> dict:
    return json.loads(_plan_text(convention, space))


class _Recorder:
    """Replaces hypar.api.CostModel: every model built is kept (its convention checked by tests)."""

    def __init__(self):
        self.built: list[CostModel] = []

    def __call__(self, *args, **kwargs) -> CostModel:
        model = CostModel(*args, **kwargs)
        self.built.append(model)
        return model


@pytest.fixture
def built(monkeypatch) -> list[CostModel]:
    rec = _Recorder()
    monkeypatch.setattr(api, "CostModel", rec)
    return rec.built


def test_default_convention_is_hierarchical():
    assert list(Convention)[0] is Convention.HIERARCHICAL
    assert plan_of("hierarchical")["convention"] == "hierarchical"
    assert json.loads(dumps(api.partition(LENET, api.resolve_array(pes=2), search_how="greedy")))["convention"] \
        == "hierarchical"


@pytest.mark.parametrize("convention", Convention.values())
@pytest.mark.parametrize("space", ["hypar", "full"])
def test_partition_prices_every_model_under_the_convention(built, convention, space):
    """The plan's model, the judge of space hypar and the papers' baselines' models."""
    plan = api.partition(LENET, ARRAY, objective="comm", space=space, search_how="greedy", convention=convention)
    assert plan["convention"] == convention
    assert len(built) >= 3 + (space == "hypar")
    assert {m.convention for m in built} == {Convention(convention)}
    validate(plan)


def test_unknown_convention_is_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown convention 'flat'; choose one of hierarchical, reference"):
        api.partition(str(tmp_path / "missing.onnx"), ARRAY, convention="flat")
    with pytest.raises(ValueError, match="unknown convention 'flat'"):
        api.evaluate(str(tmp_path / "missing.onnx"), baseline_name="data", convention="flat")


@pytest.mark.parametrize("convention", Convention.values())
def test_plan_is_read_back_under_its_own_convention(convention, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(_plan_text(convention))
    plan = load_plan(path)
    assert plan.convention is Convention(convention)
    model, _ev = api.evaluate(LENET, plan=plan)
    assert model.convention is Convention(convention)
    other = next(c for c in Convention if c.value != convention)
    model, _ev = api.evaluate(LENET, plan=plan, convention=other)
    assert model.convention is other


def test_minimal_plan_takes_the_default_or_its_own_convention():
    minimal = {"assignment": {"conv1": ["II", "I"]}}
    assert Plan.of(minimal).convention is None
    assert api.plan_assignment(LENET, minimal, array=ARRAY)[0].convention is Convention.HIERARCHICAL
    own = Plan.of(minimal | {"convention": "reference"})
    assert own.convention is Convention.REFERENCE
    assert api.plan_assignment(LENET, own, array=ARRAY)[0].convention is Convention.REFERENCE
    assert api.evaluate(LENET, baseline_name="data", array=ARRAY)[0].convention is Convention.HIERARCHICAL


def test_full_plan_without_a_convention_was_priced_as_reference():
    legacy = {k: v for k, v in plan_of("reference").items() if k != "convention"}
    validate(legacy)
    assert Plan.of(legacy).convention is Convention.REFERENCE


def test_unknown_convention_in_a_plan_names_it():
    with pytest.raises(PlanError, match="unknown convention in the plan 'flat'"):
        Plan.of({"assignment": {}, "convention": "flat"})
    with pytest.raises(PlanError, match="convention"):
        validate(plan_of("reference") | {"convention": "flat"})


def test_verify_uses_the_plans_convention_unless_told(built):
    plan = plan_of("reference")
    rep = verify_plan(LENET, plan, batch=8)
    assert rep.convention == "reference" and rep.to_json()["convention"] == "reference"
    assert {m.convention for m in built} == {Convention.REFERENCE}
    built.clear()
    rep = verify_plan(LENET, plan, batch=8, convention="hierarchical")
    assert rep.convention == "hierarchical"
    # the plan's recorded costs are checked under its own convention, the simulation under the caller's
    assert [m.convention for m in built] == [Convention.REFERENCE, Convention.HIERARCHICAL]
