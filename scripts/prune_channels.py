#!/usr/bin/env python
"""Structured channel pruning of a CNN with onnx tools: remove (or zero) a share of the channels.

A Conv's output channels can be pruned when its output reaches exactly one other Conv (groups 1)
through per-channel ops only (BatchNormalization, Relu, MaxPool, ...): the pruned channels are
then cut from the Conv's weight (axis 0), its bias, the norm's parameters and the next Conv's
weight (axis 1). Channels feeding a residual Add, a Concat, a Flatten or the classifier are
kept, so the graph stays valid (in a ResNet the bottleneck's inner channels are pruned, the
block outputs are not). ``--factor F`` keeps ceil(C / F) of each prunable Conv's C channels.

Two outputs:

- default (``--mode remove``): the channels are gone; the model's dims are smaller, which is how
  a pruned, re-exported model looks to hypar. Shapes-only weights (the zoo's ``ConstantOfShape``)
  get smaller shapes; stored weights keep the channels of largest L1 norm.
- ``--mode mask``: the dims are kept and the pruned channels' weights are zero-filled. Every
  weight becomes a stored initializer (seeded random values elsewhere) so that
  ``hypar inspect --sparsity`` finds the zero channels; hypar plans it exactly as the unpruned
  model (masked weights are not smaller).

Examples:
  python scripts/prune_channels.py models/resnet50.onnx /tmp/resnet50_half.onnx --factor 2
  python scripts/prune_channels.py models/resnet18.onnx /tmp/resnet18_mask.onnx --factor 2 --mode mask
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import onnx
from onnx import numpy_helper

PER_CHANNEL = {"BatchNormalization", "Relu", "MaxPool", "AveragePool", "Clip", "LeakyRelu", "Sigmoid", "Dropout"}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes reading it."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _group(node: onnx.NodeProto) -> int:
    """A Conv's ``group`` attribute (1 when absent)."""
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)


def prunable(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, list[onnx.NodeProto], onnx.NodeProto]]:
    """(Conv, the per-channel nodes after it, the next Conv) for every prunable Conv (module docstring)."""
    readers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or _group(node) != 1:
            continue
        chain, tensor = [], node.output[0]
        while True:
            nxt = readers.get(tensor, [])
            if tensor in outputs or len(nxt) != 1:
                break
            if nxt[0].op_type in PER_CHANNEL and nxt[0].input[0] == tensor:
                chain.append(nxt[0])
                tensor = nxt[0].output[0]
                continue
            if nxt[0].op_type == "Conv" and _group(nxt[0]) == 1 and nxt[0].input[0] == tensor:
                found.append((node, chain, nxt[0]))
            break
    return found


class Weights:
    """The model's parameter tensors by name, read and written whether stored as initializers or
    as ``ConstantOfShape`` of an inline shape (the zoo's shapes-only weights)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.shape_of = {n.output[0]: n.input[0] for n in self.graph.node if n.op_type == "ConstantOfShape"}

    def shape(self, name: str) -> list[int]:
        """The tensor's shape."""
        if name in self.inits:
            return list(self.inits[name].dims)
        return numpy_helper.to_array(self.inits[self.shape_of[name]]).tolist()

    def values(self, name: str) -> np.ndarray | None:
        """The stored values (None for shapes-only weights)."""
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def put(self, name: str, values: np.ndarray | None, shape: list[int]) -> None:
        """Store ``values`` under ``name`` (shapes-only: just the new ``shape``)."""
        if values is None:
            init = self.inits[self.shape_of[name]]
            init.CopyFrom(numpy_helper.from_array(np.array(shape, dtype=np.int64), init.name))
        else:
            self.inits[name].CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))


def _kept(values: np.ndarray | None, n: int, keep: int) -> np.ndarray:
    """Indices of the ``keep`` of ``n`` output channels kept: largest L1 norm (the first ones
    for shapes-only weights), in order."""
    if values is None:
        return np.arange(keep)
    norms = np.abs(values.reshape(n, -1)).sum(axis=1)
    return np.sort(np.argsort(-norms, kind="stable")[:keep])


def _cut(weights: Weights, name: str, axis: int, kept: np.ndarray, mask: bool) -> None:
    """Keep only channels ``kept`` of tensor ``name`` along ``axis`` (``mask``: zero the others)."""
    shape, values = weights.shape(name), weights.values(name)
    if mask:
        drop = np.setdiff1d(np.arange(shape[axis]), kept)
        values = np.array(values, copy=True)
        np.moveaxis(values, axis, 0)[drop] = 0.0
        weights.put(name, values, shape)
        return
    shape[axis] = len(kept)
    weights.put(name, None if values is None else np.take(values, kept, axis=axis), shape)


def _stored(model: onnx.ModelProto, seed: int) -> None:
    """Replace every ``ConstantOfShape`` weight by a stored initializer of seeded random values."""
    rng = np.random.default_rng(seed)
    weights = Weights(model)
    keep = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.output[0].endswith(("running_mean", "running_var")):
            keep.append(node)
            continue
        shape = weights.shape(node.output[0])
        values = rng.standard_normal(shape).astype(np.float32) * 0.05 + 0.01
        model.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(keep)


def prune(model: onnx.ModelProto, factor: float, mask: bool, seed: int = 0) -> list[tuple[str, int, int]]:
    """Prune ``model`` in place; returns (Conv name, channels before, after) per pruned Conv."""
    if mask:
        _stored(model, seed)
    weights, report = Weights(model), []
    for conv, chain, nxt in prunable(model.graph):
        n = weights.shape(conv.input[1])[0]
        keep = max(1, math.ceil(n / factor))
        if keep == n:
            continue
        kept = _kept(weights.values(conv.input[1]), n, keep)
        _cut(weights, conv.input[1], 0, kept, mask)
        if not mask:                    # masking zeroes the weights only; removing cuts every per-channel tensor
            for name in list(conv.input[2:]) + [i for node in chain if node.op_type == "BatchNormalization"
                                                 for i in node.input[1:]]:
                _cut(weights, name, 0, kept, False)
        _cut(weights, nxt.input[1], 1, kept, mask)
        report.append((conv.name or conv.output[0], n, keep))
    del model.graph.value_info[:]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="input ONNX CNN (e.g. models/resnet50.onnx)")
    ap.add_argument("output", help="where to write the pruned model")
    ap.add_argument("--factor", type=float, default=2.0, help="keep ceil(C / factor) channels (default 2)")
    ap.add_argument("--mode", choices=("remove", "mask"), default="remove",
                    help="remove the channels (smaller dims) or zero them (same dims, stored weights)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stored weights in mask mode")
    args = ap.parse_args(argv)
    if args.factor < 1:
        ap.error("--factor must be >= 1 (2 keeps half of each prunable Conv's channels)")
    model = onnx.load(args.model)
    report = prune(model, args.factor, args.mode == "mask", args.seed)
    onnx.checker.check_model(model)
    onnx.save(model, args.output)
    before, after = sum(b for _n, b, _a in report), sum(a for _n, _b, a in report)
    print(f"{args.mode}: {len(report)} convs pruned, their output channels {before} -> {after}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
