"""Uneven and heterogeneous splits over several levels (hypar/shards.py's one rule): the simulator
executes every step on unequal (and empty) blocks, and the hierarchical cost model prices exactly
what it sends, per level -- on single conversions (every plan layout pair) and on whole training
steps of random plans.

For uneven sizes the SPEC's closed form (the judge's :func:`hypar.sim.hierarchy.closed_form`)
does not apply; the simulator's executed counts are the reference here. Amounts are elements
received, summed over every PE. Layout codes in ids as in test_hier_sim.py.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim_graphs import conv_layer, conv_net, random_assignment, relu_dag
from test_hier_sim import code, distributed, plan_pairs
from hypar import graph as G
from hypar.array import Level, PEArray, PEKind, array_from_levels
from hypar.cost import CostModel
from hypar.cost.hierarchical import HierarchicalPricer
from hypar.shards import block_sizes
from hypar.sim import simulate
from hypar.sim.comm import Comm
from hypar.sim.hierorder import run_order
from hypar.sim.mesh import Mesh, gather
from hypar.sim.support import unsupported
from hypar.synthetic import gemm_chain, gemm_layer, random_dag
from hypar.verify import report_table, verify_assignment


def het_array() -> PEArray:
    """Two levels, 2 x 3, PEs of 100/300/200 TFLOP/s: unequal fractions at both levels."""
    kinds = {"a": PEKind("a", tflops=100.0), "b": PEKind("b", tflops=300.0), "c": PEKind("c", tflops=200.0)}
    return PEArray("het2x3", (Level(2), Level(3)), kinds, ("a", "b", "c", "b", "b", "a"))


def hetero_2x2() -> PEArray:
    """tests/golden/hetero_2x2.yaml's shape: 2 fast PEs then 2 slow ones (3:1)."""
    kinds = {"fast": PEKind("fast", tflops=120.0), "slow": PEKind("slow", tflops=40.0)}
    return PEArray("hetero", (Level(2), Level(2)), kinds, ("fast", "fast", "slow", "slow"))


ARRAYS = {"2x2": array_from_levels([2, 2]), "3x2": array_from_levels([3, 2]), "2x3": array_from_levels([2, 3]),
          "4x2": array_from_levels([4, 2]), "2x2x2": array_from_levels([2, 2, 2]), "het2x3": het_array(),
          "het2x2": hetero_2x2()}
SIZES = (5, 6, 7, 3)


def executed(arr: PEArray, s: tuple, t: tuple, shape: tuple, seed: int = 0) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(elements received per level, reassembled result, truth) of one conversion s -> t on ``arr``."""
    mesh = Mesh(arr.fanouts, arr)
    comm = Comm(mesh)
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(shape)
    comm.sink = [0] * mesh.H
    out = run_order(comm, distributed(mesh, truth, s, rng), t)
    assert out.layouts == tuple(t)
    return comm.sink, gather(out), truth


def check_pairs(arr: PEArray, shapes) -> None:
    """Every plan pair on every shape: the order lands the tensor, the pricer's elements per
    level equal the executed counts exactly."""
    pricer = HierarchicalPricer(arr)
    for shape in shapes:
        for s, t in plan_pairs(arr.n_levels):
            sent, got, truth = executed(arr, s, t, shape)
            np.testing.assert_allclose(got, truth, rtol=1e-12, atol=1e-12, err_msg=code(s, t))
            priced = [pricer.level_elements(h, (truth.size,) + shape, s, t) for h in range(arr.n_levels)]
            assert priced == sent, (shape, code(s, t))


@pytest.mark.parametrize("name", ARRAYS)
def test_every_plan_pair_priced_as_executed(name):
    check_pairs(ARRAYS[name], [(5, 7), (6, 3)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ARRAYS)
def test_every_plan_pair_priced_as_executed_all_sizes(name):
    check_pairs(ARRAYS[name], list(itertools.product(SIZES, repeat=2)))


def test_empty_blocks_by_hand():
    """Batch 4 on 2x2x2 has blocks of 1 row on every second PE (row digits: level 0 [0,0,1,1],
    level 1 [0,1,0,1], level 2 always 0). One column, S(b) at every level -> R at every level, top
    first: at level 0 a PE's region is the rows whose level-1 and level-2 digits are its own: 2
    rows for the 4 PEs with level-2 coordinate 0 (they hold 1, receive 1), none for the others: 4;
    at level 1 those 4 PEs' region is all 4 rows (hold 2, receive 2): 8; at level 2 every PE's
    region is all 4 rows, the 4 PEs with coordinate 1 hold nothing and receive 4: 16."""
    arr = ARRAYS["2x2x2"]
    assert block_sizes(arr, 4).tolist() == [1, 0] * 4
    sent, got, truth = executed(arr, ("S(b)",) * 3, ("R",) * 3, (4, 1))
    np.testing.assert_allclose(got, truth)
    assert sent == [4, 8, 16]
    assert HierarchicalPricer(arr).level_elements(2, (4, 4, 1), ("S(b)",) * 3, ("R",) * 3) == 16


def test_uneven_layouts_run():
    """6 features split at both levels of 2x2 (fc1 II, II): nothing refused, counted == predicted.
    (Before the one placement rule this was refused by name: "fc1: an axis of size 6 split at
    levels [0, 1] of 2x2 does not split evenly there".) Under the reference convention, whose
    cost model rounds each level's view on its own, it still is (tests/sim/test_verify.py)."""
    model = CostModel(gemm_chain([6, 8], 8), array_from_levels([2, 2]), "accpar", convention="hierarchical")
    assert unsupported(model, [("II", "II")]) == []
    rep = verify_assignment(model, [("II", "II")])
    assert rep.ok, report_table(rep)
    assert not simulate(model, [("II", "I")]).unsupported


def test_heterogeneous_levels_refused_only_under_reference():
    g = gemm_chain([6, 8], 8)
    asg = [("I", "II")]
    ref = CostModel(g, hetero_2x2(), "accpar", convention="reference")
    assert any("heterogeneous PEs over several levels" in u for u in unsupported(ref, asg))
    rep = verify_assignment(CostModel(g, hetero_2x2(), "accpar", convention="hierarchical"), asg)
    assert rep.ok, report_table(rep)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 5), name=st.sampled_from(sorted(ARRAYS)),
       space=st.sampled_from(["hypar", "accpar", "full"]), relu=st.booleans(), batch=st.sampled_from(SIZES))
