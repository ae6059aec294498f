"""Structured sparsity in stored weights: the all-zero output channels, input channels and
elements of every weight initializer (``hypar inspect --sparsity``).

A model pruned by *removing* channels already has smaller dims, which hypar plans as such. A
model pruned by *masking* (zero-filled weights) keeps its dims: this scan says how much of it is
zero, slice by slice. It needs the weights' values, so it reads the model with its weights
(:func:`hypar.onnx.load.load_model` with ``with_weights``, external data from next to the file);
planning never calls it.

Which tensor is a layer's weight and which axis holds its outputs:

- ``Conv``: input 1, shape (C_out, C_in / groups, kh, kw): outputs on axis 0, inputs on axis 1;
- ``ConvTranspose``: input 1, shape (C_in, C_out / groups, ...): outputs on axis 1;
- ``Gemm``: input B, (D_in, D_out), or (D_out, D_in) with ``transB = 1``;
- ``MatMul``: a 2-D initializer as input 1 (D_in, D_out) or input 0 (the transposed use).

A weight that is not an initializer (computed by a node, e.g. the zoo's shapes-only
``ConstantOfShape`` weights) or whose data is absent has no stored values: it is listed as not
stored, never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from hypar.onnx.load import load_model

__all__ = ["WeightSparsity", "weight_sparsity"]


@dataclass(frozen=True, slots=True)
class WeightSparsity:
    """One layer's weight: ``node`` (the ONNX node's name, else its output), ``op``, ``tensor``
    and ``shape``; with ``stored`` the counts of all-zero output channels (of ``out_channels``),
    input channels (of ``in_channels``) and elements (of ``elements``); without, all zero."""

    node: str
    op: str
    tensor: str
    shape: tuple[int, ...]
    stored: bool
    out_channels: int = 0
    zero_out: int = 0
    in_channels: int = 0
    zero_in: int = 0
    elements: int = 0
    zero_elements: int = 0

    def to_json(self) -> dict:
        """The record as JSON (fractions included, None when not stored)."""
        def frac(zero: int, total: int) -> float | None:
            return round(zero / total, 6) if self.stored and total else None
        return {"node": self.node, "op": self.op, "tensor": self.tensor, "shape": list(self.shape),
                "stored": self.stored, "out_channels": self.out_channels, "zero_out_channels": self.zero_out,
                "in_channels": self.in_channels, "zero_in_channels": self.zero_in,
                "elements": self.elements, "zero_elements": self.zero_elements,
                "zero_out_fraction": frac(self.zero_out, self.out_channels),
                "zero_in_fraction": frac(self.zero_in, self.in_channels),
                "zero_element_fraction": frac(self.zero_elements, self.elements)}


def _constants(model: onnx.ModelProto) -> set[str]:
    """Tensors that do not depend on a graph input: initializers and what nodes compute from
    them alone (Constant, ConstantOfShape, a Transpose or Cast of one, ...)."""
    known = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if all(not i or i in known for i in node.input):
            known.update(node.output)
    return known


def _weight_input(node: onnx.NodeProto, constants: set[str]) -> tuple[str, int] | None:
    """(weight tensor name, its output axis) of a weighted node, None for any other node (an
    activation x activation MatMul included)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and len(node.input) > 1:
        return node.input[1], 0
    if node.op_type == "ConvTranspose" and len(node.input) > 1:
        return node.input[1], 1
    if node.op_type == "Gemm" and len(node.input) > 1:
        return node.input[1], 0 if attrs.get("transB", 0) else 1
    if node.op_type == "MatMul" and len(node.input) == 2:
        if node.input[1] in constants:
            return node.input[1], 1
        if node.input[0] in constants:
            return node.input[0], 0
    return None


def _zero_slices(values: np.ndarray, axis: int) -> int:
    """How many slices of ``values`` along ``axis`` are all zero."""
    other = tuple(a for a in range(values.ndim) if a != axis)
    return int(np.count_nonzero(~np.any(values != 0, axis=other)))


def _record(name: str, op: str, tensor: str, init: onnx.TensorProto | None, out_axis: int,
            base_dir: str) -> WeightSparsity:
    """The record of one weight (``init`` None: not an initializer)."""
    if init is None:
        return WeightSparsity(name, op, tensor, (), False)
    shape = tuple(int(d) for d in init.dims)
    try:
        values = numpy_helper.to_array(init, base_dir=base_dir)
    except (OSError, ValueError):                 # external data file absent or short
        return WeightSparsity(name, op, tensor, shape, False)
    if values.size == 0 or values.ndim < 2 or values.shape != shape:
        return WeightSparsity(name, op, tensor, shape, False)
    in_axis = 1 - out_axis
    return WeightSparsity(name, op, tensor, shape, True, shape[out_axis], _zero_slices(values, out_axis),
                          shape[in_axis], _zero_slices(values, in_axis), int(values.size),
                          int(values.size - np.count_nonzero(values)))


def weight_sparsity(path: str | os.PathLike) -> list[WeightSparsity]:
    """Every weighted node's weight (module docstring), in graph order, scanned for all-zero
    output channels, input channels and elements. ModelLoadError when the model cannot be read."""
    model, _name = load_model(path, with_weights=True)
    base_dir = os.path.dirname(os.path.abspath(os.fspath(path)))
    initializers = {t.name: t for t in model.graph.initializer}
    constants = _constants(model)
    out = []
    for k, node in enumerate(model.graph.node):
        found = _weight_input(node, constants)
        if found is None:
            continue
        tensor, out_axis = found
        name = node.name or (node.output[0] if node.output else f"node{k}")
        out.append(_record(name, node.op_type, tensor, initializers.get(tensor), out_axis, base_dir))
    return out
