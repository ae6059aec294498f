"""The plan JSON names each layer's module beside its ONNX node name (issue 11): ``module`` per
layer (null when the export does not say), in the schema; plans written before it still load."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from hypar import api
from hypar import graph as G
from hypar.errors import PlanError
from hypar.plan import dumps, read_plan, validate
from hypar.present.plots import layer_label
from hypar.present.text import layer_map, plan_summary

from paths import FIXTURES

TRANSFORMER = str(FIXTURES / "transformer_dynamo.onnx")


@lru_cache(maxsize=None)
def _plan_text(model_path: str) -> str:
    return dumps(api.partition(model_path, api.resolve_array(levels="2,2"), objective="comm"))


def plan_of(model_path: str) -> dict:
    return json.loads(_plan_text(model_path))


def test_plan_layers_carry_the_graphs_modules():
    plan = plan_of(TRANSFORMER)
    g = api.load_graph(TRANSFORMER)
    assert [(l["name"], l["module"]) for l in plan["layers"]] == [(n, G.layer(g, n).module) for n in G.topo_layers(g)]
    by_module = {l["module"]: l["name"] for l in plan["layers"] if l["weighted"]}
    assert by_module == {"tok": "node_embedding", "q": "node_MatMul_1", "k": "node_MatMul_9", "v": "node_MatMul_17",
                         "out": "node_MatMul_31", "ffn1": "node_MatMul_33", "ffn2": "node_MatMul_35",
                         "head": "node_MatMul_37"}
    assert list(plan["layers"][0])[:3] == ["name", "module", "op"]      # beside the node name
    validate(plan)


def test_zoo_plan_modules_are_null():
    plan = plan_of("models/lenet.onnx")
    assert {l["module"] for l in plan["layers"]} == {None}
    validate(plan)


def test_schema_checks_the_module_type():
    bad = plan_of(TRANSFORMER)
    bad["layers"][1]["module"] = 3
    with pytest.raises(PlanError, match="schema.*layers/1/module"):
        validate(bad)


def test_a_plan_without_modules_still_loads_and_evaluates(tmp_path):
    old = plan_of(TRANSFORMER)
    for l in old["layers"]:
        del l["module"]
    path = tmp_path / "old_plan.json"
    path.write_text(dumps(old))
    back = read_plan(path)
    _, ev = api.evaluate(TRANSFORMER, plan=back)
    assert [list(a) for a in ev.assignment] == [l["types"] for l in old["layers"]]
    assert ev.totals()["comm_bytes"] == pytest.approx(old["totals"]["comm_bytes"], rel=1e-11)
    assert "module" not in layer_map(old["layers"])      # no module column for a plan without any


def test_summary_shows_modules_beside_node_names():
    text = plan_summary(plan_of(TRANSFORMER))
    head = next(ln for ln in text.splitlines() if ln.startswith("layer"))
    assert head.split()[:3] == ["layer", "module", "op"]
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("node_")}
    assert rows["node_MatMul_31"][1:3] == ["out", "MatMul"]
    assert rows["node_MatMul_35"][1:3] == ["ffn2", "MatMul"]
    assert rows["node_matmul"][1:3] == ["-", "MatMul"]          # the attention MatMul: root module
    zoo = plan_summary(plan_of("models/lenet.onnx"))
    assert next(ln for ln in zoo.splitlines() if ln.startswith("layer")).split()[:2] == ["layer", "op"]


def test_plot_labels_layers_by_module():
    layers = plan_of(TRANSFORMER)["layers"]
    assert [layer_label(l) for l in layers if l["weighted"]] == ["tok", "q", "k", "v", "out", "ffn1", "ffn2", "head"]
    assert layer_label({"name": "node_matmul", "module": None}) == "node_matmul"
    assert layer_label({"name": "conv1"}) == "conv1"                 # a plan written before modules
