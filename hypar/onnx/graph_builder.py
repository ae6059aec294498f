"""Assembling the layer graph: one layer per kept ONNX node (unique names), edges for the
activations between them, graph inputs and outputs, MatMul + Add(bias) folded into the MatMul,
the units of the split axes (:mod:`hypar.onnx.units`), and the list of opaque layers to warn
about."""

from __future__ import annotations

import dataclasses

from collections import defaultdict
from dataclasses import dataclass, field
from math import prod

import networkx as nx
import onnx

from hypar import graph as G
from hypar.errors import ModelStructureError
from hypar.onnx.axes import AxisTracker, input_axes
from hypar.onnx.expand import announced
from hypar.onnx.index import ModelIndex
from hypar.onnx.inference import Shapes
from hypar.onnx.layer_context import LayerContext
from hypar.onnx.layers import build_layer, opaque_label
from hypar.onnx.ops import SHAPE_OPS
from hypar.onnx.precision import declare_widths
from hypar.onnx.units import assign_units


@dataclass
class GraphBuild:
    """Bookkeeping while the layer graph is assembled: the graph, the activation tensors by
    name, which layer produces each tensor, the graph inputs' consumer layers, and the opaque
    layers by warning label."""

    graph: nx.DiGraph
    tensors: dict[str, G.Tensor]
    producer_layer: dict[str, str] = field(default_factory=dict)
    input_consumers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    opaque: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def build_layer_graph(
    index: ModelIndex, shapes: Shapes, batch: int | None, name: str
) -> tuple[nx.DiGraph, list[str]]:
    """The layer graph of a shape-inferred model and the texts of its opaque-layer warnings.

    ``batch`` is the bound batch (None: the first input's dim 0). Raises ShapeError when a
    needed shape is unknown (the inputs are bound already, see :mod:`~hypar.onnx.binding`). The graph may have no weighted layer (see
    :func:`require_weighted_layer`).
    """
    kept = [(i, n) for i, n in index.nodes
            if n.op_type not in SHAPE_OPS and any(index.is_act(o) for o in n.output if o)]
    names = layer_names(kept)
    axes = AxisTracker(shapes.table)
    inputs = _graph_inputs(index, shapes, axes)
    bound_batch = batch if batch is not None else next((t.shape[0] for t in inputs if t.shape), 1)
    build = GraphBuild(G.new_graph(name, bound_batch), {t.name: t for t in inputs})
    ctx = LayerContext(index, shapes, axes)
    for (_, n), lname in zip(kept, names):
        _add_layer(build, ctx, n, lname)
    _add_edges(build, names, {vi.name for vi in index.act_inputs})
    g = build.graph
    fold_bias(g, index, shapes)
    # inputs that only feed shape computations (e.g. Shape(mask)) are not layer inputs
    g.graph["inputs"] = tuple(
        t for t in inputs if t.name in build.input_consumers or t.name in build.producer_layer)
    g.graph["outputs"] = tuple(
        build.tensors[o.name] for o in index.model.graph.output if o.name in build.tensors)
    g.graph["input_consumers"] = {t: tuple(v) for t, v in build.input_consumers.items()}
    assign_units(g)
    declare_widths(g, index, shapes.table)
    return g, [_opaque_warning(g, label, where, shapes.guessed) for label, where in build.opaque.items()]


def require_weighted_layer(g: nx.DiGraph, name: str) -> None:
    """Raise :class:`ModelStructureError` when layer graph ``g`` of model ``name`` has no
    weighted layer (nothing to partition)."""
    if not any(G.layer(g, n).weighted for n in g.nodes):
        raise ModelStructureError(
            f"model '{name}' has no weighted layer (Conv, Gemm, MatMul or Gather on a weight "
            "initializer); nothing to partition: check that the weights are stored as initializers"
        )


def _graph_inputs(index: ModelIndex, shapes: Shapes, axes: AxisTracker) -> list[G.Tensor]:
    """The used activation inputs as tensors; their axes are recorded in ``axes``."""
    inputs: list[G.Tensor] = []
    for vi in index.act_inputs:
        if vi.name not in index.consumers:
            continue
        shp = shapes.table.shape(vi.name)
        ba, fa = input_axes(shp, shapes.table.elem_type(vi.name))
        axes.set_input(vi.name, (ba, fa))
        inputs.append(G.Tensor(vi.name, shp, ba, fa))
    return inputs


