"""ONNX ops the importer reads as the ops they are made of: the opset-23 ``Attention`` op.

An ``Attention`` node (scaled dot-product attention) is replaced, before anything else reads the
model, by the pattern the ONNX operator spec gives for it: Q and K each multiplied by
sqrt(scale), K transposed (last two axes), ``MatMul``, ``Softmax`` over the last axis, ``MatMul``
with V -- the same layer kinds a decomposed scaled_dot_product_attention export gives (two
activation x activation MatMuls split by batch or heads, a softmax between), so the search
chooses their layouts and the simulator runs them. The last MatMul keeps the node's name and
output; the others are named ``<node>/q_scale``, ``/k_scale``, ``/k_transpose``, ``/scores``,
``/softmax`` (``scale`` defaults to 1/sqrt(head size), as the spec says); each keeps the node's
``metadata_props`` (the module it came from, see :mod:`hypar.onnx.modules`).

Only the form a plain scaled_dot_product_attention export writes is expanded: 4-D Q, K, V
(batch, heads, sequence, head size) with equal head counts, and no attn_mask, past_key /
past_value, is_causal, softcap or present / qk_matmul outputs. Any other form stays one opaque
layer (it needs the full tensor), with a warning naming the node, what it has and what would
work; the layer builder then adds no second warning for it (:func:`announced`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hypar.onnx.batch import skeleton
from hypar.onnx.index import ModelIndex
from hypar.onnx.inference import run_onnx_inference
from hypar.onnx.protos import node_attrs
from hypar.onnx.shapes import ShapeTable

EXPANDED_OPS = frozenset({"Attention"})
_STANDARD = ("", "ai.onnx")
_EXTRA_INPUTS = {3: "an attn_mask input", 4: "a past_key input", 5: "a past_value input"}
_EXTRA_OUTPUTS = {1: "a present_key output", 2: "a present_value output", 3: "a qk_matmul_output output"}
_WORKS = ("hypar reads an Attention op as its two attention MatMuls and a Softmax only for 4-D Q, K, V "
          "with equal head counts and no attn_mask, past_key/past_value, is_causal, softcap or extra outputs; "
          "export with opset 22 or lower to get the attention as MatMul and Softmax ops hypar reads")


def announced(n: onnx.NodeProto) -> bool:
    """Has :func:`expand_composites` already warned about node ``n`` left opaque (an op it
    expands, in a form it does not)."""
    return n.op_type in EXPANDED_OPS and n.domain in _STANDARD


def expand_composites(model: onnx.ModelProto, owned: bool) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with every Attention node of the supported form replaced by its ops, and the
    warning texts for those left as they are. ``owned``: ``model`` may be changed in place (else a
    copy is changed; ``model`` itself is returned when nothing is expanded)."""
    found = [pos for pos, n in enumerate(model.graph.node) if announced(n)]
    if not found:
        return model, []
    table = ShapeTable()
    table.collect(run_onnx_inference(skeleton(ModelIndex(model))))
    refusals = {pos: _refusal(model.graph.node[pos], table) for pos in found}
    texts = [f"Attention at node '{n.name or n.output[0]}' has {refusals[pos]}; it is kept as an opaque layer "
             f"(it needs the full tensor). {_WORKS}" for pos, n in enumerate(model.graph.node) if refusals.get(pos)]
    if all(refusals.values()):
        return model, texts
    if not owned:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    g = model.graph
    names = _Names({t for n in g.node for t in list(n.input) + list(n.output)} | {t.name for t in g.initializer})
    new_nodes = []
    for pos, n in enumerate(g.node):
        if pos in refusals and not refusals[pos]:
            ops, init = _expansion(n, table, names)
            new_nodes += ops
            g.initializer.append(init)
        else:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)
    return model, texts


def _refusal(n: onnx.NodeProto, table: ShapeTable) -> str | None:
    """What node ``n`` has that :func:`_expansion` does not express, or None."""
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
    dims = [table.dims(t) for t in n.input[:3]]
    if any(d is None or len(d) != 4 for d in dims):
        return "Q, K, V of ranks " + "/".join("unknown" if d is None else str(len(d)) for d in dims) + " (not 4-D)"
    if not (dims[0][1] == dims[1][1] == dims[2][1]) or dims[0][1] is None:
        return f"K, V heads {dims[1][1]}/{dims[2][1]} for Q's {dims[0][1]} (grouped- or multi-query attention)"
    if "scale" not in a and not isinstance(dims[0][3], int):
        return "no scale and a head size that is not a known number"
    return None


class _Names:
    """Tensor names not used in the graph yet."""

    def __init__(self, used: set[str]) -> None:
        self.used = used

    def fresh(self, base: str) -> str:
        """``base``, else ``base_2``, ``base_3``, ... whichever is unused (then reserved)."""
        cand, k = base, 2
        while cand in self.used:
            cand, k = f"{base}_{k}", k + 1
        self.used.add(cand)
        return cand


def _expansion(n: onnx.NodeProto, table: ShapeTable, names: _Names) -> tuple[list[onnx.NodeProto], onnx.TensorProto]:
    """The nodes replacing Attention node ``n`` (module docstring) and the sqrt(scale) initializer."""
    q, k, v = n.input[:3]
    y = n.output[0]
    base = n.name or y
    a = node_attrs(n)
    scale = float(a["scale"]) if "scale" in a else 1.0 / math.sqrt(table.dims(q)[3])
    elem = table.elem_type(q) or TensorProto.FLOAT
    root = names.fresh(f"{base}/sqrt_scale")
    init = numpy_helper.from_array(np.asarray(math.sqrt(scale), dtype=helper.tensor_dtype_to_np_dtype(elem)), root)
    qs, ks, kt, sc, pr = (names.fresh(f"{base}/{t}") for t in ("q_scaled", "k_scaled", "k_transposed", "scores",
                                                                "probs"))
    ops = [
        helper.make_node("Mul", [q, root], [qs], name=f"{base}/q_scale"),
        helper.make_node("Mul", [k, root], [ks], name=f"{base}/k_scale"),
        helper.make_node("Transpose", [ks], [kt], name=f"{base}/k_transpose", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", [qs, kt], [sc], name=f"{base}/scores"),
        helper.make_node("Softmax", [sc], [pr], name=f"{base}/softmax", axis=-1),
        helper.make_node("MatMul", [pr, v], [y], name=base),
    ]
    for op in ops:                  # where the Attention came from (the exporter's module metadata)
        op.metadata_props.extend(n.metadata_props)
    return ops, init
