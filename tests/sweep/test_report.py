"""hypar report: report.md tables and PNG plots from a sweep's results.jsonl."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypar.present import report as rp
from hypar.present.plots import plot_plan
from hypar import sweep as sw

from paths import ROOT
LENET = str(ROOT / "models" / "lenet.onnx")
CNN = str(ROOT / "tests" / "fixtures" / "cnn_torchscript.onnx")
PNGS = ("speedup.png", "energy_gain.png", "comm_vs_pes.png", "solve_time.png")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    bad = d / "broken.onnx"
    bad.write_bytes(b"garbage")
    sw.sweep([LENET, CNN, str(bad)], str(d), pes=[4, 8], batches=[8])
    return d


def test_markdown_tables(results):
    rows = rp.latest_rows(str(results))
    assert len(rows) == 6
    md = rp.markdown(rows)
    for heading in ("## Geometric means over models", "## Speedup over data parallelism per case",
                    "## Energy gain over data parallelism per case", "## Plan totals and solve", "## Errors"):
        assert heading in md
    header = next(l for l in md.splitlines() if l.startswith("| model | array | PEs | batch | data |"))
    for m in ("data", "model", "owt", "HyPar", "AccPar", "hypar (own)"):
        assert f"| {m} |" in header
    assert md.count("| lenet | pes-4 | 4 | 8 |") == 2            # speedup and energy tables
    assert "| broken | pes-8 | 8 | ModelLoadError" in md or "| broken | pes-8 |" in md


@pytest.mark.slow
def test_report_writes_markdown_and_pngs(results):
    pytest.importorskip("matplotlib")
    written = rp.write_report(str(results))
    names = [Path(p).name for p in written]
    assert names == ["report.md", "summary.csv", *PNGS]
    for png in PNGS:
        data = (results / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    md = (results / "report.md").read_text()
    assert "![speedup](speedup.png)" in md


def test_summary_csv(results):
    import csv
    rp.write_report(str(results), plots=False)
    with open(results / "summary.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == 4 * 6 + 2                  # 4 solved cases x 6 methods + 2 error cases
    data = [l for l in lines if l["method"] == "data"]
    assert all(float(l["speedup_over_data"]) == pytest.approx(1.0) for l in data)
    assert {l["method"] for l in lines} == {"data", "model", "owt", "hypar", "accpar", "plan", "error"}


def test_cli_report(results, cli_run):
    pytest.importorskip("matplotlib")
    res = cli_run("report", results)
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output and "solve_time.png" in res.output


def test_report_without_plots_and_newest_row_wins(tmp_path):
    sw.sweep([LENET], str(tmp_path), pes=[4], batches=[8])
    path = tmp_path / sw.RESULTS_FILE
    line = path.read_text().splitlines()[0]
    path.write_text(line + "\n" + line.replace('"status": "ok"', '"status": "ok", "note": "newer"') + "\n")
    rows = rp.latest_rows(str(tmp_path))
    assert len(rows) == 1 and rows[0].get("note") == "newer"
    written = rp.write_report(str(tmp_path), plots=False)
    assert [Path(p).name for p in written] == ["report.md", "summary.csv"]


def test_report_of_only_errors_and_of_nothing(tmp_path, cli_run):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"")
    sw.sweep([str(bad)], str(tmp_path / "r"), pes=[4])
    written = rp.write_report(str(tmp_path / "r"))
    assert [Path(p).name for p in written] == ["report.md", "summary.csv"]
    assert "## Errors" in (tmp_path / "r" / "report.md").read_text()
    (tmp_path / "empty").mkdir()
    res = cli_run("report", tmp_path / "empty")
    assert res.exit_code == 1 and "hypar sweep" in res.output


def test_reproduce_papers_script_smoke(tmp_path, capsys):
    """The reproduction script on a one-network zoo: prints the comparison, fills the docs block."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("reproduce_papers", ROOT / "scripts" / "reproduce_papers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(LENET, zoo / "lenet.onnx")
    docs = tmp_path / "reproduction.md"
    docs.write_text(f"# title\n\nhand-written discussion\n\n{mod.BEGIN}\nold\n{mod.END}\ntail\n")
    assert mod.main(["--setting", "hypar2019", "--out", str(tmp_path / "out"), "--models-dir", str(zoo),
                     "--write-docs", str(docs), "-q"]) == 0
    out = capsys.readouterr().out
    assert "| HyPar performance over data parallelism | 3.39× |" in out
    assert "lenet (Lenet-c)" in out and "not in the zoo, skipped" in out
    text = docs.read_text()
    assert "hand-written discussion" in text and text.endswith(f"{mod.END}\ntail\n") and "old" not in text
    assert "### HyPar (HPCA 2019) setting" in text and "| lenet (Lenet-c) |" in text


def test_partition_plot(tmp_path, cli_run):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plan.png"
    res = cli_run("partition", LENET, "--pes", "4", "--plot", png, "-q")
    assert res.exit_code == 0, res.output
    assert f"plot written to {png}" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from hypar import api
    plan = api.partition(CNN, api.resolve_array(None, 4, None), batch=8)
    assert Path(plot_plan(plan, str(tmp_path / "all.png"), all_nodes=True)).stat().st_size > 2000


def test_report_splits_by_convention_when_rows_mix_them(results, tmp_path):
    """One convention: no convention column. Mixed: a column in every table, one geometric-mean
    group per convention, and the CSV names each line's convention (a row without one, written
    before conventions existed, was priced as reference)."""
    import csv
    rows = rp.latest_rows(str(results))
    assert "convention |" not in rp.markdown(rows) and "convention hierarchical" in rp.markdown(rows)
    legacy = [{k: v for k, v in r.items() if k != "convention"} | {"key": r["key"] + "-old"} for r in rows]
    mixed = rows + legacy
    md = rp.markdown(mixed)
    assert "convention hierarchical, reference (the tables split by convention)" in md
    geo = md.split("## Geometric means over models")[1].split("##")[0]
    assert geo.count("| pes-4 | 4 | 8 | hierarchical | 2 |") == 1
    assert geo.count("| pes-4 | 4 | 8 | reference | 2 |") == 1
    assert md.count("| lenet | pes-4 | 4 | 8 | reference |") == 2
    rp.write_csv(mixed, str(tmp_path / "s.csv"))
    with open(tmp_path / "s.csv") as fh:
        assert {l["convention"] for l in csv.DictReader(fh)} == {"hierarchical", "reference"}
