"""`hypar inspect` shows each layer's module path beside its ONNX node name (issue 11): a table
column when the model has any, a ``module`` field (null when unknown) in the JSON."""

from __future__ import annotations

import json

from paths import FIXTURES, MODELS


def test_table_has_a_module_column_for_a_dynamo_export(cli_run):
    res = cli_run("inspect", FIXTURES / "transformer_dynamo.onnx")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[3].split()[:4] == ["layer", "module", "op", "kind"]
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("node_")}
    assert rows["node_MatMul_1"][1:4] == ["q", "MatMul", "gemm"]
    assert rows["node_MatMul_31"][1:4] == ["out", "MatMul", "gemm"]
    assert rows["node_MatMul_33"][1:4] == ["ffn1", "MatMul", "gemm"]
    assert rows["node_matmul"][1:4] == ["-", "MatMul", "matmul_act"]
    # the footer still lines up; the learned position table (added to the token embedding) counts
    assert lines[-2].split() == ["total", "46.7K", "1.32M", "47.4K"]


def test_all_nodes_show_torchscript_modules(cli_run):
    res = cli_run("inspect", FIXTURES / "transformer_torchscript_opset14.onnx", "--all")
    assert res.exit_code == 0, res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("/ln2/")]
    assert len(rows) == 9 and {r[1] for r in rows} == {"ln2"}


def test_zoo_table_has_no_module_column(cli_run):
    res = cli_run("inspect", MODELS / "lenet.onnx")
    assert res.stdout.splitlines()[3].split()[:3] == ["layer", "op", "kind"]


def test_json_has_a_module_per_layer(cli_run):
    doc = json.loads(cli_run("inspect", FIXTURES / "cnn_dynamo.onnx", "--json").stdout)
    got = {x["name"]: x["module"] for x in doc["layers"]}
    assert got == {"node_Conv_50": "stem", "node_relu": None, "node_Conv_52": "conv1", "node_relu_1": None,
                   "node_Conv_54": "conv2", "node_add": None, "node_relu_2": None, "node_max_pool2d": "pool",
                   "node_view": None, "node_linear": "fc"}
    zoo = json.loads(cli_run("inspect", MODELS / "lenet.onnx", "--json").stdout)
    assert all("module" in x and x["module"] is None for x in zoo["layers"])
