"""The skeleton a binding is written into: a light copy of the model (large initializers reduced
to name, dims and type), and the rewriting of Reshape targets that hard-code a fixed batch, so
that a new batch flows through (:mod:`~hypar.onnx.binding` binds the inputs)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from hypar.onnx.index import ModelIndex
from hypar.onnx.protos import strip_tensor


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
