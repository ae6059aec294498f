"""The CLI names the library's parameters by its own options: every parameter a library error
names (``HyparError.naming``) has an option in ``hypar.cli.FLAGS``, and the Error lines users see
show the options."""

from __future__ import annotations

import ast
import re

import pytest

from hypar.cli import FLAGS

from paths import ROOT

FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _naming_templates() -> list[tuple[str, str]]:
    """(file:line, template text) of every ``X.naming(...)`` call in hypar/ (f-string parts joined)."""
    out = []
    for path in sorted((ROOT / "hypar").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "naming":
                parts = [n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                out.append((f"{path.relative_to(ROOT)}:{node.lineno}", "".join(parts)))
    return out


def test_library_errors_name_parameters():
    templates = _naming_templates()
    assert len(templates) >= 10
    assert all(FIELD.search(t) for _where, t in templates), templates


def test_every_named_parameter_has_an_option():
    missing = {(where, name) for where, t in _naming_templates() for name in FIELD.findall(t) if name not in FLAGS}
    assert not missing, f"add these parameters to hypar.cli.FLAGS: {sorted(missing)}"


LENET = "models/lenet.onnx"
CNN = "tests/fixtures/cnn_dynamo.onnx"


@pytest.mark.parametrize("args,line", [
    (["partition", LENET, "--pes", "4", "--levels", "2,2"], "Error: give only one of --array, --pes and --levels"),
    (["partition", LENET, "--levels", "2,x"], "Error: --levels '2,x': give comma-separated fanouts, e.g. --levels 2,2,4"),
    (["partition", LENET, "--levels", "2,1"], "Error: --levels 2,1: every fanout must be >= 2 (e.g. --levels 2,2,4)"),
    (["partition", CNN, "--pes", "4", "--solver", "dp", "-q"],
     "Error: --solver dp solves chains only and this level is not a chain; use --solver highs"),
    (["evaluate", LENET, "--pes", "4"], "Error: give exactly one of --plan and --baseline"),
    (["sweep", LENET, "--pes", "1", "-o", "{tmp}"], "Error: --pes 1: need at least 2 PEs to partition over"),
])
def test_error_lines_show_options(cli_run, tmp_path, args, line):
    res = cli_run(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 1 and res.stderr.splitlines() == [line], res.stderr


def test_memory_cap_error_names_the_option(cli_run):
    res = cli_run("partition", LENET, "--pes", "4", "--memory-gb", "0.0000001", "-q")
    assert res.exit_code == 1 and re.fullmatch(r"Error: no plan fits 1e-07 GB per PE; .* pass --memory-gb [0-9.e-]+ "
                                               r"or more, or use more PEs\n", res.stderr), res.stderr


def test_unknown_solver_is_a_usage_error_of_its_option(cli_run):
    res = cli_run("partition", LENET, "--pes", "4", "--solver", "gurobi")
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1] == ("Error: Invalid value for --solver: unknown solver 'gurobi'; "
                                           "choose highs, cbc, dp or brute")


def test_bad_solver_section_is_one_error_line(cli_run, tmp_path):
    cfg = tmp_path / "arr.yaml"
    cfg.write_text("levels: [{fanout: 2}]\nsolver: {backend: gurobi}\n")
    res = cli_run("partition", LENET, "--array", cfg, "-q")
    assert res.exit_code == 1
    assert res.stderr == f"Error: {cfg}: solver.backend 'gurobi' is not a solver; choose highs, cbc, dp or brute\n"
