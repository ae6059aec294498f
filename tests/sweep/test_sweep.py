"""hypar sweep: rows, resume, errors, kills, worker crashes, Dask (small models at 4 PEs)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import make_runner
from hypar import sweep as sw
from hypar.cli import cli
from hypar.sweep import worker

from paths import ROOT
LENET = str(ROOT / "models" / "lenet.onnx")
CNN = str(ROOT / "tests" / "fixtures" / "cnn_torchscript.onnx")
TIMING = ("solve",)


def rows_of(d) -> list[dict]:
    return sw.read_rows(str(d))


def stable(row: dict) -> dict:
    """A row without its wall-clock fields."""
    return {k: v for k, v in row.items() if k not in TIMING}


@pytest.fixture
def corrupt(tmp_path) -> str:
    p = tmp_path / "corrupt.onnx"
    p.write_bytes(b"\x08\x07not an onnx model at all")
    return str(p)


@pytest.fixture
def count_calls(monkeypatch):
    """Count partition calls (jobs=1 runs the cases in this process)."""
    calls: list[str] = []
    real = worker.partition_case

    def counted(case):
        calls.append(case.key)
        return real(case)

    monkeypatch.setattr(worker, "partition_case", counted)
    return calls


def test_rows_written(tmp_path):
    s = sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8])
    assert (s.total, s.computed, s.skipped, s.errors) == (2, 2, 0, 0)
    rows = rows_of(tmp_path)
    assert [r["model"] for r in rows] == ["lenet", "cnn_torchscript"]
    for r in rows:
        assert r["status"] == "ok" and r["n_pes"] == 4 and r["batch"] == 8
        assert set(r["baselines"]) == {"data", "model", "owt", "hypar", "accpar"}
        assert set(r["speedup_over_data"]) == {"data", "model", "owt", "hypar", "accpar", "plan"}
        assert r["speedup_over_data"]["data"] == pytest.approx(1.0)
        assert r["energy_gain_over_data"]["data"] == pytest.approx(1.0)
        t, d = r["totals"], r["baselines"]["data"]
        assert r["speedup_over_data"]["plan"] == pytest.approx(d["time_s"] / t["time_s"], rel=1e-6)
        assert r["solve"]["status"] in ("optimal", "feasible")
        assert r["solve"]["seconds"] >= 0
    # one complete JSON object per line
    lines = (tmp_path / sw.RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(l)["key"] for l in lines)


def test_case_order_is_deterministic():
    a = [sw.array_spec(pes=4), sw.array_spec(pes=16)]
    cases = sw.make_cases([LENET, CNN], a, [8, 32])
    assert [(c.model_name, c.array.n_pes, c.batch) for c in cases] == [
        ("lenet", 4, 8), ("lenet", 4, 32), ("lenet", 16, 8), ("lenet", 16, 32),
        ("cnn_torchscript", 4, 8), ("cnn_torchscript", 4, 32), ("cnn_torchscript", 16, 8),
        ("cnn_torchscript", 16, 32)]
    assert [c.key for c in cases] == [c.key for c in sw.make_cases([LENET, CNN], a, [8, 32])]
    assert len({c.key for c in cases}) == len(cases)


def test_resume_skips_finished_cases(tmp_path, count_calls):
    sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8])
    assert len(count_calls) == 2
    s = sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8])
    assert len(count_calls) == 2 and s.computed == 0 and s.skipped == 2
    # a wider sweep computes only the new cases
    s = sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8, 16])
    assert len(count_calls) == 4 and s.computed == 2 and s.skipped == 2
    keys = [r["key"] for r in rows_of(tmp_path)]
    assert len(keys) == len(set(keys)) == 4
    # a different objective is a different case
    s = sw.sweep([LENET], str(tmp_path), pes=[4], batches=[8], objective="comm")
    assert s.computed == 1 and len(count_calls) == 5


def test_corrupt_model_is_an_error_row_and_the_sweep_goes_on(tmp_path, corrupt):
    s = sw.sweep([corrupt, LENET, str(tmp_path / "missing.onnx")], str(tmp_path / "out"), pes=[4], batches=[8])
    assert s.computed == 3 and s.errors == 2
    rows = {r["model"]: r for r in rows_of(tmp_path / "out")}
    assert rows["lenet"]["status"] == "ok"
    for name in ("corrupt", "missing"):
        assert rows[name]["status"] == "error"
        assert rows[name]["error"]["type"] and rows[name]["error"]["message"]
    # errors are skipped on resume unless retried
    assert sw.sweep([corrupt, LENET], str(tmp_path / "out"), pes=[4], batches=[8]).computed == 0
    s = sw.sweep([corrupt, LENET], str(tmp_path / "out"), pes=[4], batches=[8], retry_errors=True)
    assert s.computed == 1 and s.errors == 1


def test_torn_last_line_is_cut_and_recomputed(tmp_path, count_calls):
    sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8])
    path = tmp_path / sw.RESULTS_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])       # a kill in the middle of a write
    assert len(rows_of(tmp_path)) == 1
    s = sw.sweep([LENET, CNN], str(tmp_path), pes=[4], batches=[8])
    assert s.computed == 1 and len(count_calls) == 3
    rows = rows_of(tmp_path)
    assert len(path.read_bytes().splitlines()) == 2 and len({r["key"] for r in rows}) == 2


def test_parallel_jobs_give_the_same_rows(tmp_path):
    sw.sweep([LENET, CNN], str(tmp_path / "one"), pes=[4], batches=[8, 16], jobs=1)
    sw.sweep([LENET, CNN], str(tmp_path / "two"), pes=[4], batches=[8, 16], jobs=2)
    one = sorted((stable(r) for r in rows_of(tmp_path / "one")), key=lambda r: r["key"])
    two = sorted((stable(r) for r in rows_of(tmp_path / "two")), key=lambda r: r["key"])
    assert one == two and len(one) == 4


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork",
                    reason="the patched partition call reaches the workers only when they are forked")
def test_a_worker_that_dies_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = worker.partition_case

    def dies_on_cnn(case):
        if case.model_name == "cnn_torchscript":
            os._exit(3)
        return real(case)

    monkeypatch.setattr(worker, "partition_case", dies_on_cnn)
    s = sw.sweep([CNN, LENET], str(tmp_path), pes=[4], batches=[8, 16], jobs=2)
    rows = {(r["model"], r["batch_requested"]): r for r in rows_of(tmp_path)}
    assert len(rows) == 4 and s.computed == 4
    assert rows[("lenet", 8)]["status"] == rows[("lenet", 16)]["status"] == "ok"
    assert rows[("cnn_torchscript", 8)]["status"] == "error"
    assert rows[("cnn_torchscript", 8)]["error"]["type"] == "WorkerDied"


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    with sw.ResultsWriter(str(tmp_path)):
        with pytest.raises(sw.SweepError, match="another sweep"):
            sw.sweep([LENET], str(tmp_path), pes=[4], batches=[8])


SLOW_SWEEP = textwrap.dedent("""
    import sys, time
    from hypar.sweep import worker
    real = worker.partition_case
    def slow(case):
        time.sleep(0.4)
        return real(case)
    worker.partition_case = slow
    from hypar.cli import main
    main(sys.argv[1:])
