"""hypar.onnx (load_layer_graph and its modules): one small model written in place per rule, plus the onnx package's light
Model Zoo graphs."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from math import prod
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper, parser

from hypar import graph as G
from hypar.onnx import inference, protos
from hypar.onnx.axes import atoms_axes, default_atoms, regroup
from hypar.errors import HyparWarning, ModelLoadError, ModelStructureError, ShapeError
from hypar.onnx import load_layer_graph, model_sha256

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'


def make(text: str, **weights: tuple[int, ...]) -> onnx.ModelProto:
    """Parse a model; each keyword becomes a float initializer of that shape (zeros)."""
    m = parser.parse_model(HEADER + text)
    for name, shape in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
    return m


def lay(g: nx.DiGraph, name: str) -> G.Layer:
    return G.layer(g, name)


def only(g: nx.DiGraph, kind: str) -> G.Layer:
    (n,) = [n for n in g.nodes if lay(g, n).kind == kind]
    return lay(g, n)


def out_tensor(g: nx.DiGraph, name: str) -> G.Tensor:
    """The tensor a layer passes on (first out-edge), else the graph output it produces."""
    for _, _, d in g.out_edges(name, data=True):
        return d["tensor"]
    (t,) = [t for t in g.graph["outputs"] if t.name in lay(g, name).outputs]
    return t


# ------------------------------------------------------------------------------------------------
# Decision layers


def test_conv_dims_and_macs():
    m = make("""g (float[2, 3, 32, 32] x) => (float[2, 16, 16, 16] y) {
        y = Conv<kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]>(x, w, b) }""",
             w=(16, 3, 3, 3), b=(16,))
    g = load_layer_graph(m)
    c = only(g, G.CONV)
    assert (c.batch, c.d_in, c.d_out, c.in_spatial, c.out_spatial, c.kernel, c.groups) == \
        (2, 3, 16, (32, 32), (16, 16), (3, 3), 1)
    assert (c.in_elements, c.out_elements) == (2 * 3 * 32 * 32, 2 * 16 * 16 * 16)
    assert (c.weight_elements, c.bias_elements, c.params) == (16 * 3 * 9, 16, 16 * 27 + 16)
    assert c.macs == 2 * 16 * 16 * 16 * 3 * 9
    assert c.attr("strides") == (2, 2) and c.attr("weight") == "w"
    assert c.weighted and c.decision
    assert out_tensor(g, c.name) == G.Tensor("y", (2, 16, 16, 16), 0, 1)


def test_grouped_conv():
    m = make("""g (float[4, 8, 10, 10] x) => (float[4, 12, 10, 10] y) {
        y = Conv<kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2>(x, w) }""", w=(12, 4, 3, 3))
    c = only(load_layer_graph(m), G.CONV)
    assert (c.d_in, c.d_out, c.groups) == (8, 12, 2)
    assert c.weight_elements == 12 * 8 // 2 * 9
    assert c.macs == 4 * 12 * 100 * (8 // 2) * 9


def test_depthwise_conv():
    m = make("""g (float[1, 32, 8, 8] x) => (float[1, 32, 4, 4] y) {
        y = Conv<kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=32>(x, w) }""",
             w=(32, 1, 3, 3))
    c = only(load_layer_graph(m), G.CONV)
    assert (c.d_in, c.d_out, c.groups, c.out_spatial) == (32, 32, 32, (4, 4))
    assert c.weight_elements == 32 * 9
    assert c.macs == 1 * 32 * 16 * 1 * 9


def test_conv_transpose():
    m = make("""g (float[2, 16, 8, 8] x) => (float[2, 4, 16, 16] y) {
        y = ConvTranspose<kernel_shape=[2, 2], strides=[2, 2]>(x, w, b) }""", w=(16, 4, 2, 2), b=(4,))
    c = only(load_layer_graph(m), G.CONV)
    assert c.op == "ConvTranspose"
    assert (c.batch, c.d_in, c.d_out, c.in_spatial, c.out_spatial, c.kernel) == \
        (2, 16, 4, (8, 8), (16, 16), (2, 2))
    assert (c.weight_elements, c.bias_elements) == (16 * 4 * 4, 4)
    assert c.macs == 2 * 16 * 64 * 4 * 4  # every input pixel scatters a Cout x k x k patch


def test_gemm_trans_b():
    m = make("""g (float[8, 512] x) => (float[8, 10] y) { y = Gemm<transB=1>(x, w, b) }""",
             w=(10, 512), b=(10,))
    f = only(load_layer_graph(m), G.GEMM)
    assert (f.batch, f.d_in, f.d_out, f.in_spatial, f.macs) == (8, 512, 10, (), 8 * 512 * 10)
    assert (f.weight_elements, f.bias_elements) == (5120, 10)


def test_gemm_trans_a():
    m = make("""g (float[512, 8] x) => (float[8, 10] y) { y = Gemm<transA=1>(x, w) }""", w=(512, 10))
    f = only(load_layer_graph(m), G.GEMM)
    assert (f.batch, f.d_in, f.d_out) == (8, 512, 10)


def test_matmul_3d_input_with_bias_add_folded():
    m = make("""g (float[4, 16, 64] x) => (float[4, 16, 128] y) {
        h = MatMul(x, w)
        y = Add(b, h) }""", w=(64, 128), b=(128,))
    g = load_layer_graph(m)
    f = only(g, G.GEMM)
    assert (f.batch, f.in_spatial, f.out_spatial, f.d_in, f.d_out) == (4, (16,), (16,), 64, 128)
    assert f.macs == 4 * 16 * 64 * 128
    assert (f.weight_elements, f.bias_elements) == (64 * 128, 128)  # bias Add folded into the layer
    add = only(g, G.ELEMENTWISE)
    assert add.op == "Add" and add.params == 0
    assert out_tensor(g, f.name) == G.Tensor("h", (4, 16, 128), 0, 2)


def test_matmul_through_transpose_of_initializer():
    m = make("""g (float[4, 16, 64] x) => (float[4, 16, 100] y) {
        wt = Transpose<perm=[1, 0]>(w)
        y = MatMul(x, wt) }""", w=(100, 64))
    g = load_layer_graph(m)
    assert [lay(g, n).op for n in g.nodes] == ["MatMul"]  # the weight-only Transpose folded away
    f = only(g, G.GEMM)
    assert (f.d_in, f.d_out, f.weight_elements, f.attr("weight")) == (64, 100, 6400, "w")


def test_matmul_through_cast_identity_reshape_of_initializer():
    m = make("""g (float[2, 8] x) => (float[2, 6] y) {
        w1 = Identity(w)
        w2 = Cast<to=1>(w1)
        w3 = Reshape(w2, s)
        y = MatMul(x, w3) }""", w=(48,))
    m.graph.initializer.append(numpy_helper.from_array(np.array([8, 6], np.int64), "s"))
    g = load_layer_graph(m)
    assert list(g.nodes) == ["MatMul_3"]
    f = only(g, G.GEMM)
    assert (f.d_in, f.d_out, f.weight_elements, f.attr("weight")) == (8, 6, 48, "w")


def test_constant_of_shape_weight():
    """The onnx package's light models store weights as ConstantOfShape(shape initializer)."""
    m = make("""g (float[2, 3, 8, 8] x) => (float[2, 5, 8, 8] y) {
        w = ConstantOfShape<value = float[1] {0.1}>(ws)
        y = Conv<kernel_shape=[1, 1]>(x, w) }""")
    m.graph.initializer.append(numpy_helper.from_array(np.array([5, 3, 1, 1], np.int64), "ws"))
    g = load_layer_graph(m)
    assert list(g.nodes) == ["Conv_1"]
    assert only(g, G.CONV).weight_elements == 15


