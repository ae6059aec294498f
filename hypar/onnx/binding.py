"""Binding the model's input dims before shape inference: the batch (axis 0 of every activation
input), symbolic dims by name and whole input shapes, checked against the inputs (unknown names,
wrong ranks, conflicts with fixed dims or with each other), written into the skeleton, and the
one error that lists every dim left unbound with the flags that would bind it.

All of it runs on the graph inputs only (no inference), so a bad request fails at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from hypar.errors import ShapeError
from hypar.onnx.batch import rebind_fixed_reshapes
from hypar.onnx.index import ModelIndex
from hypar.onnx.load import load_model
from hypar.onnx.protos import Dims, dims_of_type


@dataclass(frozen=True)
class Binding:
    """What the caller binds; every part optional.

    ``batch`` sets axis 0 of every activation input, a fixed one too (fixed-batch Reshape
    targets then follow, see :func:`~hypar.onnx.batch.rebind_fixed_reshapes`); ``dims`` sets
    every input axis whose symbolic name (ONNX ``dim_param``) is the key; ``input_shapes`` sets
    every axis of one input. Only ``batch`` may change a fixed dim, and where two parts set the
    same axis they must agree. Build it with :meth:`of`, which checks the values."""

    batch: int | None = None
    dims: tuple[tuple[str, int], ...] = ()
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def of(cls, batch: int | None = None, dims: Mapping[str, int] | None = None,
           input_shapes: Mapping[str, Sequence[int]] | None = None) -> Binding:
        """A checked binding. :class:`ShapeError` for a batch, dim value or input-shape entry
        that is not a positive integer, or a name that is not a non-empty string."""
        if batch is not None and not _positive(batch):
            raise ShapeError(f"batch must be a positive integer, got {batch!r}; pass --batch N with N >= 1")
        bound_dims = []
        for name, value in (dims or {}).items():
            if not isinstance(name, str) or not name or not _positive(value):
                raise ShapeError.naming(f"{{dims}} {name!s}={value!r}: give a dim name and a positive integer, "
                                        f"e.g. {{dims}} {name or 'sequence'}=128")
            bound_dims.append((name, int(value)))
        shapes = []
        for name, shape in (input_shapes or {}).items():
            values = tuple(shape) if isinstance(shape, (list, tuple)) else ()
            if not isinstance(name, str) or not name or not values or not all(_positive(v) for v in values):
                raise ShapeError.naming(f"{{input_shapes}} {name!s}={shape!r}: give an input name and positive "
                                        f"integers, one per axis, e.g. {{input_shapes}} {name or 'x'}=1,3,224,224")
            shapes.append((name, tuple(int(v) for v in values)))
        return cls(batch, tuple(bound_dims), tuple(shapes))

    @property
    def beyond_batch(self) -> bool:
        """True when dims or input shapes are bound (not only the batch)."""
        return bool(self.dims or self.input_shapes)

    def record(self) -> dict:
        """``{"dims": {name: value}, "input_shapes": {input: [dims]}}`` as given (for the plan)."""
        return {"dims": dict(self.dims), "input_shapes": {k: list(v) for k, v in self.input_shapes}}


def model_input_dims(source) -> dict[str, Dims | None]:
    """The activation inputs of a model (a path or ``ModelProto``) and their dims as written
    (int, symbolic name or None per axis; None for an input without shape). ModelLoadError
    when it cannot be read."""
    model, _ = load_model(source)
    out: dict[str, Dims | None] = {}
    for vi in ModelIndex(model).act_inputs:
        info = dims_of_type(vi.type)
        if info is not None:
            out[vi.name] = info[1]
    return out


def with_batch(input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None) -> dict[str, list[int]] | None:
    """``input_shapes`` with axis 0 of each set to ``batch`` (as given when ``batch`` is None),
    so input shapes recorded or given at one batch bind the model at another."""
    if not input_shapes or batch is None:
        return None if input_shapes is None else {k: list(v) for k, v in input_shapes.items()}
    return {k: [batch, *list(v)[1:]] for k, v in input_shapes.items()}


def _positive(v: object) -> bool:
    """True for an int (not a bool) of at least 1."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# An activation input as the binding sees it: the skeleton's ValueInfo and its dims (None when
# the input has a tensor type but no shape).
Input = tuple[onnx.ValueInfoProto, Dims | None]


