"""The results file ``RESULTS_DIR/results.jsonl``: read the complete rows, append new ones durably.

Every row is one line, flushed and fsynced as it is written, so killing a sweep loses at most the
cases still running; a torn last line (a kill during a write) is skipped when read and cut off
before the next append. One sweep at a time writes a directory (an exclusive lock file).
"""

from __future__ import annotations

import json
import os

from hypar.sweep.cases import SweepError

try:
    import fcntl
except ImportError:      # not POSIX: a directory is not locked
    fcntl = None

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".sweep.lock"


def results_path(out_dir: str) -> str:
    """``out_dir/results.jsonl``."""
    return os.path.join(out_dir, RESULTS_FILE)


def read_rows(out_dir_or_file: str) -> list[dict]:
    """All complete rows of a results directory or file, in file order ([] when there is no file;
    a torn or corrupt line is skipped)."""
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
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


def _lock(out_dir: str):
    """The directory's lock file, held exclusively (POSIX); SweepError when another sweep holds it."""
    lock = open(os.path.join(out_dir, LOCK_FILE), "a")
    if fcntl is None:
        return lock
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise SweepError.naming(f"another sweep is writing to {out_dir}; wait for it or choose another "
                                "{out_dir}") from None
    return lock


class ResultsWriter:
    """Appends rows to ``out_dir/results.jsonl`` (created with its directory): one write per row,
    flushed and fsynced; holds the directory's lock until closed (a context manager)."""

    def __init__(self, out_dir: str):
        os.makedirs(out_dir, exist_ok=True)
        self.path = results_path(out_dir)
        self._lock = _lock(out_dir)
        _repair_tail(self.path)
        self._fh = open(self.path, "ab")

    def write(self, row: dict) -> None:
        """Append ``row`` as one JSON line, durably."""
        self._fh.write((json.dumps(row, sort_keys=False, allow_nan=False, default=str) + "\n").encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def fds(self) -> tuple[int, ...]:
        """The open file descriptors (results file, lock) a forked worker must close."""
        return (self._fh.fileno(), self._lock.fileno())

    def close(self) -> None:
        """Close the results file and release the lock."""
        self._fh.close()
        self._lock.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