def test_embedding_gather():
    m = make("""g (int64[4, 32] ids) => (float[4, 32, 64] y) { y = Gather<axis=0>(table, ids) }""",
             table=(1000, 64))
    g = load_layer_graph(m)
    e = only(g, G.EMBEDDING)
    assert (e.batch, e.d_in, e.d_out, e.in_spatial, e.out_spatial, e.macs) == (4, 1000, 64, (32,), (32,), 0)
    assert (e.weight_elements, e.in_elements, e.out_elements) == (64000, 128, 4 * 32 * 64)
    assert g.graph["inputs"] == (G.Tensor("ids", (4, 32), 0, None),)
    assert g.graph["input_consumers"] == {"ids": (e.name,)}
    assert g.graph["outputs"] == (G.Tensor("y", (4, 32, 64), 0, 2),)


def test_gather_on_activation_is_not_an_embedding():
    m = make("""g (float[4, 16, 64] x) => (float[4, 64] y) {
        h = MatMul(x, w)
        y = Gather<axis=1>(h, i) }""", w=(64, 64))
    m.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "i"))
    g = load_layer_graph(m)
    s = only(g, G.SPLIT)
    assert s.op == "Gather" and s.attr("axis") == 1
    assert out_tensor(g, s.name) == G.Tensor("y", (4, 64), 0, 1)


ATTENTION = """g (float[2, 16, 64] x) => (float[2, 16, 64] y) {
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    v = MatMul(x, wv)
    q4 = Reshape(q, s4)
    k4 = Reshape(k, s4)
    v4 = Reshape(v, s4)
    qh = Transpose<perm=[0, 2, 1, 3]>(q4)
    kh = Transpose<perm=[0, 2, 3, 1]>(k4)
    vh = Transpose<perm=[0, 2, 1, 3]>(v4)
    s = MatMul(qh, kh)
    sc = Div(s, scale)
    p = Softmax<axis=-1>(sc)
    c = MatMul(p, vh)
    ct = Transpose<perm=[0, 2, 1, 3]>(c)
    c3 = Reshape(ct, s3)
    y = MatMul(c3, wo) }"""


