"""The JSON mapping plan (issue 4): schema, round trip through evaluate, determinism, weight
slices, minimal hand-written plans."""

import json
import math
from functools import lru_cache

import jsonschema
import pytest

from hypar import api
from hypar import graph as G
from hypar.errors import PlanError
from hypar.plan import SCHEMA_ID, dumps, read_plan, schema, validate
from hypar.search import BASELINES

MODELS = ["models/lenet.onnx", "models/alexnet.onnx"]
KEY = {"comm": "comm_bytes", "time": "time_s", "energy": "energy_j"}
TOTAL_KEYS = {"comm_bytes", "time_s", "compute_s", "comm_s", "energy_j", "peak_mem_bytes_per_pe"}


@lru_cache(maxsize=None)
def _plan_json(model_path: str, pes: int = 16, objective: str = "time") -> str:
    return dumps(api.partition(model_path, api.resolve_array(pes=pes), objective=objective))


def plan_of(model_path: str, pes: int = 16, objective: str = "time") -> dict:
    return json.loads(_plan_json(model_path, pes, objective))


def close(a: float, b: float) -> bool:
    # plans keep 12 significant digits (hypar.plan._round)
    return math.isclose(a, b, rel_tol=1e-11, abs_tol=1e-300)


# --------------------------------------------------------------------------------------------
# schema

@pytest.mark.parametrize("model_path", MODELS)
def test_plan_is_valid_against_the_packaged_schema(model_path):
    plan = plan_of(model_path)
    with open("hypar/plan_schema.json") as fh:
        sch = json.load(fh)
    assert sch == schema()
    jsonschema.validate(plan, sch)
    validate(plan)
    assert plan["schema"] == SCHEMA_ID == "hypar-plan/1"


@pytest.mark.parametrize("model_path", MODELS)
def test_plan_contents(model_path):
    plan = plan_of(model_path)
    H = len(plan["array"]["levels"])
    assert H == 4 and plan["array"]["n_pes"] == 16
    assert plan["model"]["sha256"] and len(plan["model"]["sha256"]) == 64
    assert plan["model"]["path"] == model_path
    assert plan["objective"] == "time" and plan["space"] == "full" and plan["search"] == "auto"
    assert plan["solver"]["status"] in ("optimal", "feasible")
    assert plan["solver"]["level_solves"] >= H
    g = api.load_graph(model_path)
    assert [l["name"] for l in plan["layers"]] == G.topo_layers(g)
    for lay in plan["layers"]:
        assert len(lay["types"]) == H
        assert len(lay["placements"]) == H
        if lay["weighted"]:
            assert set(lay["types"]) <= {"I", "II", "III"}
            assert all("weight" in p for p in lay["placements"])
        assert set(lay["costs"]) >= {"comm_bytes", "time_s", "compute_s", "energy_j", "mem_bytes_per_pe", "levels"}
        assert len(lay["costs"]["levels"]) == H
    assert set(plan["totals"]) == TOTAL_KEYS
    assert set(plan["baselines"]) == set(BASELINES) | {"hypar", "accpar"}
    assert set(plan["improvement"]) == set(plan["baselines"])
    # per-layer costs add up to the totals
    assert close(sum(l["costs"]["comm_bytes"] for l in plan["layers"]), plan["totals"]["comm_bytes"])
    assert close(sum(l["costs"]["time_s"] for l in plan["layers"]), plan["totals"]["time_s"])


def test_schema_rejects_broken_plans():
    plan = plan_of("models/lenet.onnx")
    for mutate in (lambda p: p.pop("totals"),
                   lambda p: p.__setitem__("schema", "hypar-plan/0"),
                   lambda p: p["layers"][0].__setitem__("types", ["IV"] * 4),
                   lambda p: p["solver"].__setitem__("status", "maybe")):
        bad = json.loads(json.dumps(plan))
        mutate(bad)
        with pytest.raises(PlanError, match="schema"):
            validate(bad)


# --------------------------------------------------------------------------------------------
# objective vs baselines, round trip, determinism

@pytest.mark.parametrize("model_path", MODELS)
@pytest.mark.parametrize("objective", ["comm", "time"])
def test_plan_objective_no_worse_than_every_baseline(model_path, objective):
    plan = plan_of(model_path, objective=objective)
    k = KEY[objective]
    for name, tot in plan["baselines"].items():
        assert plan["totals"][k] <= tot[k] * (1 + 1e-11), name


@pytest.mark.parametrize("model_path", MODELS)
def test_round_trip_evaluate_gives_the_plan_totals(model_path, tmp_path):
    plan = plan_of(model_path)
    path = tmp_path / "plan.json"
    path.write_text(dumps(plan))
    back = read_plan(path)
    assert back == plan
    model, ev = api.evaluate(model_path, plan=back)
    assert model.n_levels == 4 and model.space == "full"
    tot = ev.totals()
    for k in TOTAL_KEYS:
        assert close(tot[k], plan["totals"][k]), k
    assert [list(a) for a in ev.assignment] == [l["types"] for l in plan["layers"]]


