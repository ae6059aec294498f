"""One training step of a module under a hypar plan, checked against the same step on one
process (needs torch); run on every rank of a gloo group (:func:`hypar.torch.gloo.run_gloo`).

:func:`check_step` builds the model (seeded, float64), runs forward, loss and backward on a
copy in the plain way (the reference), then :func:`hypar.torch.parallelize` s the model with the
plan and runs the same step on the mesh under :class:`hypar.torch.comms.LayerComms`. The model's
output is gathered whole before the loss (hypar does not charge the loss either), so the loss is
computed on the same numbers in both steps. It returns the loss of both, every parameter's
largest gradient difference (the DTensor gradient gathered whole) and scale, and every
collective this rank ran.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import implicit_replication

from hypar.errors import HyparWarning
from hypar.torch.apply import parallelize
from hypar.torch.comms import LayerComms
from hypar.torch.gloo import run_gloo
from hypar.torch.report import Row, comparison

__all__ = ["TOL", "PlanCheck", "check_plan", "check_step", "within_tol"]

TOL = 1e-9      # float64: |distributed - reference| <= TOL x max(1, max |reference|)


def within_tol(err: float, scale: float, tol: float = TOL) -> bool:
    """Is ``err`` within ``tol`` relative to max(1, ``scale``)."""
    return err <= tol * max(1.0, scale)


def _loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy for integer targets (token ids), else mean squared error."""
    if target.dtype in (torch.int64, torch.int32):
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    return nn.functional.mse_loss(out, target)


def _grad(p: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient as one whole tensor."""
    return p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad


def check_step(rank: int, world_size: int, plan: Mapping, build: Callable[[], nn.Module],
               batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], seed: int = 0) -> dict:
    """One step of ``build()`` (built under ``torch.manual_seed(seed)``, in float64) on the input
    and target ``batch()`` returns, plainly and under ``plan`` on a mesh of the plan's fanouts;
    returns ``{"rank", "loss", "ref_loss", "grads": {name: [max |diff|, max |ref|]},
    "collectives": [Collective.to_json(), ...], "warnings": [hypar's warnings]}``. ``build`` and
    ``batch`` must give every rank the same module and tensors (seeded). torch's own warnings and
    log lines (gloo's all-to-all fallback, CommDebugMode's hooks) are silenced."""
    logging.getLogger("torch.distributed").setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HyparWarning)
        out = _check_step(rank, plan, build, batch, seed)
    out["warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, HyparWarning)})
    return out


def _check_step(rank: int, plan: Mapping, build: Callable[[], nn.Module], batch: Callable[[], tuple],
                seed: int) -> dict:
    """:func:`check_step` without its warnings handling."""
    fanouts = tuple(int(level["fanout"]) for level in plan["array"]["levels"])
    mesh = init_device_mesh("cpu", fanouts)
    torch.manual_seed(seed)
    model = build().double()
    reference = copy.deepcopy(model)
    x, target = batch()
    x = x.double() if x.is_floating_point() else x
    target = target.double() if target.is_floating_point() else target
    ref_loss = _loss(reference(x), target)
    ref_loss.backward()
    parallelize(model, plan, mesh)
    with LayerComms(mesh, type(model).__name__) as comms, implicit_replication():
        out = model(x)
        loss = _loss(out.full_tensor() if isinstance(out, DTensor) else out, target)
        loss.backward()
    refs = dict(reference.named_parameters())
    grads = {}
    for name, p in model.named_parameters():
        want = refs[name].grad
        grads[name] = [float((_grad(p) - want).abs().max()), float(want.abs().max())]
    return {"rank": rank, "loss": loss.item(), "ref_loss": ref_loss.item(), "grads": grads,
            "collectives": [c.to_json() for c in comms.collectives]}


@dataclass
class PlanCheck:
    """One step checked on a gloo group: every rank's :func:`check_step` result and the
    collectives per module and level beside the plan's (:func:`hypar.torch.report.comparison`)."""

    results: list[dict]
    rows: list[Row]

    @property
    def loss_error(self) -> float:
        """The largest |loss - reference loss| over the ranks."""
        return max(abs(r["loss"] - r["ref_loss"]) for r in self.results)

    def grad_failures(self, tol: float = TOL) -> list[str]:
        """"rank r: name err / scale" for every gradient outside ``tol`` (:func:`within_tol`)."""
        return [f"rank {r['rank']}: {name} {err:.3g} / {scale:.3g}" for r in self.results
                for name, (err, scale) in r["grads"].items() if not within_tol(err, scale, tol)]


def check_plan(plan: Mapping, build: Callable[[], nn.Module], batch: Callable[[], tuple], *,
               timeout_s: float = 300.0) -> PlanCheck:
    """:func:`check_step` on a local gloo group of the plan's size (one process per PE), and the
    collectives compared with the plan's (the plan's model file must be at the path it records).
    ``build`` / ``batch``: importable callables (``functools.partial`` of module functions)."""
    world = prod(int(level["fanout"]) for level in plan["array"]["levels"])
    results = run_gloo(check_step, world, (dict(plan), build, batch), timeout_s=timeout_s)
    rows = comparison(plan, plan["model"]["path"], [c for r in results for c in r["collectives"]])
    return PlanCheck(results, rows)
