"""`hypar partition` / `hypar evaluate` through click's CliRunner (issue 4)."""

from __future__ import annotations

import json
import math
import re

import pytest

from hypar.cli import cli
from hypar.plan import validate

LENET = "models/lenet.onnx"
CNN = "tests/fixtures/cnn_dynamo.onnx"
TOTAL_KEYS = {"comm_bytes", "time_s", "compute_s", "comm_s", "energy_j", "peak_mem_bytes_per_pe"}


def one_error_line(res, pattern: str, code: int = 1) -> str:
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    errors = [l for l in res.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert re.search(pattern, errors[0]), errors[0]
    if code == 1:
        # a plain one-line error: no traceback, no usage text
        assert "Traceback" not in res.stderr and "Usage:" not in res.stderr
    return errors[0]


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-11, abs_tol=1e-300)


# --------------------------------------------------------------------------------------------
# partition -> evaluate --plan

def test_partition_prints_the_map_and_baselines_and_writes_the_plan(tmp_path, cli_run):
    out = tmp_path / "plan.json"
    res = cli_run("partition", LENET, "--pes", 4, "-o", out)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    text = res.stdout
    # the layer x level map: one row per weighted layer, one type column per level
    assert re.search(r"^layer\s+op\s+L0\s+L1\b", text, re.M)
    for name in ("conv1", "conv2", "fc1", "fc2", "fc3"):
        assert re.search(rf"^{name}\s+(Conv|Gemm)\s+(I|II|III)\s+(I|II|III)\s", text, re.M), name
    for b in ("data", "model", "owt", "hypar", "accpar"):
        assert re.search(rf"^{b}\s+time ", text, re.M), b
    assert re.search(r"^plan\s+time ", text, re.M)
    assert "gain over greedy" in text
    assert f"plan written to {out}" in text
    # progress goes to stderr, not stdout
    assert "greedy level 0" in res.stderr
    plan = json.loads(out.read_text())
    validate(plan)
    assert plan["schema"] == "hypar-plan/1"
    assert all(len(l["types"]) == 2 for l in plan["layers"])


def test_evaluate_plan_reads_it_back_with_the_same_totals(tmp_path, cli_run):
    out = tmp_path / "plan.json"
    res = cli_run("partition", LENET, "--levels", "2,2", "--objective", "comm", "-q", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""   # -q: no progress lines
    plan = json.loads(out.read_text())
    res = cli_run("evaluate", LENET, "--plan", out, "--json")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    assert set(got["totals"]) == TOTAL_KEYS
    for k in TOTAL_KEYS:
        assert close(got["totals"][k], plan["totals"][k]), k
    assert [r["types"] for r in got["layers"]] == [l["types"] for l in plan["layers"]]
    # the readable form prints the same total line
    res = cli_run("evaluate", LENET, "--plan", out)
    assert res.exit_code == 0 and res.stdout.splitlines()[-1].startswith("total: time ")


def test_partition_json_prints_the_plan(cli_run):
    res = cli_run("partition", LENET, "--pes", 4, "--json")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    validate(plan)
    assert res.stderr == ""   # --json: no progress lines either


def test_evaluate_baseline_json_structure(cli_run):
    res = cli_run("evaluate", LENET, "--baseline", "data", "--pes", 4, "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == {"totals", "layers"}
    assert set(d["totals"]) == TOTAL_KEYS
    assert all(isinstance(v, (int, float)) and v >= 0 for v in d["totals"].values())
    names = [r["name"] for r in d["layers"]]
    assert names[0] == "conv1" and "fc3" in names
    for r in d["layers"]:
        assert {"name", "op", "types", "levels", "comm_bytes", "compute_s", "time_s", "energy_j",
                "mem_bytes_per_pe"} <= set(r)
        assert len(r["types"]) == 2 and len(r["levels"]) == 2
        if r["op"] in ("Conv", "Gemm"):
            assert r["types"] == ["I", "I"]
    assert close(sum(r["comm_bytes"] for r in d["layers"]), d["totals"]["comm_bytes"])


@pytest.mark.parametrize("which", ["model", "owt", "hypar", "accpar"])
def test_evaluate_every_baseline(which, cli_run):
    res = cli_run("evaluate", LENET, "--baseline", which, "--levels", "2,2", "--json")
    assert res.exit_code == 0, res.stderr
    assert set(json.loads(res.stdout)["totals"]) == TOTAL_KEYS


def test_evaluate_minimal_plan_file(tmp_path, cli_run):
    p = tmp_path / "mini.json"
    p.write_text(json.dumps({"assignment": {"fc1": ["II", "III"]}}))
    res = cli_run("evaluate", LENET, "--plan", p, "--levels", "2,2", "--json")
    assert res.exit_code == 0, res.stderr
    types = {r["name"]: r["types"] for r in json.loads(res.stdout)["layers"]}
    assert types["fc1"] == ["II", "III"] and types["conv1"] == ["I", "I"]


def test_partition_with_cbc_works_on_lenet(cli_run):
    res = cli_run("partition", LENET, "--pes", 4, "--solver", "cbc", "--json")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["solver"]["backend"] == "cbc" and plan["solver"]["status"] == "optimal"
    ref = json.loads(cli_run("partition", LENET, "--pes", 4, "--json").stdout)
    assert close(plan["totals"]["time_s"], ref["totals"]["time_s"])


# --------------------------------------------------------------------------------------------
# help and errors

@pytest.mark.parametrize("cmd", [[], ["inspect"], ["partition"], ["evaluate"]])
def test_every_command_has_help_with_an_example(cmd, cli_run):
    res = cli_run(*cmd, "--help")
    assert res.exit_code == 0
    assert "Example" in res.stdout


def test_every_registered_command_has_an_example(cli_run):
    for name in cli.commands:
        res = cli_run(name, "--help")
        assert res.exit_code == 0 and "Example" in res.stdout, name


def test_missing_model_is_one_error_line(tmp_path, cli_run):
    one_error_line(cli_run("partition", tmp_path / "nope.onnx", "--pes", 4), r"nope\.onnx")
    one_error_line(cli_run("evaluate", tmp_path / "nope.onnx", "--baseline", "data", "--pes", 4), r"nope\.onnx")


@pytest.mark.parametrize("levels,pattern", [("2,x", r"--levels '2,x'"), ("2,1", r"fanout must be >= 2"),
                                             ("", r"--levels.*fanout must be >= 2")])
def test_bad_levels_is_one_error_line(levels, pattern, cli_run):
    one_error_line(cli_run("partition", LENET, "--levels", levels), pattern)


@pytest.mark.parametrize("levels", ["2,x", "2,1"])
def test_evaluate_bad_levels_is_one_error_line(levels, cli_run):
    one_error_line(cli_run("evaluate", LENET, "--baseline", "data", "--levels", levels), r"--levels")


def test_evaluate_empty_levels_is_an_error_like_partition(cli_run):
    """Regression (bug fixed in c67bfdd).
    hypar/cli/model_cmds.py evaluate_cmd: `if array_path or pes or levels:` treats --levels "" as not
    given, so `hypar evaluate MODEL --baseline data --levels ""` silently costs the default array
    (exit 0), while `hypar partition MODEL --levels ""` rightly fails with
    "Error: --levels : every fanout must be >= 2". Expected: the same one-line error (exit 1)."""
    one_error_line(cli_run("evaluate", LENET, "--baseline", "data", "--levels", ""), r"--levels")


def test_two_array_options_is_one_error_line(cli_run):
    one_error_line(cli_run("partition", LENET, "--pes", 4, "--levels", "2,2"), r"only one of")


def test_unknown_solver_is_a_usage_error(cli_run):
    res = cli_run("partition", LENET, "--pes", 4, "--solver", "gurobi")
    one_error_line(res, r"gurobi", code=2)
    assert "Usage:" in res.stderr


def test_unknown_objective_is_a_usage_error(cli_run):
    res = cli_run("partition", LENET, "--pes", 4, "--objective", "latency")
    assert res.exit_code == 2 and "Usage:" in res.stderr


def test_dp_on_a_dag_is_an_error_naming_highs(cli_run):
    line = one_error_line(cli_run("partition", CNN, "--pes", 4, "--solver", "dp", "-q"), r"highs")
    assert "chain" in line


def test_dp_on_a_chain_works(cli_run):
    res = cli_run("partition", LENET, "--levels", "2,2", "--solver", "dp", "--space", "accpar", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["solver"]["method"] == "dp"


def test_evaluate_bad_plan_is_one_error_line(tmp_path, cli_run):
    one_error_line(cli_run("evaluate", LENET, "--plan", tmp_path / "none.json"), r"no such plan file")
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"assignment": {"fc1": ["IV", "I"]}}))
    one_error_line(cli_run("evaluate", LENET, "--plan", p, "--levels", "2,2"), r"'fc1'.*'IV'")
    p.write_text(json.dumps({"assignment": {"nosuch": ["I", "I"]}}))
    one_error_line(cli_run("evaluate", LENET, "--plan", p, "--levels", "2,2"), r"'nosuch'")


