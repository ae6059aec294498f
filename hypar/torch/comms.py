"""The collectives of a torch step, counted per module with DTensor's CommDebugMode (needs torch).

:class:`LayerComms` is a ``CommDebugMode`` (its ``comm_module_counts`` per module, forward and
backward, as usual) that also records, for every collective one process runs, the mesh dims of
its group and the elements that process receives, in hypar's accounting (SPEC.md §4, ``k`` the
group size, ``m`` the elements of the collective's input on this process):

    all_gather (k-1) m;  reduce_scatter (k-1)/k m;  all_reduce 2(k-1)/k m;  all_to_all (k-1)/k m

gloo has no all-to-all: DTensor's ``shard_dim_alltoall`` falls back to an all-gather of the
local shard and a local chunk (torch 2.13 ``_collective_utils.shard_dim_alltoall``). Such an
all-gather is recorded as an ``all_to_all`` run as an all-gather: ``elements`` is what it
received ((k-1) m), ``a2a_elements`` what an all-to-all would ((k-1)/k m).

Module names are ``named_modules()`` paths ("" for the root, "Global" outside any module). The
forward/backward split and the module of a backward collective are CommDebugMode's (its module
tracker): a backward collective is charged to the module whose backward ran last.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.debug import CommDebugMode

__all__ = ["Collective", "LayerComms"]

# Collective op names (funcol and c10d) -> hypar's name.
_OPS = {"all_gather_into_tensor": "all_gather", "allgather_": "all_gather", "_allgather_base_": "all_gather",
        "reduce_scatter_tensor": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
        "all_reduce": "all_reduce", "allreduce_": "all_reduce", "all_to_all_single": "all_to_all",
        "alltoall_base_": "all_to_all"}
_FALLBACK = "shard_dim_alltoall"       # the frame DTensor's gloo all-to-all fallback runs in


@dataclass(frozen=True)
class Collective:
    """One collective run by one process: the module it is charged to, "forward" / "backward",
    the op (all_gather / reduce_scatter / all_reduce / all_to_all), the mesh dims of its group,
    the group size, the elements this process received, and what an all-to-all would have
    received (== ``elements`` unless this is gloo's all-gather fallback of an all-to-all)."""

    module: str
    direction: str
    op: str
    mesh_dims: tuple[int, ...]
    group_size: int
    elements: float
    a2a_elements: float

    @property
    def fallback(self) -> bool:
        """True for an all-to-all that gloo ran as an all-gather."""
        return self.op == "all_to_all" and self.elements != self.a2a_elements

    def to_json(self) -> dict:
        """A plain dict (to send between processes)."""
        return {"module": self.module, "direction": self.direction, "op": self.op,
                "mesh_dims": list(self.mesh_dims), "group_size": self.group_size,
                "elements": self.elements, "a2a_elements": self.a2a_elements}


def received(op: str, group_size: int, input_elements: int) -> float:
    """Elements one process receives in ``op`` over ``group_size`` processes with an input of
    ``input_elements`` on it (the module docstring's table)."""
    k, m = group_size, input_elements
    return {"all_gather": (k - 1) * m, "reduce_scatter": (k - 1) / k * m, "all_reduce": 2 * (k - 1) / k * m,
            "all_to_all": (k - 1) / k * m}[op]


def _in_fallback() -> bool:
    """Is DTensor's gloo all-to-all fallback on the Python stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == _FALLBACK:
            return True
        frame = frame.f_back
    return False


class LayerComms(CommDebugMode):
    """CommDebugMode recording every collective of this process as a :class:`Collective`
    (``collectives``), charged to modules of the model whose root is ``root_name`` (the root's
    class name, how CommDebugMode names it). ``mesh``: the mesh whose dims the groups map to."""

    def __init__(self, mesh: DeviceMesh, root_name: str):
        super().__init__()
        self.mesh, self.root_name = mesh, root_name
        self.collectives: list[Collective] = []
        self._dims_of: dict[str, tuple[int, ...]] = {}

    def module_path(self, tracked: str) -> str:
        """CommDebugMode's module name as a ``named_modules()`` path."""
        if tracked == self.root_name:
            return ""
        prefix = self.root_name + "."
        return tracked[len(prefix):] if tracked.startswith(prefix) else tracked

    def mesh_dims(self, group_name: str) -> tuple[int, ...]:
        """The mesh dims along which the ranks of group ``group_name`` differ."""
        hit = self._dims_of.get(group_name)
        if hit is None:
            from torch.distributed.distributed_c10d import _resolve_process_group

            ranks = dist.get_process_group_ranks(_resolve_process_group(group_name))
            coords = [torch.nonzero(self.mesh.mesh == r)[0].tolist() for r in ranks]
            hit = tuple(d for d in range(self.mesh.ndim) if len({c[d] for c in coords}) > 1)
            self._dims_of[group_name] = hit
        return hit

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if out is not NotImplemented and not isinstance(func, torch._ops.HigherOrderOperator):
            op = _OPS.get(str(func._overloadpacket).rsplit(".", 1)[-1])
            if op is not None:
                self._record(op, list(args) + list((kwargs or {}).values()))
        return out

    def _record(self, op: str, args: list) -> None:
        """Record one collective from its arguments (the input tensor first, the group by name)."""
        tensor = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
        group = next((a for a in args if isinstance(a, str) and a not in ("sum", "avg", "max", "min")), None)
        dims = self.mesh_dims(group) if group is not None else ()
        k = 1
        for d in dims:
            k *= self.mesh.size(d)
        m = tensor.numel()
        got = received(op, k, m)
        a2a = got
        if op == "all_gather" and _in_fallback():
            op, a2a = "all_to_all", received("all_to_all", k, m)
        direction = "backward" if self.advanced_module_tracker.is_bw else "forward"
        module = self.module_path(self.advanced_module_tracker.name)
        self.collectives.append(Collective(module, direction, op, dims, k, float(got), float(a2a)))


def totals(collectives) -> dict[tuple, dict[str, float]]:
    """(module, direction, op, mesh dims) -> {"count", "elements", "a2a_elements"} summed over
    ``collectives`` (:class:`Collective` or their JSON dicts, e.g. from several processes)."""
    out: dict[tuple, dict[str, float]] = defaultdict(lambda: {"count": 0, "elements": 0.0, "a2a_elements": 0.0})
    for c in collectives:
        c = c.to_json() if isinstance(c, Collective) else c
        row = out[(c["module"], c["direction"], c["op"], tuple(c["mesh_dims"]))]
        row["count"] += 1
        row["elements"] += c["elements"]
        row["a2a_elements"] += c["a2a_elements"]
    return dict(out)
