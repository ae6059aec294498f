"""ONNX ops the importer reads as the ops they are made of: the opset-23 ``Attention`` op here,
com.microsoft's ``MultiHeadAttention`` and ``GroupQueryAttention`` in :mod:`hypar.onnx.expand_ort`.

A fused attention node is replaced, before anything else reads the model, by the pattern its
spec gives (built by :mod:`hypar.onnx.attention_ops`): Q and K each multiplied by sqrt(scale), K
transposed (last two axes), ``MatMul``, ``Softmax`` over the last axis, ``MatMul`` with V -- the
same layer kinds a decomposed scaled_dot_product_attention export gives (two activation x
activation MatMuls split by batch or heads, a softmax between), so the search chooses their
layouts and the simulator runs them. The context MatMul keeps the node's name; the others are
named ``<node>/q_scale``, ``/k_scale``, ``/k_transpose``, ``/scores``, ``/softmax`` (``scale``
defaults to 1/sqrt(head size), as the specs say); each keeps the node's ``metadata_props`` (the
module it came from, see :mod:`hypar.onnx.modules`). Inputs an expansion no longer reads (GQA's
sequence lengths) are dropped with the nodes that only computed them.

For ``Attention`` only the form a plain scaled_dot_product_attention export writes is expanded:
4-D Q, K, V (batch, heads, sequence, head size) with equal head counts, and no attn_mask,
past_key / past_value, is_causal, softcap or present / qk_matmul outputs. Any other form (of any
expanded op) stays one opaque layer (it needs the full tensor), with a warning naming the node,
what it has and what would work; the layer builder then adds no second warning for it
(:func:`announced`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from hypar.onnx import expand_ort
from hypar.onnx.attention_ops import Emitter, Names, scaled_dot_product
from hypar.onnx.batch import skeleton
from hypar.onnx.index import ModelIndex
from hypar.onnx.constants import ConstantEvaluator
from hypar.onnx.inference import Shapes, guess_shapes, run_onnx_inference
from hypar.onnx.protos import node_attrs
from hypar.onnx.shapes import ShapeTable

_STANDARD = ("", "ai.onnx")
_EXTRA_INPUTS = {3: "an attn_mask input", 4: "a past_key input", 5: "a past_value input"}
_EXTRA_OUTPUTS = {1: "a present_key output", 2: "a present_value output", 3: "a qk_matmul_output output"}
_WORKS = ("hypar reads an Attention op as its two attention MatMuls and a Softmax only for 4-D Q, K, V "
          "with equal head counts and no attn_mask, past_key/past_value, is_causal, softcap or extra outputs; "
          "export with opset 22 or lower to get the attention as MatMul and Softmax ops hypar reads")


def _refusal(n: onnx.NodeProto, shapes: ShapeTable) -> str | None:
    """What Attention node ``n`` has that :func:`_expansion` does not express, or None."""
    a = node_attrs(n)
    extra = [what for pos, what in _EXTRA_INPUTS.items() if len(n.input) > pos and n.input[pos]]
    extra += [what for pos, what in _EXTRA_OUTPUTS.items() if len(n.output) > pos and n.output[pos]]
    if int(a.get("is_causal", 0)):
        extra.append("is_causal=1")
    if float(a.get("softcap", 0.0)):
        extra.append(f"softcap={a['softcap']}")
    if "q_num_heads" in a or "kv_num_heads" in a:
        extra.append("3-D inputs (q_num_heads / kv_num_heads)")
    if extra:
        return ", ".join(extra)
    dims = [shapes.dims(t) for t in n.input[:3]]
    if any(d is None or len(d) != 4 for d in dims):
        return "Q, K, V of ranks " + "/".join("unknown" if d is None else str(len(d)) for d in dims) + " (not 4-D)"
    if not (dims[0][1] == dims[1][1] == dims[2][1]) or dims[0][1] is None:
        return f"K, V heads {dims[1][1]}/{dims[2][1]} for Q's {dims[0][1]} (grouped- or multi-query attention)"
    if "scale" not in a and not isinstance(dims[0][3], int):
        return "no scale and a head size that is not a known number"
    return None


def _expansion(e: Emitter, shapes: ShapeTable) -> None:
    """The ops of Attention node ``e.node`` (module docstring)."""
    n = e.node
    a = node_attrs(n)
    scale = float(a["scale"]) if "scale" in a else 1.0 / math.sqrt(shapes.dims(n.input[0])[3])
    scaled_dot_product(e, tuple(n.input[:3]), n.output[0], scale, shapes.elem_type(n.input[0]) or TensorProto.FLOAT)


@dataclass(frozen=True)
class Expander:
    """How one fused op is expanded: ``label`` names it in warnings; ``refusal(node, shapes)``
    says what a node has that ``expansion(emitter, shapes)`` does not express (None: nothing);
    ``works`` says what would work instead; ``dropped`` are the input positions the expansion
    does not read (their producers go when nothing else reads them)."""

    label: str
    refusal: Callable[[onnx.NodeProto, ShapeTable], str | None]
    expansion: Callable[[Emitter, ShapeTable], None]
    works: str
    dropped: tuple[int, ...] = ()


EXPANDERS = {
    ("Attention", ""): Expander("Attention", _refusal, _expansion, _WORKS),
    ("MultiHeadAttention", expand_ort.DOMAIN): Expander(
        f"{expand_ort.DOMAIN}::MultiHeadAttention", expand_ort.mha_refusal, expand_ort.mha_expansion,
        expand_ort.MHA_WORKS),
    ("GroupQueryAttention", expand_ort.DOMAIN): Expander(
        f"{expand_ort.DOMAIN}::GroupQueryAttention", expand_ort.gqa_refusal, expand_ort.gqa_expansion,
        expand_ort.GQA_WORKS, expand_ort.GQA_DROPPED),
}


def _expander(n: onnx.NodeProto) -> Expander | None:
    return EXPANDERS.get((n.op_type, "" if n.domain in _STANDARD else n.domain))


def announced(n: onnx.NodeProto) -> bool:
    """Has :func:`expand_composites` already warned about node ``n`` left opaque (an op it
    expands, in a form it does not)."""
    return _expander(n) is not None


def expand_composites(model: onnx.ModelProto, owned: bool) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with every fused node of a supported form (:data:`EXPANDERS`) replaced by its ops,
    and the warning texts for those left as they are. ``owned``: ``model`` may be changed in place
    (else a copy is changed; ``model`` itself is returned when nothing is expanded)."""
    found = [pos for pos, n in enumerate(model.graph.node) if announced(n)]
    if not found:
        return model, []
    index = ModelIndex(model)
    shapes = ShapeTable()
    shapes.collect(run_onnx_inference(skeleton(index)))
    guess_shapes(index, Shapes(shapes, ConstantEvaluator(index, shapes)), partial=True)  # past ops onnx lacks
    refusals = {pos: _expander(model.graph.node[pos]).refusal(model.graph.node[pos], shapes) for pos in found}
    texts = [_warning(n, refusals[pos]) for pos, n in enumerate(model.graph.node) if refusals.get(pos)]
    if all(refusals.values()):
        return model, texts
    if not owned:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    g = model.graph
    names = Names({t for n in g.node for t in list(n.input) + list(n.output)} | {t.name for t in g.initializer})
    new_nodes, dropped = [], []
    for pos, n in enumerate(g.node):
        if pos in refusals and not refusals[pos]:
            how = _expander(n)
            e = Emitter(n, names)
            how.expansion(e, shapes)
            new_nodes += e.nodes
            g.initializer.extend(e.inits)
            dropped += [n.input[k] for k in how.dropped if k < len(n.input) and n.input[k]]
        else:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(_without_unread(new_nodes, dropped, {o.name for o in g.output}))
    return model, texts


def _warning(n: onnx.NodeProto, refusal: str) -> str:
    how = _expander(n)
    return (f"{how.label} at node '{n.name or n.output[0]}' has {refusal}; it is kept as an opaque layer "
            f"(it needs the full tensor). {how.works}")


def _without_unread(nodes: list[onnx.NodeProto], dropped: list[str], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those that only computed the ``dropped`` tensors (followed back while a
    node's outputs are read by nothing and are not graph ``outputs``)."""
    gone: set[int] = set()
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    todo = [producer[t] for t in dropped if t in producer]
    while todo:
        k = todo.pop()
        if k in gone:
            continue
        read = {t for j, n in enumerate(nodes) if j not in gone for t in n.input}
        if any(o and (o in read or o in outputs) for o in nodes[k].output):
            continue
        gone.add(k)
        todo += [producer[t] for t in nodes[k].input if t in producer]
    return [n for k, n in enumerate(nodes) if k not in gone]
