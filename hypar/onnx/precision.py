"""Per-tensor precision read from the model (docs/precision.md).

A tensor the model stores narrower than 32 bits keeps its width: int8 / uint8 (1 byte), fp16 /
bf16 (2 bytes). Anything else -- fp32 (the exporters' default), fp64, wider integers, unknown --
is left undeclared (None) and takes the array's training precision (``PEArray.dtype_bytes``).

Rules, each giving ``(element bytes, error bytes)``:

- an activation: its ONNX element type's width; its error (gradient) has the same width for a
  float type (fp16 / bf16: autograd keeps a tensor's gradient in its type) and the training
  precision for an integer one (quantisation is straight-through: the float it quantises is what
  is differentiated);
- a QDQ pair ``x -> QuantizeLinear -> q (int8) -> DequantizeLinear -> y (fp32)``: ``q`` is the
  activation crossing a layer boundary in int8; ``y`` is computed locally where it is read, so it
  is declared with ``q``'s width too (in the folded spaces an edge carries the consumer's input
  ``y``: it moves in int8). ``x`` is fp32 (training precision);
- a weight: the width of the initializer (or parameter graph input) it comes from through
  weight-only ops (Transpose, Cast, DequantizeLinear, ...: :data:`hypar.onnx.ops.WEIGHT_PASS`);
  its gradient by the activation rule (fp16 weight: fp16 gradient; int8 weight: the training
  precision, the trained float master weight's).
"""

from __future__ import annotations

import dataclasses

import networkx as nx
from onnx import TensorProto

from hypar import graph as G
from hypar.onnx.index import ModelIndex
from hypar.onnx.shapes import ShapeTable

# ONNX element types stored narrower than 32 bits -> bytes per element
NARROW_WIDTH_BYTES = {
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
}
# the narrow float types: their gradients keep their width
NARROW_FLOATS = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
_MAX_DQ_DEPTH = 8       # DequantizeLinear chains followed back (a QDQ pair has one)

Widths = tuple[int | None, int | None]     # (element bytes, error bytes); None: training precision


def type_widths(elem_type: int) -> Widths:
    """(element bytes, error bytes) of a tensor of ONNX ``elem_type`` (module docstring)."""
    width = NARROW_WIDTH_BYTES.get(elem_type)
    if width is None:
        return None, None
    return width, (width if elem_type in NARROW_FLOATS else None)


def activation_widths(index: ModelIndex, table: ShapeTable, name: str) -> Widths:
    """(element bytes, error bytes) of activation ``name``: a DequantizeLinear's output takes its
    quantised input's width (its error stays in the training precision), anything else its own
    element type's (module docstring)."""
    t, depth = name, 0
    while t in index.producer and index.producer[t][1].op_type == "DequantizeLinear" and depth < _MAX_DQ_DEPTH:
        t = index.producer[t][1].input[0]
        depth += 1
    if depth:
        width = NARROW_WIDTH_BYTES.get(table.elem_type(t) or _stored_type(index, t))
        return width, None
    return type_widths(table.elem_type(name))


def weight_widths(index: ModelIndex, weight: str) -> Widths:
    """(weight bytes, weight-gradient bytes) of the weight read as tensor ``weight``: the stored
    initializer's (or parameter input's) width through weight-only ops (module docstring)."""
    return type_widths(_stored_type(index, index.weight_source(weight)))


def _stored_type(index: ModelIndex, src: str) -> int:
    """ONNX element type ``src`` is stored in (an initializer or graph input), 0 when unknown."""
    stored = index.stored(src)
    return 0 if stored is None else stored[0]


def declare_widths(g: nx.DiGraph, index: ModelIndex, table: ShapeTable) -> None:
    """Set every edge tensor's, graph input's and output's widths and every weighted layer's
    weight widths in layer graph ``g`` (in place), by the module's rules. A model stored all in
    fp32 declares nothing (every width None): its plans are as before."""
    def declared(t: G.Tensor) -> G.Tensor:
        elem, err = activation_widths(index, table, t.name)
        return t if (elem, err) == (t.elem_bytes, t.error_bytes) else \
            dataclasses.replace(t, elem_bytes=elem, error_bytes=err)

    for _p, _c, data in g.edges(data=True):
        data["tensor"] = declared(data["tensor"])
    g.graph["inputs"] = tuple(declared(t) for t in g.graph.get("inputs", ()))
    g.graph["outputs"] = tuple(declared(t) for t in g.graph.get("outputs", ()))
    for n in g.nodes:
        lay = G.layer(g, n)
        w = lay.attr("weight")
        if lay.weighted and isinstance(w, str):
            wb, gb = weight_widths(index, w)
            if (wb, gb) != (None, None):
                g.nodes[n]["layer"] = dataclasses.replace(lay, weight_bytes=wb, weight_grad_bytes=gb)
