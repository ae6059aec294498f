"""`hypar inspect --sparsity`: all-zero channels of stored weights, "weights not stored" for the
shapes-only zoo, and scripts/prune_channels.py's two modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from paths import MODELS, ROOT


def _masked_model(tmp_path: Path) -> Path:
    """Conv 3 -> 4 (1x1) with output channels 1 and 3 zero and input channel 0 zero, then a
    MatMul 4 -> 5 whose column 2 is zero."""
    conv_w = np.ones((4, 3, 1, 1), np.float32)
    conv_w[[1, 3]] = 0.0
    conv_w[:, 0] = 0.0
    fc_w = np.ones((4, 5), np.float32)
    fc_w[:, 2] = 0.0
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "fw"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5])],
                              [numpy_helper.from_array(conv_w, "cw"), numpy_helper.from_array(fc_w, "fw")])
    path = tmp_path / "masked.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_sparsity_table_counts_zero_channels(tmp_path, cli_run):
    res = cli_run("inspect", _masked_model(tmp_path), "--sparsity")
    assert res.exit_code == 0, res.stderr
    rows = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.startswith(("conv ", "fc "))}
    assert "2/4 (50.0%)" in rows["conv"] and "1/3 (33.3%)" in rows["conv"] and "6/12 (50.0%)" not in rows["conv"]
    assert "8/12 (66.7%)" in rows["conv"]          # 2 zero rows of 3 + 2 more zeros in channel 0
    assert "1/5 (20.0%)" in rows["fc"] and "0/4 (0.0%)" in rows["fc"]
    # totals: out-channels (2 + 1) / (4 + 5), in-channels (1 + 0) / (3 + 4), elements (8 + 4) / 32
    assert "all-zero output channels 33.3%, input channels 14.3%, elements 37.5%" in res.stdout


def test_sparsity_json(tmp_path, cli_run):
    res = cli_run("inspect", _masked_model(tmp_path), "--sparsity", "--json")
    doc = json.loads(res.stdout)
    conv, fc = doc["sparsity"]["weights"]
    assert (conv["zero_out_channels"], conv["zero_in_channels"], conv["zero_elements"]) == (2, 1, 8)
    assert (fc["zero_out_channels"], fc["out_channels"], fc["zero_in_channels"]) == (1, 5, 0)
    assert doc["sparsity"]["totals"]["zero_out_fraction"] == round(3 / 9, 6)


def test_without_the_flag_no_weights_are_read(tmp_path, cli_run):
    res = cli_run("inspect", _masked_model(tmp_path), "--json")
    assert "sparsity" not in json.loads(res.stdout)


def test_shapes_only_zoo_says_weights_not_stored(cli_run):
    res = cli_run("inspect", MODELS / "resnet18.onnx", "--sparsity")
    assert res.exit_code == 0, res.stderr
    assert "weights not stored (21 weights, none with values" in res.stdout


def _prune(*args) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prune_channels.py"), *map(str, args)],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_prune_remove_halves_inner_channels(tmp_path, cli_run):
    out = tmp_path / "vgg11_half.onnx"
    assert "7 convs pruned" in _prune(MODELS / "vgg11.onnx", out, "--factor", "2")
    res = cli_run("inspect", out, "--json")
    dims = [layer["dims"] for layer in json.loads(res.stdout)["layers"] if layer["kind"] == "conv"]
    # VGG11 convs 64,128,256,256,512,512,512,512: the first 7 feed the next conv and are halved
    assert [d["d_out"] for d in dims] == [32, 64, 128, 128, 256, 256, 256, 512]
    assert [d["d_in"] for d in dims] == [3, 32, 64, 128, 128, 256, 256, 256]


def test_prune_mask_keeps_dims_and_zeroes_channels(tmp_path, cli_run):
    out = tmp_path / "lenet_mask.onnx"
    _prune(MODELS / "lenet.onnx", out, "--factor", "2", "--mode", "mask")
    res = cli_run("inspect", out, "--sparsity", "--json")
    doc = json.loads(res.stdout)
    conv1 = doc["sparsity"]["weights"][0]
    assert conv1["stored"] and conv1["zero_out_channels"] == conv1["out_channels"] // 2
    assert doc["totals"]["params"] == json.loads(cli_run("inspect", MODELS / "lenet.onnx", "--json").stdout)["totals"]["params"]