def attention_model() -> onnx.ModelProto:
    m = make(ATTENTION, wq=(64, 64), wk=(64, 64), wv=(64, 64), wo=(64, 64))
    m.graph.initializer.extend([
        numpy_helper.from_array(np.array([0, 0, 4, 16], np.int64), "s4"),
        numpy_helper.from_array(np.array([0, 0, 64], np.int64), "s3"),
        numpy_helper.from_array(np.array(4.0, np.float32), "scale"),
    ])
    return m


def test_attention_matmuls_and_head_axes():
    g = load_layer_graph(attention_model())
    kinds = Counter(lay(g, n).kind for n in G.decision_layers(g))
    assert kinds == {G.GEMM: 4, G.MATMUL_ACT: 2}
    scores, ctx = [lay(g, n) for n in G.decision_layers(g) if lay(g, n).kind == G.MATMUL_ACT]
    assert (scores.batch, scores.heads, scores.d_in, scores.d_out, scores.in_spatial) == (2, 4, 16, 16, (16,))
    assert (ctx.batch, ctx.heads, ctx.d_in, ctx.d_out) == (2, 4, 16, 16)
    assert scores.macs == 2 * 4 * 16 * 16 * 16 and scores.weight_elements == 0
    assert scores.attr("lhs_shape") == (2, 4, 16, 16) and scores.attr("rhs_shape") == (2, 4, 16, 16)
    # axes: (b, s, 64) f2 -> (b, s, 4, 16) f2 (heads, the outer part) -> (b, 4, s, 16) f1
    t = {d["tensor"].name: d["tensor"] for _, _, d in g.edges(data=True)}
    assert (t["q"].batch_axis, t["q"].feature_axis) == (0, 2)
    assert (t["q4"].shape, t["q4"].batch_axis, t["q4"].feature_axis) == ((2, 16, 4, 16), 0, 2)
    assert (t["qh"].shape, t["qh"].feature_axis) == ((2, 4, 16, 16), 1)
    assert (t["kh"].shape, t["kh"].feature_axis) == ((2, 4, 16, 16), 1)
    assert (t["s"].batch_axis, t["s"].feature_axis) == (0, 1)  # heads are a leading dim
    assert (t["ct"].shape, t["ct"].feature_axis) == ((2, 16, 4, 16), 2)
    assert (t["c3"].shape, t["c3"].batch_axis, t["c3"].feature_axis) == ((2, 16, 64), 0, 2)
    # slots: scores takes q heads at 0 and k heads at 1
    assert g.edges["Transpose_6", "MatMul_9"]["slots"] == (0,)
    assert g.edges["Transpose_7", "MatMul_9"]["slots"] == (1,)
    assert lay(g, "Softmax_11").attr("axis") == 3
    assert lay(g, "Div_10").kind == G.ELEMENTWISE


def test_attention_without_heads_axis_has_no_feature():
    """(B, T, K) x (B, K, T): the contraction axis is not a leading dim -> heads 1, feature None."""
    m = make("""g (float[2, 8, 32] x) => (float[2, 8, 8] y) {
        a = MatMul(x, w)
        at = Transpose<perm=[0, 2, 1]>(a)
        y = MatMul(a, at) }""", w=(32, 32))
    g = load_layer_graph(m)
    a = only(g, G.MATMUL_ACT)
    assert (a.batch, a.heads, a.d_in, a.d_out, a.in_spatial, a.macs) == (2, 1, 32, 8, (8,), 2 * 8 * 32 * 8)
    assert g.graph["outputs"][0] == G.Tensor("y", (2, 8, 8), 0, None)


def test_merged_heads_round_trip_keeps_head_axis():
    """(B, H, T, D) -> (B*H, T, D) -> (B, H, T, D): the head axis comes back (dynamo's SDPA)."""
    m = make("""g (float[2, 16, 64] x) => (float[2, 4, 16, 16] y) {
        q = MatMul(x, w)
        q4 = Reshape(q, s4)
        qh = Transpose<perm=[0, 2, 1, 3]>(q4)
        m3 = Reshape(qh, s3)
        mt = Transpose<perm=[0, 2, 1]>(m3)
        y = Reshape(mt, s4b) }""", w=(64, 64))
    m.graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 16, 4, 16], np.int64), "s4"),
        numpy_helper.from_array(np.array([-1, 16, 16], np.int64), "s3"),
        numpy_helper.from_array(np.array([2, 4, 16, 16], np.int64), "s4b"),
    ])
    g = load_layer_graph(m)
    t = {d["tensor"].name: d["tensor"] for _, _, d in g.edges(data=True)}
    assert (t["m3"].shape, t["m3"].batch_axis, t["m3"].feature_axis) == ((8, 16, 16), 0, None)
    assert g.graph["outputs"][0] == G.Tensor("y", (2, 4, 16, 16), 0, 1)
    # re-binding the batch rewrites the literal targets [2, ...] / [2*4, ...]
    g3 = load_layer_graph(m, batch=3)
    assert g3.graph["outputs"][0] == G.Tensor("y", (3, 4, 16, 16), 0, 1)


