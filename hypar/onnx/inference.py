"""Shape inference for the whole model: ONNX inference on the input-bound skeleton (path-based
above 2 GB), shapes of weight-only paths it leaves unknown, constant folding of the shape
subgraphs where onnx stops, the symbolic fallback of onnxruntime when activation shapes stay
unknown, and a same-shape guess for unknown ops.

:func:`infer_shapes` runs these passes in order and returns the resulting :class:`Shapes`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from math import prod

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hypar.onnx.batch import skeleton
from hypar.onnx.binding import Binding, bind_inputs
from hypar.onnx.constants import ConstantEvaluator
from hypar.onnx.index import ModelIndex
from hypar.onnx.ops import (RESHAPING_UNARY, SAME_SHAPE, SAME_SHAPE_OUTPUTS, SHAPE_OPS, UNARY, WEIGHT_PASS, index_inputs,
                            is_unknown_op, same_shape_outputs)
from hypar.onnx.protos import known, node_attrs
from hypar.onnx.shapes import ShapeTable

# Serialized models at least this large (bytes) go through onnx's path-based inference (protobuf limit).
TWO_GB = 2**31 - 1


@dataclass
class Shapes:
    """What shape inference found for one model.

    ``table`` holds every tensor's shape, ``constants`` evaluates small tensors against it,
    ``guessed`` names the outputs of unknown ops whose shape was assumed equal to their input."""

    table: ShapeTable
    constants: ConstantEvaluator
    guessed: set[str] = field(default_factory=set)


def infer_shapes(index: ModelIndex, binding: Binding) -> Shapes:
    """Bind the inputs (see :func:`~hypar.onnx.binding.bind_inputs`, which may raise
    :class:`ShapeError`) and derive every shape the model allows."""
    table = ShapeTable()
    found = Shapes(table, ConstantEvaluator(index, table))
    skel = skeleton(index)
    bind_inputs(skel, index, binding)
    inferred = run_onnx_inference(skel)
    table.collect(inferred)
    fill_param_shapes(index, found)
    inferred = fold_shape_subgraphs(index, found, skel) or inferred
    if unknown_needed(index, table) and _try_symbolic(table, inferred):
        fill_param_shapes(index, found)
    guess_shapes(index, found)
    return found


# Rounds of folding and re-inference at most (each round folds what the previous one revealed).
_MAX_FOLD_ROUNDS = 16
FOLDED = "__hypar_folded"  # suffix of the initializers that hold folded values in the skeleton


def fold_shape_subgraphs(index: ModelIndex, found: Shapes, skel: onnx.ModelProto) -> onnx.ModelProto | None:
    """Where onnx's inference (with data propagation) stops: while needed shapes are unknown,
    evaluate every non-activation operand that :class:`ConstantEvaluator` can compute (shape
    arithmetic: Shape -> Gather -> Div -> Concat, Range, ConstantOfShape, ...), write its value
    into skeleton ``skel`` as an initializer the consumers read instead, and re-run inference.

    Returns the last inferred model (None when nothing was folded). ``found`` is updated: its
    table keeps what it knew, and its evaluator is rebuilt after each round (the values it
    memoised were computed with fewer shapes)."""
    inferred = None
    for _ in range(_MAX_FOLD_ROUNDS):
        if not unknown_needed(index, found.table):
            break
        found.constants = ConstantEvaluator(index, found.table)
        if not _fold_operands(skel, index, found.constants):
            break
        inferred = run_onnx_inference(skel)
        before = found.table.entries
        found.table.collect(inferred)
        found.table.keep_known(before)
        fill_param_shapes(index, found)
    if inferred is not None:
        found.constants = ConstantEvaluator(index, found.table)
    return inferred


def _fold_operands(m: onnx.ModelProto, index: ModelIndex, constants: ConstantEvaluator) -> bool:
    """Point every computed, non-activation operand of ``m``'s nodes whose value ``constants``
    knows at an initializer ``<tensor>__hypar_folded`` holding it (in place); True when any
    operand was folded now."""
    inits = {t.name for t in m.graph.initializer}
    folded = False
    for n in m.graph.node:
        for k, t in enumerate(n.input):
            if not t or t in inits or t.endswith(FOLDED) or index.is_act(t) or t not in index.producer:
                continue
            if index.producer[t][1].op_type == "Constant":
                continue
            v = constants.value(t)
            if v is None:
                continue
            name = t + FOLDED
            if name not in inits:
                m.graph.initializer.append(numpy_helper.from_array(np.asarray(v), name))
                inits.add(name)
            n.input[k] = name
            folded = True
    return folded


def run_onnx_inference(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` with inferred value_info (data propagation first, then without); ``m`` itself
    when inference fails both ways. ``m`` is serialized once for both tries; a serialization of
    :data:`TWO_GB` bytes or more (beyond protobuf's limit) is inferred through temporary files."""
    data = m.SerializeToString()
    for data_prop in (True, False):
        try:
            if len(data) >= TWO_GB:
                return _infer_through_files(data, data_prop)
            return onnx.shape_inference.infer_shapes(data, strict_mode=False, data_prop=data_prop)
        except Exception:
            continue
    return m


def _infer_through_files(data: bytes, data_prop: bool) -> onnx.ModelProto:
    """One non-strict run of onnx's path-based shape inference on the serialized model ``data``."""
    with tempfile.TemporaryDirectory(prefix="hypar-") as d:
        src, dst = os.path.join(d, "in.onnx"), os.path.join(d, "out.onnx")
        with open(src, "wb") as f:
            f.write(data)
        onnx.shape_inference.infer_shapes_path(src, dst, strict_mode=False, data_prop=data_prop)
        return onnx.load(dst, load_external_data=False)


