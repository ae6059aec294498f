"""The structure of an ONNX graph, shapes aside: nodes in topological order, who produces and who
consumes each tensor, which graph inputs are activations, and the class of every tensor
(activation, parameter or shape-derived; a Gather of a trainable table yields an activation
whatever its indices are)."""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from math import prod

import onnx

from hypar.errors import ModelLoadError
from hypar.onnx.ops import PARAM_SLOTS, SHAPE_OPS, WEIGHT_PASS
from hypar.onnx.protos import FLOAT_TYPES, dims_of_type

# Tensor classes.
ACT = "act"      # an activation: depends on an activation graph input
PARAM = "param"  # a parameter or constant (initializer, Constant, weight-only path)
META = "meta"    # derived from a shape (Shape, Size and what is computed from them)

_MAX_WEIGHT_PASS_DEPTH = 32  # weight-only ops followed back to a weight's source
# Initializer names exporters generate for constants they fold or create (dynamo's ``val_12`` and
# ``unsqueeze_1``, TorchScript's ``onnx::Mul_7`` and ``/blk/Constant_output_0``, onnxruntime's
# ``ortshared_...``, tf2onnx's ``const_fold_opt__12``, renumbered tensors such as ``r12``): not a
# parameter a user trains.
_GENERATED_NAME = re.compile(
    r"^([a-zA-Z]\d+|val_\d+|_val_\d+|[a-z]+(_[a-z]+)*_\d+|onnx::.*|/.*|.*_output_\d+|ortshared_.*|const(ant)?_.*|Constant.*|\d+)$")
_SHAPE_ONLY_PASS = ("Expand", "Tile")  # a trained tensor broadcast (a cls token expanded to the batch)


def topo_nodes(g: onnx.GraphProto) -> list[tuple[int, onnx.NodeProto]]:
    """``(ONNX position, node)`` in topological order (stable: ties by ONNX order).

    Raises :class:`ModelLoadError` when the graph has a cycle."""
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
    order = _kahn_order(deps, users)
    if len(order) != len(nodes):
        raise ModelLoadError("the ONNX graph has a cycle; re-export it")
    return [nodes[i] for i in order]


def _kahn_order(deps: dict[int, set[int]], users: dict[int, list[int]]) -> list[int]:
    """Kahn's algorithm, smallest ready index first (cyclic nodes are left out)."""
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
    return order


