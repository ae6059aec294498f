"""What each node may do at one level: its partition types and the tensor layouts they imply.

Layouts (one per level, DTensor vocabulary): ``S(b)`` rows = Shard(batch), ``S(f)`` cols =
Shard(feature/channel/head), ``R`` full = Replicate, ``P`` partial sums (only as a produced
error, reduced once per tensor). SPEC.md §2: a weighted layer's

    type I   (data)   : in S(b), out S(b), error in S(b), needs error out S(b); all-reduce dW
    type II  (model)  : in S(f), out R,    error in S(f), needs error out R;    all-reduce F_out
    type III (output) : in R,    out S(f), error in P,    needs error out S(f); (E_in reduced per tensor)

Grouped convolutions split groups instead (II: everything S(f), no reduction), attention MatMuls
split batch (I) or heads (II), embeddings take I/II/III with the id input never differentiable
(with constant ids, I replicates the lookup and its gradient).
Non-weighted nodes (``full`` space only) take one layout for everything: S(b), S(f) or R -- an
input broadcast along the split axis stays R (its error, when needed, a partial sum all-reduced
inside the node: ``operand_err<slot>``), and a mean or sum over the feature axis splits its input
by features (S(f)) with its output R (the partial results all-reduced: ``reduced``), so a
decomposed LayerNorm pays for its statistics what LayerNormalization pays (4 x rows).

A node's *axes* are the dims its choices split, with sizes; a tensor's view at a level scales
its element count by each mapped axis' share (see :class:`NodeModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from hypar import graph as G
from hypar.graph import Layer, Tensor
from hypar.vocab import Layout

ROWS, COLS, FULL, PARTIAL = (Layout.ROWS.value, Layout.COLS.value, Layout.FULL.value, Layout.PARTIAL.value)

# Quantities a collective may move, evaluated on a node's view.
Q_WEIGHT, Q_OUT, Q_STATS_BN, Q_ROWS3, Q_ROWS4 = "weight", "out", "bn_stats", "rows3", "rows4"
Q_ROWS2 = "rows2"                # an RMS norm's statistics: one sum per row forward, one backward
Q_REDUCED = "reduced"            # a reduction's output, partial over its split reduced axis (forward)
Q_OPERAND_ERR = "operand_err"    # + input slot: a broadcast operand's error, partial over a split axis (backward)
# Reductions whose partial results over the parts of an axis add up.
LINEAR_REDUCTIONS = ("ReduceMean", "ReduceSum")
# Norms dividing by the root mean square over the normalised axes, no mean subtracted (one
# statistic per row each way: Q_ROWS2); the Skip form normalises the sum of its two inputs.
RMS_NORM_OPS = ("RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")


def operand_error(slot: int) -> str:
    """The quantity all-reduced for the error of input ``slot`` of an elementwise op of two
    activations, when the node splits an axis along which that operand is broadcast (whole on
    every PE: each PE's error is a partial sum over its share of the axis)."""
    return f"{Q_OPERAND_ERR}{slot}"


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
    ``units``: per axis, its unit (:mod:`hypar.shards` "Units", read from the tensor that gives
    the axis: a weighted layer's rows from its input's features, its columns from its output's);
    empty means 1 everywhere.
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
    units: tuple[int, ...] = ()

    def size(self, axis: str) -> int:
        """The size of node axis ``axis`` (ValueError if the node has no such axis)."""
        return self.sizes[self.axes.index(axis)]

    def unit(self, axis: str) -> int:
        """The unit of node axis ``axis`` (ValueError if the node has no such axis)."""
        i = self.axes.index(axis)
        return self.units[i] if self.units else 1

    def labels(self) -> tuple[str, ...]:
        """The labels of the node's strategies, in order."""
        return tuple(s.label for s in self.strategies)

    def strategy(self, label: str) -> Strategy:
        """The strategy labelled ``label`` (KeyError if the node has none)."""
        for s in self.strategies:
            if s.label == label:
                return s
        raise KeyError(label)


def _ratio(node: NodeModel, dims: tuple[int, ...], axes: tuple[str | None, ...]) -> float:
    """The share of the node's full sizes that view ``dims`` holds, over ``axes`` (None: unscaled)."""
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


def tensor_units(node: NodeModel, amap: tuple[str | None, str | None]) -> tuple[int, int]:
    """(batch unit, feature unit) of a tensor mapped to node axes ``amap`` (1 where unmapped): the
    units of the grid :func:`tensor_view` gives its sizes."""
    return tuple(node.unit(a) if a else 1 for a in amap)


def tensor_grid(t: Tensor) -> tuple[int, int, int, int, int]:
    """(elements, batch size, feature size, batch unit, feature unit) of tensor ``t`` whole (size
    and unit 1 for an axis it lacks)."""
    bs, fs = _axis_size(t, "b") or 1, _axis_size(t, "f") or 1
    bu = t.batch_unit if t.batch_axis is not None else 1
    fu = t.feature_unit if t.feature_axis is not None else 1
    return t.elements, bs, fs, bu, fu


def axis_unit(t: Tensor | None, which: str, n: int) -> int:
    """The unit of a node axis of ``n`` indices read from tensor ``t``'s batch ("b") or feature
    ("f") axis: the tensor's unit when the sizes agree, else the unit holding as many units
    as the tensor's axis when that divides (a reshape's other side), else 1."""
    size = _axis_size(t, which)
    if not size or not n:
        return 1
    units = size // t.unit(which)
    return n // units if n % units == 0 else 1


def weight_view(node: NodeModel, dims: tuple[int, ...]) -> int:
    """Weight elements of ``node`` held at view ``dims`` (rounded)."""
    return round(node.layer.weight_elements * _ratio(node, dims, node.weight_axes))


def macs_view(node: NodeModel, dims: tuple[int, ...]) -> float:
    """Forward multiply-accumulates of ``node`` at view ``dims``."""
    return node.layer.macs * _ratio(node, dims, node.macs_axes)


def _axis_size(t: Tensor | None, which: str) -> int | None:
    """Size of tensor ``t``'s batch ("b") or feature ("f") axis; None if it has none."""
    if t is None:
        return None
    ax = t.batch_axis if which == "b" else t.feature_axis
    return None if ax is None else t.shape[ax]


def _weighted_strategies(n_in: int) -> tuple[Strategy, ...]:
    """Types I, II, III of a weighted layer with ``n_in`` activation inputs (module docstring)."""
    return (
        Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS, (Q_WEIGHT,)),
        Strategy("II", "i", (COLS,) * n_in, FULL, (COLS,) * n_in, FULL, (Q_OUT,)),
        Strategy("III", "o", (FULL,) * n_in, COLS, (PARTIAL,) * n_in, COLS, ()),
    )


# Ops whose output at a channel reads neighbouring channels (a window across the features): a
# channel split would need a halo exchange that is neither priced nor simulated, so they are not
# offered a feature split (they take the batch split or whole tensors).
_NEIGHBOUR_OPS = frozenset({"LRN"})


def _layout_strategies(node_axes: dict[str, int], ins: list[Tensor | None], out: Tensor | None,
                       kind: str, layer: Layer, err_slots: tuple[bool, ...]
                       ) -> tuple[tuple[Strategy, ...], tuple[tuple[str | None, str | None], ...]]:
    """Layouts a non-weighted node may take, with per-slot maps (broadcast slots need R; under a
    split, the error of a broadcast operand of an elementwise op, when needed (``err_slots``), is
    all-reduced inside the node)."""
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
    strategies = [Strategy(FULL, None, (FULL,) * len(ins), FULL, (FULL,) * len(ins), FULL)]
    if kind == G.OPAQUE:
        return tuple(strategies), tuple(in_maps)
    for axis, layout in (("b", ROWS), ("f", COLS)):
        if axis not in node_axes or node_axes[axis] < 2 or (axis == "f" and layer.op in _NEIGHBOUR_OPS):
            continue
        slot_layouts = tuple(layout if m[0 if axis == "b" else 1] else FULL for m in in_maps)
        if ins and all(sl == FULL for sl in slot_layouts):
            continue
        if axis == "b":
            intra: tuple[str, ...] = (Q_STATS_BN,) if kind == G.BATCHNORM else ()
        elif cuts_rotation(layer, out):
            continue
        else:
            intra = _feature_split_intra(kind, layer, out)
        if kind == G.BINARY:
            intra += tuple(operand_error(k) for k, sl in enumerate(slot_layouts)
                           if sl == FULL and ins[k] is not None and err_slots[k])
        strategies.append(Strategy(layout, axis, slot_layouts, layout, slot_layouts, layout, intra))
    return tuple(strategies), tuple(in_maps)


def cuts_rotation(layer: Layer, out: Tensor | None) -> bool:
    """Could a feature split of a RotaryEmbedding cut inside a head? Its rotation pairs elements
    of one head (``rotary_head`` elements of the last axis), so a split is local only when the
    feature axis is not the last one (4-D: the heads) or its unit holds whole heads; a rotary
    whose head size is unknown may not split its last axis at all."""
    if layer.op != "RotaryEmbedding" or out is None or out.feature_axis != len(out.shape) - 1:
        return False
    head = layer.attr("rotary_head")
    return not head or out.feature_unit % int(head) != 0


def _reduced_axes(layer: Layer, x: Tensor) -> set[str]:
    """Node axes ("b", "f") a reduction of input ``x`` reduces over (all when it records none)."""
    axes = layer.attr("axes")
    rank = len(x.shape)
    axes = tuple(range(rank)) if axes is None else tuple(a % rank for a in axes)  # type: ignore[union-attr]
    return {a for a, ax in (("b", x.batch_axis), ("f", x.feature_axis)) if ax in axes}


def _feature_split_intra(kind: str, layer: Layer, out: Tensor | None) -> tuple[str, ...]:
    """Quantities all-reduced when a non-weighted node splits its feature axis: per-row
    statistics of a Softmax or a norm whose normalised axes include the features (an RMS norm
    :data:`Q_ROWS2`, any other :data:`Q_ROWS4`)."""
    if out is None or out.feature_axis is None:
        return ()
    norm_axis = layer.attr("axis", -1)
    rank = len(out.shape)
    if kind == G.SOFTMAX and isinstance(norm_axis, int) and norm_axis % rank == out.feature_axis:
        return (Q_ROWS3,)
    if kind == G.FEATURENORM:
        if layer.op == "LayerNormalization" or layer.op in RMS_NORM_OPS:
            covered = isinstance(norm_axis, int) and out.feature_axis >= norm_axis % rank
        else:
            covered = True
        if covered:
            return (Q_ROWS2,) if layer.op in RMS_NORM_OPS else (Q_ROWS4,)
    return ()


def node_model(g, name: str, space: str, needs_error: dict[str, bool] | None = None) -> NodeModel:
    """Build the :class:`NodeModel` of layer ``name`` of graph ``g`` for partition space ``space``.

    ``space``: "hypar" (types I, II), "accpar" (I, II, III) or "full" (I, II, III and layouts
    for non-weighted nodes). Decision kinds are built by :data:`DECISION_BUILDERS`, every other
    kind takes layouts (:func:`_layout_node`; a reduction :func:`_reduce_node`). ``needs_error``:
    per layer name, is its output's error needed in the backward pass (found from ``g`` when None).
    """
    layer: Layer = g.nodes[name]["layer"]
    ins, out = _input_tensors(g, name, layer), _output_tensor(g, name)
    build = DECISION_BUILDERS.get(layer.kind)
    if build is not None:
        return build(name, layer, ins, out, space)
    err_slots = _error_slots(g, name, layer, needs_error)
    return (_reduce_node if layer.kind == G.REDUCE else _layout_node)(name, layer, ins, out, err_slots)


def _error_slots(g, name: str, layer: Layer, needs_error: dict[str, bool] | None) -> tuple[bool, ...]:
    """Per input slot of layer ``name``: is the error of the tensor it reads needed (its producer
    or an ancestor holds weights; a graph input's never is)."""
    producer: dict[int, str] = {}
    for p, _, data in g.in_edges(name, data=True):
        for s in data["slots"]:
            producer[s] = p

    def needed(p: str) -> bool:
        if needs_error is not None:
            return needs_error[p]
        return any(g.nodes[a]["layer"].weighted for a in nx.ancestors(g, p) | {p})

    return tuple(s in producer and needed(producer[s]) for s in range(len(layer.inputs)))


def _input_tensors(g, name: str, layer: Layer) -> list[Tensor | None]:
    """The tensor in each input slot of layer ``name``: from its in-edges or the graph inputs it
    consumes (None for a slot fed by neither, e.g. an initializer)."""
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
    return ins


def _matrix_node(name: str, layer: Layer, ins: list[Tensor | None], out: Tensor | None, space: str) -> NodeModel:
    """Conv / Gemm: types I, II, III over (batch, in, out) ("hypar": I, II); grouped ones split
    the groups instead (I over batch, II over groups, no reduction)."""
    n_in = len(ins)
    B = max(layer.batch, 1)
    x = next((t for t in ins if t is not None), None)
    if layer.groups > 1:
        strategies = (
            Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS, (Q_WEIGHT,)),
            Strategy("II", "g", (COLS,) * n_in, COLS, (COLS,) * n_in, COLS, ()),
        )
        return NodeModel(name, layer, ("b", "g"), (B, layer.groups), tuple(ins), (("b", "g"),) * n_in, out,
                         ("b", "g"), ("g",), ("b", "g"), strategies, (axis_unit(x, "b", B), 1))
    strategies = _weighted_strategies(n_in)
    if space == "hypar":
        strategies = strategies[:2]
    sizes = (B, max(layer.d_in, 1), max(layer.d_out, 1))
    units = (axis_unit(x, "b", B), axis_unit(x, "f", sizes[1]), axis_unit(out, "f", sizes[2]))
    return NodeModel(name, layer, ("b", "i", "o"), sizes, tuple(ins),
                     (("b", "i"),) * n_in, out, ("b", "o"), ("i", "o"), ("b", "i", "o"), strategies, units)


