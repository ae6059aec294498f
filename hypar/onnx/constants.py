"""Constant evaluation of small tensors: shape tensors, axes and split sizes computed in the
graph (Shape -> Gather -> Concat -> Reshape ...), with numpy, one small evaluator per op, and
onnx's reference implementation for the other default-domain ops.

Only tensors of at most :data:`~hypar.onnx.protos.SMALL_ELEMENTS` elements are ever decoded;
weights are never read. A custom-domain op, a random op, a failing evaluation or an input that
cannot be evaluated gives None.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hypar.onnx.index import ModelIndex
from hypar.onnx.protos import SMALL_ELEMENTS, is_small, known, node_attrs, norm_axis, tensor_elements
from hypar.onnx.shapes import ShapeTable

Value = np.ndarray
Attrs = dict[str, object]


class ConstantEvaluator:
    """Values of small constant or shape-derived tensors of one model, memoised.

    A value is computed at the first request and kept, with the shapes known at that time."""

    def __init__(self, index: ModelIndex, shapes: ShapeTable) -> None:
        self.index = index
        self.shapes = shapes
        self._values: dict[str, Value | None] = {}

    def value(self, t: str) -> Value | None:
        """Value of tensor ``t``, or None (unknown, too large, or ``t`` is '')."""
        if not t:
            return None
        if t in self._values:
            return self._values[t]
        self._values[t] = None  # recursion guard
        try:
            v = self._evaluate(t)
        except Exception:
            v = None
        if v is not None and v.size > SMALL_ELEMENTS:
            v = None
        self._values[t] = v
        return v

    def ints(self, t: str) -> tuple[int, ...] | None:
        """Value of ``t`` flattened to a tuple of ints, or None."""
        v = self.value(t)
        return tuple(int(x) for x in v.reshape(-1)) if v is not None else None

    def _evaluate(self, t: str) -> Value | None:
        """One evaluation of ``t`` (inputs through :meth:`value`; a kernel here computes an op's
        first output only); may raise."""
        init = self.index.initializers.get(t)
        if init is not None:
            return numpy_helper.to_array(init) if is_small(init) else None
        if t not in self.index.producer:
            return None
        _, n = self.index.producer[t]
        a = node_attrs(n)
        if n.op_type in _FROM_NODE:
            return _FROM_NODE[n.op_type](self, n, a)
        ins = [self.value(x) if x else None for x in n.input]
        if n.op_type in _PASS_THROUGH:
            return None if ins[0] is None else _PASS_THROUGH[n.op_type](ins[0], a)
        if any(v is None for i, v in enumerate(ins) if n.input[i]):
            return None
        fn = _FROM_VALUES.get(n.op_type)
        if fn is not None:
            return fn(ins, a, n) if t == n.output[0] else None
        return _reference(n, ins, t, self.index.opset)

    def known_dims(self, t: str) -> list[int] | None:
        """Dims of ``t`` when fully known, else None."""
        dims = self.shapes.dims(t)
        return dims if known(dims) else None


# -- ops evaluated from the node alone (no input values) -----------------------------------------


def _constant(ev: ConstantEvaluator, n: onnx.NodeProto, a: Attrs) -> Value | None:
    """Constant: its first value attribute (a tensor only when small)."""
    for at in n.attribute:
        if at.name == "value":
            return numpy_helper.to_array(at.t) if tensor_elements(at.t) <= SMALL_ELEMENTS else None
        if at.name in _CONSTANT_NUMBERS:
            read, dtype = _CONSTANT_NUMBERS[at.name]
            return np.array(read(at), dtype=dtype)
    return None


# Constant's number attributes: how to read each, and its dtype.
_CONSTANT_NUMBERS: dict[str, tuple[Callable[[onnx.AttributeProto], object], type]] = {
    "value_int": (lambda at: at.i, np.int64),
    "value_ints": (lambda at: list(at.ints), np.int64),
    "value_float": (lambda at: at.f, np.float32),
    "value_floats": (lambda at: list(at.floats), np.float32),
}


def _shape(ev: ConstantEvaluator, n: onnx.NodeProto, a: Attrs) -> Value | None:
    """Shape (with optional start / end) of an input whose shape is known."""
    dims = ev.known_dims(n.input[0])
    if dims is None:
        return None
    r = len(dims)
    s = norm_axis(a.get("start", 0), r)
    e = norm_axis(a.get("end", r), r)
    return np.array(dims[max(0, s):min(r, e)], dtype=np.int64)


def _size(ev: ConstantEvaluator, n: onnx.NodeProto, a: Attrs) -> Value | None:
    """Size: element count of an input whose shape is known."""
    dims = ev.known_dims(n.input[0])
    return np.array(prod(dims), dtype=np.int64) if dims is not None else None


_FROM_NODE = {"Constant": _constant, "Shape": _shape, "Size": _size}


# -- ops whose first input passes through (the others need not be known) -------------------------


def _cast(x: Value, a: Attrs) -> Value:
    """Cast to the attribute's element type."""
    return x.astype(helper.tensor_dtype_to_np_dtype(a["to"]))


_PASS_THROUGH: dict[str, Callable[[Value, Attrs], Value]] = {
    "Identity": lambda x, a: x, "CastLike": lambda x, a: x, "Cast": _cast,
}


# -- ops evaluated from their input values (all present inputs known) ---------------------------