def fill_param_shapes(index: ModelIndex, found: Shapes) -> None:
    """Shapes of weight-path tensors that inference left unknown (ConstantOfShape etc.)."""
    table = found.table
    for _, n in index.nodes:
        outs = [o for o in n.output if o]
        if not outs or index.is_act(outs[0]) or table.is_known(outs[0]):
            continue
        o = outs[0]
        dims = _param_dims(n, o, table, found.constants)
        if dims is None:
            v = found.constants.value(o)
            if v is not None:
                dims = list(v.shape)
        if dims is not None:
            table.set(o, table.elem_type(o) or TensorProto.FLOAT, [int(d) for d in dims])


def _param_dims(
    n: onnx.NodeProto, o: str, table: ShapeTable, constants: ConstantEvaluator
) -> list[int] | None:
    """Dims of output ``o`` of a parameter-path node from its input's shape or value, else None."""
    op = n.op_type
    if op == "ConstantOfShape":
        shape = constants.ints(n.input[0]) if n.input else None
        return list(shape) if shape is not None else None
    if op not in WEIGHT_PASS and op not in UNARY:
        return None
    src = table.dims(n.input[0]) if n.input else None
    if not known(src):
        return None
    a = node_attrs(n)
    if op == "Transpose":
        perm = a.get("perm", tuple(reversed(range(len(src)))))
        return [src[p] for p in perm]
    if op == "Reshape":
        target = constants.ints(n.input[1])
        return _reshape_dims(src, list(target)) if target is not None else None
    if op in ("Squeeze", "Unsqueeze", "Flatten"):
        v = constants.value(o)
        return list(v.shape) if v is not None else None
    if op in RESHAPING_UNARY:
        return None
    return list(src)


def _reshape_dims(src: list[int], target: list[int]) -> list[int]:
    """Reshape's output dims: 0 copies the input dim, one -1 takes what is left."""
    shp = [src[i] if s == 0 else s for i, s in enumerate(target)]
    if -1 in shp:
        k = shp.index(-1)
        rest = prod(s for s in shp if s != -1)
        shp[k] = prod(src) // rest if rest else 0
    return shp


def needed(index: ModelIndex) -> list[str]:
    """Activation tensors whose shapes the layer graph needs (outputs of kept nodes that are
    used, first outputs, graph outputs; and the activation inputs)."""
    out = []
    for _, n in index.nodes:
        if n.op_type in SHAPE_OPS:
            continue
        for k, o in enumerate(n.output):
            if o and index.is_act(o) and (k == 0 or o in index.consumers or o in index.graph_outputs):
                out.append(o)
    out.extend(vi.name for vi in index.act_inputs)
    return out


def unknown_needed(index: ModelIndex, table: ShapeTable) -> list[str]:
    """The :func:`needed` tensors whose shape is not fully known."""
    return [t for t in needed(index) if not table.is_known(t)]


def _try_symbolic(table: ShapeTable, m: onnx.ModelProto) -> bool:
    """Re-infer ``m`` with onnxruntime's symbolic shape inference, keeping what was known.

    False (table untouched) when onnxruntime is missing or the inference fails."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except Exception:
        return False
    try:
        out = SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=False)
    except Exception:
        return False
    if out is None:
        return False
    before = table.entries
    table.collect(out)
    table.keep_known(before)
    return True


def guess_shapes(index: ModelIndex, found: Shapes, partial: bool = False) -> None:
    """Ops that shape inference does not know (custom domains, unknown ops): assume their
    output has the shape of their first activation input, then re-infer downstream. ``partial``:
    from inputs of known rank whatever their dims (symbolic before binding), to outputs of unknown
    rank; else from and to fully known shapes."""
    table = found.table
    for _ in range(len(index.nodes)):
        new = _same_shape_guesses(index, table, partial)
        if not new:
            return
        found.guessed.update(new)
        m = table.model  # changed in place: the table is re-collected from what inference makes of it
        keep = [vi for vi in m.graph.value_info if vi.name not in new]
        del m.graph.value_info[:]
        m.graph.value_info.extend(keep)
        for t, (et, dims) in new.items():
            m.graph.value_info.append(helper.make_tensor_value_info(t, et or TensorProto.FLOAT, dims))
        table.collect(run_onnx_inference(m))
        fill_param_shapes(index, found)


def _same_shape_guesses(index: ModelIndex, table: ShapeTable, partial: bool) -> dict[str, tuple[int, list]]:
    """``{output: (elem_type, dims)}`` for each unknown-shaped activation output of an unknown
    op (its first output) or a same-shape op (the outputs :func:`same_shape_outputs` names: a
    com.microsoft skip norm's input + skip sum too) that has an activation input of known shape
    (``partial``: of known rank, to outputs of unknown rank)."""
    new: dict[str, tuple[int, list]] = {}

    def known(t: str) -> bool:
        return table.dims(t) is not None if partial else table.is_known(t)

    for _, n in index.nodes:
        if n.op_type in SHAPE_OPS:
            continue
        if n.op_type in SAME_SHAPE and (len(n.output) == 1 or n.op_type in SAME_SHAPE_OUTPUTS):
            positions = same_shape_outputs(n)
        elif is_unknown_op(n):
            positions = (0,)
        else:
            continue
        outs = [n.output[k] for k in positions if k < len(n.output) and n.output[k]]
        outs = [o for o in outs if index.is_act(o) and not known(o)]
        data = [t for k, t in enumerate(n.input) if k not in index_inputs(n)]  # not a rotary's position ids
        src = next((t for t in data if t and index.is_act(t) and known(t)), None)
        if not outs or src is None:
            continue
        for o in outs:
            new[o] = (table.elem_type(o) or table.elem_type(src), list(table.dims(src)))
    return new