@pytest.mark.parametrize("src, dst, axes, want", [
    ((8, 128, 768), (8, 128, 12, 64), (0, 2), (0, 2)),  # split hidden: heads are the outer part
    ((8, 128, 12, 64), (8, 128, 768), (0, 2), (0, 2)),  # merge back
    ((8, 128, 768), (1024, 768), (0, 2), (0, 1)),  # batch merged with sequence (outer part)
    ((8, 128, 768), (1024, 768), (1, 2), (None, 1)),  # an inner part of a merged dim is lost
    ((32, 512, 7, 7), (32, 25088), (0, 1), (0, 1)),  # flatten: channels are the outer part
    ((32, 512, 1, 1), (32, 512), (0, 1), (0, 1)),  # squeeze
    ((8, 128, 768), (8, 128, 768, 1), (0, 2), (0, 2)),  # unsqueeze
    ((8, 128, 768), (1, 8, 128, 768), (0, 2), (1, 3)),  # unsqueeze in front
    ((1, 768), (768,), (0, 1), (None, 0)),  # a batch of 1 squeezed away
    ((8, 6), (4, 12), (0, 1), (0, None)),  # batch's outer part stays; features now inner
])
def test_reshape_axis_mapping(src, dst, axes, want):
    atoms = regroup(default_atoms(src, *axes), dst)
    assert atoms_axes(atoms) == want


def test_flatten_keeps_channels_as_feature():
    m = make("""g (float[4, 8, 5, 5] x) => (float[4, 10] y) {
        f = Flatten<axis=1>(x)
        y = Gemm<transB=1>(f, w) }""", w=(10, 200))
    g = load_layer_graph(m)
    # 200 = 8 channels x 25 pixels: the flattened features are placed in units of 25
    # (hypar/onnx/units.py), so that a split of the channels maps onto them
    assert g.edges["Flatten_0", "Gemm_1"]["tensor"] == G.Tensor("f", (4, 200), 0, 1, feature_unit=25)
    assert lay(g, "Flatten_0").kind == G.RESHAPE and lay(g, "Flatten_0").attr("axis") == 1


# ------------------------------------------------------------------------------------------------
# Non-weighted kinds


def test_non_weighted_kinds_and_attrs():
    m = make("""g (float[2, 4, 8, 8] x) => (float[2, 8] y) {
        c = Conv<kernel_shape=[1, 1]>(x, w)
        bn = BatchNormalization<epsilon=0.001>(c, s, b, mu, var)
        r = Relu(bn)
        a = Add(r, c)
        mp = MaxPool<kernel_shape=[2, 2], strides=[2, 2]>(a)
        cat = Concat<axis=1>(mp, mp)
        gp = GlobalAveragePool(cat)
        red = ReduceMean<axes=[2, 3], keepdims=0>(gp)
        y = Softmax<axis=1>(red) }""", w=(4, 4, 1, 1), s=(4,), b=(4,), mu=(4,), var=(4,))
    g = load_layer_graph(m)
    kinds = {lay(g, n).op: lay(g, n).kind for n in g.nodes}
    assert kinds == {"Conv": G.CONV, "BatchNormalization": G.BATCHNORM, "Relu": G.ELEMENTWISE,
                     "Add": G.BINARY, "MaxPool": G.POOL, "Concat": G.CONCAT,
                     "GlobalAveragePool": G.POOL, "ReduceMean": G.REDUCE, "Softmax": G.SOFTMAX}
    bn = lay(g, "BatchNormalization_1")
    assert (bn.weight_elements, bn.bias_elements, bn.attr("epsilon")) == (4, 4, pytest.approx(0.001))
    assert not bn.weighted and not bn.decision
    assert lay(g, "Concat_5").attr("axis") == 1
    red = lay(g, "ReduceMean_7")
    assert (red.attr("axes"), red.attr("keepdims")) == ((2, 3), 0)
    assert g.edges["ReduceMean_7", "Softmax_8"]["tensor"] == G.Tensor("red", (2, 8), 0, 1)
    assert g.edges["Relu_2", "Add_3"]["slots"] == (0,) and g.edges["Conv_0", "Add_3"]["slots"] == (1,)
    assert g.edges["MaxPool_4", "Concat_5"]["slots"] == (0, 1)
    # matrix fields of non-decision layers stay empty
    assert (lay(g, "Relu_2").batch, lay(g, "Relu_2").d_in, lay(g, "Relu_2").in_spatial) == (0, 0, ())


