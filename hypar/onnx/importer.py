"""ONNX model -> layer graph (the only module that imports onnx).

:func:`load_layer_graph` reads an ONNX file (or an in-memory ``ModelProto``), binds the batch
size, runs shape inference and builds the layer graph described in :mod:`hypar.graph`:
decision layers (Conv, ConvTranspose, Gemm, MatMul with a weight, embeddings, activation x
activation MatMul) with their matrix view, and every other op that touches activations as a
non-weighted node. Weights are read as shapes only: raw weight bytes are never decoded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections import defaultdict
from math import prod
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hypar import graph as G
from hypar.errors import HyparWarning, ModelLoadError, ModelStructureError, ShapeError

__all__ = ["load_layer_graph", "model_sha256"]

_TWO_GB = 2**31 - 1
_SMALL = 4096  # constants with at most this many elements may be evaluated (shape tensors)
_INT_TYPES = {
    TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
    TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64,
    TensorProto.BOOL,
}

# Op tables (matched on op_type, whatever the domain).
_UNARY = {
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Erf", "Exp", "Log",
    "Sqrt", "Reciprocal", "Neg", "Abs", "Sign", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan",
    "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Clip", "Dropout",
    "Identity", "Cast", "CastLike", "Not", "IsNaN", "IsInf", "Mish", "Swish", "ThresholdedRelu",
    "Shrink", "Pad", "Resize", "Upsample", "Expand", "Tile", "Trilu", "CumSum", "Bernoulli",
    "BitwiseNot", "QuantizeLinear", "DequantizeLinear",
}
_BINARY = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift", "PRelu",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor",
}
_FEATURENORM = {
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LRN",
    "MeanVarianceNormalization", "LpNormalization", "SkipLayerNormalization",
    "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RMSNormalization",
}
_SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}
_REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
}
_POOL = {
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
}
_RESHAPE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth"}
_SPLIT = {"Split", "Slice", "Gather", "GatherElements", "GatherND"}
_SHAPE_OPS = {"Shape", "Size"}
# Ops a weight passes through unchanged in content (weight-only paths fold into the layer).
_WEIGHT_PASS = {
    "Transpose", "Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
    "DequantizeLinear",
}
# Input positions that hold parameters (used to tell parameter graph inputs from activations).
_PARAM_SLOTS = {
    "Conv": 1, "ConvTranspose": 1, "BatchNormalization": 1, "InstanceNormalization": 1,
    "LayerNormalization": 1, "GroupNormalization": 1, "PRelu": 1, "Gemm": 1,
}


_KNOWN_OPS = (
    _UNARY | _BINARY | _FEATURENORM | _SOFTMAX | _REDUCE | _POOL | _RESHAPE | _SPLIT | _SHAPE_OPS
    | {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "Concat", "Constant",
       "ConstantOfShape", "Range"}
)
# Known ops whose output has the shape of their (first) input.
_SAME_SHAPE = (_UNARY - {"Pad", "Resize", "Upsample", "Expand", "Tile"}) | _FEATURENORM | _SOFTMAX


def _is_unknown_op(n: onnx.NodeProto) -> bool:
    return n.op_type not in _KNOWN_OPS


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a model file (streamed; external data files not included)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_layer_graph(
    source: str | os.PathLike | onnx.ModelProto,
    batch: int | None = None,
    name: str | None = None,
) -> nx.DiGraph:
    """Import an ONNX model as a layer graph (see :mod:`hypar.graph` for the contract).

    Parameters
    ----------
    source
        Path of an ``.onnx`` file or a loaded ``onnx.ModelProto``. Weights may be inline, in
        external data files, or absent (only their shapes are read).
    batch
        Batch size bound to dim 0 of every activation graph input; every shape is re-derived.
        ``None`` keeps the model's own batch, which must then be a fixed number.
    name
        Model name stored in the graph (default: file stem, else the ONNX graph name).

    Returns
    -------
    networkx.DiGraph
        Nodes are layer names with attribute ``layer`` (:class:`hypar.graph.Layer`); edges
        carry ``tensor`` (:class:`hypar.graph.Tensor`) and ``slots`` (positions in the
        consumer's ``Layer.inputs``, which lists its activation inputs in ONNX order).

    Raises
    ------
    ModelLoadError
        Missing, unreadable, non-ONNX or truncated file.
    ShapeError
        Symbolic batch without ``batch``, or a needed shape that stays unknown.
    ModelStructureError
        The model has no weighted layer.

    Examples
    --------
    >>> from onnx import parser
    >>> m = parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
    ... g (float[N, 3] x) => (float[N, 2] y) <float[3, 2] w = {1, 2, 3, 4, 5, 6}> {
    ...     y = MatMul(x, w) }''')
    >>> g = load_layer_graph(m, batch=4)
    >>> lay = g.nodes[G.weighted_layers(g)[0]]["layer"]
    >>> (lay.kind, lay.batch, lay.d_in, lay.d_out, lay.weight_elements, lay.macs)
    ('gemm', 4, 3, 2, 6, 24)
    """
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ShapeError(f"batch must be a positive integer, got {batch!r}; pass --batch N with N >= 1")
    model, default_name = _load(source)
    return _Importer(model, batch, name or default_name).build()


# ----------------------------------------------------------------------------------------------
# Loading


def _load(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        _check_model_sane(source, "the ModelProto")
        return source, source.graph.name or "model"
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(
            f"cannot load a model from {type(source).__name__}; pass a path or an onnx.ModelProto"
        )
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"no such file '{path}'; check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a directory, not an ONNX file; pass the .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except PermissionError as exc:
        raise ModelLoadError(f"cannot read '{path}' ({exc.strerror}); check its permissions") from None
    except Exception:  # protobuf DecodeError, RuntimeWarning turned error, ...
        raise ModelLoadError(
            f"'{path}' is not a valid ONNX model (truncated or wrong format); re-export it"
        ) from None
    _check_model_sane(model, f"'{path}'")
    return model, path.stem


def _check_model_sane(model: onnx.ModelProto, what: str) -> None:
    """Reject protobufs that parsed but are not (whole) ONNX models."""
    bad = ModelLoadError(f"{what} is not a valid ONNX model (truncated or wrong format); re-export it")
    g = model.graph
    if model.ir_version <= 0 or not model.opset_import or not g.node or not g.output:
        raise bad
    known = {i.name for i in g.input} | {i.name for i in g.initializer}
    known.update(o for n in g.node for o in n.output if o)  # node order may not be topological
    for n in g.node:
        if not n.op_type or any(t and t not in known for t in n.input):
            raise bad
    if any(o.name not in known for o in g.output):
        raise bad


# ----------------------------------------------------------------------------------------------
# Helpers


def _topo_nodes(g: onnx.GraphProto) -> list[tuple[int, onnx.NodeProto]]:
    """ONNX nodes in topological order (stable: ties by ONNX order)."""
    nodes = list(enumerate(g.node))
    producer: dict[str, int] = {}
    for i, n in nodes:
        for o in n.output:
            if o:
                producer[o] = i
    deps: dict[int, set[int]] = {}
    users: dict[int, list[int]] = defaultdict(list)
    for i, n in nodes:
        d = {producer[t] for t in n.input if t in producer and producer[t] != i}
        deps[i] = d
        for j in d:
            users[j].append(i)
    if all(j < i for i, d in deps.items() for j in d):
        return nodes
    import heapq

    ready = [i for i, d in deps.items() if not d]
    heapq.heapify(ready)
    remaining = {i: len(d) for i, d in deps.items()}
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ModelLoadError("the ONNX graph has a cycle; re-export it")
    return [nodes[i] for i in order]


def _attr_value(a: onnx.AttributeProto) -> object:
    if a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.GRAPH,
                  onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSORS,
                  onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS,
                  onnx.AttributeProto.TYPE_PROTO, onnx.AttributeProto.TYPE_PROTOS):
        return None
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v)
    return v


def _node_attrs(n: onnx.NodeProto) -> dict[str, object]:
    out = {}
    for a in n.attribute:
        v = _attr_value(a)
        if v is not None:
            out[a.name] = v
    return out


def _dims_of_type(tp: onnx.TypeProto) -> tuple[int, list[int | str | None]] | None:
    if not tp.HasField("tensor_type"):
        return None
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return tt.elem_type, None
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tt.elem_type, dims


def _known(dims) -> bool:
    return dims is not None and all(isinstance(d, int) for d in dims)


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _map_axis_reshape(ax: int | None, src: tuple[int, ...], dst: tuple[int, ...]) -> int | None:
    """Map an axis through a reshape by prefix products (the axis is the outer part)."""
    if ax is None or ax >= len(src):
        return None
    pre = prod(src[:ax])
    size = src[ax]
    cands = []
    p = 1
    for j, d in enumerate(dst):
        if p == pre:
            cands.append(j)
        p *= d
        if p > pre:
            break
    best = None
    for j in cands:
        d = dst[j]
        if d == size:
            return j
        if best is None and size > 1 and d > 1 and (d % size == 0 or size % d == 0):
            best = j
    return best


# Axis atoms: each axis of a tensor is a list of factors (label, size), outermost first, with
# label "B" (batch), "F" (feature/head) or None. A reshape regroups the factors, so a head axis
# merged into the batch ((B, H) -> (B*H)) is recovered when it is split out again.
Atoms = list[list[tuple[str | None, int]]]


def _default_atoms(shape: tuple[int, ...], ba: int | None, fa: int | None) -> Atoms:
    return [[("B" if i == ba else "F" if i == fa else None, d)] for i, d in enumerate(shape)]


def _atoms_axes(atoms: Atoms) -> tuple[int | None, int | None]:
    """(batch_axis, feature_axis): the first axis whose outermost non-trivial factor is B / F."""
    ba = fa = None
    for i, ax in enumerate(atoms):
        big = [lab for lab, s in ax if s > 1]
        lab = big[0] if big else (ax[0][0] if ax else None)
        if lab == "B" and ba is None:
            ba = i
        elif lab == "F" and fa is None:
            fa = i
    return ba, fa


def _regroup(atoms: Atoms, out_shape: tuple[int, ...]) -> Atoms | None:
    """Distribute the factors of ``atoms`` over ``out_shape`` (None if they do not tile it).

    A factor split across output axes keeps its label on the outer part only."""
    flat = [a for ax in atoms for a in ax]
    if prod(s for _, s in flat) != prod(out_shape):
        return None
    res: Atoms = []
    i = 0
    for d in out_shape:
        cur: list[tuple[str | None, int]] = []
        if d == 1:
            if i < len(flat) and flat[i][1] == 1:
                cur.append(flat[i])
                i += 1
            res.append(cur)
            continue
        p = 1
        while p < d:
            if i >= len(flat):
                return None
            lab, s = flat[i]
            if s == 1:
                cur.append(flat[i])
                i += 1
            elif d % (p * s) == 0:
                cur.append((lab, s))
                p *= s
                i += 1
            else:
                need = d // p
                if need * p != d or s % need != 0:
                    return None
                cur.append((lab, need))
                p *= need
                flat[i] = (None, s // need)
        res.append(cur)
    return res


def _strip_tensor(t: TensorProto) -> TensorProto:
    """A copy of ``t`` that keeps name, dims and type, dropping large data."""
    n = prod(t.dims) if t.dims else 1
    if n <= _SMALL and t.data_location != TensorProto.EXTERNAL:
        c = TensorProto()
        c.CopyFrom(t)
        return c
    c = TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
    return c


# ----------------------------------------------------------------------------------------------
# The importer


class _Importer:
    def __init__(self, model: onnx.ModelProto, batch: int | None, name: str) -> None:
        self.src = model
        self.batch = batch
        self.name = name
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.init_names = {t.name for t in g.initializer}
        self.init_dims = {t.name: tuple(int(d) for d in t.dims) for t in g.initializer}
        self.init_type = {t.name: t.data_type for t in g.initializer}
        self._inits = {t.name: t for t in g.initializer}
        self.nodes = _topo_nodes(g)
        self.producer: dict[str, tuple[int, onnx.NodeProto]] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for i, n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = (i, n)
            for s, t in enumerate(n.input):
                if t:
                    self.consumers[t].append((n, s))
        self.act_inputs = [vi for vi in g.input if self._is_activation_input(vi)]
        self.graph_outputs = {o.name for o in g.output}
        self.shapes: dict[str, tuple[int, list | None]] = {}
        self._values: dict[str, np.ndarray | None] = {}

    # -- classification of graph inputs ---------------------------------------------------------
    def _is_activation_input(self, vi: onnx.ValueInfoProto) -> bool:
        if vi.name in self.init_names:
            return False
        uses = self.consumers.get(vi.name, [])
        if uses and all(s >= _PARAM_SLOTS.get(n.op_type, 99) for n, s in uses):
            return False
        return True

    # -- pipeline -------------------------------------------------------------------------------
    def build(self) -> nx.DiGraph:
        self._classify()  # structural: does not need shapes
        skel = self._skeleton()
        self._bind_batch(skel)
        inferred = self._infer(skel)
        self._collect_shapes(inferred)
        self._fill_param_shapes()
        if self._unknown_needed() and self._try_symbolic(inferred):
            self._fill_param_shapes()
        self._guess_shapes(self.inferred)
        return self._build_graph()

    def _guess_shapes(self, m: onnx.ModelProto) -> None:
        """Ops that shape inference does not know (custom domains, unknown ops): assume their
        output has the shape of their first activation input, then re-infer downstream."""
        self.guessed: set[str] = set()
        for _ in range(len(self.nodes)):
            new: dict[str, tuple[int, list]] = {}
            for _, n in self.nodes:
                o = n.output[0] if n.output else ""
                if not o or self.cls.get(o) != "act" or n.op_type in _SHAPE_OPS or _known(self._dims(o)):
                    continue
                if not (_is_unknown_op(n) or (n.op_type in _SAME_SHAPE and len(n.output) == 1)):
                    continue
                src = next((t for t in n.input if t and self.cls.get(t) == "act" and _known(self._dims(t))), None)
                if src is None:
                    continue
                new[o] = (self._elem_type(o) or self._elem_type(src), list(self._dims(src)))
            if not new:
                return
            self.guessed.update(new)
            m = onnx.ModelProto()
            m.CopyFrom(self.inferred)
            keep = [vi for vi in m.graph.value_info if vi.name not in new]
            del m.graph.value_info[:]
            m.graph.value_info.extend(keep)
            for t, (et, dims) in new.items():
                m.graph.value_info.append(helper.make_tensor_value_info(t, et or TensorProto.FLOAT, dims))
            self._collect_shapes(self._infer(m))
            self._fill_param_shapes()

    def _skeleton(self) -> onnx.ModelProto:
        """A light copy of the model: same graph, large initializers reduced to name/dims/type."""
        src = self.src
        m = onnx.ModelProto()
        m.ir_version = src.ir_version
        m.opset_import.extend(src.opset_import)
        m.functions.extend(src.functions)
        g, sg = m.graph, src.graph
        g.name = sg.name
        g.node.extend(n for _, n in self.nodes)
        g.input.extend(sg.input)
        g.output.extend(sg.output)
        g.value_info.extend(sg.value_info)
        g.initializer.extend(_strip_tensor(t) for t in sg.initializer)
        return m

    def _bind_batch(self, m: onnx.ModelProto) -> None:
        act_names = {vi.name for vi in self.act_inputs}
        old_batches: set[int] = set()
        for vi in m.graph.input:
            if vi.name not in act_names:
                continue
            info = _dims_of_type(vi.type)
            if info is None:
                continue
            _, dims = info
            if dims is None or not dims:
                if self.batch is not None and dims is None:
                    raise ShapeError(
                        f"input '{vi.name}' has no shape; re-export the model with input shapes"
                    )
                continue
            d0 = dims[0]
            if self.batch is None:
                if isinstance(d0, str):
                    raise ShapeError(f"input '{vi.name}' has symbolic dim '{d0}'; pass --batch N")
                if d0 is None:
                    raise ShapeError(f"input '{vi.name}' has an unknown batch dim; pass --batch N")
                continue
            if isinstance(d0, int):
                old_batches.add(d0)
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = self.batch
        if self.batch is None:
            return
        # Every shape is re-derived: drop stale intermediate and output shapes.
        del m.graph.value_info[:]
        for o in m.graph.output:
            if o.type.tensor_type.HasField("shape"):
                o.type.tensor_type.ClearField("shape")
        # Fixed-batch exports reshape to [b0, ...]: let those copy the new batch instead.
        old = {b for b in old_batches if b != self.batch}
        if old:
            self._rebind_fixed_reshapes(m, old)

    def _rebind_fixed_reshapes(self, m: onnx.ModelProto, old: set[int]) -> None:
        """Fixed-batch exports reshape activations to literal targets such as [b0, 16, 4, 16] or
        [b0 * heads, 16, 16]; rewrite a leading entry that is a multiple of the old batch b0 to
        infer (-1) or copy (0) it, so the new batch flows through."""
        inits = {t.name: t for t in m.graph.initializer}
        consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant" and n.output}
        for n in m.graph.node:
            if n.op_type != "Reshape" or len(n.input) < 2 or self.cls.get(n.input[0]) != "act":
                continue
            allowzero = any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
            t = inits.get(n.input[1])
            if t is None and n.input[1] in consts:
                t = next((a.t for a in consts[n.input[1]].attribute if a.name == "value"), None)
            if t is None or t.data_location == TensorProto.EXTERNAL:
                continue
            try:
                v = numpy_helper.to_array(t).astype(np.int64).reshape(-1)
            except Exception:
                continue
            if v.size < 1:
                continue
            v0 = int(v[0])
            if any(b > 0 and v0 >= b and v0 % b == 0 for b in old) and -1 not in v.tolist():
                new0 = -1  # dim 0 absorbs the new batch (also when heads are merged into it)
            elif v0 in old and not allowzero:
                new0 = 0  # another entry is -1: copy the input's (batch) dim 0
            else:
                continue
            v = v.copy()
            v[0] = new0
            new = numpy_helper.from_array(v, name=f"{n.input[1]}__hypar_batch_{new0 + 1}")
            if new.name not in inits:
                m.graph.initializer.append(new)
                inits[new.name] = new
            n.input[1] = new.name

    def _infer(self, m: onnx.ModelProto) -> onnx.ModelProto:
        def run(data_prop: bool) -> onnx.ModelProto:
            if m.ByteSize() >= _TWO_GB:
                with tempfile.TemporaryDirectory(prefix="hypar-") as d:
                    src, dst = os.path.join(d, "in.onnx"), os.path.join(d, "out.onnx")
                    onnx.save(m, src)
                    onnx.shape_inference.infer_shapes_path(src, dst, strict_mode=False, data_prop=data_prop)
                    return onnx.load(dst, load_external_data=False)
            return onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=data_prop)

        for dp in (True, False):
            try:
                return run(dp)
            except Exception:
                continue
        return m

    def _collect_shapes(self, m: onnx.ModelProto) -> None:
        shapes: dict[str, tuple[int, list | None]] = {}
        g = m.graph
        for t in g.initializer:
            shapes[t.name] = (t.data_type, [int(d) for d in t.dims])
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            info = _dims_of_type(vi.type)
            if info is None:
                continue
            prev = shapes.get(vi.name)
            if prev is not None and _known(prev[1]) and not _known(info[1]):
                continue
            shapes[vi.name] = info
        self.shapes = shapes
        self.inferred = m

    # -- tensor classes -------------------------------------------------------------------------
    def _classify(self) -> None:
        """cls[t] in {'act', 'param', 'meta'}: activation, parameter/constant, shape-derived."""
        cls: dict[str, str] = {}
        act_names = {vi.name for vi in self.act_inputs}
        for vi in self.src.graph.input:
            cls[vi.name] = "act" if vi.name in act_names else "param"
        for t in self.init_names:
            cls[t] = "param"
        for _, n in self.nodes:
            ins = [cls.get(t, "param") for t in n.input if t]
            if n.op_type in _SHAPE_OPS:
                c = "meta"
            elif n.op_type == "Constant":
                c = "param"
            elif "act" in ins:
                c = "act"
            elif "meta" in ins:
                c = "meta"
            else:
                c = "param"
            for o in n.output:
                if o:
                    cls[o] = c
        self.cls = cls

    # -- constant folding (small tensors only) --------------------------------------------------
    def value(self, t: str) -> np.ndarray | None:
        """Value of a small constant or shape-derived tensor, or None."""
        if not t:
            return None
        if t in self._values:
            return self._values[t]
        self._values[t] = None  # recursion guard
        v = None
        try:
            v = self._eval(t)
        except Exception:
            v = None
        if v is not None and v.size > _SMALL:
            v = None
        self._values[t] = v
        return v

    def _eval(self, t: str) -> np.ndarray | None:
        if t in self.init_names:
            init = self._inits[t]
            if init.data_location == TensorProto.EXTERNAL or (prod(init.dims) if init.dims else 1) > _SMALL:
                return None
            return numpy_helper.to_array(init)
        if t not in self.producer:
            return None
        _, n = self.producer[t]
        op = n.op_type
        a = _node_attrs(n)
        if op == "Constant":
            for at in n.attribute:
                if at.name == "value":
                    return numpy_helper.to_array(at.t) if (prod(at.t.dims) if at.t.dims else 1) <= _SMALL else None
                if at.name == "value_int":
                    return np.array(at.i, dtype=np.int64)
                if at.name == "value_ints":
                    return np.array(list(at.ints), dtype=np.int64)
                if at.name == "value_float":
                    return np.array(at.f, dtype=np.float32)
                if at.name == "value_floats":
                    return np.array(list(at.floats), dtype=np.float32)
            return None
        if op == "Shape":
            dims = self._dims(n.input[0])
            if not _known(dims):
                return None
            r = len(dims)
            s = _norm_axis(a.get("start", 0), r)
            e = _norm_axis(a.get("end", r), r)
            return np.array(dims[max(0, s):min(r, e)], dtype=np.int64)
        if op == "Size":
            dims = self._dims(n.input[0])
            return np.array(prod(dims), dtype=np.int64) if _known(dims) else None
        ins = [self.value(x) if x else None for x in n.input]
        if op in ("Identity", "Cast", "CastLike"):
            if ins[0] is None:
                return None
            if op == "Cast":
                return ins[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))
            return ins[0]
        if any(v is None for i, v in enumerate(ins) if n.input[i]):
            return None
        x = ins[0] if ins else None
        if op == "ConstantOfShape":
            val = np.zeros(1, dtype=np.float32)
            for at in n.attribute:
                if at.name == "value":
                    val = numpy_helper.to_array(at.t).reshape(-1)
            shape = tuple(int(s) for s in x.reshape(-1))
            return np.full(shape, val[0], dtype=val.dtype) if prod(shape) <= _SMALL else None
        if op == "Gather":
            return np.take(x, ins[1].astype(np.int64), axis=a.get("axis", 0))
        if op == "Unsqueeze":
            axes = a.get("axes") if "axes" in a else tuple(int(v) for v in ins[1].reshape(-1))
            r = x.ndim + len(axes)
            out = x
            for ax in sorted(_norm_axis(v, r) for v in axes):
                out = np.expand_dims(out, ax)
            return out
        if op == "Squeeze":
            axes = a.get("axes") if "axes" in a else (tuple(int(v) for v in ins[1].reshape(-1)) if len(ins) > 1 and ins[1] is not None else None)
            return np.squeeze(x, axis=tuple(_norm_axis(v, x.ndim) for v in axes) if axes else None)
        if op == "Concat":
            return np.concatenate([np.atleast_1d(v) for v in ins if v is not None], axis=a.get("axis", 0))
        if op == "Reshape":
            shape = [int(s) for s in ins[1].reshape(-1)]
            shape = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
            return x.reshape(shape)
        if op == "Slice":
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
                sl[_norm_axis(int(ax), x.ndim)] = slice(int(s), int(e), int(st))
            return x[tuple(sl)]
        binops = {
            "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal,
            "Less": np.less, "Greater": np.greater, "Max": np.maximum, "Min": np.minimum,
            "And": np.logical_and, "Or": np.logical_or, "Mod": np.mod, "Pow": np.power,
        }
        if op in binops and len(ins) == 2:
            return binops[op](x, ins[1])
        if op == "Div":
            if np.issubdtype(x.dtype, np.integer):
                return (np.trunc(x / ins[1])).astype(x.dtype)
            return x / ins[1]
        if op == "Where":
            return np.where(ins[0], ins[1], ins[2])
        if op == "Range":
            return np.arange(x.item(), ins[1].item(), ins[2].item())
        if op == "Neg":
            return -x
        if op == "Abs":
            return np.abs(x)
        if op == "Not":
            return np.logical_not(x)
        if op in ("Floor", "Ceil", "Sqrt"):
            return getattr(np, op.lower())(x)
        if op == "ReduceProd":
            return np.prod(x, keepdims=bool(a.get("keepdims", 1)))
        if op == "Expand":
            return x * np.ones([int(s) for s in ins[1].reshape(-1)], dtype=x.dtype)
        if op == "Transpose":
            return np.transpose(x, a.get("perm"))
        return None

    # -- shapes ---------------------------------------------------------------------------------
    def _dims(self, t: str) -> list | None:
        info = self.shapes.get(t)
        return None if info is None else info[1]

    def _elem_type(self, t: str) -> int:
        info = self.shapes.get(t)
        return 0 if info is None else info[0]

    def _fill_param_shapes(self) -> None:
        """Shapes of weight-path tensors that inference left unknown (ConstantOfShape etc.)."""
        for _, n in self.nodes:
            outs = [o for o in n.output if o]
            if not outs or self.cls.get(outs[0]) == "act":
                continue
            o = outs[0]
            if _known(self._dims(o)):
                continue
            dims = None
            op = n.op_type
            if op == "ConstantOfShape":
                v = self.value(n.input[0]) if n.input else None
                if v is not None:
                    dims = [int(s) for s in v.reshape(-1)]
            elif op in _WEIGHT_PASS or op in _UNARY:
                src = self._dims(n.input[0]) if n.input else None
                if _known(src):
                    a = _node_attrs(n)
                    if op == "Transpose":
                        perm = a.get("perm", tuple(reversed(range(len(src)))))
                        dims = [src[p] for p in perm]
                    elif op in ("Reshape",):
                        v = self.value(n.input[1])
                        if v is not None:
                            shp = [int(s) for s in v.reshape(-1)]
                            shp = [src[i] if s == 0 else s for i, s in enumerate(shp)]
                            if -1 in shp:
                                k = shp.index(-1)
                                rest = prod(s for s in shp if s != -1)
                                shp[k] = prod(src) // rest if rest else 0
                            dims = shp
                    elif op in ("Squeeze", "Unsqueeze", "Flatten"):
                        v = self.value(o)
                        dims = list(v.shape) if v is not None else None
                    elif op not in ("Pad", "Resize", "Upsample", "Expand", "Tile"):
                        dims = list(src)
            if dims is None:
                v = self.value(o)
                if v is not None:
                    dims = list(v.shape)
            if dims is not None:
                et = self._elem_type(o) or TensorProto.FLOAT
                self.shapes[o] = (et, [int(d) for d in dims])

    def _needed(self) -> list[str]:
        """Activation tensors whose shapes the layer graph needs."""
        out = []
        graph_outs = {o.name for o in self.src.graph.output}
        for _, n in self.nodes:
            if n.op_type in _SHAPE_OPS:
                continue
            for k, o in enumerate(n.output):
                if o and self.cls.get(o) == "act" and (k == 0 or o in self.consumers or o in graph_outs):
                    out.append(o)
        out.extend(vi.name for vi in self.act_inputs)
        return out

    def _unknown_needed(self) -> list[str]:
        return [t for t in self._needed() if not _known(self._dims(t))]

    def _try_symbolic(self, m: onnx.ModelProto) -> bool:
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
        before = self.shapes
        self._collect_shapes(out)
        for k, v in before.items():
            if k not in self.shapes or (_known(v[1]) and not _known(self.shapes[k][1])):
                self.shapes[k] = v
        return True

    def shape(self, t: str, node: str | None = None) -> tuple[int, ...]:
        dims = self._dims(t)
        if _known(dims):
            return tuple(dims)
        where = f" (at node '{node}')" if node else ""
        shown = "unknown rank" if dims is None else "[" + ", ".join(
            str(d) if d is not None else "?" for d in dims) + "]"
        if importlib.util.find_spec("onnxruntime") is not None:
            fix = "re-export the model with static shapes"
        else:
            fix = "install symbolic shape inference with `pip install hypar[symbolic]` or re-export with static shapes"
        raise ShapeError(f"tensor '{t}'{where} has unknown shape {shown} after shape inference; {fix}")

    # -- the layer graph ------------------------------------------------------------------------
    def _check_inputs_bound(self) -> None:
        for vi in self.act_inputs:
            if vi.name not in self.consumers:
                continue
            dims = self._dims(vi.name)
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

    def _build_graph(self) -> nx.DiGraph:
        self._check_inputs_bound()
        g_in = {vi.name for vi in self.act_inputs}
        kept = [(i, n) for i, n in self.nodes
                if n.op_type not in _SHAPE_OPS and any(self.cls.get(o) == "act" for o in n.output if o)]
        names = self._layer_names(kept)
        self.axes: dict[str, tuple[int | None, int | None]] = {}
        self.atoms: dict[str, list[list[tuple[str | None, int]]]] = {}
        inputs: list[G.Tensor] = []
        for vi in self.act_inputs:
            if vi.name not in self.consumers:
                continue
            shp = self.shape(vi.name)
            ba, fa = self._input_axes(shp, self._elem_type(vi.name))
            self.axes[vi.name] = (ba, fa)
            inputs.append(G.Tensor(vi.name, shp, ba, fa))
        bound = self.batch
        if bound is None:
            bound = next((t.shape[0] for t in inputs if t.shape), 1)
        g = G.new_graph(self.name, bound)
        producer_layer: dict[str, str] = {}
        tensors: dict[str, G.Tensor] = {t.name: t for t in inputs}
        opaque: dict[str, list[str]] = defaultdict(list)
        for (i, n), lname in zip(kept, names):
            lay = self._layer(n, lname, opaque)
            G.add_layer(g, lay)
            for o in lay.outputs:
                producer_layer[o] = lname
                if o not in tensors and _known(self._dims(o)):
                    ba, fa = self.axes.get(o, (None, None))
                    tensors[o] = G.Tensor(o, tuple(self._dims(o)), ba, fa)
        consumers_of_input: dict[str, list[str]] = defaultdict(list)
        for (i, n), lname in zip(kept, names):
            lay = G.layer(g, lname)
            for slot, t in enumerate(lay.inputs):
                if t in producer_layer:
                    G.add_edge(g, producer_layer[t], lname, tensors[t], slot)
                elif t in g_in and lname not in consumers_of_input[t]:
                    consumers_of_input[t].append(lname)
        self._fold_bias(g, kept, names)
        # inputs that only feed shape computations (e.g. Shape(mask)) are not layer inputs
        g.graph["inputs"] = tuple(t for t in inputs if t.name in consumers_of_input or t.name in producer_layer)
        g.graph["outputs"] = tuple(tensors[o.name] for o in self.src.graph.output if o.name in tensors)
        g.graph["input_consumers"] = {t: tuple(v) for t, v in consumers_of_input.items()}
        for label, where in opaque.items():
            more = f" and {len(where) - 1} more" if len(where) > 1 else ""
            guess = any(G.layer(g, w).outputs and G.layer(g, w).outputs[0] in self.guessed for w in where)
            guess_txt = "; its output shape is unknown and assumed equal to its input" if guess else ""
            warnings.warn(
                f"{label} at node '{where[0]}'{more} kept as an opaque layer "
                f"(it needs the full tensor){guess_txt}", HyparWarning, stacklevel=3)
        if not any(G.layer(g, n).weighted for n in g.nodes):
            raise ModelStructureError(
                f"model '{self.name}' has no weighted layer (Conv, Gemm, MatMul or Gather on a weight "
                "initializer); nothing to partition: check that the weights are stored as initializers"
            )
        return g

    def _layer_names(self, kept: list[tuple[int, onnx.NodeProto]]) -> list[str]:
        explicit = {n.name for _, n in kept if n.name}
        used: set[str] = set()
        out = []
        for i, n in kept:
            base = n.name or f"{n.op_type}_{i}"
            cand, k = base, 2
            while cand in used or (cand != n.name and cand in explicit):
                cand = f"{base}_{k}"
                k += 1
            used.add(cand)
            out.append(cand)
        return out

    @staticmethod
    def _input_axes(shape: tuple[int, ...], et: int) -> tuple[int | None, int | None]:
        r = len(shape)
        if r == 0:
            return None, None
        if et in _INT_TYPES:
            return 0, None
        if r >= 4:
            return 0, 1
        if r >= 2:
            return 0, r - 1
        return 0, None

    # -- weights --------------------------------------------------------------------------------
    def _weight_source(self, t: str) -> str:
        """Follow a weight-only path back to its initializer / ConstantOfShape / input."""
        seen = 0
        while t in self.producer and seen < 32:
            _, n = self.producer[t]
            if n.op_type in _WEIGHT_PASS and n.input:
                t = n.input[0]
                seen += 1
                continue
            break
        return t

    def _wshape(self, t: str, node: str) -> tuple[int, ...]:
        dims = self._dims(t)
        if _known(dims):
            return tuple(dims)
        raise ShapeError(
            f"weight '{t}' of node '{node}' has unknown shape; re-export the model with static weight shapes"
        )

    # -- one layer ------------------------------------------------------------------------------
    def _layer(self, n: onnx.NodeProto, lname: str, opaque: dict[str, list[str]]) -> G.Layer:
        op = n.op_type
        act_in = [t for t in n.input if t and self.cls.get(t) == "act"]
        outs = tuple(o for o in n.output if o and self.cls.get(o) == "act"
                     and (o in self.consumers or o in self.graph_outputs or o == n.output[0]))
        a = _node_attrs(n)
        attrs: dict[str, object] = {}
        kind = None
        fields: dict[str, object] = {}
        const_in = [t for t in n.input if t and self.cls.get(t) != "act"]

        if op in ("Conv", "ConvTranspose") and act_in and n.input[0] == act_in[0] and len(act_in) == 1:
            kind = G.CONV
            fields, attrs = self._conv(n, lname, a)
        elif op in ("MatMul", "Gemm") and len(act_in) == 1:
            kind = G.GEMM
            fields, attrs = self._gemm(n, lname, a, act_in[0])
        elif op in ("MatMul", "Gemm") and len(act_in) >= 2:
            kind = G.MATMUL_ACT
            fields, attrs = self._matmul_act(n, lname, a)
        elif op == "Gather" and self.cls.get(n.input[0]) != "act" and act_in:
            kind = G.EMBEDDING
            fields, attrs = self._embedding(n, lname, a)
        elif op == "BatchNormalization":
            kind = G.BATCHNORM
            attrs = {k: a[k] for k in ("epsilon", "momentum") if k in a}
            if len(n.input) > 1 and n.input[1]:
                fields["weight_elements"] = prod(self._wshape(n.input[1], lname))
            if len(n.input) > 2 and n.input[2]:
                fields["bias_elements"] = prod(self._wshape(n.input[2], lname))
        elif op in _FEATURENORM:
            kind = G.FEATURENORM
            attrs = {k: v for k, v in a.items() if k in ("axis", "epsilon", "num_groups", "size", "alpha", "beta", "bias", "p")}
            x = self.shape(act_in[0], lname)
            if "axis" in attrs:
                attrs["axis"] = _norm_axis(int(attrs["axis"]), len(x))
            elif op == "LayerNormalization":
                attrs["axis"] = len(x) - 1
            if op == "LRN" or op == "LpNormalization" or op == "MeanVarianceNormalization":
                pass
            else:
                p = [t for t in n.input[1:] if t and self.cls.get(t) != "act"]
                if op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
                    p = [t for t in n.input[2:4] if t and self.cls.get(t) != "act"]
                if p:
                    fields["weight_elements"] = prod(self._wshape(p[0], lname))
                if len(p) > 1:
                    fields["bias_elements"] = prod(self._wshape(p[1], lname))
        elif op in _SOFTMAX:
            kind = G.SOFTMAX
            r = len(self.shape(act_in[0], lname))
            attrs["axis"] = _norm_axis(int(a.get("axis", -1 if self.opset >= 13 else 1)), r)
        elif op in _REDUCE:
            kind = G.REDUCE
            r = len(self.shape(n.input[0], lname))
            axes = a.get("axes")
            if op in ("ArgMax", "ArgMin"):
                axes = (a.get("axis", 0),)
            elif axes is None and len(n.input) > 1 and n.input[1]:
                v = self.value(n.input[1])
                axes = tuple(int(x) for x in v.reshape(-1)) if v is not None else None
            if axes is None or (isinstance(axes, tuple) and len(axes) == 0):
                axes = () if a.get("noop_with_empty_axes", 0) else tuple(range(r))
            attrs["axes"] = tuple(sorted(_norm_axis(int(x), r) for x in axes))
            attrs["keepdims"] = int(a.get("keepdims", 1))
        elif op in _POOL:
            kind = G.POOL
            attrs = {k: v for k, v in a.items() if k in ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad", "count_include_pad")}
        elif op in _RESHAPE:
            kind = G.RESHAPE
            x = self.shape(act_in[0], lname)
            if op == "Transpose":
                attrs["perm"] = tuple(a.get("perm", tuple(reversed(range(len(x))))))
            elif op == "Flatten":
                attrs["axis"] = _norm_axis(int(a.get("axis", 1)), len(x))
            elif op in ("Squeeze", "Unsqueeze"):
                axes = a.get("axes")
                if axes is None and len(n.input) > 1 and n.input[1]:
                    v = self.value(n.input[1])
                    axes = tuple(int(x) for x in v.reshape(-1)) if v is not None else None
                if axes is not None:
                    r = len(x) + (len(axes) if op == "Unsqueeze" else 0)
                    attrs["axes"] = tuple(sorted(_norm_axis(int(v), r) for v in axes))
            elif op in ("DepthToSpace", "SpaceToDepth"):
                attrs["blocksize"] = a.get("blocksize")
            attrs["shape"] = self.shape(n.output[0], lname)
        elif op == "Concat":
            kind = G.CONCAT
            r = len(self.shape(n.output[0], lname))
            attrs["axis"] = _norm_axis(int(a.get("axis", 0)), r)
        elif op in _SPLIT:
            kind = G.SPLIT
            x = self.shape(n.input[0], lname)
            r = len(x)
            if op == "Split":
                attrs["axis"] = _norm_axis(int(a.get("axis", 0)), r)
                sp = a.get("split")
                if sp is None and len(n.input) > 1 and n.input[1]:
                    v = self.value(n.input[1])
                    sp = tuple(int(s) for s in v.reshape(-1)) if v is not None else None
                if sp is None:
                    sp = tuple(self.shape(o, lname)[attrs["axis"]] for o in n.output if o)
                attrs["split"] = tuple(sp)
            elif op == "Slice":
                if "starts" in a:
                    starts, ends = a["starts"], a["ends"]
                    axes = a.get("axes", tuple(range(len(starts))))
                    steps = (1,) * len(starts)
                else:
                    vals = [self.value(t) if t else None for t in list(n.input[1:5]) + [""] * (4 - len(n.input[1:5]))]
                    starts = tuple(int(v) for v in vals[0].reshape(-1)) if vals[0] is not None else None
                    ends = tuple(int(v) for v in vals[1].reshape(-1)) if vals[1] is not None else None
                    axes = tuple(int(v) for v in vals[2].reshape(-1)) if vals[2] is not None else (tuple(range(len(starts))) if starts else None)
                    steps = tuple(int(v) for v in vals[3].reshape(-1)) if vals[3] is not None else ((1,) * len(starts) if starts else None)
                if axes is not None:
                    attrs["axes"] = tuple(_norm_axis(int(v), r) for v in axes)
                if starts is not None:
                    attrs["starts"] = tuple(int(v) for v in starts)
                if ends is not None:
                    attrs["ends"] = tuple(int(v) for v in ends)
                if steps is not None:
                    attrs["steps"] = tuple(int(v) for v in steps)
            else:
                attrs["axis"] = _norm_axis(int(a.get("axis", 0)), r)
        elif op in _BINARY:
            kind = G.BINARY if len(act_in) >= 2 else G.ELEMENTWISE
        elif op in _UNARY:
            kind = G.ELEMENTWISE
            attrs = {k: v for k, v in a.items() if k in ("alpha", "beta", "approximate", "ratio", "mode", "to")}
        else:
            kind = G.OPAQUE
            dom = f"{n.domain}::" if n.domain not in ("", "ai.onnx") else ""
            label = f"unknown op '{dom}{op}'"
            if op in ("Conv", "ConvTranspose"):
                label = f"op '{op}' with a computed (activation) weight"
            opaque[label].append(lname)
            attrs = {k: v for k, v in a.items() if isinstance(v, (int, float, str, tuple))}

        if kind in (G.ELEMENTWISE, G.BINARY) and const_in:
            attrs["const_inputs"] = len(const_in)
        in_el = self._elements(act_in[0]) if act_in else 0
        if kind not in G.DECISION_KINDS:
            in_el = sum(self._elements(t) for t in act_in)
        out_el = sum(self._elements(o) for o in outs)
        fields.setdefault("in_elements", in_el)
        fields.setdefault("out_elements", out_el)
        self._propagate_axes(n, kind, act_in, outs, attrs)
        return G.Layer(
            name=lname, op=op, kind=kind, inputs=tuple(act_in), outputs=outs,
            attrs=tuple(sorted((k, _hashable(v)) for k, v in attrs.items())), **fields,
        )

    def _elements(self, t: str) -> int:
        return prod(self.shape(t))

    def _conv(self, n, lname, a):
        x = self.shape(n.input[0], lname)
        y = self.shape(n.output[0], lname)
        w = self._wshape(n.input[1], lname)
        g = int(a.get("group", 1))
        k = tuple(w[2:])
        cin, cout = x[1], y[1]
        if n.op_type == "Conv":
            macs = x[0] * cout * prod(y[2:]) * (cin // g) * prod(k)
        else:  # each input pixel scatters a (Cout/g) x kernel patch
            macs = x[0] * cin * prod(x[2:]) * (cout // g) * prod(k)
        fields = dict(
            batch=x[0], d_in=cin, d_out=cout, in_spatial=tuple(x[2:]), out_spatial=tuple(y[2:]),
            kernel=k, groups=g, in_elements=prod(x), out_elements=prod(y),
            weight_elements=prod(w), macs=macs,
        )
        if len(n.input) > 2 and n.input[2]:
            fields["bias_elements"] = prod(self._wshape(n.input[2], lname))
        attrs = {k2: v for k2, v in a.items() if k2 in ("strides", "pads", "dilations", "auto_pad", "output_padding")}
        attrs["group"] = g
        attrs["weight"] = self._weight_source(n.input[1])
        return fields, attrs

    def _gemm(self, n, lname, a, act):
        op = n.op_type
        wpos = 1 if n.input[0] == act else 0
        wname = n.input[wpos]
        x = self.shape(act, lname)
        y = self.shape(n.output[0], lname)
        w = self._wshape(wname, lname)
        ba = self.axes.get(act, (0, None))[0]
        if op == "Gemm":
            trans_x = int(a.get("transA" if wpos == 1 else "transB", 0))
            trans_w = int(a.get("transB" if wpos == 1 else "transA", 0))
            if wpos == 1:
                k = x[0] if trans_x else x[1]
                rows = x[1] if trans_x else x[0]
                nout = w[0] if trans_w else w[1]
            else:  # weight on the left: columns of the activation are the rows
                k = x[1] if trans_x else x[0]
                rows = x[0] if trans_x else x[1]
                nout = w[1] if trans_w else w[0]
            batch, spatial = rows, ()
        else:
            if wpos == 1:
                k = x[-1]
                nout = w[-1]
                lead = x[:-1]
            else:  # W (.., M, K) x X (.., K, N): rows are X's columns
                k = x[-2] if len(x) >= 2 else x[0]
                nout = w[-2] if len(w) >= 2 else 1
                lead = x[:-2] + x[-1:] if len(x) >= 2 else ()
            if not lead:
                batch, spatial = 1, ()
            else:
                b = ba if ba is not None and ba < len(lead) else 0
                batch = lead[b]
                spatial = tuple(d for i, d in enumerate(lead) if i != b)
        fields = dict(
            batch=batch, d_in=k, d_out=nout, in_spatial=spatial, out_spatial=spatial,
            in_elements=prod(x), out_elements=prod(y), weight_elements=prod(w),
            macs=prod(y) * k,
        )
        if op == "Gemm" and len(n.input) > 2 and n.input[2]:
            fields["bias_elements"] = prod(self._wshape(n.input[2], lname))
        attrs = {"weight": self._weight_source(wname)}
        if op == "Gemm":
            attrs.update({k2: a[k2] for k2 in ("transA", "transB", "alpha", "beta") if k2 in a})
        if wpos == 0:
            attrs["weight_left"] = 1
        return fields, attrs

    def _matmul_act(self, n, lname, a):
        lhs = self.shape(n.input[0], lname)
        rhs = self.shape(n.input[1], lname)
        y = self.shape(n.output[0], lname)
        if n.op_type == "Gemm":
            lhs2 = lhs[::-1] if a.get("transA", 0) else lhs
            rhs2 = rhs[::-1] if a.get("transB", 0) else rhs
        else:
            lhs2 = lhs if len(lhs) >= 2 else (1,) + lhs
            rhs2 = rhs if len(rhs) >= 2 else rhs + (1,)
        m, k = lhs2[-2], lhs2[-1]
        nn = rhs2[-1]
        lead = tuple(y[:-2]) if len(y) >= 2 else ()
        ba, fa = self.axes.get(n.input[0], (0, None))
        r = len(lhs)
        if ba is not None and ba < r - 2:
            batch = lhs[ba]
        elif r <= 2:
            batch = lhs[0] if ba == 0 else 1
        else:
            batch = lhs[0]
        heads = lhs[fa] if fa is not None and fa < r - 2 and fa != ba else 1
        fields = dict(
            batch=batch, d_in=k, d_out=nn, in_spatial=(m,), out_spatial=(m,), heads=heads,
            in_elements=prod(lhs), out_elements=prod(y), macs=prod(lead) * m * k * nn,
        )
        attrs = {"lhs_shape": lhs, "rhs_shape": rhs}
        return fields, attrs

    def _embedding(self, n, lname, a):
        data = self._wshape(n.input[0], lname)
        idx = self.shape(n.input[1], lname)
        y = self.shape(n.output[0], lname)
        axis = _norm_axis(int(a.get("axis", 0)), len(data))
        ba = self.axes.get(n.input[1], (0, None))[0]
        if idx:
            b = ba if ba is not None and ba < len(idx) else 0
            batch = idx[b]
            spatial = tuple(d for i, d in enumerate(idx) if i != b)
        else:
            batch, spatial = 1, ()
        fields = dict(
            batch=batch, d_in=data[axis], d_out=prod(data) // data[axis], in_spatial=spatial,
            out_spatial=spatial, in_elements=prod(idx), out_elements=prod(y),
            weight_elements=prod(data), macs=0,
        )
        attrs = {"axis": axis, "weight": self._weight_source(n.input[0])}
        return fields, attrs

    # -- axis propagation -----------------------------------------------------------------------
    def _propagate_axes(self, n, kind, act_in, outs, attrs) -> None:
        op = n.op_type
        for o in outs:
            oshape = self._dims(o)
            r_out = len(oshape) if oshape is not None else 0
            ax: tuple[int | None, int | None]
            src = act_in[0] if act_in else None
            # pick the activation operand with the output's rank for elementwise ops
            if kind in (G.BINARY, G.ELEMENTWISE, G.CONCAT, G.OPAQUE) and len(act_in) > 1:
                # the operand with the output's rank that carries the most axis information
                # (e.g. Where(cond, x, y): x, not the boolean condition)
                same = [t for t in act_in if self._dims(t) is not None and len(self._dims(t)) == r_out]
                best = sorted(same, key=lambda t: -sum(v is not None for v in self.axes.get(t, (None, None))))
                if best:
                    src = best[0]
            sba, sfa = self.axes.get(src, (None, None)) if src else (None, None)
            sshape = tuple(self._dims(src) or ()) if src else ()
            r_in = len(sshape)
            if kind == G.CONV:
                ax = (0, 1)
            elif kind == G.GEMM:
                if op == "Gemm":
                    ax = (0, 1)
                else:
                    ax = (sba if sba is not None and sba < r_out - 1 else (0 if r_out > 1 else None), r_out - 1)
            elif kind == G.EMBEDDING:
                ax = (sba, r_out - 1)
            elif kind == G.MATMUL_ACT:
                fa = sfa if sfa is not None and sfa < r_in - 2 else None
                ax = (sba if sba is not None and sba < r_out else None, fa)
            elif kind == G.RESHAPE:
                if op == "Transpose":
                    perm = list(attrs["perm"])
                    ax = tuple(perm.index(v) if v is not None and v in perm else None for v in (sba, sfa))
                elif op in ("DepthToSpace", "SpaceToDepth"):
                    ax = (sba, sfa)
                else:
                    osh = tuple(oshape)
                    ax = (_map_axis_reshape(sba, sshape, osh), _map_axis_reshape(sfa, sshape, osh))
            elif kind == G.REDUCE and not attrs.get("keepdims", 1):
                red = set(attrs.get("axes", ()))

                def drop(v):
                    if v is None or v in red:
                        return None
                    return v - sum(1 for x in red if x < v)

                ax = (drop(sba), drop(sfa))
            elif kind == G.SPLIT and op in ("Gather",) and r_out != r_in:
                gax = attrs.get("axis", 0)
                extra = r_out - r_in  # indices rank - 1

                def move(v):
                    if v is None or v == gax:
                        return None
                    return v if v < gax else v + extra

                ax = (move(sba), move(sfa))
            else:
                shift = r_out - r_in
                ax = tuple(None if v is None or v + shift < 0 or v + shift >= r_out else v + shift
                           for v in (sba, sfa)) if shift >= 0 else (
                    (sba, sfa) if all(v is None or v < r_out for v in (sba, sfa)) else (None, None))
            src_atoms = self.atoms.get(src) if src else None
            if src and src_atoms is None:
                src_atoms = _default_atoms(sshape, sba, sfa)
            atoms = None
            osh = tuple(oshape) if oshape is not None else ()
            if src_atoms is not None and kind == G.RESHAPE and op == "Transpose":
                perm = list(attrs["perm"])
                if len(perm) == len(src_atoms):
                    atoms = [src_atoms[p] for p in perm]
            elif src_atoms is not None and kind == G.RESHAPE and op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
                atoms = _regroup(src_atoms, osh)
                if atoms is not None:
                    ax = _atoms_axes(atoms)
            elif src_atoms is not None and osh == sshape and ax == (sba, sfa):
                atoms = src_atoms
            self.atoms[o] = atoms if atoms is not None else _default_atoms(osh, ax[0], ax[1])
            self.axes[o] = (ax[0], ax[1])

    # -- bias folding ---------------------------------------------------------------------------
    def _fold_bias(self, g: nx.DiGraph, kept, names) -> None:
        """MatMul + Add(bias) (the usual export of a linear layer): record the bias on the MatMul."""
        for lname in list(g.nodes):
            lay = G.layer(g, lname)
            if lay.kind != G.GEMM or lay.op != "MatMul" or lay.bias_elements:
                continue
            succ = list(g.successors(lname))
            if len(succ) != 1 or len(lay.outputs) != 1:
                continue
            if len(self.consumers.get(lay.outputs[0], [])) != 1:
                continue
            nxt = G.layer(g, succ[0])
            if nxt.op != "Add" or nxt.kind != G.ELEMENTWISE:
                continue
            node = self.consumers[lay.outputs[0]][0][0]
            others = [t for t in node.input if t and t != lay.outputs[0]]
            if len(others) != 1:
                continue
            dims = self._dims(others[0])
            if not _known(dims) or prod(dims) != lay.d_out:
                continue
            attrs = dict(lay.attrs)
            attrs["bias"] = self._weight_source(others[0])
            attrs["bias_layer"] = succ[0]
            new = G.Layer(**{f: getattr(lay, f) for f in lay.__dataclass_fields__ if f not in ("bias_elements", "attrs")},
                          bias_elements=prod(dims), attrs=tuple(sorted(attrs.items())))
            g.nodes[lname]["layer"] = new


def _hashable(v: object) -> object:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v
