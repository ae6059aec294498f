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
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import implicit_replication

from hypar.torch.apply import parallelize
from hypar.torch.comms import LayerComms

__all__ = ["TOL", "check_step", "within_tol"]

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
    "collectives": [Collective.to_json(), ...]}``. ``build`` and ``batch`` must give every rank
    the same module and tensors (seeded)."""
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
