"""The layer graph: what the ONNX importer produces and the cost model and solvers consume.

A layer graph is a ``networkx.DiGraph`` whose nodes are layer names (str) with attribute
``layer`` (a :class:`Layer`), and whose edges ``(producer, consumer)`` carry attribute
``tensor`` (a :class:`Tensor`, the activation passed) and ``slots`` (tuple of the consumer's
activation-input positions that receive it). Graph-level attributes: ``name`` (model name),
``batch`` (bound batch size), ``inputs`` (tuple of graph-input :class:`Tensor`), ``outputs``
(tuple of graph-output :class:`Tensor`) and ``input_consumers`` (dict tensor name -> tuple of
consumer layer names).

Contracts:
- Node insertion order is a topological order, ties broken by ONNX node order; use
  :func:`topo_layers` for a deterministic order everywhere.
- Only activations are edges; weights are folded into their layer (``weight_elements``).
- Shape-computation subgraphs (Shape, Constant, Range, ...) never appear.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from math import prod

import networkx as nx

# Layer kinds. Decision layers are the weighted ops plus activation x activation MatMul.
CONV = "conv"                # Conv / ConvTranspose (groups recorded)
GEMM = "gemm"                # Gemm, or MatMul with one weight operand
EMBEDDING = "embedding"      # Gather on an initializer (lookup table)
MATMUL_ACT = "matmul_act"    # activation x activation MatMul (attention scores / context)
# Non-weighted kinds (layout carriers).
ELEMENTWISE = "elementwise"  # unary ops and ops with a constant operand (Relu, Gelu, Dropout, bias Add, ...)
BINARY = "binary"            # two or more activation inputs, elementwise (residual Add, Mul, ...)
BATCHNORM = "batchnorm"      # BatchNormalization (statistics over batch + spatial)
FEATURENORM = "featurenorm"  # LayerNormalization / GroupNorm / InstanceNorm / LRN (stats over features)
SOFTMAX = "softmax"          # Softmax / LogSoftmax over ``axis``
REDUCE = "reduce"            # ReduceMean etc. over ``axes``
POOL = "pool"                # MaxPool / AveragePool / GlobalAveragePool
RESHAPE = "reshape"          # Reshape / Flatten / Squeeze / Unsqueeze / Transpose
CONCAT = "concat"            # Concat
SPLIT = "split"              # Split / Slice
OPAQUE = "opaque"            # unknown op: needs the full tensor

WEIGHTED_KINDS = frozenset({CONV, GEMM, EMBEDDING})
DECISION_KINDS = frozenset({CONV, GEMM, EMBEDDING, MATMUL_ACT})


@dataclass(frozen=True, slots=True)
class Tensor:
    """An activation tensor with its bound shape.

    ``batch_axis`` is the axis holding the batch (type I splits it; None when the tensor has
    none); ``feature_axis`` is the channel / hidden / head axis (types II/III split it; None when
    there is none, e.g. token ids). ``batch_unit`` / ``feature_unit``: how many consecutive
    indices of that axis the placement rule keeps together (:mod:`hypar.shards` "Units"; a
    divisor of the axis' size, 1 unless :mod:`hypar.onnx.units` says otherwise, e.g. 16 on the
    features of a projection later reshaped into heads of 16).

    Precision (docs/precision.md): ``elem_bytes`` is the bytes per element the model stores the
    activation in when that is narrower than fp32 (1 for int8 / uint8, 2 for fp16 / bf16), and
    ``error_bytes`` the bytes per element of its error (gradient) when the model says so (an fp16
    / bf16 activation's error has its type, as autograd keeps it); None means the array's
    training precision (``PEArray.dtype_bytes``). :func:`element_bytes` resolves them.
    """

    name: str
    shape: tuple[int, ...]
    batch_axis: int | None = 0
    feature_axis: int | None = None
    batch_unit: int = 1
    feature_unit: int = 1
    elem_bytes: int | None = None
    error_bytes: int | None = None

    @property
    def elements(self) -> int:
        """Element count A(.) of the whole tensor."""
        return prod(self.shape)

    def unit(self, which: str) -> int:
        """The unit of the batch ("b") or feature ("f") axis (1 when the tensor has no such axis)."""
        return self.batch_unit if which == "b" else self.feature_unit


@dataclass(frozen=True, slots=True)
class Layer:
    """One node of the layer graph.

    For decision layers (``kind`` in DECISION_KINDS) the matrix view of SPEC.md §1 holds:
    ``batch`` = B, ``d_in`` = Di (input channels / features; for MATMUL_ACT the contraction
    size), ``d_out`` = Do (output channels / features), ``in_spatial`` / ``out_spatial`` the
    spatial (or sequence) sizes multiplying the rows, ``kernel`` the kernel sizes, ``groups``
    the conv groups (``heads`` for MATMUL_ACT: the batch-like head count). Element counts:
    ``in_elements`` = A(F_in), ``out_elements`` = A(F_out), ``weight_elements`` = A(W) (0 when
    unweighted), ``bias_elements`` the bias. ``macs`` = forward multiply-accumulates.
    Non-weighted layers leave the matrix fields at 0 / () and keep ``attrs`` (e.g. ``axis``,
    ``axes``, ``perm``) for their layout rules. ``module`` is the model's own name for where the
    layer comes from, dotted like torch's ``named_modules()`` (``layers.0.self_attn.o_proj``;
    :mod:`hypar.onnx.modules` reads it), None when the export does not say; ``name`` stays the
    ONNX node's name. ``weight_bytes`` / ``weight_grad_bytes``: bytes per element of the weight
    and of its gradient when the model stores them narrower than fp32 (an int8 weight through a
    DequantizeLinear: 1 and None, its gradient being the trained float's), None = the array's
    training precision (docs/precision.md).
    """

    name: str
    op: str
    kind: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    batch: int = 0
    d_in: int = 0
    d_out: int = 0
    in_spatial: tuple[int, ...] = ()
    out_spatial: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    groups: int = 1
    heads: int = 1
    in_elements: int = 0
    out_elements: int = 0
    weight_elements: int = 0
    bias_elements: int = 0
    macs: int = 0
    attrs: tuple[tuple[str, object], ...] = field(default=())
    module: str | None = None
    weight_bytes: int | None = None
    weight_grad_bytes: int | None = None

    @property
    def weighted(self) -> bool:
        """True for a layer with a trainable weight (conv, gemm, embedding)."""
        return self.kind in WEIGHTED_KINDS

    @property
    def decision(self) -> bool:
        """True for a layer whose partition type the search decides (weighted or attention MatMul)."""
        return self.kind in DECISION_KINDS

    @property
    def params(self) -> int:
        """Trainable parameter count (weight + bias)."""
        return self.weight_elements + self.bias_elements

    def attr(self, key: str, default: object = None) -> object:
        """The ONNX attribute ``key`` of the layer's node, ``default`` when absent."""
        for k, v in self.attrs:
            if k == key:
                return v
        return default


def element_bytes(declared: int | None, training_bytes: int) -> int:
    """Bytes per element of a tensor whose model-declared width is ``declared`` (a Tensor's
    ``elem_bytes`` / ``error_bytes``, a Layer's ``weight_bytes`` / ``weight_grad_bytes``) on an
    array training in ``training_bytes`` per element: the declared width, else the training one."""
    return training_bytes if declared is None else declared


def without_precision(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of layer graph ``g`` with every declared width dropped (every tensor, error, weight
    and gradient in the array's training precision): what ``--dtype`` plans on."""
    def plain(t: Tensor) -> Tensor:
        return dataclasses.replace(t, elem_bytes=None, error_bytes=None)

    out = g.copy()
    for n in out.nodes:
        out.nodes[n]["layer"] = dataclasses.replace(layer(out, n), weight_bytes=None, weight_grad_bytes=None)
    for _p, _c, data in out.edges(data=True):
        data["tensor"] = plain(data["tensor"])
    out.graph["inputs"] = tuple(plain(t) for t in out.graph.get("inputs", ()))
    out.graph["outputs"] = tuple(plain(t) for t in out.graph.get("outputs", ()))
    return out


def weight_count(g: nx.DiGraph) -> int:
    """Weight elements of the model: every layer's, a weight that several layers read (their
    ``weight`` attribute names it) once."""
    seen: set[object] = set()
    total = 0
    for n in g.nodes:
        lay = layer(g, n)
        w = lay.attr("weight")
        if w is None or w not in seen:
            total += lay.weight_elements
            seen.add(w)
    return total


def parameter_count(g: nx.DiGraph) -> int:
    """Trainable parameters of the model: :func:`weight_count` plus every layer's bias elements."""
    return weight_count(g) + sum(layer(g, n).bias_elements for n in g.nodes)


def new_graph(name: str, batch: int) -> nx.DiGraph:
    """An empty layer graph with its graph-level attributes set."""
    g = nx.DiGraph(name=name, batch=batch, inputs=(), outputs=(), input_consumers={})
    return g


def add_layer(g: nx.DiGraph, layer: Layer) -> None:
    """Add a layer node; names must be unique."""
    if layer.name in g:
        raise ValueError(f"duplicate layer name {layer.name!r}")
    g.add_node(layer.name, layer=layer)


def add_edge(g: nx.DiGraph, producer: str, consumer: str, tensor: Tensor, slot: int) -> None:
    """Connect ``producer``'s output ``tensor`` to input position ``slot`` of ``consumer``."""
    if g.has_edge(producer, consumer):
        data = g.edges[producer, consumer]
        data["slots"] = tuple(sorted(set(data["slots"]) | {slot}))
    else:
        g.add_edge(producer, consumer, tensor=tensor, slots=(slot,))


def topo_layers(g: nx.DiGraph) -> list[str]:
    """Layer names in a deterministic topological order (ties by insertion order)."""
    order = {n: i for i, n in enumerate(g.nodes)}
    return list(nx.lexicographical_topological_sort(g, key=lambda n: order[n]))


def layer(g: nx.DiGraph, name: str) -> Layer:
    """The :class:`Layer` of node ``name`` (KeyError when ``g`` has no such node)."""
    return g.nodes[name]["layer"]


def decision_layers(g: nx.DiGraph) -> list[str]:
    """Decision-layer names in deterministic topological order."""
    return [n for n in topo_layers(g) if layer(g, n).decision]


def weighted_layers(g: nx.DiGraph) -> list[str]:
    """Weighted-layer names in deterministic topological order."""
    return [n for n in topo_layers(g) if layer(g, n).weighted]