@pytest.mark.parametrize("model_path", MODELS)
def test_baseline_totals_round_trip(model_path):
    plan = plan_of(model_path)
    arr = api.resolve_array(pes=16)
    for name in BASELINES + ("hypar", "accpar"):
        _m, ev = api.evaluate(model_path, baseline_name=name, array=arr, objective="time")
        for k in TOTAL_KEYS:
            assert close(ev.totals()[k], plan["baselines"][name][k]), (name, k)


def _strip_timing(text: str) -> dict:
    d = json.loads(text)
    d.pop("timing", None)
    d["solver"].pop("solve_wall_s", None)
    return d


@pytest.mark.parametrize("model_path", MODELS)
def test_plan_is_deterministic(model_path):
    arr = api.resolve_array(pes=16)
    a = dumps(api.partition(model_path, arr))
    b = dumps(api.partition(model_path, api.resolve_array(pes=16)))
    assert "timing" in json.loads(a)
    assert json.dumps(_strip_timing(a)) == json.dumps(_strip_timing(b))


# --------------------------------------------------------------------------------------------
# weight slices

def _cover_counts(slices, di, do):
    """Coverage count of every cell of the Di x Do weight (coordinate-compressed)."""
    xs = sorted({0, di} | {s["in"][0] for s in slices} | {s["in"][1] for s in slices})
    ys = sorted({0, do} | {s["out"][0] for s in slices} | {s["out"][1] for s in slices})
    counts = {}
    for a, b in zip(xs, xs[1:]):
        for c, d in zip(ys, ys[1:]):
            n = 0
            for s in slices:
                if b > a and d > c and s["in"][0] <= a and b <= s["in"][1] and s["out"][0] <= c and d <= s["out"][1]:
                    n += s["pes"][1] - s["pes"][0]
            if b > a and d > c:
                counts[(a, c)] = n
    return counts


SLICE_CASES = [("models/lenet.onnx", dict(pes=16)), ("models/alexnet.onnx", dict(pes=16)),
               ("models/alexnet.onnx", dict(pes=12)),                                  # 3-way level
               ("models/alexnet.onnx", dict(array_path="solver_configs/accpar2020.yaml"))]  # heterogeneous


@pytest.mark.parametrize("model_path,how", SLICE_CASES)
def test_weight_slices_cover_each_weight_once_per_pe_group(model_path, how):
    """Every PE holds one slice; every weight element is held by exactly one PE of each group
    that splits the weight, i.e. by prod(fanout of the levels where the layer is type I) PEs."""
    plan = plan_of(model_path) if how == dict(pes=16) else api.partition(model_path, api.resolve_array(**how))
    g = api.load_graph(model_path)
    fan = [l["fanout"] for l in plan["array"]["levels"]]
    n_pes = plan["array"]["n_pes"]
    checked = 0
    for lay in plan["layers"]:
        if not lay["weighted"]:
            assert "weight_slices" not in lay
            continue
        slices = lay["weight_slices"]
        layer = G.layer(g, lay["name"])
        di, do = layer.d_in, layer.d_out
        # the PE ranges tile 0..n_pes exactly once
        pos = 0
        for s in slices:
            assert s["pes"][0] == pos and s["pes"][1] > pos
            pos = s["pes"][1]
            assert 0 <= s["in"][0] <= s["in"][1] <= di and 0 <= s["out"][0] <= s["out"][1] <= do
        assert pos == n_pes
        replicas = math.prod(f for f, t in zip(fan, lay["types"]) if t == "I")
        counts = _cover_counts(slices, di, do)
        assert counts and set(counts.values()) == {replicas}, (lay["name"], lay["types"])
        # types II split rows (Di), III columns (Do)
        n_in = math.prod(f for f, t in zip(fan, lay["types"]) if t == "II")
        n_out = math.prod(f for f, t in zip(fan, lay["types"]) if t == "III")
        if n_in <= di:
            assert len({tuple(s["in"]) for s in slices}) == n_in
        if n_out <= do:
            assert len({tuple(s["out"]) for s in slices}) == n_out
        checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------------------------
# minimal hand-written plans

ARR = api.resolve_array(levels="2,2")
LENET_DECISION = ["conv1", "conv2", "fc1", "fc2", "fc3"]


def _eval(assignment, **kw):
    return api.evaluate("models/lenet.onnx", plan={"assignment": assignment}, array=ARR, **kw)


def test_minimal_plan_unknown_layer_names_it():
    with pytest.raises(PlanError, match="'fc9'"):
        _eval({"fc9": ["I", "I"]})


def test_minimal_plan_wrong_list_length_names_the_layer():
    with pytest.raises(PlanError, match="'fc1'.*2 level"):
        _eval({"fc1": ["I"]})
    with pytest.raises(PlanError, match="'fc1'"):
        _eval({"fc1": ["I", "II", "III"]})
    with pytest.raises(PlanError, match="'fc1'"):
        _eval({"fc1": "II"})


def test_minimal_plan_unknown_type_names_the_layer_and_type():
    with pytest.raises(PlanError, match="'conv2'.*'IV'"):
        _eval({"conv2": ["I", "IV"]})


