"""The shape table: element type and dims of every tensor as shape inference left them, with
lookups that raise a :class:`ShapeError` naming the fix when a needed shape is unknown."""

from __future__ import annotations

import importlib.util
from math import prod

import onnx

from hypar.errors import ShapeError
from hypar.onnx.protos import Dims, dims_of_type, known


class ShapeTable:
    """Tensor name -> ``(elem_type, dims)``; dims None when the rank is unknown.

    ``model`` is the (shape-inferred) model the table was last collected from."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, Dims | None]] = {}
        self.model: onnx.ModelProto | None = None

    def collect(self, m: onnx.ModelProto) -> None:
        """Replace the table by the shapes recorded in ``m`` (initializers, inputs, value_info,
        outputs; a known shape is not overwritten by a later unknown one)."""
        shapes: dict[str, tuple[int, Dims | None]] = {}
        g = m.graph
        for t in g.initializer:
            shapes[t.name] = (t.data_type, [int(d) for d in t.dims])
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            info = dims_of_type(vi.type)
            if info is None:
                continue
            prev = shapes.get(vi.name)
            if prev is not None and known(prev[1]) and not known(info[1]):
                continue
            shapes[vi.name] = info
        self.entries = shapes
        self.model = m

    def keep_known(self, before: dict[str, tuple[int, Dims | None]]) -> None:
        """Restore entries of ``before`` that the table lacks or knows less well."""
        for k, v in before.items():
            if k not in self.entries or (known(v[1]) and not known(self.entries[k][1])):
                self.entries[k] = v

    def set(self, t: str, elem_type: int, dims: list[int]) -> None:
        """Record a fully known shape for ``t``."""
        self.entries[t] = (elem_type, dims)

    def dims(self, t: str) -> Dims | None:
        """Dims of ``t`` as recorded (possibly symbolic or unknown), None when not recorded."""
        info = self.entries.get(t)
        return None if info is None else info[1]

    def elem_type(self, t: str) -> int:
        """ONNX element type of ``t`` (0 when unknown)."""
        info = self.entries.get(t)
        return 0 if info is None else info[0]

    def is_known(self, t: str) -> bool:
        """True when every dim of ``t`` is a known number."""
        return known(self.dims(t))

    def shape(self, t: str, node: str | None = None) -> tuple[int, ...]:
        """The fully known shape of ``t``; raises :class:`ShapeError` (naming ``node`` and the
        fix) when any dim is unknown."""
        dims = self.dims(t)
        if known(dims):
            return tuple(dims)
        where = f" (at node '{node}')" if node else ""
        shown = "unknown rank" if dims is None else "[" + ", ".join(
            str(d) if d is not None else "?" for d in dims) + "]"
        if importlib.util.find_spec("onnxruntime") is not None:
            fix = "re-export the model with static shapes"
        else:
            fix = "install symbolic shape inference with `pip install hypar[symbolic]` or re-export with static shapes"
        raise ShapeError(f"tensor '{t}'{where} has unknown shape {shown} after shape inference; {fix}")

    def weight_shape(self, t: str, node: str) -> tuple[int, ...]:
        """The fully known shape of weight ``t`` of layer ``node``; raises :class:`ShapeError`."""
        dims = self.dims(t)
        if known(dims):
            return tuple(dims)
        raise ShapeError(
            f"weight '{t}' of node '{node}' has unknown shape; re-export the model with static weight shapes"
        )

    def elements(self, t: str) -> int:
        """Element count of ``t`` (its shape must be known, see :meth:`shape`)."""
        return prod(self.shape(t))