""")


def _start_slow_sweep(args, out, stderr):
    """Start the slowed-down sweep in a child process; return once its first row is written."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SWEEP, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    results = out / sw.RESULTS_FILE
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.01)
    return proc


@pytest.mark.slow
def test_killed_sweep_loses_no_row_and_computes_none_twice(tmp_path):
    out = tmp_path / "out"
    args = ["sweep", LENET, CNN, "--pes", "4", "--batch", "4,8,16", "-o", str(out), "-q"]
    proc = _start_slow_sweep(args, out, subprocess.PIPE)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = rows_of(out)
    assert 1 <= len(before) < 6, "the sweep should have been killed halfway"
    env = dict(os.environ)
    rerun = subprocess.run([sys.executable, "-m", "hypar", *args], cwd=ROOT, capture_output=True, text=True,
                           env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - len(before)} computed" in rerun.stdout and f"{len(before)} already done" in rerun.stdout
    after = rows_of(out)
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 6                          # no row lost, none computed twice
    assert [stable(r) for r in after[: len(before)]] == [stable(r) for r in before]


def test_dask_local_cluster_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    sw.sweep([LENET, CNN], str(tmp_path / "local"), pes=[4], batches=[8], jobs=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        s = sw.sweep([LENET, CNN], str(tmp_path / "dask"), pes=[4], batches=[8], executor="dask",
                     scheduler=cluster.scheduler_address)
        assert s.computed == 2
        # resume on dask too
        assert sw.sweep([LENET, CNN], str(tmp_path / "dask"), pes=[4], batches=[8], executor="dask",
                        scheduler=cluster.scheduler_address).computed == 0
    local = sorted((stable(r) for r in rows_of(tmp_path / "local")), key=lambda r: r["key"])
    dask = sorted((stable(r) for r in rows_of(tmp_path / "dask")), key=lambda r: r["key"])
    assert local == dask


def test_cli_sweep_and_resume(tmp_path, corrupt, cli_run):
    args = ["sweep", LENET, corrupt, "--pes", "4", "--batch", "8", "-o", str(tmp_path)]
    res = cli_run(*args)
    assert res.exit_code == 0, res.output
    assert "2 case(s): 2 computed (1 error(s)), 0 already done" in res.output
    assert "ETA" in res.output          # progress (res.output holds stderr too)
    res = cli_run(*args)
    assert res.exit_code == 0 and "0 computed (0 error(s)), 2 already done" in res.output


def test_cli_usage_errors(tmp_path, cli_run):
    assert cli_run("sweep", LENET, "-o", tmp_path).exit_code == 2          # no array
    assert cli_run("sweep", "--pes", "4", "-o", tmp_path).exit_code == 2   # no model
    res = cli_run("sweep", LENET, "--pes", "4,x", "-o", tmp_path)
    assert res.exit_code == 2 and "not an integer" in res.output
    res = cli_run("sweep", LENET, "--pes", "4", "--executor", "dask", "-o", tmp_path)
    assert res.exit_code == 2 and "--scheduler" in res.output


def test_bad_settings_stop_the_sweep_before_any_case(tmp_path, count_calls):
    with pytest.raises(sw.SweepError, match="unknown objective 'latency'; choose one of time, comm, energy"):
        sw.sweep([LENET], str(tmp_path), pes=[4], objective="latency")
    with pytest.raises(sw.SweepError, match="unknown search 'bogus'"):
        sw.make_cases([LENET], [sw.array_spec(pes=4)], search_how="bogus")
    assert not count_calls


def test_corrupt_zoo_manifest_is_an_error(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"")
    assert sw.zoo_models(str(tmp_path)) == [str(tmp_path / "a.onnx")]          # no manifest: file order
    (tmp_path / "MANIFEST.json").write_text("{not json")
    with pytest.raises(sw.SweepError, match="MANIFEST.json cannot be read as JSON"):
        sw.zoo_models(str(tmp_path))
    (tmp_path / "MANIFEST.json").write_text('{"models": {"a": "a.onnx"}}')
    with pytest.raises(sw.SweepError, match="'models' must map model names"):
        sw.zoo_models(str(tmp_path))


def test_zoo_listing():
    zoo = sw.zoo_models(str(ROOT / "models"))
    names = [Path(p).stem for p in zoo]
    assert names[0] == "lenet" and "resnet50" in names and "bert_base" in names
    assert all(Path(p).exists() for p in zoo)


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


@pytest.mark.skipif(not os.path.isdir("/proc") or multiprocessing.get_start_method() != "fork",
                    reason="needs /proc and forked workers")
@pytest.mark.slow
def test_killed_parallel_sweep_leaves_no_worker_and_no_lock(tmp_path):
    out = tmp_path / "out"
    args = ["sweep", LENET, CNN, "--pes", "4", "--batch", "4,8,16", "--jobs", "2", "-o", str(out), "-q"]
    proc = _start_slow_sweep(args, out, subprocess.DEVNULL)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{w}") and
                                         open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
                                         for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")
                and open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    before = len(rows_of(out))
    rerun = subprocess.run([sys.executable, "-m", "hypar", *args], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr                      # the directory is not locked
    assert f"{6 - before} computed" in rerun.stdout
    keys = [r["key"] for r in rows_of(out)]
    assert len(keys) == len(set(keys)) == 6