def test_property_random_dags_uneven(seed, n_layers, name, space, relu, batch):
    """Random DAGs (fan-out, residual Adds, Relus) with widths and batches that do not divide, x
    random plans on several levels (heterogeneous ones too): verify passes, counted == predicted
    at every level of every layer, numerics match."""
    g = (relu_dag if relu else random_dag)(n_layers, seed, batch, SIZES)
    model = CostModel(g, ARRAYS[name], space, convention="hierarchical")
    rep = verify_assignment(model, random_assignment(model, random.Random(seed)), seed=seed)
    assert rep.ok, report_table(rep)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_blocks=st.integers(1, 2), name=st.sampled_from(sorted(ARRAYS)),
       space=st.sampled_from(["accpar", "full"]), depthwise=st.booleans(), batch=st.sampled_from((3, 5, 6)))
def test_property_conv_nets_uneven(seed, n_blocks, name, space, depthwise, batch):
    """Conv (grouped / depthwise: whole groups on some PEs, none on others) / Relu / MaxPool /
    GlobalAveragePool / Flatten / Gemm nets with uneven channels and batches: verify passes.
    Without BatchNorm: its statistics with a replicated level below a partial one are priced
    apart from this rule (they differ on even sizes too)."""
    g = conv_net(seed, batch, (3, 5, 6), n_blocks=n_blocks, bn=False, depthwise=depthwise)
    model = CostModel(g, ARRAYS[name], space, convention="hierarchical")
    rep = verify_assignment(model, random_assignment(model, random.Random(seed)), seed=seed)
    assert rep.ok, report_table(rep)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), name=st.sampled_from(sorted(ARRAYS)), batch=st.sampled_from((3, 5, 6)))
def test_property_batchnorm_uneven_numerics(seed, name, batch):
    """BatchNorm on unequal and empty batch / channel blocks (space full, random layouts): the
    statistics' all-reduce and the normalisation run and match the one-device step. (Their
    counts are not compared here: statistics with a replicated level below a partial one are
    priced apart from the placement rule, and differ on even sizes too.)"""
    g = conv_net(seed, batch, (3, 5, 6), n_blocks=2, bn=True)
    model = CostModel(g, ARRAYS[name], "full", convention="hierarchical")
    res = simulate(model, random_assignment(model, random.Random(seed)), seed=seed)
    assert not res.unsupported, res.unsupported
    assert all(res.ok_numerics), res.max_err


