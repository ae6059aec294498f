"""Batch sweeps: partition many (model, array, batch) cases and append one JSONL row per case.

Durability: every finished case is appended to ``RESULTS_DIR/results.jsonl`` as one line, flushed
and fsynced before the next one is awaited, so killing a sweep loses at most the cases still
running. A rerun reads the file, skips every case whose ``key`` is already there and computes only
the rest (a torn last line from a kill is cut off first). A case that raises is recorded as an
error row (``status: "error"``) and the sweep goes on; a worker process that dies is retried alone
once and then recorded as an error too.

Executors: local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`, ``jobs``) or
a Dask distributed cluster (``executor="dask"``, ``scheduler=ADDRESS``; dask is imported only
then). Workers must see the model files at the same paths (paths are made absolute).

No click and no matplotlib here; progress goes to an optional callback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterable

from hypar.errors import HyparError

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".sweep.lock"
ROW_SCHEMA = "hypar-sweep-row/1"
METHODS = ("data", "model", "owt", "hypar", "accpar")   # baselines; "plan" is hypar's own plan

Progress = Callable[[str], None] | None


class SweepError(HyparError):
    """A sweep cannot start (bad options, results directory in use)."""


# ----------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class ArraySpec:
    """One array of the sweep: ``--pes N`` (kind "pes") or a YAML file (kind "file")."""

    kind: str
    value: str
    label: str
    n_pes: int
    digest: str

    def resolve(self):
        from hypar.api import resolve_array
        if self.kind == "pes":
            return resolve_array(None, int(self.value), None)
        return resolve_array(self.value, None, None)


@dataclass(frozen=True)
class Case:
    index: int
    model_path: str
    model_name: str
    model_digest: str
    array: ArraySpec
    batch: int | None
    objective: str
    space: str
    search_how: str
    settings: object = None          # hypar.search.SolverSettings

    @property
    def key(self) -> str:
        b = "default" if self.batch is None else f"b{self.batch}"
        return (f"{self.model_name}@{self.model_digest}|{self.array.label}@{self.array.digest}|{b}|"
                f"{self.objective}|{self.space}|{self.search_how}")


def _short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return _short_sha(fh.read())
    except OSError:
        return "unreadable"


def array_spec(pes: int | None = None, array_path: str | None = None) -> ArraySpec:
    """Validate one array now (a bad array is a usage error, not a per-case error)."""
    from hypar.api import resolve_array
    if (pes is None) == (array_path is None):
        raise SweepError("give exactly one of pes and array_path")
    if pes is not None:
        arr = resolve_array(None, int(pes), None)
        kind, value = "pes", str(int(pes))
    else:
        value = os.path.abspath(array_path)
        arr = resolve_array(value, None, None)
        kind = "file"
    digest = _short_sha(json.dumps(arr.to_json(), sort_keys=True).encode())
    return ArraySpec(kind, value, arr.name, arr.n_pes, digest)


def zoo_dir() -> str:
    """The model zoo: $HYPAR_ZOO, else ``models/`` next to the package (a source checkout), else ./models."""
    env = os.environ.get("HYPAR_ZOO")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    return here if os.path.isdir(here) else os.path.abspath("models")


def zoo_models(directory: str | None = None) -> list[str]:
    """The zoo's models in MANIFEST order (file order if there is no manifest)."""
    d = directory or zoo_dir()
    if not os.path.isdir(d):
        raise SweepError(f"no model zoo at {d}; set HYPAR_ZOO or pass model paths")
    files: list[str] = []
    try:
        with open(os.path.join(d, "MANIFEST.json")) as fh:
            manifest = json.load(fh)
        files = [os.path.join(d, m["file"]) for m in manifest.get("models", {}).values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        files = []
    if not files:
        files = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".onnx")]
    return files


