"""Every fixture in tests/fixtures (and zoo models) partitioned on small arrays, exported with
``hypar export --onnx``, checked by onnx's full checker, read back by ``hypar evaluate OUT.onnx``
(no plan) with the JSON plan's totals and per-layer costs, and every sharding spec read the way
the format describes it (sharding_semantics.py) holding exactly what hypar's placement rule gives
each PE. 2x2 at each fixture's own batch; 2x2x2 at batch 2 (uneven: PEs with no rows) is slow."""

from __future__ import annotations

import json
from math import prod

import onnx
import pytest

from hypar import api
from hypar.array import array_from_levels
from hypar.export import plan_from_annotations
from hypar.export.node_tensors import GraphTensors, node_placements
from hypar.export.onnx_sharding import NodeMap
from hypar.onnx.sharding import constant_shapes, full_check_error, graph_nodes
from hypar.plan import dumps

from paths import FIXTURES, MODELS
from sharding_semantics import digit_nesting, held_indices

# Each fixture's binding (tests/onnx/test_fixture_counts.py lists the same).
BATCH2 = {"batch": 2}
BINDINGS = {
    "cnn_dynamo": BATCH2, "cnn_dynamo_dynbatch": BATCH2, "cnn_torchscript": BATCH2, "cnn_torchscript_train": BATCH2,
    "transformer_dynamo": BATCH2, "transformer_dynamo_dynbatch": BATCH2, "transformer_sdpa_dynamo": BATCH2,
    "transformer_sdpa_dynamo_opset23": BATCH2, "transformer_sdpa_torchscript": BATCH2,
    "transformer_torchscript": BATCH2, "transformer_torchscript_dynbatch": BATCH2,
    "transformer_torchscript_opset14": BATCH2,
    "decoder_dynamo": {"batch": 2, "dims": {"sequence": 16}},
    "decoder_dynamo_opset23": {"batch": 2, "dims": {"sequence": 16}},
    "decoder_ort_fused": {"batch": 2, "dims": {"sequence": 16}},
    "windowed_vit_torchscript": {"batch": 2, "dims": {"height": 16, "width": 16}},
    "windowed_attention_dynamic": {"batch": 2, "dims": {"height": 16, "width": 16}},
    "sequence_pattern_dynamic": {"input_shapes": {"ids": [2, 8]}},
    "cnn_qdq": BATCH2, "cnn_fp16": BATCH2,
}
# onnx's checker rejects this fixture itself (a default-domain SimplifiedLayerNormalization).
CHECKER_REJECTS = {"decoder_ort_fused"}


def test_every_fixture_has_a_binding():
    assert sorted(p.stem for p in FIXTURES.glob("*.onnx")) == sorted(BINDINGS)


def assert_specs_hold_what_hypar_places(model_path, plan: dict, annotated: onnx.ModelProto) -> int:
    """Every spec of every node a plan node is: the tensor is the node's, each entry's dim_values
    multiply to the axis size, and each device holds exactly the digit-nesting share. Returns the
    number of specs checked."""
    original = onnx.load(str(model_path), load_external_data=False)
    model, assignment = api.plan_assignment(str(model_path), plan)
    nodes = graph_nodes(original)
    owners, tensors = NodeMap(nodes, model).owner, GraphTensors.of(model.g, constant_shapes(original))
    checked = 0
    for i, name in enumerate(model.names):
        node, direct = owners[name]
        if not direct:
            continue
        (entry,) = annotated.graph.node[node.position].device_configurations
        specs = {s.tensor_name: s for s in entry.sharding_spec}
        for p in node_placements(model, i, assignment[i], node, tensors):
            spec = specs.pop(p.tensor)
            assert p.tensor in node.inputs + node.outputs
            axes: dict[int, tuple] = {}
            for h, ta in enumerate(p.levels):
                if ta is not None:
                    axes.setdefault(ta.axis, (ta.size, ta.unit, []))[2].append(h)
            assert {d.axis for d in spec.sharded_dim} == set(axes), (name, p.tensor)
            for d in spec.sharded_dim:
                assert prod(s.dim_value for s in d.simple_sharding) == axes[d.axis][0], (name, p.tensor)
            assert held_indices(spec, model.array.n_pes) == digit_nesting(model.array, axes), (name, p.tensor)
            checked += 1
        assert not specs, (name, sorted(specs))                   # nothing written beyond the placements
    return checked


