"""hypar.config: the array choice, ``--levels`` and count strings, the solver settings and the
array file's ``solver:`` section (every bad value or key is an error naming it)."""

from __future__ import annotations

import pytest

from hypar.config import (SettingError, SolverSettings, parse_counts, parse_levels, resolve_array, solver_section,
                          solver_settings)
from hypar.errors import ArrayConfigError
from hypar.vocab import Method

from paths import CONFIGS

LEVELS = "levels: [{fanout: 2}, {fanout: 2}]\n"


def write(tmp_path, text: str, name: str = "arr.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_resolve_array_from_each_source():
    assert resolve_array().name == "default" and resolve_array().n_pes == 16
    assert resolve_array(pes=12).fanouts == (3, 2, 2)
    assert resolve_array(levels="2, 2,4").fanouts == (2, 2, 4)
    assert resolve_array(levels=[4, 2]).fanouts == (4, 2)
    assert resolve_array(str(CONFIGS / "gpu_cluster.yaml")).fanouts == (8, 8)


def test_resolve_array_names_its_parameters():
    with pytest.raises(ArrayConfigError) as e:
        resolve_array(pes=4, levels="2,2")
    assert str(e.value) == "give only one of array_path, pes and levels"
    assert e.value.message_in({"array_path": "--array", "pes": "--pes", "levels": "--levels"}) == \
        "give only one of --array, --pes and --levels"


def test_parse_levels():
    assert parse_levels("2,2,4") == [2, 2, 4]
    assert parse_levels("") == []
    with pytest.raises(ArrayConfigError) as e:
        parse_levels("2,x")
    assert str(e.value) == "levels '2,x': give comma-separated fanouts, e.g. levels 2,2,4"


def test_parse_counts():
    assert parse_counts(["4,16", "64", ""]) == [4, 16, 64]
    assert parse_counts(()) == []
    with pytest.raises(SettingError, match="'x' is not an integer") as e:
        parse_counts(["4,x"], "pes")
    assert e.value.parameter == "pes"
    with pytest.raises(SettingError, match="0 must be at least 1"):
        parse_counts(["0"])


def test_solver_settings_checks_its_method():
    assert SolverSettings(method="dp").method is Method.DP
    with pytest.raises(ValueError, match="unknown method 'gurobi'; choose one of ilp, dp, brute"):
        SolverSettings(method="gurobi")


def test_solver_settings_precedence(tmp_path):
    """Options win over the file's solver: section, which wins over the defaults."""
    assert solver_settings() == SolverSettings()
    path = write(tmp_path, LEVELS + "solver: {backend: cbc, time_limit_s: 30, gap: 0.01, threads: 2}\n")
    s = solver_settings(array_path=path)
    assert (s.method, s.backend, s.time_limit_s, s.gap, s.threads) == ("ilp", "cbc", 30.0, 0.01, 2)
    s = solver_settings("dp", time_limit_s=5, gap=0, threads=1, memory_cap_gb=2.0, array_path=path)
    assert (s.method, s.backend, s.time_limit_s, s.gap, s.threads, s.memory_cap_gb) == ("dp", "highs", 5.0, 0.0, 1, 2.0)
    assert solver_settings(array_path=str(CONFIGS / "default.yaml")).backend == "highs"


def test_unknown_solver_option_is_checked_before_the_file_is_read(tmp_path):
    with pytest.raises(SettingError, match="unknown solver 'gurobi'; choose highs, cbc, dp or brute") as e:
        solver_settings("gurobi", array_path=str(tmp_path / "missing.yaml"))
    assert e.value.parameter == "solver"


@pytest.mark.parametrize("section,pattern", [
    ("solver: fast", r"'solver' must be a mapping"),
    ("solver: {backend: gurobi}", r"solver\.backend 'gurobi' is not a solver; choose highs, cbc, dp or brute"),
    ("solver: {time_limit: 5}", r"solver\.time_limit is not a solver setting; allowed: backend, gap, threads, time_limit_s"),
    ("solver: {time_limit_s: soon}", r"solver\.time_limit_s must be a number >= 0\.001, got 'soon'"),
    ("solver: {gap: -1}", r"solver\.gap must be a number >= 0"),
    ("solver: {threads: 1.5}", r"solver\.threads must be an integer >= 1"),
])
def test_bad_solver_section_names_the_file_and_key(tmp_path, section, pattern):
    path = write(tmp_path, LEVELS + section + "\n")
    with pytest.raises(ArrayConfigError, match=pattern) as e:
        solver_section(path)
    assert str(e.value).startswith(path)


def test_no_solver_section_and_bad_files(tmp_path):
    assert solver_section(write(tmp_path, LEVELS)) == {}
    with pytest.raises(ArrayConfigError, match="no such array config"):
        solver_section(str(tmp_path / "missing.yaml"))
    with pytest.raises(ArrayConfigError, match="mapping"):
        solver_section(write(tmp_path, "- 1\n", "list.yaml"))