def _embedding_node(name: str, layer: Layer, ins: list[Tensor | None], out: Tensor | None, space: str) -> NodeModel:
    """Embedding lookup: types I, II, III ("hypar": I, II); the id input never takes an error.
    With constant indices (no activation input: position rows, a relative-position bias) there
    is no batch to split: type I replicates the lookup on every PE (output R). Its needed error
    is R, complete on every PE (whoever broadcasts the rows over a split batch all-reduces their
    error: ``operand_err<slot>``), so every PE computes the whole table gradient: nothing to
    all-reduce."""
    n_in = len(ins)
    if n_in:
        data_parallel = Strategy("I", "b", (ROWS,) * n_in, ROWS, (FULL,) * n_in, ROWS, (Q_WEIGHT,))
    else:
        data_parallel = Strategy("I", None, (), FULL, (), FULL, ())
    strategies = (
        data_parallel,
        Strategy("II", "i", (FULL,) * n_in, FULL, (FULL,) * n_in, FULL, (Q_OUT,)),
        Strategy("III", "o", (FULL,) * n_in, COLS, (FULL,) * n_in, COLS, ()),
    )
    if space == "hypar":
        strategies = strategies[:2]
    sizes = (max(layer.batch, 1), max(layer.d_in, 1), max(layer.d_out, 1))
    units = (axis_unit(ins[0] if ins else None, "b", sizes[0]), 1, axis_unit(out, "f", sizes[2]))
    return NodeModel(name, layer, ("b", "i", "o"), sizes, tuple(ins), (("b", None),) * n_in, out, ("b", "o"),
                     ("i", "o"), ("b", "i", "o"), strategies, units)


