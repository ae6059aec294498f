"""Partial sums reduced in hypar's hierarchical order (SPEC.md §3, needs torch).

DTensor reduces a tensor that is Partial on several mesh dims with one all-reduce per mesh dim,
each on the whole local tensor. hypar's order reduce-scatters the partial levels bottom first
and all-gathers them back top first, so every step at level h runs on a tensor already split by
the levels below it: level h then receives 2(k_h - 1)/k_h of the tensor *as the levels below h
left it* (SPEC.md §4's amount), not of the whole. :func:`reduce_partials` does that on the local
tensor, flattened (any shape; padded to a multiple of the group sizes), with one
reduce-scatter and one all-gather per partial mesh dim over that dim's group; the DTensor it
returns is Replicate where the input was Partial.

The flat buffer is cut into contiguous chunks level by level, whatever the tensor's dims, so no
tensor dim is ever sharded by two mesh dims and DTensor's nesting (:mod:`hypar.torch.placements`)
does not apply.
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate

__all__ = ["hierarchical_all_reduce", "reduce_grad", "reduce_partial_grads", "reduce_partials"]


def hierarchical_all_reduce(local: torch.Tensor, mesh: DeviceMesh, dims: tuple[int, ...]) -> torch.Tensor:
    """The sum of ``local`` over the groups of mesh ``dims``: reduce-scatter bottom dim first,
    then all-gather top dim first, on the flattened tensor (zero-padded to a multiple of the
    product of the dims' sizes). Returns a new tensor of ``local``'s shape."""
    parts = 1
    for h in dims:
        parts *= mesh.size(h)
    flat = local.reshape(-1)
    pad = -flat.numel() % parts
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    for h in sorted(dims, reverse=True):
        flat = funcol.wait_tensor(funcol.reduce_scatter_single(flat, "sum", 0, (mesh, h)))
    for h in sorted(dims):
        flat = funcol.wait_tensor(funcol.all_gather_single(flat, 0, (mesh, h)))
    return flat[:local.numel()].reshape(local.shape)


class _AllReduce(torch.autograd.Function):
    """Forward: :func:`hierarchical_all_reduce` of a local tensor; backward: the gradient as is
    (each partial term's gradient is the sum's)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, mesh: DeviceMesh, dims: tuple[int, ...]) -> torch.Tensor:
        return hierarchical_all_reduce(local, mesh, dims)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def _replicated(placements) -> tuple:
    """``placements`` with every Partial replaced by Replicate."""
    return tuple(Replicate() if p.is_partial() else p for p in placements)


def reduce_partials(x: DTensor) -> DTensor:
    """``x`` with its Partial mesh dims reduced in hypar's order (differentiable); ``x`` itself
    when it has none."""
    dims = tuple(h for h, p in enumerate(x.placements) if p.is_partial())
    if not dims:
        return x
    target = _replicated(x.placements)
    local = x.to_local(grad_placements=target)
    summed = _AllReduce.apply(local, x.device_mesh, dims)
    return DTensor.from_local(summed, x.device_mesh, target, run_check=False, shape=x.shape, stride=x.stride())


def reduce_grad(g: DTensor) -> DTensor:
    """A gradient's Partial mesh dims reduced in hypar's order (no autograd: in a backward)."""
    dims = tuple(h for h, p in enumerate(g.placements) if p.is_partial())
    if not dims:
        return g
    local = hierarchical_all_reduce(g.to_local(), g.device_mesh, dims)
    return DTensor.from_local(local, g.device_mesh, _replicated(g.placements), run_check=False,
                              shape=g.shape, stride=g.stride())


class _GradReduce(torch.autograd.Function):
    """Forward: the DTensor as is; backward: Partial mesh dims of its gradient reduced in hypar's
    order (before DTensor converts the gradient any further)."""

    @staticmethod
    def forward(ctx, x: DTensor) -> DTensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return reduce_grad(grad) if isinstance(grad, DTensor) else grad


def reduce_partial_grads(x: DTensor) -> DTensor:
    """``x`` (same values) whose gradient, when Partial on some mesh dims, is reduced in hypar's
    order as the backward pass reaches it."""
    return _GradReduce.apply(x)
