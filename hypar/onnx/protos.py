"""Small stateless helpers on ONNX protobufs: attribute values, the dims of a TypeProto, tensor
element counts, and light copies of initializers (name, dims, type; large data dropped)."""

from __future__ import annotations

from math import prod

import numpy as np
import onnx
from onnx import TensorProto, helper

# Constants with at most this many elements may be decoded and evaluated (shape tensors);
# larger tensors (weights) are only ever read as shapes.
SMALL_ELEMENTS = 4096

# Element types of index-like tensors (token ids, masks): such a graph input has no feature axis.
INT_TYPES = frozenset({
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    TensorProto.BOOL,
})

# Element types of trainable parameters (a Gather of such a table of rank >= 2 is a layer).
FLOAT_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
})

# Attribute types that carry no plain value (tensors, graphs, types): not read.
_OPAQUE_ATTRIBUTES = frozenset({
    onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
    onnx.AttributeProto.TENSORS, onnx.AttributeProto.SPARSE_TENSOR,
    onnx.AttributeProto.SPARSE_TENSORS, onnx.AttributeProto.TYPE_PROTO,
    onnx.AttributeProto.TYPE_PROTOS,
})

# dims of a tensor: int (fixed), str (symbolic dim_param) or None (unknown) per axis.
Dims = list[int | str | None]


def attr_value(a: onnx.AttributeProto) -> object:
    """Plain Python value of an attribute: int, float, str or a tuple of them.

    Bytes are decoded as UTF-8 (invalid bytes replaced); tensor, graph and type attributes
    give None."""
    if a.type in _OPAQUE_ATTRIBUTES:
        return None
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v)
    return v


def node_attrs(n: onnx.NodeProto) -> dict[str, object]:
    """The node's attributes by name, as :func:`attr_value` reads them (None values left out)."""
    out = {}
    for a in n.attribute:
        v = attr_value(a)
        if v is not None:
            out[a.name] = v
    return out


def dims_of_type(tp: onnx.TypeProto) -> tuple[int, Dims | None] | None:
    """``(elem_type, dims)`` of a tensor type, or None when ``tp`` is not a tensor type.

    ``dims`` is None when the type has no shape (unknown rank); a negative dim_value counts
    as unknown (None)."""
    if not tp.HasField("tensor_type"):
        return None
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None
    dims: Dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tt.elem_type, dims


def known(dims: Dims | None) -> bool:
    """True when the rank and every dim are known numbers."""
    return dims is not None and all(isinstance(d, int) for d in dims)


def norm_axis(axis: int, rank: int) -> int:
    """A possibly negative ONNX axis as a non-negative one (not range-checked)."""
    return axis + rank if axis < 0 else axis


def tensor_elements(t: TensorProto) -> int:
    """Element count of a TensorProto from its dims (1 for a scalar); no data is read."""
    return prod(t.dims) if t.dims else 1


def is_small(t: TensorProto) -> bool:
    """True when ``t`` holds its data inline and has at most :data:`SMALL_ELEMENTS` elements."""
    return t.data_location != TensorProto.EXTERNAL and tensor_elements(t) <= SMALL_ELEMENTS


def strip_tensor(t: TensorProto) -> TensorProto:
    """A copy of ``t`` that keeps name, dims and type, dropping data unless ``t`` is small."""
    if is_small(t):
        c = TensorProto()
        c.CopyFrom(t)
        return c
    return TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))


def hashable(v: object) -> object:
    """``v`` with lists turned into tuples (recursively) and numpy scalars into Python ones."""
    if isinstance(v, (list, tuple)):
        return tuple(hashable(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v