class ModelIndex:
    """Lookup tables over one model's graph, built once (no shapes, no weight data read).

    Attributes
    ----------
    model
        The model as loaded (not modified).
    opset
        Version of the default ONNX domain (13 when the model does not import it).
    initializers
        Initializer TensorProto by name.
    nodes
        ``(ONNX position, node)`` in topological order.
    producer
        Tensor name -> ``(ONNX position, node)`` producing it.
    consumers
        Tensor name -> ``(node, input position)`` for every use, in topological order.
    act_inputs
        Graph inputs that carry activations (not initializers, not only parameter slots).
    graph_outputs
        Names of the graph outputs.
    tensor_class
        Tensor name -> :data:`ACT`, :data:`PARAM` or :data:`META`.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.initializers = {t.name: t for t in g.initializer}
        self.nodes = topo_nodes(g)
        self.producer: dict[str, tuple[int, onnx.NodeProto]] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for i, n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = (i, n)
            for s, t in enumerate(n.input):
                if t:
                    self.consumers[t].append((n, s))
        self.consumers = dict(self.consumers)
        self.act_inputs = [vi for vi in g.input if self._is_activation_input(vi)]
        self.graph_outputs = {o.name for o in g.output}
        self.tensor_class = self._classify()

    def _is_activation_input(self, vi: onnx.ValueInfoProto) -> bool:
        """A graph input is a parameter when it is an initializer or only feeds parameter slots."""
        if vi.name in self.initializers:
            return False
        uses = self.consumers.get(vi.name, [])
        if uses and all(s >= PARAM_SLOTS.get(n.op_type, 99) for n, s in uses):
            return False
        return True

    def _classify(self) -> dict[str, str]:
        """The class of every tensor, propagated from the graph inputs in topological order."""
        cls: dict[str, str] = {}
        act_names = {vi.name for vi in self.act_inputs}
        for vi in self.model.graph.input:
            cls[vi.name] = ACT if vi.name in act_names else PARAM
        for t in self.initializers:
            cls[t] = PARAM
        for _, n in self.nodes:
            ins = [cls.get(t, PARAM) for t in n.input if t]
            if n.op_type in SHAPE_OPS:
                c = META
            elif n.op_type == "Constant":
                c = PARAM
            elif ACT in ins or (n.op_type == "Gather" and self.is_table(n.input[0], cls)):
                c = ACT
            elif META in ins:
                c = META
            else:
                c = PARAM
            for o in n.output:
                if o:
                    cls[o] = c
        return cls

    def is_table(self, t: str, cls: dict[str, str] | None = None) -> bool:
        """True when ``t`` is a trainable table: a float parameter of rank >= 2 (an initializer
        or a parameter graph input, followed back through weight-only ops) or a ConstantOfShape
        weight. A Gather reading one is a layer whatever its indices are (``cls``: the classes
        known so far, default :attr:`tensor_class`)."""
        if (cls if cls is not None else self.tensor_class).get(t, PARAM) != PARAM:
            return False
        src = self.weight_source(t)
        if src not in self.initializers and src in self.producer:
            n = self.producer[src][1]
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            return n.op_type == "ConstantOfShape" and (value is None or value.data_type in FLOAT_TYPES)
        stored = self._stored(src)
        return stored is not None and stored[0] in FLOAT_TYPES and len(stored[1]) >= 2

    def stored(self, src: str) -> tuple[int, tuple] | None:
        """(element type, dims) of ``src`` as the model stores it (see :meth:`_stored`)."""
        return self._stored(src)

    def _stored(self, src: str) -> tuple[int, tuple] | None:
        """(element type, dims) of ``src`` as the model stores it: an initializer, or a graph
        input with a known rank (its dims may be symbolic); None for anything else."""
        if src in self.initializers:
            init = self.initializers[src]
            return init.data_type, tuple(init.dims)
        vi = next((vi for vi in self.model.graph.input if vi.name == src), None)
        info = dims_of_type(vi.type) if vi is not None else None
        return None if info is None or info[1] is None else (info[0], tuple(info[1]))

    def trained_elements(self, t: str) -> int:
        """Parameters behind tensor ``t`` read by an elementwise op or a Concat: the element count
        of the float initializer (or parameter graph input) it comes from -- through weight-only
        ops and broadcasts -- when that tensor has more than one element and a name a user gave it
        (a learned position table, a norm scale applied by Mul, a cls token); 0 for constants and
        exporter-generated names (:data:`_GENERATED_NAME`)."""
        if self.tensor_class.get(t, PARAM) != PARAM:
            return 0
        src = self.weight_source(t)
        while src in self.producer and self.producer[src][1].op_type in _SHAPE_ONLY_PASS:
            src = self.weight_source(self.producer[src][1].input[0])
        if _GENERATED_NAME.match(src):
            return 0
        stored = self._stored(src)
        if stored is None or stored[0] not in FLOAT_TYPES or not all(isinstance(d, int) for d in stored[1]):
            return 0
        n = prod(stored[1])
        return n if n > 1 else 0

    def is_act(self, t: str) -> bool:
        """True when tensor ``t`` is an activation."""
        return self.tensor_class.get(t) == ACT

    def weight_source(self, t: str) -> str:
        """The tensor a weight comes from: ``t`` followed back through weight-only ops
        (Transpose, Cast, Reshape, ...) to its initializer, ConstantOfShape or graph input."""
        seen = 0
        while t in self.producer and seen < _MAX_WEIGHT_PASS_DEPTH:
            _, n = self.producer[t]
            if n.op_type in WEIGHT_PASS and n.input:
                t = n.input[0]
                seen += 1
                continue
            break
        return t
