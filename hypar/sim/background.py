"""One worker thread beside the distributed step: it computes the one-device reference step
first, then the numerics checks queued behind it (each a function of the reference), so the two
cores work at once (numpy releases the GIL in its kernels and BLAS calls)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from hypar.sim.reference import Reference, StepData, reference_step

T = TypeVar("T")


class Background:
    """The reference step of ``g`` on ``data``, started at once, and the checks queued after it,
    run in order on one thread."""

    def __init__(self, g, data: StepData):
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypar-reference")
        self._ref: Future[Reference] = self._pool.submit(reference_step, g, data, self._stop.is_set)

    def reference(self) -> Reference:
        """The reference (waits for it; re-raises what the step raised)."""
        return self._ref.result()

    def check(self, fn: Callable[[Reference], T]) -> Future[T]:
        """``fn(reference)`` queued behind the reference and the earlier checks. ``fn`` must only
        read what it is given (the arrays are shared with the step)."""
        return self._pool.submit(lambda: fn(self._ref.result()))

    def close(self) -> None:
        """Wait for everything queued, then end the thread."""
        self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        """Drop the queued checks, stop the reference at its next layer, end the thread."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
