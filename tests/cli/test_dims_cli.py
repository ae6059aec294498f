"""--dim NAME=VALUE and --input-shape INPUT=D0,D1,... on every command that reads a model
(inspect, partition, evaluate, verify, sweep): help, usage errors, the one unbound-dims error,
and plans that bring their binding back."""

from __future__ import annotations

import json

import pytest

from paths import FIXTURES, MODELS

WINDOWED = str(FIXTURES / "windowed_attention_dynamic.onnx")
SEQUENCE = str(FIXTURES / "sequence_pattern_dynamic.onnx")
LENET = str(MODELS / "lenet.onnx")
HW = ("--dim", "height=20", "--dim", "width=24")


@pytest.mark.parametrize("command", ["inspect", "partition", "evaluate", "verify", "sweep"])
def test_help_shows_the_flags_with_an_example(cli_run, command):
    res = cli_run(command, "--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert "--dim NAME=VALUE" in text and "e.g. --dim sequence=128" in text
    assert "--input-shape INPUT=D0,D1,..." in text and "e.g. --input-shape x=1,3,640,640" in text


def test_unbound_dims_are_one_error_line_with_the_flags(cli_run):
    res = cli_run("inspect", WINDOWED)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == ("Error: input 'x' has symbolic dim 'batch' at axis 0, symbolic dim 'height' at axis 2 and "
                          "symbolic dim 'width' at axis 3; pass --batch N --dim height=HEIGHT --dim width=WIDTH (or "
                          "--input-shape x=N,3,HEIGHT,WIDTH)\n")


@pytest.mark.parametrize("args", [["--batch", "2", *HW], ["--input-shape", "x=2,3,20,24"]])
def test_inspect_binds_them(cli_run, args):
    res = cli_run("inspect", WINDOWED, *args, "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["inputs"][0]["shape"] == [2, 3, 20, 24] and out["totals"]["params"] == 2140


@pytest.mark.parametrize("args,line", [
    (["--dim", "height"], "Error: Invalid value for --dim: 'height': give NAME=VALUE, e.g. sequence=128"),
    (["--dim", "height=0"], "Error: Invalid value for --dim: 'height=0': 0 must be at least 1"),
    (["--dim", "height=8", "--dim", "height=9"], "Error: Invalid value for --dim: height is given twice (8 and 9); "
                                                 "give it once"),
    (["--input-shape", "x=2,a"], "Error: Invalid value for --input-shape: 'x=2,a': 'a' is not an integer; "
                                 "give e.g. x=1,3,224,224"),
])
def test_unreadable_values_are_usage_errors(cli_run, args, line):
    res = cli_run("inspect", WINDOWED, *args)
    assert res.exit_code == 2 and res.stderr.splitlines()[-1] == line, res.stderr


@pytest.mark.parametrize("args,line", [
    (["--dim", "heigt=8"], "Error: --dim heigt=8: no input has a dim named 'heigt' (inputs: x [batch, 3, height, "
                           "width]; their symbolic dims are batch, height, width); bind a dim by its name, or a whole "
                           "input with --input-shape INPUT=D0,D1,..."),
    (["--input-shape", "x=2,4,20,24"], "Error: --input-shape x=2,4,20,24 sets axis 1 to 4 but the model fixes it "
                                       "at 3; give 3 there"),
    (["--batch", "2", "--input-shape", "x=1,3,20,24"],
     "Error: axis 0 of input 'x': --input-shape x=1,3,20,24 gives 1 but --batch 2 gives 2; give one value for it "
     "(in --batch, --dim or --input-shape)"),
])
def test_bindings_that_do_not_fit_the_model_name_the_flags(cli_run, args, line):
    res = cli_run("partition", WINDOWED, "--pes", "4", *args, "-q")
    assert res.exit_code == 1 and res.stderr.splitlines() == [line], res.stderr


def test_plan_brings_its_binding_to_evaluate_and_verify(cli_run, tmp_path):
    plan = tmp_path / "plan.json"
    res = cli_run("partition", WINDOWED, "--pes", "4", "--batch", "8", *HW, "-q", "-o", plan)
    assert res.exit_code == 0, res.stderr
    assert json.loads(plan.read_text())["binding"] == {"dims": {"height": 20, "width": 24}, "input_shapes": {}}
    res = cli_run("evaluate", WINDOWED, "--plan", plan, "--json")
    assert res.exit_code == 0, res.stderr
    res = cli_run("verify", WINDOWED, plan, "--json")
    report = json.loads(res.stdout)
    assert report["plan_cost_errors"] == [] and report["plan_costs_checked"], res.stderr
    res = cli_run("verify", WINDOWED, plan, "--dim", "heigt=20")     # given flags replace the plan's
    assert res.exit_code == 1 and res.stderr.startswith("Error: --dim heigt=20: no input has a dim named 'heigt'")


def test_evaluate_a_baseline_with_an_input_shape(cli_run):
    res = cli_run("evaluate", SEQUENCE, "--baseline", "data", "--pes", "2", "--input-shape", "ids=4,12", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["totals"]["comm_bytes"] > 0


def test_sweep_gives_each_model_the_dims_it_has(cli_run, tmp_path):
    res = cli_run("sweep", WINDOWED, LENET, "--pes", "2", "--batch", "4", *HW, "--search", "greedy", "-q",
                  "-o", tmp_path)
    assert res.exit_code == 0, res.stderr
    rows = {r["model"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert rows["windowed_attention_dynamic"]["status"] == "ok" and rows["lenet"]["status"] == "ok"
    assert rows["windowed_attention_dynamic"]["dims"] == {"height": 20, "width": 24}
    assert rows["windowed_attention_dynamic"]["key"].endswith("|dims:height=20,width=24")
    assert "dims" not in rows["lenet"] and rows["lenet"]["key"].endswith("|hierarchical")


def test_sweep_refuses_a_dim_no_model_has(cli_run, tmp_path):
    res = cli_run("sweep", LENET, "--pes", "2", "--dim", "height=20", "-q", "-o", tmp_path)
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["Error: --dim height: no model's inputs have a dim named 'height'; check the "
                                       "name with the error `hypar inspect MODEL` gives without it"]
    assert not (tmp_path / "results.jsonl").exists()
