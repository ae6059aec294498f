"""One worker thread beside the distributed step: the one-device reference step and the numerics
checks, in the order they are queued, so the two cores work at once (numpy releases the GIL in
its kernels and BLAS calls; each thread's BLAS gets its share of the cores, :mod:`hypar.sim.blas`).

The queue: the reference's forward pass first, then the checks of forward values the
distributed forward queues, then -- as the distributed backward reaches each node -- the
reference's backward pass down to that node's layer (:meth:`Background.advance`) and the node's
checks of its output error and weight gradient. The reference runs frugally: a value is dropped
once no layer still to run needs it, an error once its check took it (memory: the reference
never holds all errors and all values at once)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from hypar.sim.blas import set_blas_threads, share_of_cores
from hypar.sim.reference import Reference, ReferenceBackward, StepData, reference_forward

T = TypeVar("T")


class Background:
    """The reference step of ``g`` on ``data`` and the checks queued after it, on one thread;
    ``keep``: the tensors whose reference errors checks will take (and drop)."""

    def __init__(self, g, data: StepData, keep: set[str]):
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hypar-reference",
                                        initializer=set_blas_threads, initargs=(share_of_cores(),))
        fwd = self._pool.submit(reference_forward, g, data, self._stop.is_set)
        self._back: Future[ReferenceBackward] = self._pool.submit(
            lambda: ReferenceBackward(g, data, fwd.result(), keep, frugal=True))

    def reference(self) -> Reference:
        """The reference: every value once its forward pass is done (waits for it; re-raises what
        it raised); errors and weight gradients as far as :meth:`advance` has run."""
        return self._back.result().ref

    def advance(self, layer: str) -> None:
        """Queue the reference's backward pass down to ``layer`` (included)."""
        self._pool.submit(lambda: self._back.result().through(layer, self._stop.is_set))

    def check(self, fn: Callable[[Reference], T]) -> Future[T]:
        """``fn(reference)`` queued behind everything queued so far. ``fn`` must only read the
        arrays it is given (they are shared with the step); it may pop what it alone reads."""
        return self._pool.submit(lambda: fn(self.reference()))

    def close(self) -> None:
        """Wait for everything queued, then end the thread."""
        self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        """Drop what is queued, stop the reference at its next layer, end the thread."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
