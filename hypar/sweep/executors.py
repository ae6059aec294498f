"""Where cases run: local worker processes (:func:`run_local`) or a Dask distributed cluster
(:func:`run_dask`; dask is imported only then). Both hand every finished row to ``emit`` as it
arrives. Workers must see the model files at the same paths (cases hold absolute paths).

A local worker that dies (a crash, out of memory) breaks its pool: the cases that were in flight
run again, each alone, and a case that kills its worker alone is recorded as an error row.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from hypar.sweep.cases import Case, SweepError, short_sha
from hypar.sweep.rows import error_row
from hypar.sweep.worker import run_case

Emit = Callable[[dict], None]
WORKER_DIED = "the worker process died (crash or out of memory) on this case"


def _watch_parent(parent_pid: int) -> None:
    """Exit this process as soon as ``parent_pid`` is no longer its parent."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_init(parent_pid: int, inherited_fds: tuple[int, ...]) -> None:
    """In each local worker: drop the forked copies of the parent's lock and results file (so a
    worker that outlives a killed sweep does not keep the directory locked) and exit as soon as the
    parent is gone (a killed sweep leaves no worker computing for nobody)."""
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="hypar-parent-watch", daemon=True).start()


def _pool(jobs: int, inherited_fds: tuple[int, ...]) -> ProcessPoolExecutor:
    """A pool of ``jobs`` worker processes set up by :func:`_worker_init`."""
    forked = multiprocessing.get_start_method(allow_none=False) == "fork"
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                               initargs=(os.getpid(), inherited_fds if forked else ()))


class _LocalRun:
    """Cases on ``jobs`` worker processes, at most ``jobs`` in flight; ``isolate`` holds the cases
    to rerun alone after a worker died."""

    def __init__(self, jobs: int, emit: Emit, inherited_fds: tuple[int, ...]):
        self.jobs, self.emit, self.inherited_fds = jobs, emit, inherited_fds
        self.isolate: list[Case] = []

    def run(self, cases: list[Case]) -> None:
        """Run every case; pools are rebuilt after a worker dies."""
        pending = list(cases)
        while pending or self.isolate:
            self._run_isolated()
            if pending:
                self._run_pool(pending)

    def _run_isolated(self) -> None:
        """Each case in ``isolate`` alone: if it kills its worker again, it is the culprit."""
        for c in self.isolate:
            with _pool(1, self.inherited_fds) as ex:
                try:
                    self.emit(ex.submit(run_case, c).result())
                except BrokenProcessPool:
                    self.emit(error_row(c, WORKER_DIED))
        self.isolate = []

    def _run_pool(self, pending: list[Case]) -> None:
        """Run ``pending`` (taken from the front as they are submitted) until done, or until a worker
        dies: then the cases in flight go to ``isolate`` and the rest stay pending."""
        ex = _pool(self.jobs, self.inherited_fds)
        running: dict[Future, Case] = {}
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    c = pending.pop(0)
                    running[ex.submit(run_case, c)] = c
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if self._collect(done, running):
                    self.isolate = sorted(self.isolate + list(running.values()), key=lambda c: c.index)
                    running.clear()
                    return
        finally:
            for fut in running:
                fut.cancel()
            ex.shutdown(wait=True, cancel_futures=True)

    def _collect(self, done: set[Future], running: dict[Future, Case]) -> bool:
        """Emit the finished futures' rows in case order; True when a worker died (its case goes
        to ``isolate``)."""
        broken = False
        for fut in sorted(done, key=lambda f: running[f].index):
            c = running.pop(fut)
            try:
                self.emit(fut.result())
            except BrokenProcessPool:
                self.isolate.append(c)
                broken = True
        return broken


def run_local(cases: list[Case], jobs: int, emit: Emit, inherited_fds: tuple[int, ...] = ()) -> None:
    """Run ``cases`` here (``jobs`` 1) or on ``jobs`` worker processes that close
    ``inherited_fds`` first."""
    if jobs <= 1:
        for c in cases:
            emit(run_case(c))
        return
    _LocalRun(jobs, emit, inherited_fds).run(cases)


def run_dask(cases: list[Case], scheduler, emit: Emit) -> None:
    """Run ``cases`` on a Dask cluster: ``scheduler`` is an address or a ``distributed.Client``.
    A case whose worker is lost becomes an error row. SweepError when dask is not installed."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SweepError.naming("{executor} dask needs dask's distributed scheduler: "
                                "pip install 'hypar[dask]'") from None
    own = not hasattr(scheduler, "submit")
    client = Client(scheduler) if own else scheduler
    try:
        futures = [client.submit(run_case, c, key=f"hypar-case-{short_sha(c.key.encode())}", pure=False)
                   for c in cases]
        by_future = dict(zip(futures, cases))
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as exc:           # KilledWorker, lost connection to the worker, ...
                row = error_row(by_future[fut], exc)
            emit(row)
            fut.release()
    finally:
        if own:
            client.close()
