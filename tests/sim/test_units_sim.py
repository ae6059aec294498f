"""Axes placed in units (hypar/shards.py "Units", hypar/onnx/units.py) on both sides: the
hierarchical pricer equals the simulator's executed counts exactly for conversions of tensors whose
axes carry units, and for whole training steps of a small reshape-to-heads graph (3 heads of 4
over 3x2, 4x2, 2x2x2 and a heterogeneous 2x2 array: uneven everywhere), whose reshapes the shards
now map through (before units the simulator refused them: "the shards do not map through it")."""

from __future__ import annotations

import random

import numpy as np
import pytest
from onnx import numpy_helper, parser

from sim_graphs import random_assignment
from test_hier_sim import code, plan_pairs
from test_uneven import hetero_2x2
from hypar.array import PEArray, array_from_levels
from hypar.cost import CostModel
from hypar.cost.hierarchical import HierarchicalPricer
from hypar.cost.strategies import FULL, PARTIAL
from hypar.onnx import load_layer_graph
from hypar.sim.comm import Comm
from hypar.sim.hierorder import run_order
from hypar.sim.mesh import Dist, Mesh, TensorAxes, gather, scatter
from hypar.verify import report_table, verify_assignment

ARRAYS = {"3x2": array_from_levels([3, 2]), "4x2": array_from_levels([4, 2]),
          "2x2x2": array_from_levels([2, 2, 2]), "het2x2": hetero_2x2()}


def laid_out(mesh: Mesh, truth: np.ndarray, s: tuple, axes: TensorAxes, rng) -> Dist:
    """``truth`` in layouts ``s`` with ``axes`` (and their units); at P levels the members of each
    P-group hold random parts summing to it."""
    d = scatter(mesh, truth, tuple(FULL if x == PARTIAL else x for x in s), axes)
    plevels = [h for h, x in enumerate(s) if x == PARTIAL]
    if not plevels:
        return d
    groups: dict[tuple, list[int]] = {}
    for p, c in enumerate(mesh.coords):
        groups.setdefault(tuple(c[g] for g in range(mesh.H) if g not in plevels), []).append(p)
    vals: list = [None] * mesh.P
    for members in groups.values():
        parts = [rng.standard_normal(truth.shape) for _ in members[1:]]
        for p, part in zip(members, [truth - sum(parts)] + parts):
            vals[p] = np.where(np.isnan(d.vals[p]), np.nan, part)
    return Dist(mesh, truth.shape, s, vals, axes)


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("shape,units", [((5, 12), (1, 4)), ((6, 12), (2, 3)), ((4, 9), (4, 3))],
                         ids=["f-unit4", "b2-f3", "b4-f3"])
def test_conversions_in_units_priced_as_executed(name, shape, units):
    arr: PEArray = ARRAYS[name]
    pricer = HierarchicalPricer(arr)
    mesh = Mesh(arr.fanouts, arr)
    axes = TensorAxes((0, 1), units)
    rng = np.random.default_rng(0)
    for s, t in plan_pairs(arr.n_levels):
        truth = rng.standard_normal(shape)
        comm = Comm(mesh)
        comm.sink = [0] * mesh.H
        out = run_order(comm, laid_out(mesh, truth, s, axes, rng), t)
        np.testing.assert_allclose(gather(out), truth, rtol=1e-12, atol=1e-12, err_msg=code(s, t))
        priced = [pricer.level_elements(h, (truth.size,) + shape + units, s, t) for h in range(arr.n_levels)]
        assert priced == comm.sink, code(s, t)


HEADS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 8, 12] x) => (float[2, 8, 12] y) {
    s4 = Constant<value = int64[4] {0, 0, 3, 4}>()
    s3 = Constant<value = int64[3] {0, 0, 12}>()
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    v = MatMul(x, wv)
    q4 = Reshape(q, s4)
    k4 = Reshape(k, s4)
    v4 = Reshape(v, s4)
    qh = Transpose<perm = [0, 2, 1, 3]>(q4)
    kt = Transpose<perm = [0, 2, 3, 1]>(k4)
    vh = Transpose<perm = [0, 2, 1, 3]>(v4)
    sc = MatMul(qh, kt)
    p = Softmax<axis = -1>(sc)
    c = MatMul(p, vh)
    ct = Transpose<perm = [0, 2, 1, 3]>(c)
    cm = Reshape(ct, s3)
    o = MatMul(cm, wo)
    y = Relu(o) }"""


def heads_graph(batch: int):
    """x (B, 8, 12) -> q, k, v projections reshaped into 3 heads of 4 -> attention -> heads merged
    back -> output projection -> Relu (a folded op reading a graph input is not simulated)."""
    m = parser.parse_model(HEADS)
    for name in ("wq", "wk", "wv", "wo"):
        m.graph.initializer.append(numpy_helper.from_array(np.zeros((12, 12), np.float32), name))
    return load_layer_graph(m, batch=batch)


def test_heads_graph_units():
    g = heads_graph(2)
    feats = {d["tensor"].name: d["tensor"].feature_unit for _p, _c, d in g.edges(data=True)}
    assert feats["q"] == feats["k"] == feats["v"] == feats["cm"] == 4
    assert feats["qh"] == feats["p"] == feats["c"] == feats["ct"] == feats["o"] == 1


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("space", ["accpar", "full"])
@pytest.mark.parametrize("batch", [2, 3])
def test_heads_graph_steps_priced_as_executed(name, space, batch):
    """Random plans (heads split at any level, unevenly): nothing refused, numerics match, and
    counted == predicted at every level of every layer."""
    model = CostModel(heads_graph(batch), ARRAYS[name], space, convention="hierarchical")
    for seed in range(6):
        asg = random_assignment(model, random.Random(seed))
        rep = verify_assignment(model, asg, seed=seed)
        assert rep.ok, (asg, report_table(rep))


@pytest.mark.parametrize("name", ARRAYS)
def test_heads_split_by_features_everywhere(name):
    """Every node splitting its features (II / S(f)) at every level: each PE's heads are whole."""
    model = CostModel(heads_graph(2), ARRAYS[name], "full", convention="hierarchical")
    asg = [tuple("II" if "II" in model.labels(i) else "S(f)" if "S(f)" in model.labels(i) else "R"
                 for _ in range(model.n_levels)) for i in range(len(model.names))]
    rep = verify_assignment(model, asg)
    assert rep.ok, report_table(rep)
