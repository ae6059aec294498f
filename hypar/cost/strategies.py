"""What each node may do at one level: its partition types and the tensor layouts they imply.

Layouts (one per level, DTensor vocabulary): ``S(b)`` rows = Shard(batch), ``S(f)`` cols =
Shard(feature/channel/head), ``R`` full = Replicate, ``P`` partial sums (only as a produced
error, reduced once per tensor). SPEC.md §2: a weighted layer's

    type I   (data)   : in S(b), out S(b), error in S(b), needs error out S(b); all-reduce dW
    type II  (model)  : in S(f), out R,    error in S(f), needs error out R;    all-reduce F_out
    type III (output) : in R,    out S(f), error in P,    needs error out S(f); (E_in reduced per tensor)

Grouped convolutions split groups instead (II: everything S(f), no reduction), attention MatMuls
split batch (I) or heads (II), embeddings take I/II/III with the id input never differentiable.
Non-weighted nodes (``full`` space only) take one layout for everything: S(b), S(f) or R.

A node's *axes* are the dims its choices split, with sizes; a tensor's view at a level scales
its element count by each mapped axis' share (see :class:`NodeModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar import graph as G
from hypar.graph import Layer, Tensor
from hypar.vocab import Layout

ROWS, COLS, FULL, PARTIAL = (Layout.ROWS.value, Layout.COLS.value, Layout.FULL.value, Layout.PARTIAL.value)

# Quantities a collective may move, evaluated on a node's view.
Q_WEIGHT, Q_OUT, Q_STATS_BN, Q_ROWS3, Q_ROWS4 = "weight", "out", "bn_stats", "rows3", "rows4"


@dataclass(frozen=True, slots=True)
class Strategy:
    """One choice of a node at one level."""

    label: str                          # "I" / "II" / "III" or a layout for non-weighted nodes
    split_axis: str | None              # node axis this choice splits (None: nothing split)
    in_layouts: tuple[str, ...]         # required forward layout per activation input slot
    out_layout: str                     # forward layout of the output as produced
    in_err_layouts: tuple[str, ...]     # layout of the error produced for each input slot
    out_err_layout: str                 # layout the node needs its output's error in
    intra: tuple[str, ...] = ()         # quantities all-reduced inside the node (Q_*)


@dataclass(frozen=True, slots=True)
class NodeModel:
    """A layer as the cost model sees it.

    ``axes``/``sizes``: splittable dims. ``in_maps[slot]`` / ``out_map``: which node axis maps to
    the tensor's batch and feature axis (None when unmapped: that tensor is not scaled by it).
    ``weight_axes``/``macs_axes``: axes whose share scales the weight and the MACs.
    ``products``: forward/backward/gradient matrix products this node computes per MAC count.
    """

    name: str
    layer: Layer
    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    in_tensors: tuple[Tensor | None, ...]
    in_maps: tuple[tuple[str | None, str | None], ...]
    out_tensor: Tensor | None
    out_map: tuple[str | None, str | None]
    weight_axes: tuple[str, ...]
    macs_axes: tuple[str, ...]
    strategies: tuple[Strategy, ...]

    def size(self, axis: str) -> int:
        return self.sizes[self.axes.index(axis)]

    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.strategies)

    def strategy(self, label: str) -> Strategy:
        for s in self.strategies:
            if s.label == label:
                return s
        raise KeyError(label)


def _ratio(node: NodeModel, dims: tuple[int, ...], axes: tuple[str | None, ...]) -> float:
    r = 1.0
    for a in axes:
        if a is not None:
            i = node.axes.index(a)
            r *= dims[i] / node.sizes[i] if node.sizes[i] else 0.0
    return r


def tensor_view(node: NodeModel, dims: tuple[int, ...], tensor: Tensor, amap: tuple[str | None, str | None],
                elements: int | None = None) -> tuple[int, int, int]:
    """(elements, batch size, feature size) of ``tensor`` as ``node`` sees it at view ``dims``.

    Batch/feature sizes are the node's view of the mapped axes (1 when unmapped: not splittable).
    """
    total = tensor.elements if elements is None else elements
    b_ax, f_ax = amap
    bs = dims[node.axes.index(b_ax)] if b_ax else 1
    fs = dims[node.axes.index(f_ax)] if f_ax else 1
    return round(total * _ratio(node, dims, amap)), bs, fs


def weight_view(node: NodeModel, dims: tuple[int, ...]) -> int:
    return round(node.layer.weight_elements * _ratio(node, dims, node.weight_axes))


def macs_view(node: NodeModel, dims: tuple[int, ...]) -> float:
    return node.layer.macs * _ratio(node, dims, node.macs_axes)


def _axis_size(t: Tensor | None, which: str) -> int | None:
    if t is None:
        return None
    ax = t.batch_axis if which == "b" else t.feature_axis
    return None if ax is None else t.shape[ax]


def _weighted_strategies(n_in: int) -> tuple[Strategy, ...]:
    return (
        Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS, (Q_WEIGHT,)),
        Strategy("II", "i", (COLS,) * n_in, FULL, (COLS,) * n_in, FULL, (Q_OUT,)),
        Strategy("III", "o", (FULL,) * n_in, COLS, (PARTIAL,) * n_in, COLS, ()),
    )


def _layout_strategies(node_axes: dict[str, int], ins: list[Tensor | None], out: Tensor | None,
                       kind: str, layer: Layer) -> tuple[tuple[Strategy, ...], tuple[tuple[str | None, str | None], ...]]:
    """Layouts a non-weighted node may take, with per-slot maps (broadcast slots need R)."""
    in_maps = []
    for t in ins:
        if kind == G.RESHAPE:
            # The importer keeps an axis through a reshape only where it maps (the split axis is
            # the outer part of a merged or split dim, e.g. 64 features -> 4 heads x 16).
            bm = "b" if "b" in node_axes and _axis_size(t, "b") is not None else None
            fm = "f" if "f" in node_axes and _axis_size(t, "f") is not None else None
        else:
            bm = "b" if "b" in node_axes and _axis_size(t, "b") == node_axes["b"] else None
            fm = "f" if "f" in node_axes and _axis_size(t, "f") == node_axes["f"] else None
        in_maps.append((bm, fm))
    out_t = out
    reduced_axes: set[str] = set()
    if kind == G.REDUCE and ins and ins[0] is not None:
        axes = layer.attr("axes")
        rank = len(ins[0].shape)
        axes = tuple(range(rank)) if axes is None else tuple(a % rank for a in axes)  # type: ignore[union-attr]
        if ins[0].batch_axis in axes:
            reduced_axes.add("b")
        if ins[0].feature_axis in axes:
            reduced_axes.add("f")
    strategies = [Strategy(FULL, None, (FULL,) * len(ins), FULL, (FULL,) * len(ins), FULL)]
    if kind == G.OPAQUE:
        return tuple(strategies), tuple(in_maps)
    for axis, layout in (("b", ROWS), ("f", COLS)):
        if axis not in node_axes or axis in reduced_axes or node_axes[axis] < 2:
            continue
        slot_layouts = tuple(layout if m[0 if axis == "b" else 1] else FULL for m in in_maps)
        if ins and all(sl == FULL for sl in slot_layouts):
            continue
        intra: tuple[str, ...] = ()
        if kind == G.BATCHNORM and axis == "b":
            intra = (Q_STATS_BN,)
        elif axis == "f" and out_t is not None and out_t.feature_axis is not None:
            norm_axis = layer.attr("axis", -1)
            rank = len(out_t.shape)
            if kind == G.SOFTMAX and isinstance(norm_axis, int) and norm_axis % rank == out_t.feature_axis:
                intra = (Q_ROWS3,)
            elif kind == G.FEATURENORM:
                if layer.op == "LayerNormalization":
                    covered = isinstance(norm_axis, int) and out_t.feature_axis >= norm_axis % rank
                else:
                    covered = True
                if covered:
                    intra = (Q_ROWS4,)
        strategies.append(Strategy(layout, axis, slot_layouts, layout, slot_layouts, layout, intra))
    return tuple(strategies), tuple(in_maps)


def node_model(g, name: str, space: str) -> NodeModel:
    """Build the :class:`NodeModel` of layer ``name`` for partition space ``space``.

    ``space``: "hypar" (types I, II), "accpar" (I, II, III) or "full" (I, II, III and layouts
    for non-weighted nodes).
    """
    layer: Layer = g.nodes[name]["layer"]
    ins: list[Tensor | None] = [None] * len(layer.inputs)
    for p, _, data in g.in_edges(name, data=True):
        for s in data["slots"]:
            if s < len(ins):
                ins[s] = data["tensor"]
    for t in g.graph.get("inputs", ()):
        if name in g.graph.get("input_consumers", {}).get(t.name, ()):
            for s, tname in enumerate(layer.inputs):
                if tname == t.name:
                    ins[s] = t
    out = _output_tensor(g, name)
    n_in = len(ins)
    kind = layer.kind
    B = max(layer.batch, 1)
    if kind in (G.CONV, G.GEMM) and layer.groups > 1:
        axes, sizes = ("b", "g"), (B, layer.groups)
        strategies = (
            Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS, (Q_WEIGHT,)),
            Strategy("II", "g", (COLS,) * n_in, COLS, (COLS,) * n_in, COLS, ()),
        )
        return NodeModel(name, layer, axes, sizes, tuple(ins), (("b", "g"),) * n_in, out, ("b", "g"),
                         ("g",), ("b", "g"), strategies)
    if kind in (G.CONV, G.GEMM):
        strategies = _weighted_strategies(n_in)
        if space == "hypar":
            strategies = strategies[:2]
        return NodeModel(name, layer, ("b", "i", "o"), (B, max(layer.d_in, 1), max(layer.d_out, 1)), tuple(ins),
                         (("b", "i"),) * n_in, out, ("b", "o"), ("i", "o"), ("b", "i", "o"), strategies)
    if kind == G.EMBEDDING:
        strategies = (
            Strategy("I", "b", (ROWS,) * n_in, ROWS, (FULL,) * n_in, ROWS, (Q_WEIGHT,)),
            Strategy("II", "i", (FULL,) * n_in, FULL, (FULL,) * n_in, FULL, (Q_OUT,)),
            Strategy("III", "o", (FULL,) * n_in, COLS, (FULL,) * n_in, COLS, ()),
        )
        if space == "hypar":
            strategies = strategies[:2]
        return NodeModel(name, layer, ("b", "i", "o"), (B, max(layer.d_in, 1), max(layer.d_out, 1)), tuple(ins),
                         (("b", None),) * n_in, out, ("b", "o"), ("i", "o"), ("b", "i", "o"), strategies)
    if kind == G.MATMUL_ACT:
        heads = max(layer.heads, 1)
        maps = tuple(("b", "h" if heads > 1 and _axis_size(t, "f") == heads else None) for t in ins)
        strategies = [Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS)]
        if heads > 1:
            strategies.append(Strategy("II", "h", tuple(COLS if m[1] else FULL for m in maps), COLS,
                                       tuple(COLS if m[1] else FULL for m in maps), COLS))
        return NodeModel(name, layer, ("b", "h"), (B, heads), tuple(ins), maps, out,
                         ("b", "h" if heads > 1 else None), (), ("b", "h"), tuple(strategies))
    # Non-weighted node: axes from its output tensor.
    node_axes: dict[str, int] = {}
    ref = out if out is not None else next((t for t in ins if t is not None), None)
    if ref is not None:
        if ref.batch_axis is not None:
            node_axes["b"] = ref.shape[ref.batch_axis]
        if ref.feature_axis is not None:
            node_axes["f"] = ref.shape[ref.feature_axis]
    strategies, in_maps = _layout_strategies(node_axes, ins, out, kind, layer)
    axes = tuple(node_axes)
    out_map = ("b" if "b" in node_axes else None, "f" if "f" in node_axes else None)
    return NodeModel(name, layer, axes, tuple(node_axes[a] for a in axes), tuple(ins), in_maps, out,
                     out_map, (), (), strategies)


def _output_tensor(g, name: str) -> Tensor | None:
    for _, _, data in g.out_edges(name, data=True):
        return data["tensor"]
    layer: Layer = g.nodes[name]["layer"]
    for t in g.graph.get("outputs", ()):
        if t.name in layer.outputs:
            return t
    if layer.out_elements and layer.outputs:
        return Tensor(layer.outputs[0], (layer.out_elements,), 0, None)
    return None


def quantity(node: NodeModel, dims: tuple[int, ...], q: str) -> int:
    """Elements all-reduced for quantity ``q`` at view ``dims`` (forward + backward combined)."""
    if q == Q_WEIGHT:
        return weight_view(node, dims)
    out = node.out_tensor
    if out is None:
        return 0
    elements, _, fs = tensor_view(node, dims, out, node.out_map,
                                  node.layer.out_elements or None)
    if q == Q_OUT:
        return elements
    rows = elements // max(fs, 1)
    if q == Q_STATS_BN:
        # mean + var forward, two sums backward, for the channels this group holds
        return 4 * (dims[node.axes.index("f")] if "f" in node.axes else 1)
    if q == Q_ROWS3:
        return 3 * rows                                          # softmax: max, sum forward; one dot backward
    if q == Q_ROWS4:
        return 4 * rows                                          # norm: mean, var forward; two sums backward
    raise KeyError(q)