def test_layernorm_split_slice_transpose_attrs():
    m = make("""g (float[2, 16, 96] x) => (float[2, 16, 32] y, float[2, 8, 32] z) {
        h = MatMul(x, w)
        n = LayerNormalization<axis=-1, epsilon=0.00001>(h, ls, lb)
        a, b, c = Split<axis=2>(n, sp)
        t = Transpose<perm=[0, 2, 1]>(a)
        y = Transpose<perm=[0, 2, 1]>(t)
        z = Slice(b, st, en, ax) }""", w=(96, 96), ls=(96,), lb=(96,))
    m.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
                                {"sp": [32, 32, 32], "st": [0], "en": [8], "ax": [1]}.items()])
    g = load_layer_graph(m)
    ln = only(g, G.FEATURENORM)
    assert (ln.attr("axis"), ln.weight_elements, ln.bias_elements) == (2, 96, 96)
    sp = lay(g, "Split_2")
    assert (sp.kind, sp.attr("axis"), sp.attr("split"), sp.outputs) == (G.SPLIT, 2, (32, 32, 32), ("a", "b"))
    sl = lay(g, "Slice_5")
    assert (sl.kind, sl.attr("axes"), sl.attr("starts"), sl.attr("ends")) == (G.SPLIT, (1,), (0,), (8,))
    assert lay(g, "Transpose_3").attr("perm") == (0, 2, 1)
    assert g.edges["Transpose_3", "Transpose_4"]["tensor"] == G.Tensor("t", (2, 32, 16), 0, 1)
    assert dict((t.name, t) for t in g.graph["outputs"]) == {
        "y": G.Tensor("y", (2, 16, 32), 0, 2), "z": G.Tensor("z", (2, 8, 32), 0, 2)}


def test_elementwise_with_constant_vs_binary():
    m = make("""g (float[2, 8] x, float[2, 8] x2) => (float[2, 8] y) {
        h = Gemm(x, w)
        s = Mul(h, k)
        d = Div(s, k)
        y = Add(d, x2) }""", w=(8, 8), k=(8,))
    g = load_layer_graph(m)
    assert [lay(g, n).kind for n in g.nodes] == [G.GEMM, G.ELEMENTWISE, G.ELEMENTWISE, G.BINARY]
    assert g.graph["input_consumers"] == {"x": ("Gemm_0",), "x2": ("Add_3",)}


# ------------------------------------------------------------------------------------------------
# Shape subgraphs, unknown ops, names, order


def test_shape_subgraph_disappears():
    """TorchScript with a dynamic batch: Reshape target built from Shape -> Gather -> Unsqueeze
    -> Concat, plus Constant and Range nodes: none of them is a layer."""
    m = make("""g (float[N, 16, 64] x) => (float[N, 16, 4, 16] y) {
        h = MatMul(x, w)
        sh = Shape(h)
        zero = Constant<value = int64 {0}>()
        b = Gather<axis=0>(sh, zero)
        bu = Unsqueeze(b, ax0)
        tgt = Concat<axis=0>(bu, rest)
        one = Constant<value = int64 {1}>()
        r = Range(zero, b, one)
        y = Reshape(h, tgt) }""", w=(64, 64))
    m.graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "ax0"),
                                numpy_helper.from_array(np.array([16, 4, 16], np.int64), "rest")])
    g = load_layer_graph(m, batch=5)
    assert [lay(g, n).op for n in g.nodes] == ["MatMul", "Reshape"]
    assert not any(lay(g, n).kind == G.EMBEDDING for n in g.nodes)  # Gather on a shape
    assert g.graph["outputs"][0] == G.Tensor("y", (5, 16, 4, 16), 0, 2)


def test_unknown_op_is_opaque_with_warning():
    m = make("""g (float[2, 8] x) => (float[2, 8] y) {
        h = Gemm(x, w)
        z = Frobnicate(h)
        y = Relu(z) }""", w=(8, 8))
    m.graph.node[1].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.warns(HyparWarning, match=r"unknown op 'com.example::Frobnicate' at node 'Frobnicate_1'"):
        g = load_layer_graph(m)
    o = lay(g, "Frobnicate_1")
    assert o.kind == G.OPAQUE and not o.decision
    assert list(g.successors("Frobnicate_1")) == ["Relu_2"]


def test_custom_op_shape_from_symbolic_inference_or_fallback():
    """com.microsoft::Attention: onnx cannot infer its shape; onnxruntime's symbolic shape
    inference (hypar[symbolic]) does, else the importer assumes the input's shape and says so."""
    m = make("""g (float[2, 16, 64] x) => (float[2, 16, 64] y) {
        a = Attention<num_heads=4>(x, w, b)
        y = MatMul(a, wo) }""", w=(64, 192), b=(192,), wo=(64, 64))
    m.graph.node[0].domain = "com.microsoft"
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.warns(HyparWarning, match="com.microsoft::Attention") as rec:
        g = load_layer_graph(m)
    assert lay(g, "Attention_0").kind == G.OPAQUE and lay(g, "Attention_0").out_elements == 2 * 16 * 64
    assert only(g, G.GEMM).in_spatial == (16,)
    try:
        import onnxruntime  # noqa: F401
        assumed = False
    except ImportError:
        assumed = True
    assert any("assumed equal to its input" in str(w.message) for w in rec) == assumed


