"""A sweep from start to end: build the cases, skip the finished ones, run the rest on the chosen
executor and append each row as it arrives; :class:`SweepSummary` says what happened."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hypar.config import SolverSettings
from hypar.sweep.cases import Case, SweepError, array_spec, make_cases
from hypar.sweep.executors import run_dask, run_local
from hypar.sweep.progress import Progress, ProgressBar
from hypar.sweep.results import ResultsWriter, read_rows
from hypar.vocab import Convention, Objective, Search, Space

EXECUTORS = ("local", "dask")


@dataclass
class SweepSummary:
    """What a sweep did: ``total`` cases, ``skipped`` (already in the results), ``computed`` now
    (``errors`` of them failed), in ``seconds`` of wall time."""

    out_dir: str
    total: int
    skipped: int
    computed: int
    errors: int
    seconds: float

    def as_dict(self) -> dict:
        """The summary as a plain dictionary."""
        return dataclasses.asdict(self)


def _check_executor(executor: str, scheduler) -> None:
    """SweepError unless ``executor`` is local, or dask with a scheduler."""
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; choose local or dask")
    if executor == "dask" and scheduler is None:
        raise SweepError.naming("{executor} dask needs {scheduler} ADDRESS (e.g. tcp://127.0.0.1:8786)")


def run_sweep(cases: list[Case], out_dir: str, *, jobs: int = 1, executor: str = "local",
              scheduler=None, progress: Progress = None, retry_errors: bool = False) -> SweepSummary:
    """Compute every case not yet in ``out_dir/results.jsonl`` and append its row as it finishes.

    ``scheduler`` (dask only) is an address string or an existing ``distributed.Client``.
    ``retry_errors`` also recomputes cases recorded as errors (the newer row wins in reports).
    SweepError for a bad executor, or when another sweep writes to ``out_dir``."""
    _check_executor(executor, scheduler)
    t0 = time.perf_counter()
    with ResultsWriter(out_dir) as writer:
        done_keys = {r["key"] for r in read_rows(out_dir) if r.get("status") == "ok" or not retry_errors}
        todo = [c for c in cases if c.key not in done_keys]
        skipped = len(cases) - len(todo)
        if progress:
            progress(f"{len(cases)} case(s): {skipped} already in {writer.path}, {len(todo)} to compute"
                     + (f" on {jobs} local worker(s)" if executor == "local" else f" on dask at {scheduler}"))
        bar = ProgressBar(len(todo), progress)

        def emit(row: dict) -> None:
            writer.write(row)
            bar.tick(row)

        if todo and executor == "dask":
            run_dask(todo, scheduler, emit)
        elif todo:
            run_local(todo, max(1, int(jobs)), emit, writer.fds())
    return SweepSummary(os.path.abspath(out_dir), len(cases), skipped, bar.done, bar.errors,
                        round(time.perf_counter() - t0, 3))


def sweep(models: Iterable[str], out_dir: str, *, pes: Iterable[int] = (), arrays: Iterable[str] = (),
          batches: Iterable[int | None] = (None,), objective: Objective | str = "time",
          space: Space | str = "full", search_how: Search | str = Search.AUTO,
          convention: Convention | str = Convention.HIERARCHICAL, settings: SolverSettings | None = None,
          jobs: int = 1, executor: str = "local", scheduler=None, progress: Progress = None,
          retry_errors: bool = False, dims: Mapping[str, int] | None = None,
          input_shapes: Mapping[str, Sequence[int]] | None = None) -> SweepSummary:
    """Library entry point: every model on every array (``pes`` sizes, then ``arrays`` files) at
    every batch, hypar's plan searched and priced under ``convention``, run by :func:`run_sweep`;
    each model binds the ``dims`` names and ``input_shapes`` inputs it has. SweepError for bad
    settings (checked before any case runs); ArrayConfigError for a bad array."""
    specs = [array_spec(pes=p) for p in pes] + [array_spec(array_path=a) for a in arrays]
    cases = make_cases(models, specs, list(batches) or [None], objective=objective, space=space,
                       search_how=search_how, convention=convention, settings=settings, dims=dims,
                       input_shapes=input_shapes)
    return run_sweep(cases, out_dir, jobs=jobs, executor=executor, scheduler=scheduler, progress=progress,
                     retry_errors=retry_errors)