def _constant_of_shape(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value | None:
    """ConstantOfShape: the fill value (default float 0) over a small shape."""
    val = np.zeros(1, dtype=np.float32)
    for at in n.attribute:
        if at.name == "value":
            val = numpy_helper.to_array(at.t).reshape(-1)
    shape = tuple(int(s) for s in ins[0].reshape(-1))
    return np.full(shape, val[0], dtype=val.dtype) if prod(shape) <= SMALL_ELEMENTS else None


def _axes_input(ins: list[Value | None], a: Attrs) -> tuple[int, ...] | None:
    """Axes of Squeeze / Unsqueeze: the attribute (opset < 13), else input 1, else None."""
    if "axes" in a:
        return a.get("axes")
    if len(ins) > 1 and ins[1] is not None:
        return tuple(int(v) for v in ins[1].reshape(-1))
    return None


def _unsqueeze(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value:
    """Unsqueeze: insert the (normalised, sorted) axes one by one."""
    x = ins[0]
    axes = _axes_input(ins, a)
    r = x.ndim + len(axes)
    out = x
    for ax in sorted(norm_axis(v, r) for v in axes):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value:
    """Squeeze the given axes, or every axis of size 1 when none are given."""
    x = ins[0]
    axes = _axes_input(ins, a)
    return np.squeeze(x, axis=tuple(norm_axis(v, x.ndim) for v in axes) if axes else None)


def _reshape(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value:
    """Reshape; a 0 copies the input's dim unless allowzero."""
    x = ins[0]
    shape = [int(s) for s in ins[1].reshape(-1)]
    shape = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value:
    """Slice with attributes (opset < 10) or with starts / ends / axes / steps inputs."""
    x = ins[0]
    if "starts" in a:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", tuple(range(len(starts))))
        steps = (1,) * len(starts)
    else:
        starts, ends = ins[1].reshape(-1).tolist(), ins[2].reshape(-1).tolist()
        axes = ins[3].reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = ins[4].reshape(-1).tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        sl[norm_axis(int(ax), x.ndim)] = slice(int(s), int(e), int(st))
    return x[tuple(sl)]


def _binary(fn: Callable[[Value, Value], Value]) -> Callable[[list[Value], Attrs, onnx.NodeProto], Value | None]:
    """An evaluator applying ``fn`` to exactly two inputs (None for another count)."""
    return lambda ins, a, n: fn(ins[0], ins[1]) if len(ins) == 2 else None


def _div(ins: list[Value], a: Attrs, n: onnx.NodeProto) -> Value:
    """Div; integer division truncates toward zero as in ONNX."""
    x, y = ins[0], ins[1]
    if np.issubdtype(x.dtype, np.integer):
        return (np.trunc(x / y)).astype(x.dtype)
    return x / y


def _unary(fn: Callable[[Value], Value]) -> Callable[[list[Value], Attrs, onnx.NodeProto], Value]:
    """An evaluator applying ``fn`` to the first input."""
    return lambda ins, a, n: fn(ins[0])


_BINARY_NUMPY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal,
    "Less": np.less, "Greater": np.greater, "Max": np.maximum, "Min": np.minimum,
    "And": np.logical_and, "Or": np.logical_or, "Mod": np.mod, "Pow": np.power,
}
_UNARY_NUMPY = {
    "Neg": np.negative, "Abs": np.abs, "Not": np.logical_not, "Floor": np.floor, "Ceil": np.ceil,
    "Sqrt": np.sqrt,
}

_FROM_VALUES: dict[str, Callable[[list[Value], Attrs, onnx.NodeProto], Value | None]] = {
    "ConstantOfShape": _constant_of_shape,
    "Gather": lambda ins, a, n: np.take(ins[0], ins[1].astype(np.int64), axis=a.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda ins, a, n: np.concatenate(
        [np.atleast_1d(v) for v in ins if v is not None], axis=a.get("axis", 0)),
    "Reshape": _reshape,
    "Slice": _slice,
    **{op: _binary(fn) for op, fn in _BINARY_NUMPY.items()},
    "Div": _div,
    "Where": lambda ins, a, n: np.where(ins[0], ins[1], ins[2]),
    "Range": lambda ins, a, n: np.arange(ins[0].item(), ins[1].item(), ins[2].item()),
    **{op: _unary(fn) for op, fn in _UNARY_NUMPY.items()},
    "ReduceProd": lambda ins, a, n: np.prod(ins[0], keepdims=bool(a.get("keepdims", 1))),
    "Expand": lambda ins, a, n: ins[0] * np.ones([int(s) for s in ins[1].reshape(-1)], dtype=ins[0].dtype),
    "Transpose": lambda ins, a, n: np.transpose(ins[0], a.get("perm")),
}

# Ops never evaluated by the reference fallback: random, stateful or with subgraphs.
_NOT_CONSTANT = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                           "Multinomial", "If", "Loop", "Scan"})


def _reference(n: onnx.NodeProto, ins: list[Value | None], t: str, opset: int) -> Value | None:
    """Output ``t`` of a default-domain op without a kernel here, from onnx's reference
    implementation of the one node (inputs all known and small); None for other domains and
    for :data:`_NOT_CONSTANT` ops."""
    if n.domain not in ("", "ai.onnx") or n.op_type in _NOT_CONSTANT:
        return None
    from onnx.reference import ReferenceEvaluator  # only here: importing it costs ~0.3 s

    feeds = {x: v for x, v in zip(n.input, ins) if x}
    out = ReferenceEvaluator(n, opsets={"": opset}).run([t], feeds)[0]
    return np.asarray(out)


# Ops with an evaluator (for tests and documentation).
EVALUATED_OPS = frozenset(_FROM_NODE) | frozenset(_PASS_THROUGH) | frozenset(_FROM_VALUES)