def bind_inputs(m: onnx.ModelProto, index: ModelIndex, binding: Binding) -> None:
    """Write ``binding`` into the activation inputs of skeleton ``m`` (in place) and require
    every used input to be fully bound.

    With anything bound, every intermediate and output shape is dropped (inference re-derives
    them); a batch that changes a fixed batch rewrites the Reshape targets that hard-code it.
    Raises :class:`ShapeError` for a dim name no input has, an input-shape of an unknown
    input, of the wrong rank or changing a fixed dim, two parts disagreeing on one axis, and
    (one error, every dim listed with the flags to bind it) for dims left unbound."""
    inputs = _act_inputs(m, index)
    _check_names(binding, inputs)
    old_batches: set[int] = set()
    for vi, dims in inputs:
        targets = _targets(binding, vi.name, dims)
        if not targets:
            continue
        if dims is not None and dims and isinstance(dims[0], int) and 0 in targets:
            old_batches.add(dims[0])
        _write_dims(vi, dims, targets)
    if binding.batch is None and not binding.beyond_batch:
        _require_bound(index, _act_inputs(m, index))
        return
    del m.graph.value_info[:]
    for o in m.graph.output:
        if o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.ClearField("shape")
    old = {b for b in old_batches if binding.batch is not None and b != binding.batch}
    if old:
        rebind_fixed_reshapes(m, index, old)
    _require_bound(index, _act_inputs(m, index))


def _act_inputs(m: onnx.ModelProto, index: ModelIndex) -> list[Input]:
    """The activation inputs of ``m`` with a tensor type, in graph order."""
    act = {vi.name for vi in index.act_inputs}
    out = []
    for vi in m.graph.input:
        info = dims_of_type(vi.type) if vi.name in act else None
        if info is not None:
            out.append((vi, info[1]))
    return out


def _write_dims(vi: onnx.ValueInfoProto, dims: Dims | None, targets: dict[int, int]) -> None:
    """Set the axes ``targets`` ({axis: value}) of input ``vi`` (a shape is made when it has none)."""
    shape = vi.type.tensor_type.shape
    if dims is None:
        shape.ClearField("dim")
        for _ in range(len(targets)):
            shape.dim.add()
    for ax, value in targets.items():
        d = shape.dim[ax]
        d.Clear()
        d.dim_value = value


def _shown(dims: Dims | None) -> str:
    """``[batch, 3, 224, ?]`` (unknown dims as ?), or 'no shape'."""
    if dims is None:
        return "no shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _inputs_text(inputs: list[Input]) -> str:
    """``x [batch, 3, H, W], ids [batch, 16]``: the activation inputs and their dims."""
    return ", ".join(f"{vi.name} {_shown(dims)}" for vi, dims in inputs) or "none"


def _check_names(binding: Binding, inputs: list[Input]) -> None:
    """ShapeError for a ``dims`` name no input has or an ``input_shapes`` input that is not an
    activation input (both messages list the inputs)."""
    names = {d for _, dims in inputs for d in dims or () if isinstance(d, str)}
    for name, value in binding.dims:
        if name not in names:
            have = f"their symbolic dims are {', '.join(sorted(names))}" if names else "they have no symbolic dims"
            raise ShapeError.naming(
                f"{{dims}} {name}={value}: no input has a dim named '{name}' (inputs: {_inputs_text(inputs)}; "
                f"{have}); bind a dim by its name, or a whole input with {{input_shapes}} INPUT=D0,D1,...")
    known = {vi.name for vi, _ in inputs}
    for name, shape in binding.input_shapes:
        if name not in known:
            raise ShapeError.naming(
                f"{{input_shapes}} {name}={_csv(shape)}: the model has no activation input '{name}'; "
                f"its inputs: {_inputs_text(inputs)}")


def _csv(values: Sequence[object]) -> str:
    """``1,3,224,224``."""
    return ",".join(str(v) for v in values)


