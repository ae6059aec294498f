"""Batch binding: a light copy of the model (the skeleton) whose activation inputs get the
requested batch size at dim 0, with stale shapes dropped and fixed-batch Reshape targets
rewritten so the new batch flows through; and the check that every input ends up bound."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from hypar.errors import ShapeError
from hypar.onnx.index import ModelIndex
from hypar.onnx.protos import dims_of_type, strip_tensor
from hypar.onnx.shapes import ShapeTable


def skeleton(index: ModelIndex) -> onnx.ModelProto:
    """A light copy of the model: same graph (nodes in topological order), large initializers
    reduced to name, dims and type."""
    src = index.model
    m = onnx.ModelProto()
    m.ir_version = src.ir_version
    m.opset_import.extend(src.opset_import)
    m.functions.extend(src.functions)
    g, sg = m.graph, src.graph
    g.name = sg.name
    g.node.extend(n for _, n in index.nodes)
    g.input.extend(sg.input)
    g.output.extend(sg.output)
    g.value_info.extend(sg.value_info)
    g.initializer.extend(strip_tensor(t) for t in sg.initializer)
    return m


def bind_batch(m: onnx.ModelProto, index: ModelIndex, batch: int | None) -> None:
    """Set dim 0 of every activation input of skeleton ``m`` to ``batch`` (in place).

    With ``batch`` None the model's own batch is kept and must be a number. With a batch, every
    intermediate and output shape is dropped (inference re-derives them) and Reshape targets
    that hard-code the old batch are rewritten (:func:`rebind_fixed_reshapes`).

    Raises :class:`ShapeError` for an input without shape (when binding) or, without ``batch``,
    an input whose dim 0 is symbolic or unknown."""
    act_names = {vi.name for vi in index.act_inputs}
    old_batches: set[int] = set()
    for vi in m.graph.input:
        if vi.name not in act_names:
            continue
        d0 = _input_batch_dim(vi, batch)
        if batch is None or d0 is _NO_DIMS:
            continue
        if isinstance(d0, int):
            old_batches.add(d0)
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    if batch is None:
        return
    # Every shape is re-derived: drop stale intermediate and output shapes.
    del m.graph.value_info[:]
    for o in m.graph.output:
        if o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.ClearField("shape")
    # Fixed-batch exports reshape to [b0, ...]: let those copy the new batch instead.
    old = {b for b in old_batches if b != batch}
    if old:
        rebind_fixed_reshapes(m, index, old)


_NO_DIMS = object()  # an input without type, shape or dims: nothing to bind


def _input_batch_dim(vi: onnx.ValueInfoProto, batch: int | None) -> object:
    """Dim 0 of activation input ``vi`` (int, str or None), or ``_NO_DIMS``; raises the
    :class:`ShapeError` of :func:`bind_batch`."""
    info = dims_of_type(vi.type)
    if info is None:
        return _NO_DIMS
    _, dims = info
    if dims is None or not dims:
        if batch is not None and dims is None:
            raise ShapeError(f"input '{vi.name}' has no shape; re-export the model with input shapes")
        return _NO_DIMS
    d0 = dims[0]
    if batch is None:
        if isinstance(d0, str):
            raise ShapeError(f"input '{vi.name}' has symbolic dim '{d0}'; pass --batch N")
        if d0 is None:
            raise ShapeError(f"input '{vi.name}' has an unknown batch dim; pass --batch N")
    return d0


def rebind_fixed_reshapes(m: onnx.ModelProto, index: ModelIndex, old: set[int]) -> None:
    """Rewrite literal Reshape targets of activations that hard-code an old batch (in place).

    Fixed-batch exports reshape activations to literal targets such as [b0, 16, 4, 16] or
    [b0 * heads, 16, 16]; a leading entry that is a multiple of an old batch b0 (in ``old``)
    becomes -1 (infer) or 0 (copy), so the new batch flows through. The new target is added
    as an initializer named ``<target>__hypar_batch_<0|1>``."""
    inits = {t.name: t for t in m.graph.initializer}
    consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant" and n.output}
    for n in m.graph.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or not index.is_act(n.input[0]):
            continue
        target = _literal_target(n.input[1], inits, consts)
        if target is None or target.size < 1:
            continue
        allowzero = any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
        new0 = _new_leading_entry(target, old, allowzero)
        if new0 is None:
            continue
        v = target.copy()
        v[0] = new0
        new = numpy_helper.from_array(v, name=f"{n.input[1]}__hypar_batch_{new0 + 1}")
        if new.name not in inits:
            m.graph.initializer.append(new)
            inits[new.name] = new
        n.input[1] = new.name


def _literal_target(
    t: str, inits: dict[str, TensorProto], consts: dict[str, onnx.NodeProto]
) -> np.ndarray | None:
    """The flat int64 value of a Reshape target held inline by an initializer or Constant."""
    tensor = inits.get(t)
    if tensor is None and t in consts:
        tensor = next((a.t for a in consts[t].attribute if a.name == "value"), None)
    if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor).astype(np.int64).reshape(-1)
    except Exception:
        return None


def _new_leading_entry(target: np.ndarray, old: set[int], allowzero: bool) -> int | None:
    """-1 when entry 0 is a multiple of an old batch and no entry infers; 0 when it is an old
    batch (another entry infers) and zeros copy; else None (leave the target alone)."""
    v0 = int(target[0])
    if any(b > 0 and v0 >= b and v0 % b == 0 for b in old) and -1 not in target.tolist():
        return -1  # dim 0 absorbs the new batch (also when heads are merged into it)
    if v0 in old and not allowzero:
        return 0  # another entry is -1: copy the input's (batch) dim 0
    return None


def check_inputs_bound(index: ModelIndex, shapes: ShapeTable) -> None:
    """Raise :class:`ShapeError` unless every used activation input has a fully known shape
    (the message says whether ``--batch N`` or a re-export fixes it)."""
    for vi in index.act_inputs:
        if vi.name not in index.consumers:
            continue
        dims = shapes.dims(vi.name)
        if dims is None:
            raise ShapeError(f"input '{vi.name}' has no shape; re-export the model with input shapes")
        for ax, d in enumerate(dims):
            if not isinstance(d, int):
                sym = f"symbolic dim '{d}'" if isinstance(d, str) else "an unknown dim"
                if ax == 0:
                    raise ShapeError(f"input '{vi.name}' has {sym}; pass --batch N")
                raise ShapeError(
                    f"input '{vi.name}' has {sym} at axis {ax}; only the batch (axis 0) can be "
                    "bound with --batch: re-export the model with a fixed size for it"
                )