def gemm_layernorm_gemm(B: int, d: int, op: str = "LayerNormalization"):
    """x (B, d) -> Gemm (d) -> LayerNormalization (or ``op``, an RMS norm) over the features -> Gemm (d)."""
    g = G.new_graph("gln", B)
    g.graph["inputs"] = (G.Tensor("x", (B, d), 0, 1),)
    G.add_layer(g, gemm_layer("fc0", B, d, d, ("x",), "h"))
    g.graph["input_consumers"] = {"x": ("fc0",)}
    G.add_layer(g, G.Layer(name="ln", op=op, kind=G.FEATURENORM, inputs=("h",), outputs=("n",),
                           attrs=(("axis", -1), ("epsilon", 1e-5))))
    G.add_edge(g, "fc0", "ln", G.Tensor("h", (B, d), 0, 1), 0)
    G.add_layer(g, gemm_layer("fc1", B, d, d, ("n",), "y"))
    G.add_edge(g, "ln", "fc1", G.Tensor("n", (B, d), 0, 1), 0)
    g.graph["outputs"] = (G.Tensor("y", (B, d), 0, 1),)
    return g


@pytest.mark.parametrize("op", ["LayerNormalization", "RMSNormalization"])
@pytest.mark.parametrize("name", ["3x2", "2x2x2", "het2x3"])
def test_layernorm_over_unequal_feature_blocks(name, op):
    """LayerNorm (RMSNorm) over features split unequally (5 over 6 or 8 PEs: some PEs hold none) and a batch
    of 3: its row statistics are all-reduced over the levels splitting the features. Every layout
    of the norm runs with exact numerics, and every one that verifies on even sizes (batch and
    features a multiple of the PEs) verifies here too: counted == predicted. (Statistics with a
    replicated level below a partial one are priced apart from the placement rule and differ on
    even sizes too.)"""
    arr = ARRAYS[name]
    even = CostModel(gemm_layernorm_gemm(2 * arr.n_pes, 2 * arr.n_pes, op), arr, "full", convention="hierarchical")
    model = CostModel(gemm_layernorm_gemm(3, 5, op), arr, "full", convention="hierarchical")
    checked = 0
    for ln in itertools.product(model.labels(1), repeat=model.n_levels):
        asg = [("III",) * model.n_levels, ln, ("II",) * model.n_levels]
        rep = verify_assignment(model, asg)
        assert not rep.unsupported and all(l.max_err < 1e-9 for l in rep.layers), report_table(rep)
        if verify_assignment(even, asg).ok:
            assert rep.ok, report_table(rep)
            checked += 1
    assert checked >= 3 ** model.n_levels // 2


def conv_flatten_gemm(B: int, C: int, hw: int):
    """x (B, 3, hw, hw) -> Conv (C channels) -> Flatten (B, C hw hw) -> Gemm (4 outputs)."""
    g = G.new_graph("cfg", B)
    x = G.Tensor("x", (B, 3, hw, hw), 0, 1)
    g.graph["inputs"] = (x,)
    conv, ho = conv_layer("conv", B, 3, C, hw, "x", "c")
    G.add_layer(g, conv)
    g.graph["input_consumers"] = {"x": ("conv",)}
    flat = G.Layer(name="flat", op="Flatten", kind=G.RESHAPE, inputs=("c",), outputs=("fl",), attrs=(("axis", 1),))
    G.add_layer(g, flat)
    G.add_edge(g, "conv", "flat", G.Tensor("c", (B, C, ho, ho), 0, 1), 0)
    G.add_layer(g, gemm_layer("fc", B, C * ho * ho, 4, ("fl",), "y"))
    G.add_edge(g, "flat", "fc", G.Tensor("fl", (B, C * ho * ho), 0, 1), 0)
    g.graph["outputs"] = (G.Tensor("y", (B, 4), 0, 1),)
    return g


def test_flatten_of_unequal_channel_blocks_is_named():
    """5 channels of 4x4 over 3x2, split at level 0: channel blocks 2, 2, 1 (channels [0,0,1,1,2]
    at level 0), but the flattened 80 features split 27, 27, 26: channel 1's features 16..31 lie
    in two level-0 parts. Flatten cannot keep the shards, so the plan is refused by name (it
    used to run on and fail later for want of an input shard); with 6 channels (2, 2, 2 and 32,
    32, 32 features) the same plan runs and verifies."""
    asg = [("III", "I"), ("S(f)", "R"), ("II", "I")]
    model = CostModel(conv_flatten_gemm(4, 5, 4), ARRAYS["3x2"], "full", convention="hierarchical")
    res = simulate(model, asg)
    assert res.unsupported == ["flat (Flatten): the shards do not map through it (uneven split of (4, 5, 4, 4) vs "
                               "(4, 80)); the cost model assumes they do"]
    model = CostModel(conv_flatten_gemm(4, 6, 4), ARRAYS["3x2"], "full", convention="hierarchical")
    rep = verify_assignment(model, asg)
    assert rep.ok, report_table(rep)