def test_input_used_only_for_shapes_is_not_a_layer_input():
    m = make("""g (float[2, 8] x, float[2, 5] mask) => (float[?, ?] y) {
        h = Gemm(x, w)
        s = Shape(mask)
        y = Reshape(h, s2) }""", w=(8, 10))
    m.graph.initializer.append(numpy_helper.from_array(np.array([5, 4], np.int64), "s2"))
    g = load_layer_graph(m)
    assert [t.name for t in g.graph["inputs"]] == ["x"]


def test_layer_names_made_unique():
    m = make("""g (float[2, 8] x) => (float[2, 8] y) {
        a = Gemm(x, w)
        b = Relu(a)
        c = Relu(b)
        d = Relu(c)
        y = Relu(d) }""", w=(8, 8))
    names = ["fc", "", "act", "act", "act_2"]
    for n, name in zip(m.graph.node, names):
        n.name = name
    g = load_layer_graph(m)
    # missing -> <op>_<index>; repeated -> <name>_2 (skipping a name another node holds)
    assert list(g.nodes) == ["fc", "Relu_1", "act", "act_3", "act_2"]
    assert all(lay(g, n).name == n for n in g.nodes)


def test_insertion_order_is_topological_even_if_onnx_is_not():
    m = make("""g (float[2, 8] x) => (float[2, 8] y) {
        a = Gemm(x, w)
        b = Relu(a)
        y = Sigmoid(b) }""", w=(8, 8))
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend([nodes[2], nodes[0], nodes[1]])
    g = load_layer_graph(m)
    assert [lay(g, n).op for n in g.nodes] == ["Gemm", "Relu", "Sigmoid"]
    assert list(g.nodes) == G.topo_layers(g)


def test_bn_parameters_as_graph_inputs_are_weights():
    """Old exports list BN scale/bias/mean/var (and even conv weights) as graph inputs."""
    m = make("""g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] w, float[4] s, float[4] b, float[4] mu,
                   float[4] v) => (float[1, 4, 8, 8] y) {
        c = Conv<kernel_shape=[3, 3], pads=[1, 1, 1, 1]>(x, w)
        y = BatchNormalization(c, s, b, mu, v) }""")
    g = load_layer_graph(m, batch=6)
    assert [t.name for t in g.graph["inputs"]] == ["x"]
    assert only(g, G.CONV).batch == 6 and only(g, G.CONV).weight_elements == 108
    assert only(g, G.BATCHNORM).weight_elements == 4


# ------------------------------------------------------------------------------------------------
# Batch binding


def test_batch_override_rederives_every_shape():
    m = make("""g (float[2, 3, 16, 16] x) => (float[2, 10] y) {
        c = Conv<kernel_shape=[3, 3], pads=[1, 1, 1, 1]>(x, w)
        f = Flatten(c)
        y = Gemm<transB=1>(f, fw) }""", w=(4, 3, 3, 3), fw=(10, 1024))
    m = onnx.shape_inference.infer_shapes(m)  # stale value_info for batch 2
    assert m.graph.value_info
    g2, g7 = load_layer_graph(m), load_layer_graph(m, batch=7)
    assert (g2.graph["batch"], g7.graph["batch"]) == (2, 7)
    for n in g7.nodes:
        a, b = lay(g2, n), lay(g7, n)
        assert b.in_elements * 2 == a.in_elements * 7 and b.macs * 2 == a.macs * 7
    assert g7.edges["Flatten_1", "Gemm_2"]["tensor"].shape == (7, 1024)
    assert g7.graph["outputs"][0].shape == (7, 10)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2  # caller's proto untouched


def test_symbolic_batch_needs_batch():
    m = make("""g (float[N, 8] x) => (float[N, 8] y) { y = Gemm(x, w) }""", w=(8, 8))
    # Issue 11 changed this message: one error names every unbound dim with its axis and gives
    # every way to bind it (--batch, and --input-shape as the alternative).
    with pytest.raises(ShapeError, match=r"^input 'x' has symbolic dim 'N' at axis 0; pass --batch N "
                       r"\(or --input-shape x=N,8\)$"):
        load_layer_graph(m)
    g = load_layer_graph(m, batch=3)
    assert only(g, G.GEMM).batch == 3 and g.graph["outputs"][0].shape == (3, 8)


def test_unknown_batch_needs_batch():
    m = make("""g (float[?, 8] x) => (float[?, 8] y) { y = Gemm(x, w) }""", w=(8, 8))
    with pytest.raises(ShapeError, match="pass --batch N"):
        load_layer_graph(m)