def _add_layer(build: GraphBuild, ctx: LayerContext, n: onnx.NodeProto, lname: str) -> None:
    """Add node ``n``'s layer and record its output tensors (those of known shape)."""
    lay = build_layer(ctx, n, lname)
    if lay.kind == G.OPAQUE and not announced(n):       # (an unexpanded Attention was warned about)
        build.opaque[opaque_label(n)].append(lname)
    G.add_layer(build.graph, lay)
    for o in lay.outputs:
        build.producer_layer[o] = lname
        if o not in build.tensors and ctx.table.is_known(o):
            ba, fa = ctx.axes.get(o, (None, None))
            build.tensors[o] = G.Tensor(o, tuple(ctx.table.dims(o)), ba, fa)


def _add_edges(build: GraphBuild, names: list[str], graph_inputs: set[str]) -> None:
    """An edge per (producer layer, consumer layer, slot); graph inputs' consumers recorded."""
    for lname in names:
        lay = G.layer(build.graph, lname)
        for slot, t in enumerate(lay.inputs):
            if t in build.producer_layer:
                G.add_edge(build.graph, build.producer_layer[t], lname, build.tensors[t], slot)
            elif t in graph_inputs and lname not in build.input_consumers[t]:
                build.input_consumers[t].append(lname)


def _opaque_warning(g: nx.DiGraph, label: str, where: list[str], guessed: set[str]) -> str:
    """The warning text for the opaque layers ``where`` sharing ``label``."""
    more = f" and {len(where) - 1} more" if len(where) > 1 else ""
    guess = any(G.layer(g, w).outputs and G.layer(g, w).outputs[0] in guessed for w in where)
    guess_txt = "; its output shape is unknown and assumed equal to its input" if guess else ""
    return (f"{label} at node '{where[0]}'{more} kept as an opaque layer "
            f"(it needs the full tensor){guess_txt}")


def layer_names(kept: list[tuple[int, onnx.NodeProto]]) -> list[str]:
    """Unique layer names for ``(ONNX position, node)`` pairs: the node's name, else
    ``<op>_<position>``; clashes get ``_2``, ``_3``, ... (explicit names win)."""
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


def fold_bias(g: nx.DiGraph, index: ModelIndex, shapes: Shapes) -> None:
    """MatMul + Add(bias) (the usual export of a linear layer): record the bias on the MatMul
    (``bias_elements``, attrs ``bias`` = its source, ``bias_layer`` = the Add layer); a MatMul
    whose module is unknown takes the Add's (its weight is often unnamed, its bias ``q.bias``)."""
    for lname in list(g.nodes):
        lay = G.layer(g, lname)
        bias = _bias_of(g, lay, index, shapes)
        if bias is None:
            continue
        t, dims = bias
        attrs = dict(lay.attrs)
        attrs["bias"] = index.weight_source(t)
        attrs["bias_layer"] = next(iter(g.successors(lname)))
        module = lay.module or G.layer(g, attrs["bias_layer"]).module
        g.nodes[lname]["layer"] = dataclasses.replace(lay, bias_elements=prod(dims), attrs=tuple(sorted(attrs.items())),
                                                      module=module)
        _drop_weight(g, attrs["bias_layer"])


def _drop_weight(g: nx.DiGraph, lname: str) -> None:
    """Layer ``lname`` no longer holds the parameter it read (the MatMul holds it as its bias)."""
    lay = G.layer(g, lname)
    if lay.weight_elements:
        attrs = tuple((k, x) for k, x in lay.attrs if k != "weight")
        g.nodes[lname]["layer"] = dataclasses.replace(lay, weight_elements=0, attrs=attrs)


def _bias_of(g: nx.DiGraph, lay: G.Layer, index: ModelIndex, shapes: Shapes) -> tuple[str, list[int]] | None:
    """``(bias tensor, its dims)`` when ``lay`` is a bias-less MatMul whose only consumer is an
    elementwise Add of a constant with d_out elements, else None."""
    if lay.kind != G.GEMM or lay.op != "MatMul" or lay.bias_elements:
        return None
    succ = list(g.successors(lay.name))
    if len(succ) != 1 or len(lay.outputs) != 1:
        return None
    if len(index.consumers.get(lay.outputs[0], [])) != 1:
        return None
    nxt = G.layer(g, succ[0])
    if nxt.op != "Add" or nxt.kind != G.ELEMENTWISE:
        return None
    node = index.consumers[lay.outputs[0]][0][0]
    others = [t for t in node.input if t and t != lay.outputs[0]]
    if len(others) != 1:
        return None
    dims = shapes.table.dims(others[0])
    if not shapes.table.is_known(others[0]) or prod(dims) != lay.d_out:
        return None
    return others[0], dims
