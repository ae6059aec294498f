"""A serialized model without the data of its large tensors, cut from the protobuf wire format.

Planning reads weights as shapes only (name, element type, dims), but parsing a whole ``.onnx``
file copies every weight's bytes into the ``ModelProto`` (protobuf copies each ``bytes`` field),
which for a 500 MB export costs more than everything else the import does. :func:`light_model_bytes`
walks the serialized ``ModelProto`` by tags and lengths only and returns the same message with the
numeric data fields (``raw_data``, ``float_data``, ``int32_data``, ``int64_data``, ``double_data``,
``uint64_data``) of every tensor of more than :data:`~hypar.onnx.protos.SMALL_ELEMENTS` elements
left out: the tensors :func:`~hypar.onnx.protos.is_small` already rules out of decoding, so
nothing that reads a value sees a difference. Small tensors (shape arithmetic, Reshape targets,
constants that get folded), external-data references and every other field are kept byte for
byte. The skipped bytes are never read: over a memory-mapped file their pages are never touched.

Tensors are found where models keep them: graph initializers, and the tensor attributes (``t``,
``tensors``) and subgraphs (``g``, ``graphs``: If / Loop / Scan bodies) of nodes. Initializers,
nodes and attributes under :data:`WALK_BYTES` bytes are kept whole without a look inside (they
cannot hold the data of a large tensor). Functions, sparse initializers and training info are
kept whole.
"""

from __future__ import annotations

import onnx

from hypar.onnx.protos import SMALL_ELEMENTS

# Wire types (https://protobuf.dev/programming-guides/encoding/); groups (3, 4) are not used by ONNX.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FIXED_WIDTH = {_I64: 8, _I32: 4}


def _numbers(message, *names: str) -> tuple[int, ...]:
    """The field numbers of ``names`` in protobuf message class ``message`` (from onnx's schema)."""
    return tuple(message.DESCRIPTOR.fields_by_name[n].number for n in names)


# TensorProto: its dims, and the fields that hold the element values.
(_DIMS,) = _numbers(onnx.TensorProto, "dims")
_TENSOR_DATA = frozenset(_numbers(onnx.TensorProto, "float_data", "int32_data", "int64_data", "raw_data",
                                  "double_data", "uint64_data"))


def _children(message, **kinds: str) -> dict[int, str]:
    """Field number -> the kind of message it holds, for the fields ``kinds`` names."""
    return {number: kind for number, kind in zip(_numbers(message, *kinds), kinds.values())}


# The length-delimited fields walked into, by message kind: field number -> message kind it holds.
_CHILDREN = {
    "model": _children(onnx.ModelProto, graph="graph"),
    "graph": _children(onnx.GraphProto, node="node", initializer="tensor"),
    "node": _children(onnx.NodeProto, attribute="attribute"),
    "attribute": _children(onnx.AttributeProto, t="tensor", tensors="tensor", g="graph", graphs="graph"),
}

#: Messages (but graphs) smaller than this (bytes) are kept whole without a look inside: the data
#: of a tensor of more than SMALL_ELEMENTS elements takes at least SMALL_ELEMENTS / 2 bytes (4-bit types).
WALK_BYTES = SMALL_ELEMENTS // 2


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, a bad tag or length)."""


def light_model_bytes(buf) -> bytes | None:
    """The serialized ``ModelProto`` in ``buf`` (bytes, or any buffer such as an ``mmap``) without
    the data of its large tensors (module docstring); None when nothing would be left out (parse
    ``buf`` itself then).

    Raises :class:`WireError` when ``buf`` is not a well-formed protobuf message."""
    with memoryview(buf) as view:
        pieces = _walk(view, 0, len(view), "model")
        if pieces is None:
            return None
        light = b"".join(pieces)
        del pieces  # the slices of ``view`` must be gone before it is released
    return light


def _walk(view: memoryview, start: int, end: int, kind: str) -> list | None:
    """The pieces (buffers) that spell the body ``view[start:end]`` of a ``kind`` message with large
    tensors' data left out, or None when the body stays as it is."""
    if kind == "tensor":
        return _walk_tensor(view, start, end)
    children = _CHILDREN[kind]
    pieces: list = []
    kept_from = start
    for number, wire, field_start, value_start, field_end in _fields(view, start, end):
        child = children.get(number) if wire == _LEN else None
        if child is None or (child != "graph" and field_end - value_start < WALK_BYTES):
            continue
        inner = _walk(view, value_start, field_end, child)
        if inner is None:
            continue
        key_end = _skip_varint(view, field_start)
        pieces += [view[kept_from:key_end], encode_varint(sum(len(p) for p in inner))]
        pieces += inner
        kept_from = field_end
    if not pieces:
        return None
    pieces.append(view[kept_from:end])
    return pieces


def _walk_tensor(view: memoryview, start: int, end: int) -> list | None:
    """A TensorProto body without its data fields when it has more than SMALL_ELEMENTS elements
    (counted from its dims, as :func:`~hypar.onnx.protos.tensor_elements` does); None when kept."""
    fields = list(_fields(view, start, end))
    elements = 1
    for number, wire, _, value_start, field_end in fields:
        if number == _DIMS:
            for d in _ints(view, wire, value_start, field_end):
                elements *= d
    dropped = [f for f in fields if f[0] in _TENSOR_DATA]
    if elements <= SMALL_ELEMENTS or not dropped:
        return None
    return [view[field_start:field_end] for number, _, field_start, _, field_end in fields
            if number not in _TENSOR_DATA]


def _ints(view: memoryview, wire: int, start: int, end: int) -> list[int]:
    """The int64 values of one repeated-int64 field occurrence: a varint, or a packed run."""
    if wire == _VARINT:
        raw = [_varint(view, start)[0]]
    elif wire == _LEN:
        raw, pos = [], start
        while pos < end:
            v, pos = _varint(view, pos)
            raw.append(v)
    else:
        raise WireError("a tensor's dims field has a fixed-width wire type")
    return [v - (1 << 64) if v >= 1 << 63 else v for v in raw]


def _fields(view: memoryview, start: int, end: int):
    """Yield ``(field number, wire type, field start, value start, field end)`` for each field of
    the message body ``view[start:end]``; a length-delimited value is ``view[value start:field end]``."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == _LEN:
            length, pos = _varint(view, pos)
            value_start, pos = pos, pos + length
        elif wire == _VARINT:
            value_start, pos = pos, _skip_varint(view, pos)
        elif wire in _FIXED_WIDTH:
            value_start, pos = pos, pos + _FIXED_WIDTH[wire]
        else:
            raise WireError(f"wire type {wire} at byte {field_start}")
        if number == 0 or pos > end:
            raise WireError(f"bad field at byte {field_start}")
        yield number, wire, field_start, value_start, pos


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    value = shift = 0
    try:
        while True:
            b = view[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise WireError(f"varint longer than 10 bytes at byte {pos}")
    except IndexError:
        raise WireError("message truncated inside a varint") from None


def _skip_varint(view: memoryview, pos: int) -> int:
    """The position after the varint at ``pos``."""
    return _varint(view, pos)[1]


def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