def test_other_symbolic_dim_is_an_error_naming_the_input():
    m = make("""g (float[N, T, 8] x) => (float[N, T, 8] y) { y = MatMul(x, w) }""", w=(8, 8))
    with pytest.raises(ShapeError, match=r"input 'x' has symbolic dim 'T' at axis 1"):
        load_layer_graph(m, batch=2)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_bad_batch_values(bad):
    m = make("""g (float[2, 8] x) => (float[2, 8] y) { y = Gemm(x, w) }""", w=(8, 8))
    with pytest.raises(ShapeError, match="positive integer"):
        load_layer_graph(m, batch=bad)


def test_unknown_intermediate_shape_names_tensor_and_fix():
    """A Reshape whose target comes from a graph input cannot be inferred statically."""
    m = make("""g (float[2, 8] x, int64[2] tgt) => (float[?, ?] y) {
        h = Gemm(x, w)
        y = Reshape(h, tgt) }""", w=(8, 8))
    with pytest.raises(ShapeError, match=r"tensor 'y' .*unknown shape.*(hypar\[symbolic\]|static shapes)"):
        load_layer_graph(m)


# ------------------------------------------------------------------------------------------------
# Sources: path, ModelProto, external data


def _save_conv(tmp_path: Path, external: bool) -> Path:
    m = make("""g (float[2, 3, 8, 8] x) => (float[2, 64, 8, 8] y) {
        y = Conv<kernel_shape=[3, 3], pads=[1, 1, 1, 1]>(x, w, b) }""")
    m.graph.initializer.extend([
        numpy_helper.from_array(np.ones((64, 3, 3, 3), np.float32), "w"),
        numpy_helper.from_array(np.ones((64,), np.float32), "b"),
    ])
    p = tmp_path / "conv.onnx"
    if external:
        onnx.save(m, p, save_as_external_data=True, all_tensors_to_one_file=True, location="conv.data",
                  size_threshold=0)
    else:
        onnx.save(m, p)
    return p


def test_inline_weights_from_path(tmp_path):
    g = load_layer_graph(_save_conv(tmp_path, external=False))
    assert g.graph["name"] == "conv" and only(g, G.CONV).params == 64 * 27 + 64


def test_external_data_present(tmp_path):
    p = _save_conv(tmp_path, external=True)
    assert (tmp_path / "conv.data").stat().st_size >= 64 * 27 * 4
    c = only(load_layer_graph(p), G.CONV)
    assert (c.weight_elements, c.bias_elements) == (64 * 27, 64)


def test_external_data_absent(tmp_path):
    p = _save_conv(tmp_path, external=True)
    (tmp_path / "conv.data").unlink()
    c = only(load_layer_graph(p, batch=4), G.CONV)
    assert (c.batch, c.weight_elements, c.bias_elements) == (4, 64 * 27, 64)


def test_model_proto_source_and_name():
    m = make("""g (float[2, 8] x) => (float[2, 8] y) { y = Gemm(x, w) }""", w=(8, 8))
    before = m.SerializeToString()
    g = load_layer_graph(m, batch=5, name="tiny")
    assert g.graph["name"] == "tiny" and g.graph["batch"] == 5
    assert m.SerializeToString() == before
    assert load_layer_graph(m).graph["name"] == "g"


def test_path_based_inference_for_huge_models(tmp_path, monkeypatch):
    """Models whose proto exceeds 2 GB go through infer_shapes_path (forced here)."""
    calls = []
    real = onnx.shape_inference.infer_shapes_path
    monkeypatch.setattr(inference, "TWO_GB", 1)
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path",
                        lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    g = load_layer_graph(_save_conv(tmp_path, external=False), batch=3)
    assert calls and only(g, G.CONV).out_elements == 3 * 64 * 64


def test_weights_are_not_decoded(monkeypatch, tmp_path):
    """Only shapes are read: numpy_helper.to_array is never called on a large weight."""
    seen = []
    real = numpy_helper.to_array
    monkeypatch.setattr(numpy_helper, "to_array", lambda t, *a, **k: (seen.append(prod(t.dims)), real(t, *a, **k))[1])
    load_layer_graph(_save_conv(tmp_path, external=False))
    assert all(n <= protos.SMALL_ELEMENTS for n in seen)


def test_model_sha256(tmp_path):
    p = tmp_path / "f.onnx"
    p.write_bytes(b"abc")
    assert model_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------------------
# Errors


def test_missing_file():
    with pytest.raises(ModelLoadError, match=r"^no such file 'nope/x\.onnx'; check the path$"):
        load_layer_graph("nope/x.onnx")


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_layer_graph(tmp_path)