def _matmul_act_node(name: str, layer: Layer, ins: list[Tensor | None], out: Tensor | None,
                     space: str) -> NodeModel:
    """Activation x activation MatMul (attention): I splits the batch, II the heads (when > 1)."""
    n_in = len(ins)
    heads = max(layer.heads, 1)
    maps = tuple(("b", "h" if heads > 1 and _axis_size(t, "f") == heads else None) for t in ins)
    strategies = [Strategy("I", "b", (ROWS,) * n_in, ROWS, (ROWS,) * n_in, ROWS)]
    if heads > 1:
        strategies.append(Strategy("II", "h", tuple(COLS if m[1] else FULL for m in maps), COLS,
                                   tuple(COLS if m[1] else FULL for m in maps), COLS))
    sizes = (max(layer.batch, 1), heads)
    x = ins[0] if ins else None
    units = (axis_unit(x, "b", sizes[0]), axis_unit(x, "f", heads) if heads > 1 else 1)
    return NodeModel(name, layer, ("b", "h"), sizes, tuple(ins), maps, out,
                     ("b", "h" if heads > 1 else None), (), ("b", "h"), tuple(strategies), units)


def _layout_node(name: str, layer: Layer, ins: list[Tensor | None], out: Tensor | None,
                 err_slots: tuple[bool, ...]) -> NodeModel:
    """A non-weighted node: axes from its output tensor (else its first input), one layout each
    (``err_slots``: per input slot, is its error needed)."""
    node_axes: dict[str, int] = {}
    ref = out if out is not None else next((t for t in ins if t is not None), None)
    if ref is not None:
        if ref.batch_axis is not None:
            node_axes["b"] = ref.shape[ref.batch_axis]
        if ref.feature_axis is not None:
            node_axes["f"] = ref.shape[ref.feature_axis]
    strategies, in_maps = _layout_strategies(node_axes, ins, out, layer.kind, layer, err_slots)
    axes = tuple(node_axes)
    out_map = ("b" if "b" in node_axes else None, "f" if "f" in node_axes else None)
    return NodeModel(name, layer, axes, tuple(node_axes[a] for a in axes), tuple(ins), in_maps, out,
                     out_map, (), (), strategies, tuple(axis_unit(ref, a, node_axes[a]) for a in axes))