def make_cases(models: Iterable[str], arrays: Iterable[ArraySpec], batches: Iterable[int | None] = (None,), *,
               objective: str = "time", space: str = "full", search_how: str = "refine",
               settings=None) -> list[Case]:
    """Every (model, array, batch) case in a fixed order: models as given, then arrays, then batches."""
    from hypar.cost import OBJECTIVES, SPACES
    if objective not in OBJECTIVES:
        raise SweepError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if space not in SPACES:
        raise SweepError(f"unknown space {space!r}; choose one of {SPACES}")
    if settings is None:
        from hypar.search import SolverSettings
        settings = SolverSettings()
    models, arrays, batches = list(models), list(arrays), list(batches) or [None]
    if not models:
        raise SweepError("no models: pass model paths or --zoo")
    if not arrays:
        raise SweepError("no arrays: pass --pes and/or --array")
    cases, seen = [], set()
    for m in models:
        path = os.path.abspath(m)
        name = os.path.splitext(os.path.basename(path))[0]
        digest = _file_digest(path)
        for a in arrays:
            for b in batches:
                c = Case(len(cases), path, name, digest, a, None if b is None else int(b),
                         objective, space, search_how, settings)
                if c.key in seen:
                    continue
                seen.add(c.key)
                cases.append(c)
    return cases


# ----------------------------------------------------------------------------- one case (in a worker)

def _base_row(case: Case) -> dict:
    from hypar import __version__
    return {"schema": ROW_SCHEMA, "hypar_version": __version__, "key": case.key, "index": case.index,
            "model": case.model_name, "model_path": case.model_path, "model_sha12": case.model_digest,
            "array": case.array.label, "array_source": case.array.value if case.array.kind == "file"
            else f"--pes {case.array.value}", "n_pes": case.array.n_pes,
            "batch_requested": case.batch, "objective": case.objective, "space": case.space,
            "search": case.search_how}


def _ratio(a, b):
    return None if not b or a is None else round(a / b, 9)


def row_from_plan(case: Case, plan: dict, seconds: float) -> dict:
    """The JSONL row of a finished case: totals, every baseline's totals and gains over data."""
    base = dict(plan["baselines"])
    totals = plan["totals"]
    methods = {**{k: base[k] for k in METHODS if k in base}, "plan": totals}
    data = base.get("data")
    speedup = {k: _ratio(data["time_s"], v["time_s"]) for k, v in methods.items()} if data else {}
    energy = {k: _ratio(data["energy_j"], v["energy_j"]) for k, v in methods.items()} if data else {}
    comm = {k: _ratio(data["comm_bytes"], v["comm_bytes"]) for k, v in methods.items()} if data else {}
    layers = plan.get("layers", [])
    solver = plan.get("solver", {})
    return _base_row(case) | {
        "status": "ok",
        "batch": plan.get("batch"),
        "n_levels": len(plan.get("array", {}).get("levels", [])),
        "n_nodes": len(layers),
        "n_weighted": sum(1 for l in layers if l.get("weighted")),
        "totals": totals,
        "baselines": {k: base[k] for k in METHODS if k in base},
        "speedup_over_data": speedup,
        "energy_gain_over_data": energy,
        "comm_reduction_over_data": comm,
        "gain_over_greedy": plan.get("gain_over_greedy"),
        "solve": {"status": solver.get("status"), "solve_wall_s": solver.get("solve_wall_s"),
                  "level_solves": solver.get("level_solves"),
                  "n_variables_max": solver.get("n_variables_max"),
                  "import_wall_s": plan.get("timing", {}).get("import_wall_s"),
                  "seconds": round(seconds, 6)},
    }


