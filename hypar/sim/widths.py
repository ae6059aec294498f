"""Bytes per element of each counted step (docs/precision.md), the rule the cost model prices by:

- an edge conversion (``fwd`` / ``bwd``: :class:`hypar.sim.ledger.ConversionKey`,
  :class:`hypar.sim.edges.HierKey`) moves the edge's tensor (the cost model's
  ``EdgeModel.tensor``, noted by :meth:`StepWidths.note`; else the converted tensor by name) in
  its declared width forward (``Tensor.elem_bytes``) and its error in the error's
  (``Tensor.error_bytes``). In the folded spaces the edge's tensor is the consumer's input: a
  QDQ pair folded between two layers sends int8 (the quantiser runs before the send);
- a weighted node's ``dW`` all-reduce moves the weight gradient in ``Layer.weight_grad_bytes``,
  its ``F_out`` all-reduce the output in the output's ``elem_bytes``;
- statistics, reductions' partial outputs and broadcast operands' partial errors
  (:class:`hypar.sim.ledger.StatsKey`) move in the training precision;

each None (undeclared) meaning the array's training precision ``dtype_bytes``.
"""

from __future__ import annotations

from hypar import graph as G
from hypar.sim.graphwalk import tensor_meta
from hypar.sim.ledger import IntraKey


class StepWidths:
    """The width of a ledger key on cost model ``model``'s graph and array: call it with a key."""

    def __init__(self, model):
        self.training_bytes = model.array.dtype_bytes
        self.tensors = tensor_meta(model.g)
        self.nodes = model.nodes
        self.edge_tensors: dict[tuple, G.Tensor] = {}

    def note(self, base: tuple, tensor: G.Tensor) -> None:
        """The conversions of ``base`` ((producer index, tensor key), as the ledger keys carry
        it) move the cost model's edge tensor ``tensor``."""
        self.edge_tensors[base] = tensor

    def __call__(self, key: tuple) -> int:
        """Bytes per element the step ``key`` moves (module docstring)."""
        if isinstance(key, IntraKey):
            node = self.nodes[key.node]
            if key.what == "dW":
                declared = node.layer.weight_grad_bytes
            else:
                declared = node.out_tensor.elem_bytes if node.out_tensor is not None else None
            return G.element_bytes(declared, self.training_bytes)
        kind, tensor = getattr(key, "kind", None), getattr(key, "tensor", None)
        if kind in ("fwd", "bwd") and isinstance(tensor, str):
            t = self.edge_tensors.get((key.producer, tensor)) or self.tensors.get(tensor.split("|")[-1])
            if t is not None:
                return G.element_bytes(t.elem_bytes if kind == "fwd" else t.error_bytes, self.training_bytes)
        return self.training_bytes