def test_minimal_plan_type_outside_the_space_names_the_layer():
    with pytest.raises(PlanError, match="'fc2'.*'III'"):
        _eval({"fc2": ["III", "I"]}, space="hypar")


def test_minimal_plan_left_out_layers_default_to_type_I():
    model, ev = _eval({"fc1": ["II", "III"]})
    types = dict(zip(model.names, ev.assignment))
    assert types["fc1"] == ("II", "III")
    for name in LENET_DECISION:
        if name != "fc1":
            assert types[name] == ("I", "I")
    # an empty assignment is the data baseline
    _m, empty = _eval({})
    _m, data = api.evaluate("models/lenet.onnx", baseline_name="data", array=ARR)
    assert empty.totals() == data.totals()
    assert all(t == ("I", "I") for n, t in zip(_m.names, empty.assignment) if n in LENET_DECISION)


def test_minimal_plan_file_read_back(tmp_path):
    p = tmp_path / "mini.json"
    p.write_text(json.dumps({"assignment": {"fc3": ["II", "II"]}}))
    plan = read_plan(p)
    model, ev = api.evaluate("models/lenet.onnx", plan=plan, array=ARR)
    assert dict(zip(model.names, ev.assignment))["fc3"] == ("II", "II")


def test_read_plan_errors(tmp_path):
    with pytest.raises(PlanError, match="no such plan file"):
        read_plan(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not valid JSON"):
        read_plan(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(PlanError, match="neither a hypar plan"):
        read_plan(other)


def test_evaluate_needs_exactly_one_of_plan_and_baseline():
    with pytest.raises(PlanError):
        api.evaluate("models/lenet.onnx", array=ARR)
    with pytest.raises(PlanError):
        api.evaluate("models/lenet.onnx", plan={"assignment": {}}, baseline_name="data", array=ARR)


@pytest.mark.parametrize("space,objective,search_how", [("accpar", "comm", "greedy"), ("accpar", "time", "joint"),
                                                        ("full", "energy", "refine")])
def test_round_trip_other_spaces_and_objectives(space, objective, search_how, tmp_path):
    plan = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"), objective=objective,
                         space=space, search_how=search_how)
    validate(plan)
    path = tmp_path / "p.json"
    path.write_text(dumps(plan))
    model, ev = api.evaluate("models/lenet.onnx", plan=read_plan(path))
    assert model.space == space
    for k in TOTAL_KEYS:
        assert close(ev.totals()[k], plan["totals"][k]), k


@pytest.mark.parametrize("cfg", ["solver_configs/accpar2020.yaml", "solver_configs/gpu_cluster.yaml",
                                 "solver_configs/hypar2019.yaml"])
def test_round_trip_shipped_arrays(cfg, tmp_path):
    """The plan records the array (heterogeneous kinds, bandwidths); evaluate rebuilds it."""
    plan = api.partition("models/lenet.onnx", api.resolve_array(cfg))
    validate(plan)
    path = tmp_path / "p.json"
    path.write_text(dumps(plan))
    _m, ev = api.evaluate("models/lenet.onnx", plan=read_plan(path))
    for k in TOTAL_KEYS:
        assert close(ev.totals()[k], plan["totals"][k]), k


def _depthwise_model(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper, parser

    m = parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
dw (float[4,8,8,8] x) => (float[4,8,8,8] z) {
  y = Conv <pads = [1,1,1,1], group = 1> (x, w1)
  r = Relu (y)
  z = Conv <pads = [1,1,1,1], group = 8> (r, w2)
}''')
    for k, shape in {"w1": (8, 8, 3, 3), "w2": (8, 1, 3, 3)}.items():
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), k))
    path = tmp_path / "dw.onnx"
    onnx.save(m, path)
    return str(path)


def test_weight_slices_of_a_depthwise_conv(tmp_path):
    """Regression (bug fixed in c67bfdd).
    hypar/plan.py weight_slices: it returns None when the node has no "i" axis, so a
    depthwise / grouped conv whose weight is split by group (type II = S(group), axes b, g) gets
    no "weight_slices" in the plan (e.g. all 17 depthwise convs of mobilenetv2), although issue 4
    asks every layer to record which PE holds which slice of its weight. Expected: slices for
    Conv_2 (group = 8 over 4 PEs) whose output-channel ranges cover [0, 8) once per replica."""
    path = _depthwise_model(tmp_path)
    plan = api.partition(path, api.resolve_array(pes=4))
    validate(plan)
    dw = next(l for l in plan["layers"] if l["name"] == "Conv_2")
    assert dw["weighted"]
    assert "weight_slices" in dw
    slices = dw["weight_slices"]
    assert slices[0]["pes"][0] == 0 and slices[-1]["pes"][1] == 4
    replicas = math.prod(f for f, t in zip([2, 2], dw["types"]) if t == "I")
    for c in range(8):
        assert sum(s["pes"][1] - s["pes"][0] for s in slices if s["out"][0] <= c < s["out"][1]) == replicas
