"""Layout rules and costs of non-weighted nodes in the `full` space (SPEC.md §4), hand-derived.

Graph: fc1 (B x 8 -> 8) -> X -> fc2 (8 -> 4) with B = 6, one 2-way level, bfloat16 (2 bytes).
comm_bytes of one collective at a 2-way level = 2 subgroups x amount x 2 bytes.
"""

import pytest

from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.synthetic import gemm_layer

B, D, DO = 6, 8, 4


def _graph(kind: str, op: str, attrs=()):
    g = G.new_graph("t", B)
    x = G.Tensor("x", (B, D), 0, 1)
    h = G.Tensor("h", (B, D), 0, 1)
    y = G.Tensor("y", (B, D), 0, 1)
    g.graph["inputs"] = (x,)
    G.add_layer(g, gemm_layer("fc1", B, D, D, ("x",), "h"))
    G.add_layer(g, G.Layer(name="mid", op=op, kind=kind, inputs=("h",), outputs=("y",), attrs=tuple(attrs)))
    G.add_layer(g, gemm_layer("fc2", B, D, DO, ("y",), "z"))
    g.graph["input_consumers"] = {"x": ("fc1",)}
    G.add_edge(g, "fc1", "mid", h, 0)
    G.add_edge(g, "mid", "fc2", y, 0)
    g.graph["outputs"] = (G.Tensor("z", (B, DO), 0, 1),)
    return g


def _mid_bytes(kind, op, layout, attrs=()):
    m = CostModel(_graph(kind, op, attrs), array_from_levels([2]), "full")
    assert m.names == ["fc1", "mid", "fc2"]
    # fc1 and fc2 chosen so that no conversion happens around `mid`:
    # I (rows) around S(b); III then II around S(f); II then III around R.
    around = {"S(b)": ("I", "I"), "S(f)": ("III", "II"), "R": ("II", "III")}[layout]
    ev = m.evaluate([(around[0],), (layout,), (around[1],)])
    return ev.layers()[1]["comm_bytes"], m


def test_batchnorm_under_batch_split_syncs_statistics():
    # mean + var forward, two sums backward: 4 * C = 32 elements all-reduced (k=2: amount = A).
    got, _ = _mid_bytes(G.BATCHNORM, "BatchNormalization", "S(b)")
    assert got == 2 * (4 * D) * 2


@pytest.mark.parametrize("layout", ["S(f)", "R"])
def test_batchnorm_without_batch_split_is_free(layout):
    got, _ = _mid_bytes(G.BATCHNORM, "BatchNormalization", layout)
    assert got == 0


def test_softmax_over_a_split_feature_axis_reduces_row_statistics():
    # max and sum forward, one dot backward per row: 3 * B = 18 elements all-reduced.
    got, _ = _mid_bytes(G.SOFTMAX, "Softmax", "S(f)", (("axis", -1),))
    assert got == 2 * (3 * B) * 2


def test_softmax_under_batch_split_is_free():
    got, _ = _mid_bytes(G.SOFTMAX, "Softmax", "S(b)", (("axis", -1),))
    assert got == 0


def test_layernorm_over_a_split_feature_axis_reduces_row_statistics():
    # mean and var forward, two sums backward per row: 4 * B = 24 elements all-reduced.
    got, _ = _mid_bytes(G.FEATURENORM, "LayerNormalization", "S(f)", (("axis", -1),))
    assert got == 2 * (4 * B) * 2


def test_unknown_op_only_takes_the_full_tensor():
    m = CostModel(_graph(G.OPAQUE, "MysteryOp"), array_from_levels([2]), "full")
    assert m.labels(1) == ("R",)
    # fc1 type I produces rows; the opaque node needs R: all-gather B*D/2 = 24 per subgroup
    # forward, and its R error converts to fc1's rows for free.
    ev = m.evaluate([("I",), ("R",), ("I",)])
    assert ev.layers()[1]["comm_bytes"] == 2 * (B * D // 2) * 2


def test_reduce_over_the_split_axis_is_not_offered():
    # Issue 10 (H3) changed the rule: a ReduceSum / ReduceMean over the feature axis may now split
    # it (S(f), its partial results all-reduced: test_feature_mean_all_reduces_its_rows), so this
    # checks the rule on a reduction whose partial results do not add up (ReduceMax).
    m = CostModel(_graph(G.REDUCE, "ReduceMax", (("axes", (1,)),)), array_from_levels([2]), "full")
    assert "S(f)" not in m.labels(1) and "S(b)" in m.labels(1)
    m = CostModel(_graph(G.REDUCE, "ReduceSum", (("axes", (0,)),)), array_from_levels([2]), "full")
    assert "S(b)" not in m.labels(1)
