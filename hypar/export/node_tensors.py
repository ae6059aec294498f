"""Which tensors of one ONNX node a plan splits, and along which axis at every level: the
:class:`~hypar.export.layouts.Placement` of each.

For a plan node with types ``t_0 .. t_{H-1}`` (one per level, top first), level h uses the
node's strategy ``t_h`` (:mod:`hypar.cost.strategies`):

- **activations** (every activation input, every output of known shape): the strategy's input
  layout per slot, its output layout; ``S(b)`` splits the tensor's batch axis, ``S(f)`` its
  feature axis (channels, hidden features or heads), ``R`` nothing. A type-II output is written
  ``R``: its partial sums are all-reduced inside the layer (the format has no partial state; the
  sharding formalism's default for a split reduction is the reduced result on every device).
- **the weight** of a Conv / ConvTranspose, Gemm, MatMul or embedding Gather: type I replicates
  it, type II splits its input-feature axis (Di), type III its output-feature axis (Do), a
  grouped conv's type II whole groups. Axes: Conv ``[Do, Di/G, k..]``, ConvTranspose
  ``[Di, Do/G, k..]``, Gemm by ``transA`` / ``transB`` and the side the weight is on, MatMul
  ``[.., Di, Do]`` (``[.., Do, Di]`` with the weight on the left; written as negative axes),
  embedding table ``[V, D]`` (the gathered axis is Di).
- **constants broadcast against the output**: a Conv bias follows the output channels; a Gemm
  bias and a constant operand of an elementwise broadcasting op (:data:`BROADCAST_OPS`: a
  folded MatMul's bias ``Add``, a position table ``Add``, a scale ``Mul``) are split where a
  split output axis lines up with an axis of the same size under numpy broadcasting.

Other constant operands (norm scales, BatchNorm statistics, shape inputs) are not annotated:
hypar prices nothing for them; a runtime reads them whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar import graph as G
from hypar.cost import CostModel
from hypar.cost.strategies import COLS, ROWS, NodeModel, Strategy
from hypar.errors import PlanError
from hypar.export.layouts import Placement, TensorAxis
from hypar.onnx.sharding import OnnxNode

# Ops whose operands broadcast numpy-style (the sharding formalism's n-ary elementwise group).
BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "And", "Or",
                           "Xor", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Mod", "PRelu"})


@dataclass(frozen=True)
class GraphTensors:
    """What placements read besides the cost model: every activation tensor of the layer graph
    by name (its shape, batch and feature axes and units) and every constant's dims by name."""

    activations: dict[str, G.Tensor]
    constants: dict[str, tuple[int, ...]]

    @staticmethod
    def of(g, constants: dict[str, tuple[int, ...]]) -> "GraphTensors":
        """The tensors of layer graph ``g`` (edges, graph inputs and outputs) and ``constants``."""
        acts = {t.name: t for t in g.graph.get("inputs", ())}
        acts.update({data["tensor"].name: data["tensor"] for _, _, data in g.edges(data=True)})
        acts.update({t.name: t for t in g.graph.get("outputs", ())})
        return GraphTensors(acts, constants)


def node_placements(model: CostModel, i: int, types: tuple, onnx_node: OnnxNode | None,
                    tensors: GraphTensors) -> list[Placement]:
    """The placements of problem node ``i`` under ``types`` (module docstring), one per tensor
    name (a tensor read in two slots keeps its first slot's). ``onnx_node`` is the node that
    holds the layer's weight and constants (None: activations only). PlanError naming the
    layer when its weight has a form whose split axis cannot be written."""
    node = model.nodes[i]
    lay = node.layer
    strategies = [node.strategy(t) for t in types]
    out: dict[str, Placement] = {}
    for k, name in enumerate(lay.inputs):
        t = node.in_tensors[k] if k < len(node.in_tensors) and node.in_tensors[k] is not None else None
        t = t or tensors.activations.get(name)
        if t is not None and name not in out:
            out[name] = Placement(name, tuple(_act_axis(t, s.in_layouts[k]) for s in strategies))
    for name in lay.outputs:
        t = tensors.activations.get(name)
        if t is not None and name not in out:
            out[name] = Placement(name, tuple(_act_axis(t, s.out_layout) for s in strategies))
    if onnx_node is not None:
        extra = _weight_placements(node, strategies, onnx_node, tensors) if lay.weighted else []
        if lay.op in BROADCAST_OPS or lay.op in ("Conv", "ConvTranspose", "Gemm"):
            extra += _constant_placements(node, strategies, onnx_node, tensors, out)
        for p in extra:
            out.setdefault(p.tensor, p)
    return list(out.values())


def _act_axis(t: G.Tensor, layout: str) -> TensorAxis | None:
    """The axis of activation ``t`` that ``layout`` splits (None for R, or an axis it lacks)."""
    if layout == ROWS and t.batch_axis is not None:
        return TensorAxis(t.batch_axis, t.shape[t.batch_axis], t.batch_unit)
    if layout == COLS and t.feature_axis is not None:
        return TensorAxis(t.feature_axis, t.shape[t.feature_axis], t.feature_unit)
    return None


