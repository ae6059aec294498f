"""What a layer builder reads: one ONNX node with its inputs sorted into activations and
constants (:class:`NodeView`), and the model's tables behind one small facade
(:class:`LayerContext`: shapes, constant values, tracked axes, weight sources)."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import onnx

from hypar.onnx.axes import Axes, AxisTracker
from hypar.onnx.index import ModelIndex
from hypar.onnx.inference import Shapes
from hypar.onnx.ops import index_inputs
from hypar.onnx.protos import node_attrs

Fields = dict[str, object]  # keyword arguments of hypar.graph.Layer (batch, d_in, macs, ...)
Attrs = dict[str, object]   # Layer.attrs before sorting


@dataclass(frozen=True)
class NodeView:
    """One ONNX node about to become layer ``name``.

    ``attrs`` are its ONNX attributes; ``act_in`` its activation inputs and ``const_in`` its
    other inputs, in ONNX order -- an index input read beside the data (a rotary embedding's
    position ids, :data:`~hypar.onnx.ops.INDEX_INPUTS`) is neither; ``outputs`` the activation
    outputs the layer graph keeps."""

    node: onnx.NodeProto
    name: str
    attrs: dict[str, object]
    act_in: tuple[str, ...]
    const_in: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, n: onnx.NodeProto, name: str, index: ModelIndex) -> NodeView:
        """The view of node ``n`` named ``name``: an output is kept when it is used, a graph
        output, or the node's first output."""
        outs = tuple(o for o in n.output if o and index.is_act(o)
                     and (o in index.consumers or o in index.graph_outputs or o == n.output[0]))
        ins = [t for k, t in enumerate(n.input) if t and k not in index_inputs(n)]
        return cls(
            node=n, name=name, attrs=node_attrs(n),
            act_in=tuple(t for t in ins if index.is_act(t)),
            const_in=tuple(t for t in ins if not index.is_act(t)),
            outputs=outs,
        )

    @property
    def op(self) -> str:
        """The ONNX op type."""
        return self.node.op_type

    def input(self, pos: int) -> str:
        """Input at position ``pos``, '' when absent or omitted."""
        return self.node.input[pos] if len(self.node.input) > pos else ""


class LayerContext:
    """The model tables a layer builder reads, behind small lookups named by what they return."""

    def __init__(self, index: ModelIndex, shapes: Shapes, axes: AxisTracker) -> None:
        self.index = index
        self.table = shapes.table
        self.constants = shapes.constants
        self.axes = axes

    @property
    def opset(self) -> int:
        """Version of the default ONNX domain."""
        return self.index.opset

    def is_act(self, t: str) -> bool:
        """True when ``t`` is an activation."""
        return self.index.is_act(t)

    def shape(self, t: str, layer: str) -> tuple[int, ...]:
        """Known shape of activation ``t`` (raises ShapeError naming ``layer``)."""
        return self.table.shape(t, layer)

    def weight_shape(self, t: str, layer: str) -> tuple[int, ...]:
        """Known shape of weight ``t`` (raises ShapeError naming ``layer``)."""
        return self.table.weight_shape(t, layer)

    def weight_elements(self, t: str, layer: str) -> int:
        """Element count of weight ``t``."""
        return prod(self.weight_shape(t, layer))

    def optional_weight(self, v: NodeView, pos: int, fields: Fields, key: str) -> None:
        """Set ``fields[key]`` to the element count of input ``pos`` when the node has it."""
        t = v.input(pos)
        if t:
            fields[key] = self.weight_elements(t, v.name)

    def ints(self, t: str) -> tuple[int, ...] | None:
        """Value of small constant ``t`` as flat ints, None when unknown."""
        return self.constants.ints(t)

    def scalar(self, t: str) -> float | None:
        """Value of constant ``t`` when it holds exactly one number, else None."""
        v = self.constants.value(t)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def axes_operand(self, v: NodeView) -> tuple[int, ...] | None:
        """The ``axes`` attribute, else the value of input 1 (opset >= 13), else None."""
        axes = v.attrs.get("axes")
        if axes is None and v.input(1):
            axes = self.ints(v.input(1))
        return axes

    def axes_of(self, t: str, default: Axes) -> Axes:
        """Tracked (batch, feature) axes of ``t``, ``default`` when not tracked."""
        return self.axes.get(t, default)

    def weight_source(self, t: str) -> str:
        """The initializer (or other source) weight ``t`` comes from."""
        return self.index.weight_source(t)


def pick(attrs: dict[str, object], keys: tuple[str, ...]) -> Attrs:
    """The entries of ``attrs`` whose key is in ``keys``."""
    return {k: v for k, v in attrs.items() if k in keys}
