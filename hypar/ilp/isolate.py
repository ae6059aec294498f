"""A hard wall-clock stop for a solve: run it in a forked child that is killed at a deadline,
and decide from a time estimate when that is worth the fork.

Measured on a loaded 2-core box: a fork costs 5-15 ms against 2-4 ms for a small in-process
solve, so solving in process is the default, and a forked child is used only when the time
limit is short for the model's size, or when asked.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from hypar.errors import SolverError
from hypar.ilp import highs

T = TypeVar("T")

#: Seconds a forked solve may run beyond its time limit before it is killed (plus 5 % of the
#: limit). Model building counts against the time limit; this margin covers reading results.
HARD_STOP_MARGIN_SECONDS = 1.0

#: Rough in-process cost of the ILP per model variable (measured: 1.5e-5 s on LP-integral
#: chains, up to 1.5e-4 s on random DAGs whose relaxation is fractional), plus a fixed part.
_SECONDS_PER_VARIABLE = 1.5e-4
_SECONDS_FIXED = 0.01
#: Fork when the time limit is below this many times the estimate (a tight limit that the
#: backend may overrun); otherwise solve in process, which saves the ~5-10 ms of a fork.
_ISOLATE_BELOW_FACTOR = 20.0


def estimated_seconds(n_variables: int) -> float:
    """Rough in-process seconds of an ILP with about ``n_variables`` variables."""
    return _SECONDS_FIXED + _SECONDS_PER_VARIABLE * n_variables


def is_short(time_limit_seconds: float, n_variables: int) -> bool:
    """True when the limit is tight for the model's size (the backend may overrun it)."""
    return time_limit_seconds < _ISOLATE_BELOW_FACTOR * estimated_seconds(n_variables)


def hard_deadline(start: float, time_limit_seconds: float) -> float:
    """The ``time.perf_counter()`` time at which a forked solve started at ``start`` is killed."""
    return start + time_limit_seconds * 1.05 + HARD_STOP_MARGIN_SECONDS


def can_fork() -> bool:
    """True where :func:`run_forked` works (POSIX: ``os.fork`` and ``os.killpg``)."""
    return hasattr(os, "fork") and hasattr(os, "killpg")


def run_forked(fn: Callable[[], T], deadline: float) -> T:
    """Run ``fn()`` in a forked child; its result, its exception, or ``TimeoutError``.

    Parameters
    ----------
    fn : callable
        Called with no argument in the child; its result (or exception) must pickle.
    deadline : float
        A ``time.perf_counter()`` time: the child is killed when it has not answered by then.

    Raises
    ------
    TimeoutError
        The child did not answer in time (it is killed with its process group).
    BaseException
        Whatever ``fn`` raised in the child.

    The child leads its own process group, so a CBC process it started dies with it.
    """
    read_fd, write_fd = os.pipe()
    with highs.quiet_for_fork():       # no HiGHS solve or worker thread may exist at the fork
        pid = os.fork()
    if pid == 0:
        _child(fn, read_fd, write_fd)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass                                              # the child already did it
    data = _read_until(read_fd, pid, deadline)
    if data is None:
        raise TimeoutError("solver child did not answer in time")
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def _child(fn: Callable[[], object], read_fd: int, write_fd: int) -> None:
    """The forked child: run ``fn``, send ("ok", result) or ("err", exception), exit."""
    code = 0
    try:
        highs.reset_after_fork()
        os.close(read_fd)
        os.setpgid(0, 0)
        try:
            payload = ("ok", fn())
        except BaseException as exc:                  # noqa: BLE001 - sent to the parent
            payload = ("err", exc)
        try:
            data = pickle.dumps(payload)
        except Exception as exc:                      # noqa: BLE001
            data = pickle.dumps(("err", SolverError(f"solver child failed: {exc!r}")))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
    except BaseException:                             # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def _read_until(read_fd: int, pid: int, deadline: float) -> bytes | None:
    """All the child sends until it closes the pipe, or None when the deadline passes first
    (or it sent nothing); the child is killed unless it finished, and always reaped."""
    chunks = []
    finished = False
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os.waitpid(pid, 0)
    if not finished or not chunks:
        return None
    return b"".join(chunks)
