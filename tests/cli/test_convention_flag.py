"""`--convention hierarchical|reference` on partition, evaluate, verify and sweep (issue 10): in
every command's --help with an example, recorded in the plan and the sweep rows, read back from a
plan unless given, a usage error for anything else."""

from __future__ import annotations

import json

import pytest

from hypar.plan import validate

LENET = "models/lenet.onnx"
COMMANDS = ["partition", "evaluate", "verify", "sweep"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_flag_with_an_example(cli_run, command):
    res = cli_run(command, "--help")
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "--convention [hierarchical|reference]" in text
    assert f"hypar {command} " in text and "--convention reference" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_convention_is_a_usage_error(cli_run, tmp_path, command):
    args = {"partition": [LENET], "evaluate": [LENET, "--baseline", "data"], "verify": [LENET, tmp_path / "p.json"],
            "sweep": [LENET, "--pes", 4, "-o", tmp_path]}[command]
    res = cli_run(command, *args, "--convention", "flat")
    assert res.exit_code == 2 and "'flat' is not one of 'hierarchical', 'reference'" in res.stderr, res.stderr


@pytest.mark.parametrize("convention", ["hierarchical", "reference"])
def test_partition_records_it_and_evaluate_reads_it_back(cli_run, tmp_path, convention):
    out = tmp_path / "plan.json"
    res = cli_run("partition", LENET, "--levels", "2,2", "--search", "greedy", "--convention", convention,
                  "-q", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert f"convention {convention}" in res.stdout
    plan = json.loads(out.read_text())
    validate(plan)
    assert plan["convention"] == convention
    res = cli_run("evaluate", LENET, "--plan", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["totals"]["comm_bytes"] == pytest.approx(plan["totals"]["comm_bytes"], rel=1e-11)
    assert cli_run("evaluate", LENET, "--plan", out).stdout.splitlines()[0] == f"priced under convention {convention}"
    res = cli_run("evaluate", LENET, "--baseline", "data", "--levels", "2,2", "--convention", "reference")
    assert res.stdout.splitlines()[0] == "priced under convention reference"


def test_partition_defaults_to_hierarchical(cli_run):
    res = cli_run("partition", LENET, "--pes", 4, "--search", "greedy", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["convention"] == "hierarchical"


def test_verify_reports_the_convention(cli_run, tmp_path):
    out = tmp_path / "plan.json"
    assert cli_run("partition", LENET, "--pes", 2, "--search", "greedy", "--convention", "reference",
                   "-q", "-o", out).exit_code == 0
    res = cli_run("verify", LENET, out, "--batch", 4, "--json")
    assert json.loads(res.stdout)["convention"] == "reference", res.stderr
    res = cli_run("verify", LENET, out, "--batch", 4, "--convention", "hierarchical")
    assert "convention hierarchical" in res.stdout.splitlines()[0]


def test_sweep_rows_record_it(cli_run, tmp_path):
    for convention in ("reference", "hierarchical"):
        res = cli_run("sweep", LENET, "--pes", 2, "--search", "greedy", "--convention", convention, "-q",
                      "-o", tmp_path)
        assert res.exit_code == 0, res.stderr
    rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["convention"] for r in rows] == ["reference", "hierarchical"]
    assert len({r["key"] for r in rows}) == 2 and all(r["key"].endswith(r["convention"]) for r in rows)
