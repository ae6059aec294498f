"""The typed Plan (hypar.plan.Plan) and the one route from a plan to (cost model, assignment)
that evaluate and verify share (hypar.api.plan_assignment)."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from hypar import api
from hypar.errors import PlanError
from hypar.plan import Plan, dumps, load_plan, read_plan
from hypar.verify import verify_plan
from hypar.vocab import Objective, Space

LENET = "models/lenet.onnx"


@lru_cache(maxsize=None)
def _full_text() -> str:
    return dumps(api.partition(LENET, api.resolve_array(levels="2,2"), objective=Objective.COMM,
                               space=Space.ACCPAR, search_how="greedy"))


def full_plan() -> dict:
    return json.loads(_full_text())


def test_a_full_plan_brings_its_settings():
    d = full_plan()
    p = Plan.of(d)
    assert p.full and p.document is d
    assert p.array.fanouts == (2, 2) and p.batch == d["batch"]
    assert p.space is Space.ACCPAR and p.objective is Objective.COMM
    assert p.types == {l["name"]: l["types"] for l in d["layers"]}
    assert Plan.of(p) is p


def test_a_minimal_plan_brings_only_types():
    p = Plan.of({"assignment": {"fc1": ["II", "III"]}})
    assert not p.full and p.types == {"fc1": ["II", "III"]}
    assert (p.array, p.batch, p.space, p.objective, p.document) == (None, None, None, None, None)


@pytest.mark.parametrize("bad,pattern", [({"hello": 1}, "neither a hypar plan"), ([1, 2], "neither a hypar plan"),
                                         ({"assignment": "x"}, "'assignment' must map layer names")])
def test_bad_plans_are_plan_errors(bad, pattern):
    with pytest.raises(PlanError, match=pattern):
        Plan.of(bad)


def test_plan_json_holds_plain_strings():
    """Vocabulary members go in, plain strings come out: the plan dictionary is JSON data."""
    d = api.partition(LENET, api.resolve_array(levels="2"), objective=Objective.COMM, space=Space.FULL)
    assert type(d["objective"]) is str and type(d["space"]) is str and type(d["search"]) is str
    assert type(d["solver"]["method"]) is str
    assert all(type(k) is str for k in d["baselines"])
    assert all(type(t) is str for l in d["layers"] for t in l["types"])


def test_load_plan_reads_back_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(_full_text())
    assert load_plan(path) == Plan.of(read_plan(path))


def test_evaluate_and_verify_take_the_same_route():
    """plan_assignment gives evaluate's assignment, and verify checks that very assignment."""
    d = full_plan()
    model, asg = api.plan_assignment(LENET, d)
    _m, ev = api.evaluate(LENET, plan=d)
    assert [tuple(a) for a in ev.assignment] == [tuple(a) for a in asg]
    assert model.space == "accpar" and model.array.fanouts == (2, 2)
    rep = verify_plan(LENET, d, batch=d["batch"])
    assert rep.ok and rep.plan_checked and not rep.plan_errors
    assert [l.types for l in rep.layers] == [tuple(a) for a in asg]


def test_options_override_the_plans_settings():
    d = full_plan()
    model, _asg = api.plan_assignment(LENET, d, array=api.resolve_array(levels="2,2"), batch=4, space="full")
    assert model.space == "full" and model.g.graph["batch"] == 4
