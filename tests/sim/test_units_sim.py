"""Axes placed in units (hypar/shards.py "Units", hypar/onnx/units.py) on both sides: the
hierarchical pricer equals the simulator's executed counts exactly for conversions of tensors whose
axes carry units, and for whole training steps of a small reshape-to-heads graph (4 heads of 4
over 3x2, 4x2, 2x2x2 and a heterogeneous 2x2 array: uneven everywhere), whose reshapes the shards
now map through (before units the simulator refused them: "the shards do not map through it")."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sim_graphs import random_assignment
from onnx_blocks import plain_attention
from test_hier_sim import code, distributed, plan_pairs
from test_uneven import hetero_2x2
from hypar.array import PEArray, array_from_levels
from hypar.cost import CostModel
from hypar.cost.hierarchical import HierarchicalPricer
from hypar.onnx import load_layer_graph
from hypar.sim.comm import Comm
from hypar.sim.hierorder import run_order
from hypar.sim.mesh import Mesh, TensorAxes, gather
from hypar.verify import report_table, verify_assignment

ARRAYS = {"3x2": array_from_levels([3, 2]), "4x2": array_from_levels([4, 2]),
          "2x2x2": array_from_levels([2, 2, 2]), "het2x2": hetero_2x2()}


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
        out = run_order(comm, distributed(mesh, truth, s, rng, axes), t)
        np.testing.assert_allclose(gather(out), truth, rtol=1e-12, atol=1e-12, err_msg=code(s, t))
        priced = [pricer.level_elements(h, (truth.size,) + shape + units, s, t) for h in range(arr.n_levels)]
        assert priced == comm.sink, code(s, t)


def heads_graph():
    """tests/onnx_blocks.py's plain attention: x (4, 8, 16) -> q, k, v projections reshaped into 4
    heads of 4 -> scores, softmax, context -> heads merged back -> output projection."""
    return load_layer_graph(plain_attention())


def test_heads_graph_units():
    feats = {d["tensor"].name: d["tensor"].feature_unit for _p, _c, d in heads_graph().edges(data=True)}
    assert feats["q"] == feats["k"] == feats["v"] == feats["ctx_r"] == 4
    assert feats["q_r"] == feats["q_h"] == feats["probs"] == feats["ctx"] == feats["ctx_t"] == 1


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("space", ["accpar", "full"])
def test_heads_graph_steps_priced_as_executed(name, space):
    """Random plans (heads split at any level, unevenly): nothing refused, numerics match, and
    counted == predicted at every level of every layer."""
    model = CostModel(heads_graph(), ARRAYS[name], space, convention="hierarchical")
    for seed in range(8):
        asg = random_assignment(model, random.Random(seed))
        rep = verify_assignment(model, asg, seed=seed)
        assert rep.ok, (asg, report_table(rep))


@pytest.mark.parametrize("name", ARRAYS)
def test_heads_split_by_features_everywhere(name):
    """Every node splitting its features (II / S(f)) at every level: each PE's heads are whole."""
    model = CostModel(heads_graph(), ARRAYS[name], "full", convention="hierarchical")
    asg = [tuple("II" if "II" in model.labels(i) else "S(f)" if "S(f)" in model.labels(i) else "R"
                 for _ in range(model.n_levels)) for i in range(len(model.names))]
    rep = verify_assignment(model, asg)
    assert rep.ok, report_table(rep)
