"""Node models by layer kind (hypar.cost.strategies): which builder serves which kind."""

from hypar import graph as G
from hypar.cost.strategies import DECISION_BUILDERS, FULL, node_model
from hypar.synthetic import gemm_chain


def test_every_decision_kind_has_a_builder():
    assert set(DECISION_BUILDERS) == set(G.DECISION_KINDS)


def test_gemm_types_per_space():
    g = gemm_chain([4, 8], 8)
    (name,) = list(g.nodes)
    assert node_model(g, name, "hypar").labels() == ("I", "II")
    assert node_model(g, name, "accpar").labels() == ("I", "II", "III")
    assert node_model(g, name, "full").labels() == ("I", "II", "III")


def test_non_decision_node_takes_layouts_full_first():
    g = G.new_graph("relu", 8)
    x, h = G.Tensor("x", (8, 4), 0, 1), G.Tensor("h", (8, 4), 0, 1)
    g.graph.update(inputs=(x,), outputs=(h,), input_consumers={"x": ("relu",)})
    G.add_layer(g, G.Layer(name="relu", op="Relu", kind=G.ELEMENTWISE, inputs=("x",), outputs=("h",)))
    node = node_model(g, "relu", "full")
    assert node.labels()[0] == FULL and len(node.labels()) == 3   # R, then S(b), S(f)