def error_row(case: Case, exc: BaseException | str, seconds: float = 0.0) -> dict:
    if isinstance(exc, BaseException):
        msg = " ".join(str(exc).split()) or type(exc).__name__
        err = {"type": type(exc).__name__, "message": msg}
        if not isinstance(exc, HyparError):
            err["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    else:
        err = {"type": "WorkerDied", "message": str(exc)}
    return _base_row(case) | {"status": "error", "error": err, "solve": {"seconds": round(seconds, 6)}}


def partition_case(case: Case) -> dict:
    """Hook for tests: the partition call of one case."""
    from hypar import api
    array = case.array.resolve()
    return api.partition(case.model_path, array, batch=case.batch, objective=case.objective, space=case.space,
                         search_how=case.search_how, settings=case.settings)


def run_case(case: Case) -> dict:
    """Partition one case; never raises (errors become error rows)."""
    import warnings
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = partition_case(case)
        return row_from_plan(case, plan, time.perf_counter() - t0)
    except Exception as exc:     # a failing model must not stop the sweep
        return error_row(case, exc, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- results file

def results_path(out_dir: str) -> str:
    return os.path.join(out_dir, RESULTS_FILE)


def read_rows(out_dir_or_file: str) -> list[dict]:
    """All complete rows (a torn or corrupt line is skipped)."""
    path = out_dir_or_file if os.path.isfile(out_dir_or_file) else results_path(out_dir_or_file)
    rows: list[dict] = []
    if not os.path.exists(path):
        return rows
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "key" in row:
                rows.append(row)
    return rows


def _repair_tail(path: str) -> None:
    """Cut a torn last line (a kill during a write) so the next append starts on a fresh line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())


class ResultsWriter:
    """Appends rows to results.jsonl: one write per row, flushed and fsynced."""

    def __init__(self, out_dir: str):
        os.makedirs(out_dir, exist_ok=True)
        self.path = results_path(out_dir)
        self._lock = open(os.path.join(out_dir, LOCK_FILE), "a")
        try:
            import fcntl
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:      # not POSIX: no lock
            pass
        except OSError:
            self._lock.close()
            raise SweepError(f"another sweep is writing to {out_dir}; wait for it or choose another -o") from None
        _repair_tail(self.path)
        self._fh = open(self.path, "ab")

    def write(self, row: dict) -> None:
        self._fh.write((json.dumps(row, sort_keys=False, allow_nan=False, default=str) + "\n").encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def fds(self) -> tuple[int, ...]:
        return (self._fh.fileno(), self._lock.fileno())

    def close(self) -> None:
        self._fh.close()
        self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- progress

def _fmt_s(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


@dataclass
class _Progress:
    total: int
    callback: Progress
    done: int = 0
    errors: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def tick(self, row: dict) -> None:
        self.done += 1
        if row.get("status") != "ok":
            self.errors += 1
        if not self.callback:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        status = row.get("status")
        if status == "ok":
            what = f"ok {row['solve']['seconds']:.1f}s"
        else:
            what = f"ERROR {row.get('error', {}).get('type')}"
        batch = row.get("batch") or row.get("batch_requested") or "default"
        self.callback(f"[{bar}] {self.done}/{self.total} {row['model']} {row['array']} b{batch}: {what} | "
                      f"elapsed {_fmt_s(elapsed)} ETA {_fmt_s(eta)}"
                      + (f" | {self.errors} error(s)" if self.errors else ""))


# ----------------------------------------------------------------------------- executors

def _worker_init(parent_pid: int, inherited_fds: tuple[int, ...]) -> None:
    """In each local worker: drop the forked copies of the parent's lock and results file (so a
    worker that outlives a killed sweep does not keep the directory locked) and exit as soon as the
    parent is gone (a killed sweep leaves no worker computing for nobody)."""
    import threading
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="hypar-parent-watch", daemon=True).start()


def _pool(jobs: int, inherited_fds: tuple[int, ...]) -> ProcessPoolExecutor:
    import multiprocessing
    forked = multiprocessing.get_start_method(allow_none=False) == "fork"
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                               initargs=(os.getpid(), inherited_fds if forked else ()))


def _run_local(cases: list[Case], jobs: int, emit: Callable[[dict], None], inherited_fds: tuple[int, ...] = ()) -> None:
    if jobs <= 1:
        for c in cases:
            emit(run_case(c))
        return
    pending = list(cases)
    isolate: list[Case] = []
    while pending or isolate:
        # a case that was running when a worker died runs alone: if it kills its worker again,
        # it is the culprit and is recorded as an error
        for c in isolate:
            with _pool(1, inherited_fds) as ex:
                try:
                    emit(ex.submit(run_case, c).result())
                except BrokenProcessPool:
                    emit(error_row(c, "the worker process died (crash or out of memory) on this case"))
        isolate = []
        if not pending:
            break
        ex = _pool(jobs, inherited_fds)
        running: dict = {}
        try:
            while pending or running:
                while pending and len(running) < jobs:       # at most `jobs` cases in flight
                    c = pending.pop(0)
                    running[ex.submit(run_case, c)] = c
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for fut in sorted(done, key=lambda f: running[f].index):
                    c = running.pop(fut)
                    try:
                        emit(fut.result())
                    except BrokenProcessPool:
                        isolate.append(c)
                        broken = True
                if broken:
                    isolate.extend(running.values())
                    isolate.sort(key=lambda c: c.index)
                    running.clear()
                    break
        finally:
            for fut in running:
                fut.cancel()
            ex.shutdown(wait=True, cancel_futures=True)


def _run_dask(cases: list[Case], scheduler, emit: Callable[[dict], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SweepError("--executor dask needs dask's distributed scheduler: pip install 'hypar[dask]'") from None
    own = not hasattr(scheduler, "submit")
    client = Client(scheduler) if own else scheduler
    try:
        futures = [client.submit(run_case, c, key=f"hypar-case-{_short_sha(c.key.encode())}", pure=False)
                   for c in cases]
        by_future = dict(zip(futures, cases))
        for fut in as_completed(futures):
            c = by_future[fut]
            try:
                row = fut.result()
            except Exception as exc:           # KilledWorker, lost connection to the worker, ...
                row = error_row(c, exc)
            emit(row)
            fut.release()
    finally:
        if own:
            client.close()


# ----------------------------------------------------------------------------- the sweep

@dataclass
class SweepSummary:
    out_dir: str
    total: int
    skipped: int
    computed: int
    errors: int
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_sweep(cases: list[Case], out_dir: str, *, jobs: int = 1, executor: str = "local",
              scheduler=None, progress: Progress = None, retry_errors: bool = False) -> SweepSummary:
    """Compute every case not yet in ``out_dir/results.jsonl`` and append its row as it finishes.

    ``scheduler`` (dask only) is an address string or an existing ``distributed.Client``.
    ``retry_errors`` also recomputes cases recorded as errors (the newer row wins in reports)."""
    if executor not in ("local", "dask"):
        raise SweepError(f"unknown executor {executor!r}; choose local or dask")
    if executor == "dask" and scheduler is None:
        raise SweepError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    t0 = time.perf_counter()
    with ResultsWriter(out_dir) as writer:
        done_keys = {r["key"] for r in read_rows(out_dir) if r.get("status") == "ok" or not retry_errors}
        todo = [c for c in cases if c.key not in done_keys]
        skipped = len(cases) - len(todo)
        if progress:
            progress(f"{len(cases)} case(s): {skipped} already in {writer.path}, {len(todo)} to compute"
                     + (f" on {jobs} local worker(s)" if executor == "local" else f" on dask at {scheduler}"))
        bar = _Progress(len(todo), progress)

        def emit(row: dict) -> None:
            writer.write(row)
            bar.tick(row)

        if todo:
            if executor == "dask":
                _run_dask(todo, scheduler, emit)
            else:
                _run_local(todo, max(1, int(jobs)), emit, writer.fds())
    return SweepSummary(os.path.abspath(out_dir), len(cases), skipped, bar.done, bar.errors,
                        round(time.perf_counter() - t0, 3))


def sweep(models: Iterable[str], out_dir: str, *, pes: Iterable[int] = (), arrays: Iterable[str] = (),
          batches: Iterable[int | None] = (None,), objective: str = "time", space: str = "full",
          search_how: str = "refine", settings=None, jobs: int = 1, executor: str = "local",
          scheduler=None, progress: Progress = None, retry_errors: bool = False) -> SweepSummary:
    """Library entry point: build the cases and run them (see :func:`run_sweep`)."""
    specs = [array_spec(pes=p) for p in pes] + [array_spec(array_path=a) for a in arrays]
    cases = make_cases(models, specs, list(batches) or [None], objective=objective, space=space,
                       search_how=search_how, settings=settings)
    return run_sweep(cases, out_dir, jobs=jobs, executor=executor, scheduler=scheduler, progress=progress,
                     retry_errors=retry_errors)


def case_order_key(row: dict) -> tuple:
    """Sort rows into case order for reports (model order is the rows' own index order)."""
    return (row.get("index", 0), row.get("key", ""))