def _round_trip(path, levels, binding, tmp_path, cli_run) -> None:
    plan = api.partition(str(path), array_from_levels(levels), **binding)
    plan_path, out = tmp_path / "plan.json", tmp_path / "sharded.onnx"
    plan_path.write_text(dumps(plan))
    res = cli_run("export", plan_path, "--onnx", path, "-o", out)
    assert res.exit_code == 0, res.stderr
    annotated = onnx.load(str(out), load_external_data=False)
    original = onnx.load(str(path), load_external_data=False)
    assert annotated.ir_version == max(original.ir_version, 11)
    if path.stem in CHECKER_REJECTS:
        assert "Warning:" in res.stderr and "not checked" in res.stdout
        assert full_check_error(out) == full_check_error(path) is not None
    else:
        assert "full check passes" in res.stdout
        onnx.checker.check_model(str(out), full_check=True)
    assert plan_from_annotations(out).types == {l["name"]: l["types"] for l in plan["layers"]}
    from_json = cli_run("evaluate", path, "--plan", plan_path, "--json")
    from_onnx = cli_run("evaluate", out, "--json")
    assert from_json.exit_code == from_onnx.exit_code == 0, from_onnx.stderr
    assert json.loads(from_onnx.stdout) == json.loads(from_json.stdout)
    assert assert_specs_hold_what_hypar_places(path, plan, annotated) > 0


@pytest.mark.parametrize("stem", sorted(BINDINGS))
def test_fixture_round_trip_on_2x2(stem, tmp_path, cli_run):
    _round_trip(FIXTURES / f"{stem}.onnx", [2, 2], BINDINGS[stem], tmp_path, cli_run)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(BINDINGS))
def test_fixture_round_trip_on_2x2x2(stem, tmp_path, cli_run):
    _round_trip(FIXTURES / f"{stem}.onnx", [2, 2, 2], BINDINGS[stem], tmp_path, cli_run)


@pytest.mark.parametrize("stem", ["alexnet", "mobilenetv2", pytest.param("gpt2_small", marks=pytest.mark.slow)])
def test_zoo_round_trip_on_2x2(stem, tmp_path, cli_run):
    """AlexNet, MobileNetV2 (grouped convs: type II splits whole groups) and GPT-2 (a vocabulary of
    50,257 split over 4 PEs: uneven)."""
    _round_trip(MODELS / f"{stem}.onnx", [2, 2], {"batch": 8}, tmp_path, cli_run)


@pytest.mark.parametrize("stem", ["cnn_dynamo", "transformer_dynamo"])
def test_verify_reads_the_annotations_as_the_plan(stem, tmp_path, cli_run):
    path = FIXTURES / f"{stem}.onnx"
    plan_path, out = tmp_path / "plan.json", tmp_path / "sharded.onnx"
    plan_path.write_text(dumps(api.partition(str(path), array_from_levels([2, 2]), batch=2)))
    assert cli_run("export", plan_path, "--onnx", path, "-o", out).exit_code == 0
    res = cli_run("verify", out, "--json")
    assert res.exit_code == 0, res.stdout[-2000:]
    rep = json.loads(res.stdout)
    assert rep["ok"] and all(layer["status"] == "PASS" for layer in rep["layers"])


@pytest.mark.parametrize("space", ["hypar", "accpar"])
@pytest.mark.parametrize("stem", ["transformer_dynamo", "decoder_ort_fused"])
def test_folded_spaces_and_the_reference_convention_round_trip(stem, space, tmp_path, cli_run):
    """Spaces hypar and accpar annotate the decision layers only (the ops between are folded into
    edges); the space, objective and convention come back from the metadata."""
    path = FIXTURES / f"{stem}.onnx"
    plan = api.partition(str(path), array_from_levels([2, 2]), space=space, convention="reference", objective="comm",
                         **BINDINGS[stem])
    plan_path, out = tmp_path / "plan.json", tmp_path / "sharded.onnx"
    plan_path.write_text(dumps(plan))
    assert cli_run("export", plan_path, "--onnx", path, "-o", out).exit_code == 0
    back = plan_from_annotations(out)
    assert (back.space, back.convention, back.objective) == (space, "reference", "comm")
    assert back.types == {l["name"]: l["types"] for l in plan["layers"]}
    assert json.loads(cli_run("evaluate", out, "--json").stdout) == \
        json.loads(cli_run("evaluate", path, "--plan", plan_path, "--json").stdout)
