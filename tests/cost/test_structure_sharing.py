"""The cost room's seams: the structure a space keeps (hypar.cost.structure), the rule that a tensor
is converted once per distinct (view, layout) (hypar.cost.sharing), and the problem encodings of a
fanned-out tensor (factor table, group terms) agreeing with the exact evaluation.

Amounts at one 2-way level: ``bytes / 2 bytes / 2 subgroups`` (SPEC.md "Units and totals").
Conversions at k = 2 (SPEC §3): rows <-> cols A/4, rows or cols -> full A/2, partial -> A.
"""

import itertools

import pytest

from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.cost.sharing import Conversion, share_conversions
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.cost.structure import Structure
from hypar.synthetic import gemm_layer

TYPES = ("I", "II", "III")


def amount(total_bytes: float) -> float:
    return total_bytes / 2 / 2


def fan_graph(n: int = 3, B: int = 8, d0: int = 4, D: int = 12, dout: int = 6):
    """x(8x4) -> fc0 -> h0(8x12) consumed by fc1..fcn (12 -> 6 each). A(h0) = 96."""
    g = G.new_graph("fan", B)
    x = G.Tensor("x", (B, d0), 0, 1)
    h0 = G.Tensor("h0", (B, D), 0, 1)
    ys = [G.Tensor(f"y{i}", (B, dout), 0, 1) for i in range(1, n + 1)]
    g.graph.update(inputs=(x,), outputs=tuple(ys), input_consumers={"x": ("fc0",)})
    G.add_layer(g, gemm_layer("fc0", B, d0, D, ("x",), "h0"))
    for i, y in enumerate(ys, 1):
        G.add_layer(g, gemm_layer(f"fc{i}", B, D, dout, ("h0",), y.name))
        G.add_edge(g, "fc0", f"fc{i}", h0, 0)
    return g


def relu_chain(B: int = 8):
    """x -> fc1 -> h1 -> relu -> r1 -> fc2 -> y: the Relu is folded in accpar, kept in full."""
    g = G.new_graph("relu", B)
    x, h1 = G.Tensor("x", (B, 4), 0, 1), G.Tensor("h1", (B, 12), 0, 1)
    r1, y = G.Tensor("r1", (B, 12), 0, 1), G.Tensor("y", (B, 6), 0, 1)
    g.graph.update(inputs=(x,), outputs=(y,), input_consumers={"x": ("fc1",)})
    G.add_layer(g, gemm_layer("fc1", B, 4, 12, ("x",), "h1"))
    G.add_layer(g, G.Layer(name="relu", op="Relu", kind=G.ELEMENTWISE, inputs=("h1",), outputs=("r1",)))
    G.add_layer(g, gemm_layer("fc2", B, 12, 6, ("r1",), "y"))
    G.add_edge(g, "fc1", "relu", h1, 0)
    G.add_edge(g, "relu", "fc2", r1, 0)
    return g


# --------------------------------------------------------------------------------------------
# structure

def test_cost_model_reads_its_structure():
    m = CostModel(fan_graph(), array_from_levels([2]), "accpar")
    s = m.structure
    assert (m.names, m.index, m.nodes, m.edges, m.in_edges) == (s.names, s.index, s.nodes, s.edges, s.in_edges)
    assert (m.g, m.space) == (s.g, s.space)
    assert s.names == ["fc0", "fc1", "fc2", "fc3"]
    assert s.in_edges == [[], [0], [1], [2]]
    # One tensor leaves fc0: its three edges, in edge order.
    assert list(s.tensor_edges) == [(0, "h0")]
    assert [(e.p, e.c, e.slot, e.needs_error) for e in s.tensor_edges[(0, "h0")]] == [
        (0, 1, 0, True), (0, 2, 0, True), (0, 3, 0, True)]


def test_unknown_space_is_refused():
    with pytest.raises(ValueError, match="unknown space 'nope'"):
        Structure(fan_graph(), "nope")
    with pytest.raises(ValueError, match="unknown space 'nope'"):
        CostModel(fan_graph(), array_from_levels([2]), "nope")