def test_truncated_file(tmp_path):
    good = _save_conv(tmp_path, external=False).read_bytes()
    for cut in (len(good) // 3, len(good) // 2, len(good) - 5):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(good[:cut])
        with pytest.raises(ModelLoadError, match=r"is not a valid ONNX model \(truncated or wrong format\); re-export it"):
            load_layer_graph(p)


@pytest.mark.parametrize("data", [b"", b"hello, I am a text file\n", bytes(range(256)) * 4, b"\x08\x07"])
def test_not_onnx(tmp_path, data):
    p = tmp_path / "x.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_layer_graph(p)


def test_no_weighted_layer():
    m = make("""g (float[2, 8] x) => (float[2, 8] y) { y = Relu(x) }""")
    with pytest.raises(ModelStructureError, match="no weighted layer"):
        load_layer_graph(m)


def test_wrong_source_type():
    with pytest.raises(ModelLoadError, match="pass a path or an onnx.ModelProto"):
        load_layer_graph(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# The onnx package's light Model Zoo graphs (opset 9, ConstantOfShape weights, BN params as inputs)

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"

# model: (conv, gemm, params incl. BN scale/shift) ; fc layers of DenseNet/SqueezeNet are 1x1 convs
LIGHT_EXPECTED = {
    "bvlc_alexnet": (5, 3, 60_965_224),
    "densenet121": (121, 0, 7_978_856),
    "inception_v1": (57, 1, 6_998_552),
    "inception_v2": (69, 1, 11_194_984),
    "resnet50": (53, 1, 25_557_032),
    "shufflenet": (49, 1, 1_393_320),
    "squeezenet": (26, 0, 1_235_496),
    "vgg19": (16, 3, 143_667_240),
    "zfnet512": (5, 3, 87_250_536),
}


@pytest.mark.parametrize("name", sorted(LIGHT_EXPECTED))
def test_light_models(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        g = load_layer_graph(LIGHT / f"light_{name}.onnx")
    conv, gemm, params = LIGHT_EXPECTED[name]
    kinds = Counter(lay(g, n).kind for n in G.weighted_layers(g))
    assert kinds == Counter({G.CONV: conv, G.GEMM: gemm})
    assert sum(lay(g, n).params for n in g.nodes) == params
    assert g.graph["batch"] == 1 and len(g.graph["inputs"]) == 1
    assert not {lay(g, n).op for n in g.nodes} & {"ConstantOfShape", "Unsqueeze", "Shape", "Constant"}
    assert list(g.nodes) == G.topo_layers(g)
    assert nx.is_weakly_connected(g)
    first = lay(g, G.weighted_layers(g)[0])
    assert (first.batch, first.d_in) == (1, 3)
    # the fixed-batch Reshape targets ([1, 9216], [1, g, c, h, w]) are rebound with --batch
    g8 = load_layer_graph(LIGHT / f"light_{name}.onnx", batch=8)
    assert g8.graph["outputs"][0].shape[0] == 8
    assert [lay(g8, n).macs for n in G.weighted_layers(g8)] == [lay(g, n).macs * 8 for n in G.weighted_layers(g)]


def test_light_vgg19_dims():
    g = load_layer_graph(LIGHT / "light_vgg19.onnx", batch=2)
    ws = [lay(g, n) for n in G.weighted_layers(g)]
    assert [(w.d_in, w.d_out) for w in ws[:3]] == [(3, 64), (64, 64), (64, 128)]
    assert [w.out_spatial for w in ws[:3]] == [(224, 224), (224, 224), (112, 112)]
    assert [(w.d_in, w.d_out) for w in ws[-3:]] == [(25088, 4096), (4096, 4096), (4096, 1000)]
    assert ws[-3].macs == 2 * 25088 * 4096


def test_import_is_deterministic():
    p = LIGHT / "light_inception_v1.onnx"
    a, b = load_layer_graph(p), load_layer_graph(p)
    assert list(a.nodes) == list(b.nodes)
    assert [lay(a, n) for n in a.nodes] == [lay(b, n) for n in b.nodes]
    assert list(a.edges(data=True)) == list(b.edges(data=True))


def test_where_takes_axes_from_data_not_condition():
    m = make("""g (float[2, 8] x, bool[2, 8] keep) => (float[2, 8] y) {
        h = Gemm(x, w)
        y = Where(keep, h, x) }""", w=(8, 8))
    g = load_layer_graph(m)
    assert lay(g, "Where_1").kind == G.BINARY
    assert g.graph["outputs"][0] == G.Tensor("y", (2, 8), 0, 1)


def test_conv_with_computed_weight_is_opaque():
    m = make("""g (float[2, 3, 8, 8] x, float[4, 3, 3, 3] k) => (float[2, 4, 6, 6] y) {
        k2 = Relu(k)
        c = Conv(x, k2)
        y = Conv(c, w) }""", w=(4, 4, 1, 1))
    with pytest.warns(HyparWarning, match=r"op 'Conv' with a computed \(activation\) weight at node 'Conv_1'"):
        g = load_layer_graph(m)
    assert [lay(g, n).kind for n in g.nodes] == [G.ELEMENTWISE, G.OPAQUE, G.CONV]
