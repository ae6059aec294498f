"""Run a function on a local gloo process group: one process per rank on this machine, loopback
only, a free port, a time limit (needs torch).

:func:`run_gloo` starts ``world_size`` processes (``forkserver``, torch imported once in the
server), each joins a gloo group over ``tcp://127.0.0.1:<free port>`` and calls
``fn(rank, world_size, *args)``; the return values (picklable) come back in rank order. A rank
that raises makes :func:`run_gloo` raise RuntimeError with that rank's traceback; a group not
done within ``timeout_s`` seconds is terminated and raises TimeoutError. Only the processes it
started are ever terminated.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable

__all__ = ["free_port", "run_gloo"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results) -> None:
    """One rank: join the group, run ``fn``, put (rank, ok, value or traceback) on ``results``."""
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
        try:
            results.put((rank, True, fn(rank, world_size, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises)
        results.put((rank, False, traceback.format_exc()))


def run_gloo(fn: Callable, world_size: int, args: tuple = (), timeout_s: float = 120.0) -> list:
    """``fn(rank, world_size, *args)`` on ``world_size`` local gloo processes; their return values
    in rank order. ``fn`` must be importable (a module-level function). RuntimeError naming the
    rank when one fails; TimeoutError after ``timeout_s`` seconds (the processes are then
    terminated)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed.tensor"])
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world_size, port, fn, args, results), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    out: dict[int, object] = {}
    try:
        while len(out) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"gloo group of {world_size} processes not done after {timeout_s:.0f} s")
            try:
                rank, ok, value = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a rank process exited with code {dead[0].exitcode} without a result")
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{value}")
            out[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
    return [out[r] for r in range(world_size)]