def _feature_reduction(layer: Layer, x: Tensor | None, out: Tensor | None) -> bool:
    """A mean or sum of one activation over exactly its (non-batch) feature axis, dims kept."""
    return (layer.op in LINEAR_REDUCTIONS and len(layer.inputs) == 1 and x is not None and out is not None
            and x.feature_axis is not None and x.feature_axis != x.batch_axis
            and tuple(layer.attr("axes") or ()) == (x.feature_axis,) and layer.attr("keepdims", 1) == 1
            and len(out.shape) == len(x.shape) and x.shape[x.feature_axis] >= 2)


def _reduce_node(name: str, layer: Layer, ins: list[Tensor | None], out: Tensor | None,
                 err_slots: tuple[bool, ...]) -> NodeModel:
    """A reduction (ReduceMean, ArgMax, ...): its axes are its input's (so the input's signature
    is the one its other consumers see); it splits an axis it does not reduce (S(b) or S(f), one
    layout for input and output, no messages), and a mean or sum over the feature axis
    (:func:`_feature_reduction`) also its input's features (S(f)): every PE reduces its share, the
    partial results are all-reduced (:data:`Q_REDUCED`) and the output -- size 1 along the
    features -- is whole (R) on every PE; its error goes back to each PE's share with no messages."""
    x = ins[0] if ins else None
    if x is None:
        return _layout_node(name, layer, ins, out, err_slots)
    reduced = _reduced_axes(layer, x)
    node_axes = {a: x.shape[ax] for a, ax in (("b", x.batch_axis), ("f", x.feature_axis)) if ax is not None}
    n = len(ins)
    rest = (FULL,) * (n - 1)
    strategies = [Strategy(FULL, None, (FULL,) * n, FULL, (FULL,) * n, FULL)]
    for axis, layout in (("b", ROWS), ("f", COLS)):
        if node_axes.get(axis, 0) < 2:
            continue
        if axis not in reduced:
            strategies.append(Strategy(layout, axis, (layout,) + rest, layout, (layout,) + rest, layout))
        elif axis == "f" and _feature_reduction(layer, x, out):
            strategies.append(Strategy(COLS, "f", (COLS,), FULL, (COLS,), FULL, (Q_REDUCED,)))
    in_map = tuple(a if a in node_axes else None for a in ("b", "f"))
    out_map = tuple(a if a in node_axes and a not in reduced else None for a in ("b", "f"))
    axes = tuple(node_axes)
    return NodeModel(name, layer, axes, tuple(node_axes[a] for a in axes), tuple(ins),
                     (in_map,) + ((None, None),) * (n - 1), out, out_map, (), (), tuple(strategies),
                     tuple(axis_unit(x, a, node_axes[a]) for a in axes))


