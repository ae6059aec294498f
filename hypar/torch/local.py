"""Batched matmuls of two activations split only along their batch dims, computed on the local
shards (needs torch): what hypar's attention MatMuls are (type I splits the batch, II the heads;
neither sends anything), without DTensor's sharding propagation for them.

DTensor runs ``torch.matmul`` of 4-D tensors as a reshape to 3-D and a ``bmm``; when the batch
and the heads are both split, the reshape gives ``_StridedShard`` placements, and choosing the
bmm's strategy then costs a graph search per candidate: measured with torch 2.13 on a fake
process group, one training step of tests/fixtures/decoder_dynamo.onnx's decoder under a hypar
plan splitting batch and heads took 492 s on a (2, 2, 2) mesh, 480 s of it in bmm's sharding
propagation. When both operands carry the same placements and shard only dims before the last
two, every process's product of its local shards is its shard of the product, so
:class:`LocalMatmul` computes it with ``local_map`` (differentiable: the backward pass is local
too) and leaves every other call to DTensor.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import local_map
from torch.overrides import TorchFunctionMode

__all__ = ["LocalMatmul", "run_with_local_matmul", "splits_only_batch_dims"]

_MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)


def splits_only_batch_dims(a, b) -> bool:
    """Are ``a`` and ``b`` DTensors of one mesh, equal rank >= 3 and equal batch dims (no
    broadcasting), with equal placements that shard only dims before the last two (no partial
    sums)?"""
    if not (isinstance(a, DTensor) and isinstance(b, DTensor)) or a.device_mesh != b.device_mesh:
        return False
    if a.ndim < 3 or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2] or a.placements != b.placements:
        return False
    return all(p.is_replicate() or (p.is_shard() and p.dim < a.ndim - 2) for p in a.placements)


class LocalMatmul(TorchFunctionMode):
    """While active, ``torch.matmul(a, b)`` (and ``a @ b``) of DTensors that
    :func:`splits_only_batch_dims` multiplies the local shards; anything else runs as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS and len(args) == 2 and not kwargs and splits_only_batch_dims(*args):
            a, b = args
            local = local_map(torch.matmul, out_placements=list(a.placements),
                              in_placements=(list(a.placements), list(b.placements)),
                              device_mesh=a.device_mesh)
            return local(a, b)
        return func(*args, **kwargs)


def run_with_local_matmul(module: nn.Module) -> None:
    """Make ``module``'s forward run under :class:`LocalMatmul` (its ``forward`` attribute wraps the
    original; the backward of what it computes locally is local too)."""
    forward = module.forward

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with LocalMatmul():
            return forward(*args, **kwargs)

    module.forward = run
