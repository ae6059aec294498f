"""`hypar inspect`: table, JSON, --batch, --all, warnings and one-line errors (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper, parser
import onnx


from paths import MODELS
HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def write(tmp_path: Path, text: str, name: str = "m.onnx", **weights) -> Path:
    m = parser.parse_model(HEADER + text)
    for k, shape in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), k))
    p = tmp_path / name
    onnx.save(m, p)
    return p


def one_error_line(res, pattern: str) -> None:
    assert res.exit_code == 1, (res.exit_code, res.output, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in res.stderr
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]
    assert res.stdout == ""


def test_table_for_alexnet(cli_run):
    res = cli_run("inspect", str(MODELS / "alexnet.onnx"))
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert out.startswith("model alexnet  batch 32  inputs input[32, 3, 224, 224]")
    assert "8 decision layers" in out
    rows = [ln for ln in out.splitlines() if ln.startswith(("features.conv", "classifier.fc"))]
    assert len(rows) == 8
    assert rows[0].split()[:4] == ["features.conv0", "Conv", "conv", "B32"]
    assert "3->64" in rows[0] and "224x224->55x55" in rows[0] and "k11x11" in rows[0]
    assert "9216->4096" in rows[5]
    # 714,188,480 MACs per image: torchvision AlexNet's published count, times batch 32
    assert out.rstrip().endswith("8 weighted layers (5 conv, 3 gemm), 21 nodes, 61,100,840 parameters, "
                                 f"{32 * 714_188_480:,} forward MACs")
    assert res.stderr == ""


def test_all_shows_every_node(cli_run):
    short = cli_run("inspect", str(MODELS / "lenet.onnx")).stdout
    full = cli_run("inspect", str(MODELS / "lenet.onnx"), "--all").stdout
    assert "relu1" not in short and "relu1" in full and "pool2" in full
    assert len(full.splitlines()) > len(short.splitlines())


def test_batch_override_in_table(cli_run):
    res = cli_run("inspect", str(MODELS / "resnet18.onnx"), "--batch", "4")
    assert res.exit_code == 0
    assert "batch 4" in res.stdout.splitlines()[0] and "B4 3->64" in res.stdout


def test_json_structure(cli_run):
    res = cli_run("inspect", str(MODELS / "bert_base.onnx"), "--json", "--batch", "2")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {"model", "batch", "inputs", "outputs", "layers", "edges", "totals"} <= doc.keys()
    assert (doc["model"], doc["batch"]) == ("bert_base", 2)
    names = [x["name"] for x in doc["layers"]]
    assert len(names) == len(set(names)) == doc["totals"]["layers"]
    for x in doc["layers"]:
        assert {"name", "op", "kind", "weighted", "dims", "elements", "macs", "params"} <= x.keys()
        assert set(x["elements"]) == {"in", "out", "weight"}
    q = next(x for x in doc["layers"] if x["name"] == "encoder.layer.0.attention.self.query/MatMul")
    assert (q["kind"], q["weighted"], q["macs"], q["params"]) == ("gemm", True, 2 * 128 * 768 * 768, 768 * 768 + 768)
    assert q["dims"] == {"batch": 2, "d_in": 768, "d_out": 768, "in_spatial": [128], "out_spatial": [128]}
    assert q["elements"] == {"in": 2 * 128 * 768, "out": 2 * 128 * 768, "weight": 768 * 768}
    s = next(x for x in doc["layers"] if x["name"] == "encoder.layer.0.attention/scores/MatMul")
    assert s["kind"] == "matmul_act" and s["dims"]["heads"] == 12 and not s["weighted"]
    pos = {n: i for i, n in enumerate(names)}
    for e in doc["edges"]:
        assert {"from", "to", "tensor", "shape", "elements"} <= e.keys()
        assert pos[e["from"]] < pos[e["to"]]  # topological order
        assert e["elements"] == int(np.prod(e["shape"]))
    t = doc["totals"]
    assert (t["weighted_layers"], t["gemm"], t["embedding"], t["matmul_act"]) == (75, 72, 3, 24)
    assert t["params"] == 108_891_648
    # deterministic
    assert cli_run("inspect", str(MODELS / "bert_base.onnx"), "--json", "--batch", "2").stdout == res.stdout


def test_missing_file(cli_run):
    one_error_line(cli_run("inspect", "no/such/model.onnx"), r"no such file 'no/such/model\.onnx'; check the path")


def test_truncated_file(tmp_path, cli_run):
    data = (MODELS / "resnet18.onnx").read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    one_error_line(cli_run("inspect", str(p)), r"not a valid ONNX model \(truncated or wrong format\); re-export it")


def test_non_onnx_file(tmp_path, cli_run):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n")
    one_error_line(cli_run("inspect", str(p)), r"not a valid ONNX model.*re-export it")


def test_model_without_weighted_layer(tmp_path, cli_run):
    p = write(tmp_path, "g (float[2, 8] x) => (float[2, 8] y) { y = Relu(x) }")
    one_error_line(cli_run("inspect", str(p)), r"has no weighted layer")


def test_symbolic_batch(tmp_path, cli_run):
    p = write(tmp_path, "g (float[N, 8] x) => (float[N, 4] y) { y = Gemm(x, w) }", w=(8, 4))
    # Issue 11 changed this message: the axis is named and --input-shape is offered as well.
    one_error_line(cli_run("inspect", str(p)),
                   r"^Error: input 'x' has symbolic dim 'N' at axis 0; pass --batch N \(or --input-shape x=N,8\)$")
    res = cli_run("inspect", str(p), "--batch", "16", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["layers"][0]["dims"]["batch"] == 16


def test_bad_batch_is_a_usage_error(cli_run):
    res = cli_run("inspect", str(MODELS / "lenet.onnx"), "--batch", "0")
    assert res.exit_code == 2 and "--batch" in res.stderr


def test_unknown_op_warns_on_one_line(tmp_path, cli_run):
    p = write(tmp_path, """g (float[2, 8] x) => (float[2, 8] y) {
        h = Gemm(x, w)
        y = Frobnicate(h) }""", w=(8, 8))
    res = cli_run("inspect", str(p))
    assert res.exit_code == 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: unknown op 'Frobnicate'"), res.stderr
    assert "1 weighted layers (1 gemm), 2 nodes" in res.stdout
    assert res.stdout.splitlines()[-1] == "not understood, kept as opaque layers (whole tensors, no split): Frobnicate x1"


def test_help_ends_with_example(cli_run):
    res = cli_run("inspect", "--help")
    assert res.exit_code == 0
    body = res.stdout.split("Options:")[0].rstrip()
    assert body.splitlines()[-2].strip() == "Example:"
    assert body.splitlines()[-1].strip().startswith("hypar inspect models/")
    assert "inspect" in cli_run("--help").stdout