def _targets(binding: Binding, name: str, dims: Dims | None) -> dict[int, int]:
    """{axis: value} that ``binding`` sets on input ``name`` with model dims ``dims``.

    ShapeError when the input shape has the wrong rank or changes a fixed dim other than the
    batch, or when two parts of the binding set one axis differently."""
    by_name = dict(binding.dims)
    given: dict[int, tuple[int, str]] = {}  # axis -> (value, which part set it)
    shape = dict(binding.input_shapes).get(name)
    if shape is not None:
        if dims is not None and len(shape) != len(dims):
            raise ShapeError.naming(
                f"{{input_shapes}} {name}={_csv(shape)} gives {len(shape)} dims but input '{name}' has "
                f"{len(dims)}: {_shown(dims)}; give {len(dims)}")
        for ax, v in enumerate(shape):
            given[ax] = (v, f"{{input_shapes}} {name}={_csv(shape)}")
    if binding.batch is not None and (shape is not None or dims):
        _set(given, name, 0, binding.batch, f"{{batch}} {binding.batch}")
    for ax, d in enumerate(dims or ()):
        if isinstance(d, str) and d in by_name:
            _set(given, name, ax, by_name[d], f"{{dims}} {d}={by_name[d]}")
    for ax, (v, _) in given.items():
        d = dims[ax] if dims is not None else None
        if isinstance(d, int) and d != v and not (ax == 0 and binding.batch is not None):
            # only an input shape can: dims match symbolic dims, and the batch may change
            fix = "pass {batch} N to change a fixed batch" if ax == 0 else f"give {d} there"
            raise ShapeError.naming(f"{{input_shapes}} {name}={_csv(shape or ())} sets axis {ax} to {v} but the "
                                    f"model fixes it at {d}; " + fix)
    return {ax: v for ax, (v, _) in given.items()}


def _set(given: dict[int, tuple[int, str]], name: str, ax: int, value: int, part: str) -> None:
    """Record ``value`` for axis ``ax`` from ``part``; ShapeError when another part set another value."""
    prev = given.get(ax)
    if prev is not None and prev[0] != value:
        raise ShapeError.naming(f"axis {ax} of input '{name}': {prev[1]} gives {prev[0]} but {part} gives "
                                f"{value}; give one value for it (in {{batch}}, {{dims}} or {{input_shapes}})")
    given[ax] = (value, part)


def _require_bound(index: ModelIndex, inputs: list[Input]) -> None:
    """One ShapeError listing every unbound dim of the used inputs, with the flags to bind them."""
    unbound = [(vi.name, dims) for vi, dims in inputs if vi.name in index.consumers
               and (dims is None or not all(isinstance(d, int) for d in dims))]
    if not unbound:
        return
    what = "; ".join(_unbound_text(name, dims) for name, dims in unbound)
    raise ShapeError(f"{what}; pass {_fix_text(unbound)}")


def _unbound_text(name: str, dims: Dims | None) -> str:
    """``input 'x' has symbolic dim 'H' at axis 2 and an unnamed dim at axis 3``."""
    if dims is None:
        return f"input '{name}' has no shape"
    parts = [f"symbolic dim '{d}' at axis {ax}" if isinstance(d, str) else f"an unnamed dim at axis {ax}"
             for ax, d in enumerate(dims) if not isinstance(d, int)]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"input '{name}' has {listed}"


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _placeholder(d: int | str | None, ax: int) -> str:
    """How a suggested flag writes one dim: the number when fixed, N for the batch, the symbolic
    name upper-cased, else D<axis>."""
    if isinstance(d, int):
        return str(d)
    if ax == 0:
        return "N"
    return d.upper() if isinstance(d, str) and _PLAIN_NAME.fullmatch(d) else f"D{ax}"


def _shape_flag(name: str, dims: Dims | None) -> str:
    """``--input-shape x=N,3,H,W`` for one input (``D0,D1,...`` when it has no shape)."""
    shown = "D0,D1,..." if dims is None else _csv([_placeholder(d, ax) for ax, d in enumerate(dims)])
    return f"--input-shape {name}={shown}"


def _fix_text(unbound: list[tuple[str, Dims | None]]) -> str:
    """The flags that bind every dim of ``unbound``: --input-shape for an input with an unnamed
    dim or no shape, --batch for the other inputs' axis 0 and --dim per symbolic name; then the
    all --input-shape alternative when it differs."""
    by_shape = [(name, dims) for name, dims in unbound if dims is None or any(d is None for d in dims[1:])]
    others = [dims for name, dims in unbound if (name, dims) not in by_shape]
    flags: list[str] = []
    if any(dims and not isinstance(dims[0], int) for dims in others):
        flags.append("--batch N")
    for dims in others:
        for ax, d in enumerate(dims or ()):
            flag = f"--dim {d}={_placeholder(d, ax)}" if isinstance(d, str) and ax > 0 else None
            if flag and flag not in flags:
                flags.append(flag)
    flags += [_shape_flag(name, dims) for name, dims in by_shape]
    primary = " ".join(flags)
    alternative = " ".join(_shape_flag(name, dims) for name, dims in unbound)
    return primary if alternative == primary else f"{primary} (or {alternative})"