def _weight_axes(node: NodeModel, onnx_node: OnnxNode, tensors: GraphTensors) -> tuple[str, dict[str, TensorAxis]]:
    """The weight's tensor name and, per node axis a type splits ("i", "o", "g"), its axis."""
    lay = node.layer
    d_in, d_out = node.size("i") if "i" in node.axes else lay.d_in, node.size("o") if "o" in node.axes else lay.d_out
    units = {a: node.unit(a) for a in ("i", "o") if a in node.axes}
    if lay.kind == G.CONV:
        w = onnx_node.inputs[1]
        di, do = (1, 0) if lay.op == "Conv" else (0, 1)
        if lay.groups > 1:
            size = lay.d_out if lay.op == "Conv" else lay.d_in
            return w, {"g": TensorAxis(0, size, size // lay.groups)}
        return w, {"i": TensorAxis(di, d_in, units.get("i", 1)), "o": TensorAxis(do, d_out, units.get("o", 1))}
    if lay.kind == G.GEMM:
        wpos = 0 if lay.attr("weight_left") else 1
        w = onnx_node.inputs[wpos]
        if lay.op == "Gemm":
            # B [Di, Do] (transB: [Do, Di]); a weight on the left is A [Do, Di] (transA: [Di, Do])
            trans = bool(lay.attr("transB" if wpos == 1 else "transA", 0))
            di, do = (1, 0) if trans == (wpos == 1) else (0, 1)
        else:
            di, do = (-2, -1) if wpos == 1 else (-1, -2)
            if len(tensors.constants.get(w, (0, 0))) < 2:
                di, do = -1, None
        axes = {"i": TensorAxis(di, d_in, units.get("i", 1))}
        if do is not None:
            axes["o"] = TensorAxis(do, d_out, units.get("o", 1))
        return w, axes
    w = onnx_node.inputs[0]                                            # embedding: Gather(table, ids)
    gathered = int(lay.attr("axis", 0) or 0)
    axes = {"i": TensorAxis(gathered, lay.d_in, 1)}
    if len(tensors.constants.get(w, ())) == 2:
        axes["o"] = TensorAxis(1 - gathered, d_out, units.get("o", 1))
    return w, axes


def _weight_placements(node: NodeModel, strategies: list[Strategy], onnx_node: OnnxNode,
                       tensors: GraphTensors) -> list[Placement]:
    """The weight's placement: each level splits the weight axis its strategy's split axis names."""
    w, axes = _weight_axes(node, onnx_node, tensors)
    levels = []
    for h, s in enumerate(strategies):
        if s.split_axis in ("i", "o", "g") and s.split_axis not in axes:
            raise PlanError(f"layer {node.name!r}: type {s.label} at level {h} splits the weight {w!r} along an "
                            "axis the ONNX sharding cannot name (a weight of rank 1, or an embedding table whose "
                            "rank is not 2 or is unknown); give this layer type I at that level")
        levels.append(axes.get(s.split_axis) if s.split_axis in ("i", "o", "g") else None)
    return [Placement(w, tuple(levels))]


def _constant_placements(node: NodeModel, strategies: list[Strategy], onnx_node: OnnxNode,
                         tensors: GraphTensors, done: dict[str, Placement]) -> list[Placement]:
    """Constants broadcast against the output (module docstring): a conv bias along the output
    channels, any other by numpy broadcasting against the first output."""
    lay = node.layer
    out_name = lay.outputs[0] if lay.outputs else None
    if out_name not in done:
        return []
    out_t, out_p = tensors.activations[out_name], done[out_name]
    wanted = set(onnx_node.inputs[2:3]) if lay.op in ("Conv", "ConvTranspose", "Gemm") else set(onnx_node.inputs)
    found = []
    for name in onnx_node.inputs:
        dims = tensors.constants.get(name)
        if not name or name in done or name not in wanted or dims is None:
            continue
        levels = []
        for ta in out_p.levels:
            levels.append(_aligned(ta, dims, out_t, conv_channels=lay.kind == G.CONV))
        found.append(Placement(name, tuple(levels)))
    return found


def _aligned(ta: TensorAxis | None, dims: tuple[int, ...], out: G.Tensor, conv_channels: bool) -> TensorAxis | None:
    """The constant's axis lined up with the output's split axis ``ta`` (None when the constant
    is broadcast along it): a conv bias ``[C]`` lines up with the channels; any other constant
    by numpy's right-aligned broadcasting, when its dim there equals the output's."""
    if ta is None or not dims:
        return None
    if conv_channels:
        return TensorAxis(0, dims[0], ta.unit) if ta.axis == 1 and dims[0] == ta.size else None
    at = ta.axis - (len(out.shape) - len(dims))
    if at < 0 or dims[at] != ta.size or ta.size == 1:
        return None
    return TensorAxis(at, ta.size, ta.unit)
