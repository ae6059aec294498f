"""What ``hypar export`` refuses, and what reading an annotated model refuses: one-line errors
that name the layer, node or key and the fix, raised before anything is written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hypar import api
from hypar.array import array_from_levels
from hypar.errors import PlanError
from hypar.export import annotate, annotated_plan, plan_from_annotations
from hypar.plan import Plan, dumps

from paths import FIXTURES

CNN = FIXTURES / "cnn_dynamo.onnx"
TRANSFORMER = FIXTURES / "transformer_dynamo.onnx"


def one_error_line(res, pattern: str, code: int = 1) -> str:
    import re

    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    errors = [l for l in res.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), res.stderr
    assert "Traceback" not in res.stderr
    return errors[0]


@pytest.fixture(scope="module")
def cnn_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "cnn.json"
    path.write_text(dumps(api.partition(str(CNN), array_from_levels([2, 2]), batch=2)))
    return path


def test_a_plan_for_another_model_is_refused_by_name(cnn_plan, tmp_path, cli_run):
    out = tmp_path / "out.onnx"
    one_error_line(cli_run("export", cnn_plan, "--onnx", TRANSFORMER, "-o", out),
                   r"plan (was made for|does not fit).*cnn_dynamo|layer 'node_Conv_50'")
    assert not out.exists()


def test_a_plan_for_the_same_layers_with_other_parameters_is_refused(cnn_plan, tmp_path):
    import json

    plan = json.loads(cnn_plan.read_text())
    plan["model"]["parameters"] += 1
    with pytest.raises(PlanError, match=r"made for cnn_dynamo with \d+ parameters; this model has \d+"):
        annotate(str(CNN), plan)


def _embedding_3d() -> onnx.ModelProto:
    """Gather from a table [10, 2, 4] by ids [8, 3], then MatMul with w [3, 2, 4, 5] -- a table whose
    output features (2 x 4) span two axes."""
    table = numpy_helper.from_array(np.ones((10, 2, 4), np.float32), "table")
    w = numpy_helper.from_array(np.ones((8, 5), np.float32), "w")
    shape = numpy_helper.from_array(np.array([8, 3, 8], np.int64), "flat")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Reshape", ["e", "flat"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "w"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "emb3", [helper.make_tensor_value_info("ids", TensorProto.INT64, [8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 3, 5])], [table, w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_weight_split_the_format_cannot_name_is_refused_by_layer():
    """Type III splits the embedding's output features, here two axes of the table (2 x 4): no
    one ShardedDimProto axis holds them. Type II (the table's rows) is written."""
    model = _embedding_3d()
    with pytest.raises(PlanError, match=r"layer 'embed': type III at level 1 splits the weight 'table'.*type I"):
        annotate(model, Plan({"embed": ["I", "III"]}, array_from_levels([2, 2]), batch=8))
    ok = annotate(model, Plan({"embed": ["II", "I"]}, array_from_levels([2, 2]), batch=8))
    assert plan_from_annotations(ok).types["embed"] == ["II", "I"]


def test_an_unannotated_model_has_no_plan(cli_run):
    assert annotated_plan(str(CNN)) is None
    with pytest.raises(PlanError, match=r"carries no hypar sharding annotations.*hypar export PLAN.json --onnx"):
        plan_from_annotations(str(CNN))
    one_error_line(cli_run("verify", CNN), r"carries no hypar sharding annotations; give PLAN.json")
    one_error_line(cli_run("evaluate", CNN), r"give exactly one of --plan and --baseline")


@pytest.fixture(scope="module")
def exported(cnn_plan, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "cnn_sharded.onnx"
    from hypar.export import export_onnx
    from hypar.plan import load_plan

    export_onnx(load_plan(cnn_plan), CNN, out)
    return onnx.load(str(out))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def test_an_edited_sharding_is_refused_by_node(exported):
    model = _copy(exported)
    node = next(n for n in model.graph.node if n.device_configurations and n.op_type == "Conv")
    spec = next(s for s in node.device_configurations[0].sharding_spec if s.sharded_dim)
    spec.sharded_dim[0].axis = 2                                        # a spatial axis: no type splits it
    with pytest.raises(PlanError, match=rf"node '{node.name}'.*not what hypar writes for any types"):
        plan_from_annotations(model)


def test_a_device_outside_the_configuration_is_refused(exported):
    model = _copy(exported)
    node = next(n for n in model.graph.node if n.device_configurations)
    spec = node.device_configurations[0].sharding_spec[0]
    if spec.index_to_device_group_map:
        spec.index_to_device_group_map[0].value[0] = 7
    else:
        spec.device[0] = 7
    with pytest.raises(PlanError, match=r"device .* outside the configuration's 4 devices"):
        plan_from_annotations(model)


def test_a_missing_node_annotation_is_refused(exported):
    model = _copy(exported)
    node = next(n for n in model.graph.node if n.device_configurations)
    del node.device_configurations[:]
    with pytest.raises(PlanError, match=rf"node '{node.name}' carries no sharding for configuration"):
        plan_from_annotations(model)


@pytest.mark.parametrize("key", ["hypar.array", "hypar.batch", "hypar.convention"])
def test_missing_metadata_is_refused_by_key(exported, key):
    model = _copy(exported)
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    for k, v in keep:
        model.metadata_props.add(key=k, value=v)
    with pytest.raises(PlanError, match=rf"metadata_props '{key}' is missing"):
        plan_from_annotations(model)


def test_export_needs_one_target(cnn_plan, tmp_path, cli_run):
    out = tmp_path / "out.onnx"
    one_error_line(cli_run("export", cnn_plan, "-o", out), r"choose one target: --onnx MODEL.onnx .* or --torch", 2)
    one_error_line(cli_run("export", cnn_plan, "--onnx", CNN, "--torch", "-o", out), r"choose one target", 2)
    one_error_line(cli_run("export", cnn_plan, "--torch", "-o", out), r"'node_Conv_50' \(module 'stem'\) is a "
                   r"convolution of type III")
    one_error_line(cli_run("export", cnn_plan, "--onnx", CNN, "-o", tmp_path / "no" / "out.onnx"),
                   r"cannot write .*folder .* does not exist; choose another -o path")
    assert not out.exists()


def test_export_help_has_an_example(cli_run):
    res = cli_run("export", "--help")
    assert res.exit_code == 0 and "Example:" in res.stdout and "--onnx" in res.stdout and "--torch" in res.stdout


def test_a_model_with_external_weights_is_written_beside_them(cnn_plan, tmp_path):
    from hypar.errors import ModelLoadError
    from hypar.export import export_onnx
    from hypar.plan import load_plan

    model = onnx.load(str(CNN))
    onnx.save_model(model, str(tmp_path / "cnn.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="cnn.weights", size_threshold=1024)
    stored = onnx.load(str(tmp_path / "cnn.onnx"), load_external_data=False).graph.initializer
    assert any(t.data_location == TensorProto.EXTERNAL for t in stored)
    elsewhere = tmp_path.parent / "cnn_sharded_elsewhere.onnx"
    with pytest.raises(ModelLoadError, match=r"keeps its weights in external files beside it; write the annotated "
                                             r"model into the same folder"):
        export_onnx(load_plan(cnn_plan), tmp_path / "cnn.onnx", elsewhere)
    assert not elsewhere.exists()
    summary = export_onnx(load_plan(cnn_plan), tmp_path / "cnn.onnx", tmp_path / "cnn_sharded.onnx")
    assert summary.checked
    onnx.checker.check_model(str(tmp_path / "cnn_sharded.onnx"), full_check=True)
    assert plan_from_annotations(tmp_path / "cnn_sharded.onnx").types == load_plan(cnn_plan).types


def test_exporting_again_replaces_the_earlier_annotations(cnn_plan, exported):
    import json

    plan = json.loads(cnn_plan.read_text())
    weighted = {l["name"]: ["I", "I"] for l in plan["layers"] if l["weighted"]}
    again = annotate(exported, Plan(weighted, array_from_levels([2, 2]), batch=2))
    assert [c.name for c in again.configuration] == ["hypar:levels-2x2"]
    keys = [p.key for p in again.metadata_props]
    assert len(keys) == len(set(keys))
    assert all(len(n.device_configurations) <= 1 for n in again.graph.node)
    back = plan_from_annotations(again).types
    assert {name: back[name] for name in weighted} == weighted


def test_a_plan_at_another_batch_than_the_model_fixes_warns(tmp_path, cli_run):
    """cnn_dynamo fixes batch 2; a plan at batch 8 is written with the plan's sizes, and says so."""
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(dumps(api.partition(str(CNN), array_from_levels([2, 2]), batch=8)))
    res = cli_run("export", plan_path, "--onnx", CNN, "-o", tmp_path / "out.onnx")
    assert res.exit_code == 0
    assert "Warning: input 'x' is [2, 3, 16, 16] in the model and [8, 3, 16, 16] in the plan" in res.stderr
    assert plan_from_annotations(tmp_path / "out.onnx").batch == 8