def test_evaluate_needs_plan_or_baseline(cli_run):
    one_error_line(cli_run("evaluate", LENET, "--pes", 4), r"--plan.*--baseline")


def test_unwritable_output_is_one_error_line(tmp_path, cli_run):
    one_error_line(cli_run("partition", LENET, "--pes", 4, "-q", "-o", tmp_path / "no" / "dir" / "p.json"),
                   r"cannot write")


@pytest.mark.parametrize("flag", ["-o", "--plot"])
def test_unwritable_output_fails_before_the_model_is_read(tmp_path, cli_run, monkeypatch, flag):
    """A missing folder or a folder given as the file is reported before any import or solve."""
    from hypar import api

    def never(*args, **kwargs):
        raise AssertionError("partition ran although its output cannot be written")

    monkeypatch.setattr(api, "partition", never)
    missing = tmp_path / "no" / "p.out"
    line = one_error_line(cli_run("partition", LENET, "--pes", 4, "-q", flag, missing), r"cannot write")
    assert "does not exist" in line and flag in line
    if flag == "-o":  # --plot is a click.Path(dir_okay=False): click refuses a folder itself
        line = one_error_line(cli_run("partition", LENET, "--pes", 4, "-q", flag, tmp_path), r"cannot write")
        assert "is a folder" in line


def test_partition_space_hypar_works(tmp_path, cli_run):
    """Regression (bug fixed in c67bfdd).
    hypar/api.py partition -> paper_baseline: with --space hypar the AccPar baseline
    (types I/II/III, solved in its own accpar CostModel) is carried into the hypar-space model,
    whose layers only allow I and II, so CostModel.check_assignment raises
    "Error: layer 'conv1': type 'III' is not one of ('I', 'II') in space 'hypar'" and the
    command exits 1. Expected: a plan whose layers use only I/II (the accpar baseline costed
    where it can be represented, or left out)."""
    res = cli_run("partition", LENET, "--levels", "2,2", "--space", "hypar", "--json")
    assert res.exit_code == 0, res.stderr
    plan = json.loads(res.stdout)
    assert all(set(l["types"]) <= {"I", "II"} for l in plan["layers"])
