"""The sweep's progress line: a bar, cases done of total, the last case's outcome, elapsed time,
ETA and the error count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

Progress = Callable[[str], None] | None


def fmt_seconds(s: float) -> str:
    """``3725`` -> ``"1h02m05s"``, ``65`` -> ``"1m05s"``, ``5`` -> ``"5s"``."""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def _outcome(row: dict) -> str:
    """"ok 1.2s" or "ERROR <type>"."""
    if row.get("status") == "ok":
        return f"ok {row['solve']['seconds']:.1f}s"
    return f"ERROR {row.get('error', {}).get('type')}"


@dataclass
class ProgressBar:
    """Counts finished rows (``done``, ``errors``) and reports one line per row to ``callback``."""

    total: int
    callback: Progress
    done: int = 0
    errors: int = 0
    t0: float = field(default_factory=time.perf_counter)
    width: int = 20

    def tick(self, row: dict) -> None:
        """Count ``row`` and report it."""
        self.done += 1
        if row.get("status") != "ok":
            self.errors += 1
        if not self.callback:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        batch = row.get("batch") or row.get("batch_requested") or "default"
        self.callback(f"[{bar}] {self.done}/{self.total} {row['model']} {row['array']} b{batch}: {_outcome(row)} | "
                      f"elapsed {fmt_seconds(elapsed)} ETA {fmt_seconds(eta)}"
                      + (f" | {self.errors} error(s)" if self.errors else ""))