def test_folded_space_folds_the_relu_into_the_edge():
    folded = Structure(relu_chain(), "accpar")
    assert folded.names == ["fc1", "fc2"]
    assert folded.kept_sources("relu") == ["fc1"] and folded.kept_sources("fc2") == ["fc2"]
    (e,) = folded.edges
    # fc2 reads r1 (its own input tensor); the conversion is shared per source h1 (fc1's output).
    assert (e.p, e.c, e.slot, e.tensor.name, e.source) == (0, 1, 0, "r1", "h1")
    assert folded.needs_error == {"fc1": True, "relu": True, "fc2": True}
    full = Structure(relu_chain(), "full")
    assert full.names == ["fc1", "relu", "fc2"]
    assert [(e.p, e.c, e.tensor.name, e.source) for e in full.edges] == [(0, 1, "h1", "h1"), (1, 2, "r1", "r1")]


# --------------------------------------------------------------------------------------------
# sharing: fc0 I; fc1 II, fc2 II, fc3 III at one 2-way level (every consumer sees h0 whole).
#   forward: rows -> cols once for fc1 and fc2 (24), rows -> full for fc3 (48);
#   backward: fc1's and fc2's cols errors summed, cols -> rows once (24); fc3's partial 96.

def test_share_conversions_once_per_view_and_layout():
    m = CostModel(fan_graph(), array_from_levels([2]), "accpar")
    asg = [("I",), ("II",), ("II",), ("III",)]
    edges = m.structure.tensor_edges[(0, "h0")]
    shared = share_conversions(edges, [[a] for a in asg], 0, m.nodes, m.edge_view)
    (view,) = {conv.view for conv in shared}   # one view for all three consumers
    assert list(shared.items()) == [
        (Conversion(False, view, COLS), [(1, 0), (2, 0)]),
        (Conversion(True, view, COLS), [(1, 0), (2, 0)]),
        (Conversion(False, view, FULL), [(3, 0)]),
        (Conversion(True, view, PARTIAL), [(3, 0)]),
    ]
    producer = m.nodes[0].strategy("I")
    assert [conv.layouts(producer) for conv in shared] == [(ROWS, COLS), (COLS, ROWS), (ROWS, FULL), (PARTIAL, FULL)]
    assert [conv.consumer_only for conv in shared] == [False, False, False, True]
    assert [amount(m.convert_cost(0, view, *conv.layouts(producer)).bytes) for conv in shared] == [24, 24, 48, 96]
    # The exact evaluation charges each shared conversion once, to its first consumer.
    assert {i: amount(c.bytes) for i, c in m.level_edge_costs(asg, 0).items()} == {1: 48, 3: 144}


def test_share_conversions_over_every_choice_lists_each_needer_once():
    m = CostModel(fan_graph(2), array_from_levels([2]), "accpar")
    choices = [[(t,) for t in TYPES] for _ in m.nodes]
    shared = share_conversions(m.edges, choices, 0, m.nodes, m.edge_view)
    # Forward: I reads rows, II cols, III full; backward: I sends rows, II cols, III partial.
    layouts = [(conv.backward, conv.layout) for conv in shared]
    assert layouts == [(False, ROWS), (True, ROWS), (False, COLS), (True, COLS), (False, FULL), (True, PARTIAL)]
    for needers in shared.values():
        assert len(needers) == len(set(needers)) == 2   # one choice of each consumer


# --------------------------------------------------------------------------------------------
# encodings: pair matrix / factor table / group terms price a level as evaluate does

@pytest.mark.parametrize("space", ["accpar", "full"])
@pytest.mark.parametrize("use_factors", [True, False])
def test_fan_out_encodings_agree_with_evaluate_on_every_assignment(space, use_factors):
    m = CostModel(fan_graph(), array_from_levels([2, 2]), space)
    m.use_factors = use_factors
    top = [("I",), ("I",), ("I",), ("II",)]   # level 0 fixed: fc3's view at level 1 differs
    prob = m.level_problem([t + (None,) for t in top], 1, "comm")
    assert bool(prob.factors) == use_factors and bool(prob.groups) != use_factors
    labels = [m.labels(i) for i in range(len(m.nodes))]
    for pick in itertools.product(*(range(len(lab)) for lab in labels)):
        asg = [top[i] + (labels[i][t],) for i, t in enumerate(pick)]
        assert prob.objective(pick) == m.evaluate(asg).level_comm(1).bytes