# Layer kind -> builder of its NodeModel, for every decision kind (graph.DECISION_KINDS).
DECISION_BUILDERS = {
    G.CONV: _matrix_node,
    G.GEMM: _matrix_node,
    G.EMBEDDING: _embedding_node,
    G.MATMUL_ACT: _matmul_act_node,
}


def _output_tensor(g, name: str) -> Tensor | None:
    """The tensor layer ``name`` produces: on its first out-edge, else among the graph outputs,
    else a flat one of ``out_elements`` (None when it has none)."""
    for _, _, data in g.out_edges(name, data=True):
        return data["tensor"]
    layer: Layer = g.nodes[name]["layer"]
    for t in g.graph.get("outputs", ()):
        if t.name in layer.outputs:
            return t
    if layer.out_elements and layer.outputs:
        return Tensor(layer.outputs[0], (layer.out_elements,), 0, None)
    return None


def stats_elements(node: NodeModel) -> int | None:
    """The whole-tensor elements per-row statistics are taken over (None: the output tensor's own):
    the layer's output elements, but of one output when it has several -- a skip norm's second
    output, x + skip, has the normalised output's shape and takes no statistics."""
    return None if len(node.layer.outputs) > 1 else (node.layer.out_elements or None)


def quantity(node: NodeModel, dims: tuple[int, ...], q: str) -> int:
    """Elements all-reduced for quantity ``q`` at view ``dims`` (forward + backward combined)."""
    if q == Q_WEIGHT:
        return weight_view(node, dims)
    if q.startswith(Q_OPERAND_ERR):
        slot = int(q[len(Q_OPERAND_ERR):])
        return tensor_view(node, dims, node.in_tensors[slot], node.in_maps[slot])[0]
    out = node.out_tensor
    if out is None:
        return 0
    elements, _, fs = tensor_view(node, dims, out, node.out_map,
                                  node.layer.out_elements or None)
    if q in (Q_OUT, Q_REDUCED):
        return elements
    elements = tensor_view(node, dims, out, node.out_map, stats_elements(node))[0]
    rows = elements // max(fs, 1)
    if q == Q_STATS_BN:
        # mean + var forward, two sums backward, for the channels this group holds
        return 4 * (dims[node.axes.index("f")] if "f" in node.axes else 1)
    if q == Q_ROWS3:
        return 3 * rows                                          # softmax: max, sum forward; one dot backward
    if q == Q_ROWS4:
        return 4 * rows                                          # norm: mean, var forward; two sums backward
    if q == Q_ROWS2:
        return 2 * rows                                          # RMS norm: sum of squares; one sum backward
    raise KeyError(q)
