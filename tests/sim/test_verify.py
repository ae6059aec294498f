"""`hypar verify`: the simulated step equals the one-device step and moves the cost model's bytes.

Simulator conventions (hypar/simulate.py): every PE holds NaN outside its shard, so a missing
message poisons the result; every element received is counted at the level of the group it
crosses. Amounts are elements received summed over all PEs x dtype bytes (2), as the cost model's
``comm_bytes``.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import make_runner
from sim_graphs import conv_layer, conv_net, random_assignment, relu_dag
import hypar.cost.hierarchical
import hypar.cost.model
from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cli import cli
from hypar.cost import CostModel
from hypar.plan import read_plan
from hypar.sim import SimulationError, simulate
from hypar.sim.comm import Comm
from hypar.sim.mesh import Dist, Mesh, shard_mask
from hypar.sim.schedule import schedule
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.synthetic import gemm_chain, gemm_layer, random_dag
from hypar.verify import check_plan_costs, report_table, verify_assignment, verify_plan


# ----------------------------------------------------------------------------- graphs

def mlp_onnx(path: Path, batch: int = 8, dims=(16, 32, 32, 16), op: str = "Relu") -> Path:
    """x -> MatMul -> Relu -> MatMul -> Relu (+ residual of the first Relu) -> MatMul -> Relu."""
    f = TensorProto.FLOAT
    inits, nodes, prev = [], [], "x"
    for l in range(len(dims) - 1):
        w = f"w{l}"
        inits.append(numpy_helper.from_array(np.zeros((dims[l], dims[l + 1]), np.float32), w))
        nodes.append(helper.make_node("MatMul", [prev, w], [f"h{l}"], name=f"mm{l}"))
        nodes.append(helper.make_node(op, [f"h{l}"], [f"r{l}"], name=f"act{l}"))
        prev = f"r{l}"
        if l == 1 and dims[2] == dims[1]:
            nodes.append(helper.make_node("Add", [prev, "r0"], ["s1"], name="add1"))
            prev = "s1"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", f, (batch, dims[0]))],
                              [helper.make_tensor_value_info(prev, f, (batch, dims[-1]))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path



# ----------------------------------------------------------------------------- collectives

def test_allreduce_counts_and_result():
    # 3 PEs in one 3-way level, 6x6 partial sums: an all-reduce receives 2(k-1)/k x 36 = 48 per PE.
    mesh = Mesh((3,))
    comm = Comm(mesh)
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((6, 6)) for _ in range(3)]
    comm.sink = [0]
    out = comm.allreduce(Dist(mesh, (6, 6), (PARTIAL,), parts), 0)
    assert comm.sink == [3 * 48]
    for v in out.vals:
        np.testing.assert_allclose(v, sum(parts))


def test_relayout_rows_to_cols_two_levels():
    # 2x2 PEs, 8x8 tensor: rows at both levels -> cols at level 0 (all-to-all inside each level-0
    # split): every PE receives A/4 (rows of the other half) x 1/2 (its columns) / 2 (level-1 rows).
    mesh = Mesh((2, 2))
    comm = Comm(mesh)
    full = np.arange(64.0).reshape(8, 8)
    vals = []
    for p in range(4):
        v = np.full((8, 8), np.nan)
        m = shard_mask(mesh, (8, 8), (ROWS, ROWS), p)
        v[m] = full[m]
        vals.append(v)
    comm.sink = [0, 0]
    out = comm.relayout(Dist(mesh, (8, 8), (ROWS, ROWS), vals), 0, COLS)
    assert comm.sink == [4 * 8, 0]          # per level-0 subgroup A/4 = 16, as the cost model
    for p, v in enumerate(out.vals):
        m = shard_mask(mesh, (8, 8), (COLS, ROWS), p)
        np.testing.assert_array_equal(v[m], full[m])
        assert np.isnan(v[~m]).all()


def test_schedules_no_order_realises_exactly_the_known_patterns():
    """At two 2-way levels the conversions whose model amounts no level-by-level order realises
    are exactly two families (see the xfail tests below for the derivations)."""
    layouts_out, layouts_in = (ROWS, FULL, COLS), (ROWS, COLS, FULL)
    fwd = {(s, t) for s in itertools.product(layouts_out, repeat=2) for t in itertools.product(layouts_in, repeat=2)
           if schedule(s, t, t, False)[1]}
    assert fwd == {(s, t) for s in ((ROWS, FULL), (COLS, FULL)) for t in ((COLS, FULL), (ROWS, FULL), (FULL, FULL))
                   if s[0] != t[0]}
    errs_in, errs_need = (ROWS, COLS, PARTIAL), (ROWS, FULL, COLS)
    bwd = {(s, t) for s in itertools.product(errs_in, repeat=2) for t in itertools.product(errs_need, repeat=2)
           if schedule(s, t, s, True)[1]}
    assert bwd == {(s, (FULL, FULL)) for s in itertools.product((ROWS, COLS), errs_in)}


# ----------------------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 5), k=st.sampled_from([2, 3, 4]),
       space=st.sampled_from(["hypar", "accpar", "full"]), relu=st.booleans())
def test_property_one_level_verifies(seed, n_layers, k, space, relu):
    """Random small DAGs x random plans (every type) on one 2-, 3- or 4-way level: the simulated
    step equals the reference and every layer's counted bytes equal the cost model's exactly."""
    rng = random.Random(seed)
    widths = (k, 2 * k, 3 * k)
    g = (relu_dag if relu else random_dag)(n_layers, seed, 2 * k, widths)
    model = CostModel(g, array_from_levels([k]), space)
    rep = verify_assignment(model, random_assignment(model, rng), seed=seed)
    assert rep.ok, report_table(rep)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 4),
       fanouts=st.sampled_from([(2, 2), (3, 2), (2, 3), (2, 2, 2)]),
       space=st.sampled_from(["hypar", "accpar", "full"]), relu=st.booleans())
def test_property_multi_level(seed, n_layers, fanouts, space, relu):
    """Several levels, a ``reference`` model: numerics always match; counted bytes match the cost
    model at every layer and level except where the simulator proves no level-by-level order
    realises the model's amount (a cost-model limitation, named in the reason) -- never an
    unexplained difference.

    Since issue 10's second session verify runs the hierarchical order under ``reference`` too (the
    one real execution) and reports the reference prices' differences as information, not
    failure: so the report always passes (numerics), never carries a byte reason, each
    information line is a real difference whose sent bytes are the hierarchical price, and the
    hierarchical model's report on the same plan passes with bytes exact at every level. The
    reference simulator's own property (flags explain every difference) is checked on
    ``simulate`` directly."""
    rng = random.Random(seed)
    P = int(np.prod(fanouts))
    g = (relu_dag if relu else random_dag)(n_layers, seed, 2 * P, (P, 2 * P))
    model = CostModel(g, array_from_levels(list(fanouts)), space)
    asg = random_assignment(model, rng)
    rep = verify_assignment(model, asg, seed=seed)
    assert not rep.unsupported and not rep.bytes_must_match
    for layer in rep.layers:
        for r in layer.reasons:
            assert "cost-model limitation" in r, report_table(rep)
    assert rep.ok, report_table(rep)
    for layer in rep.layers:
        for info in layer.information:
            assert info.counted_bytes == info.hierarchical_bytes != info.predicted_bytes, report_table(rep)
    hier = verify_assignment(CostModel(g, model.array, space, convention="hierarchical"), asg, seed=seed)
    assert hier.ok and hier.bytes_must_match, report_table(hier)
    res = simulate(model, asg, seed=seed)
    if not res.flags and not res.split_dedup:
        ev = model.evaluate(asg)
        for i in range(len(model.names)):
            for h in range(model.n_levels):
                assert res.counted[i][h] * 2 == pytest.approx(ev.comm[i][h].bytes, rel=1e-9), (model.names[i], h)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_blocks=st.integers(1, 3), k=st.sampled_from([2, 3]),
       space=st.sampled_from(["accpar", "full"]))
def test_property_conv_nets_one_level(seed, n_blocks, k, space):
    """Conv (im2col) / BatchNorm / Relu / MaxPool / GlobalAveragePool / Flatten / Gemm nets x random
    plans on one level: exact bytes (batch-norm statistics all-reduced under a batch split in the
    full space; folded ones flagged), numerics within tolerance."""
    rng = random.Random(seed)
    g = conv_net(seed, 2 * k, (k, 2 * k), n_blocks=n_blocks)
    model = CostModel(g, array_from_levels([k]), space)
    rep = verify_assignment(model, random_assignment(model, rng), seed=seed)
    assert not rep.unsupported
    assert all(l.max_err <= rep.tol * max(1.0, l.scale) for l in rep.layers), report_table(rep)
    for layer in rep.layers:
        for r in layer.reasons:
            assert "folded normalisation" in r, report_table(rep)
    if space == "full":
        assert rep.ok, report_table(rep)


def _het_array(tflops: list[float]):
    from hypar.array import Level, PEArray, PEKind

    kinds = {f"k{j}": PEKind(f"k{j}", tflops=t) for j, t in enumerate(tflops)}
    return PEArray("het", (Level(len(tflops)),), kinds, tuple(f"k{j}" for j in range(len(tflops))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), tflops=st.lists(st.sampled_from([50.0, 100.0, 300.0]), min_size=2, max_size=3),
       which=st.sampled_from(["relu", "dag", "conv"]), space=st.sampled_from(["accpar", "full"]))
def test_property_heterogeneous_uneven_one_level(seed, tflops, which, space):
    """One heterogeneous level (subgroups get the split axis in proportion to throughput, rounded
    as the cost model rounds) and widths / batches that do not divide: exact bytes and numerics."""
    rng = random.Random(seed)
    g = {"relu": lambda: relu_dag(3, seed, 7, (5, 9, 12)), "dag": lambda: random_dag(3, seed, 6, (5, 7, 10)),
         "conv": lambda: conv_net(seed, 5, (3, 5), 2, bn=space == "full")}[which]()
    model = CostModel(g, _het_array(tflops), space)
    rep = verify_assignment(model, random_assignment(model, rng), seed=seed)
    assert rep.ok, report_table(rep)


@pytest.mark.parametrize("types", [
    [("I", "I"), ("I", "I"), ("I", "I")],
    [("II", "I"), ("I", "II"), ("III", "I")],
    [("III", "III"), ("II", "II"), ("III", "I")],
    [("I", "III"), ("III", "I"), ("II", "I")],
])
def test_chain_two_levels_exact(types):
    model = CostModel(gemm_chain([8, 16, 8, 8], 8), array_from_levels([2, 2]), "accpar")
    rep = verify_assignment(model, types)
    assert rep.ok, report_table(rep)
    # under reference the step runs the hierarchical order: its prices are exact at every level
    hier = CostModel(gemm_chain([8, 16, 8, 8], 8), array_from_levels([2, 2]), "accpar", convention="hierarchical")
    assert verify_assignment(hier, types).ok


def test_three_way_and_two_way_levels_exact():
    """A reference model on 3x2: every type pair passes. Was: producer II at both levels with the
    consumer's error sharded at level 0 failed at fc2 level 0 (the reference simulator, looking for
    an order with the model's per-level amounts, found none). Now the step runs the hierarchical
    order (the one real execution) and the reference prices are information: fc2's level 1 is
    priced 1,152 B below what is sent for (II, I) and (II, II), and 1,152 B above for (III, III);
    the hierarchical prices are exact everywhere."""
    model = CostModel(gemm_chain([12, 24, 12], 12), array_from_levels([3, 2]), "accpar")
    hier = CostModel(gemm_chain([12, 24, 12], 12), array_from_levels([3, 2]), "accpar", convention="hierarchical")
    differ = {("II", "I"): (5184, 4032), ("II", "II"): (2880, 1728), ("III", "III"): (1728, 2880)}
    for t1, t2 in itertools.product(["I", "II", "III"], repeat=2):
        rep = verify_assignment(model, [(t1, t1), (t2, "I")])
        assert rep.ok, report_table(rep)
        info = [(l.name, i.level, i.counted_bytes, i.predicted_bytes) for l in rep.layers for i in l.information]
        assert info == ([("fc2", 1, *differ[(t1, t2)])] if (t1, t2) in differ else []), report_table(rep)
        assert verify_assignment(hier, [(t1, t1), (t2, "I")]).ok


# ----------------------------------------------------------------------------- cost-model discrepancies

def _min_received(mesh: Mesh, shape, held: tuple, needed: tuple) -> int:
    """Information bound: elements every PE needs and does not hold, summed over PEs."""
    return sum(int((shard_mask(mesh, shape, needed, p) & ~shard_mask(mesh, shape, held, p)).sum())
               for p in range(mesh.P))


def test_discrepancy_bounds_are_physical():
    """The amounts the simulator counts in the two xfail cases below are the information bound:
    no schedule at all can move fewer elements than the PEs are missing."""
    mesh = Mesh((2, 2))
    # backward: fc2 (I, I) holds E(h1) rows x rows; fc1 (II, II) needs it whole on every PE.
    assert _min_received(mesh, (8, 8), (ROWS, ROWS), (FULL, FULL)) == 192 // 1  # 4 PEs x 48
    # forward: fc1 (I, II) leaves h1 rows / full; fc2 (II, III) needs cols / full.
    assert _min_received(mesh, (8, 8), (ROWS, FULL), (COLS, FULL)) == 64        # 4 PEs x 16


def _model_total(src: tuple, tgt: tuple, view: tuple, n: int = 8) -> float:
    """The cost model's elements for one n x n conversion on 2x2 PEs: level h priced on the
    consumer's view (rows halved by each ROWS above, columns by each COLS above), summed over the
    2^h groups (hypar.cost.model.convert, as CostModel.level_edge_costs uses it)."""
    from hypar.cost.collectives import convert

    total = 0.0
    for h in range(len(src)):
        bs = n // 2 ** view[:h].count(ROWS)
        fs = n // 2 ** view[:h].count(COLS)
        total += 2 ** h * sum(convert(src[h], tgt[h], bs * fs, bs, fs, (0.5, 0.5)))
    return total


def test_flagged_conversions_are_below_the_information_bound():
    """Independent of the simulator: for every two-level conversion without partial sums that no
    level-by-level order realises, the cost model's total is below what the PEs are missing (each
    PE must receive every element it needs and does not hold), so no execution at all moves as
    little as the model says."""
    mesh = Mesh((2, 2))
    checked = 0
    for s_, t in itertools.product(itertools.product((ROWS, COLS, FULL), repeat=2), repeat=2):
        for backward in (False, True):
            if backward and FULL in s_:
                continue
            view = s_ if backward else t
            if not schedule(s_, t, view, backward)[1]:
                continue
            bound = _min_received(mesh, (8, 8), s_, t)
            assert _model_total(s_, t, view) < bound, (s_, t, backward)
            checked += 1
    assert checked >= 8


def test_batchnorm_statistics_of_the_channels_in_view():
    """bn0 (8 channels) S(f) at level 0, S(b) at level 1 on 2x2 PEs: each level-1 group holds 4
    channels and all-reduces 2 x 4 statistics forward and 2 x 4 sums backward (16 elements;
    2 subgroups x 16 = 32 per group, 64 for both groups = 128 bytes). Was priced at all 8
    channels (256 bytes) before the fix in strategies.quantity."""
    g = conv_net(0, 8, (4, 8), n_blocks=1)
    model = CostModel(g, array_from_levels([2, 2]), "full")
    types = {"conv0": ("III", "I"), "bn0": ("S(f)", "S(b)"), "relu0": ("S(f)", "S(b)"), "fc": ("I", "I")}
    asg = [types.get(n, ("S(b)", "S(b)")) for n in model.names]
    rep = verify_assignment(model, asg)
    bn = next(l for l in rep.layers if l.name == "bn0")
    assert [c.counted_bytes for c in bn.levels] == [0, 128]
    assert rep.ok, report_table(rep)


@pytest.mark.xfail(strict=True, reason=(
    "folded space (hypar/cost.py CostModel._edges folds BatchNorm into the edge): a folded BatchNorm "
    "whose consumer splits the batch needs its statistics all-reduced (training mode: 2C forward, "
    "2C backward per batch-split level), which the folded space never charges."))
def test_xfail_folded_batchnorm_statistics_uncharged():
    g = conv_net(1, 4, (2, 4), n_blocks=1)
    model = CostModel(g, array_from_levels([2]), "accpar")
    rep = verify_assignment(model, [("I",)] * len(model.names))
    assert all(l.max_err <= rep.tol * max(1.0, l.scale) for l in rep.layers)
    assert rep.ok, report_table(rep)


def test_folded_size_change_after_add_is_reported():
    """Add -> Relu -> GlobalAveragePool -> Flatten -> Gemm folded (ResNet's tail): the model converts
    the pooled tensor, but the Add needs its operands at full size in one layout (Relu before the
    pool is not linear): reported as unsupported, naming the layer and the tensors."""
    B, C = 4, 4
    g = G.new_graph("tail", B)
    x = G.Tensor("x", (B, C, 4, 4), 0, 1)
    g.graph.update(inputs=(x,), input_consumers={"x": ("c1",)})
    l1, _ = conv_layer("c1", B, C, C, 4, "x", "a")
    l2, _ = conv_layer("c2", B, C, C, 4, "a", "b")
    G.add_layer(g, l1)
    G.add_layer(g, l2)
    t = lambda n, shape: G.Tensor(n, shape, 0, 1)  # noqa: E731
    G.add_edge(g, "c1", "c2", t("a", (B, C, 4, 4)), 0)
    G.add_layer(g, G.Layer(name="add", op="Add", kind=G.BINARY, inputs=("b", "a"), outputs=("s",)))
    G.add_edge(g, "c2", "add", t("b", (B, C, 4, 4)), 0)
    G.add_edge(g, "c1", "add", t("a", (B, C, 4, 4)), 1)
    G.add_layer(g, G.Layer(name="relu", op="Relu", kind=G.ELEMENTWISE, inputs=("s",), outputs=("r",)))
    G.add_edge(g, "add", "relu", t("s", (B, C, 4, 4)), 0)
    G.add_layer(g, G.Layer(name="gap", op="GlobalAveragePool", kind=G.POOL, inputs=("r",), outputs=("gp",)))
    G.add_edge(g, "relu", "gap", t("r", (B, C, 4, 4)), 0)
    G.add_layer(g, G.Layer(name="flat", op="Flatten", kind=G.RESHAPE, inputs=("gp",), outputs=("fl",),
                           attrs=(("axis", 1),)))
    G.add_edge(g, "gap", "flat", t("gp", (B, C, 1, 1)), 0)
    G.add_layer(g, gemm_layer("fc", B, C, 2, ("fl",), "y"))
    G.add_edge(g, "flat", "fc", t("fl", (B, C)), 0)
    g.graph["outputs"] = (t("y", (B, 2)),)
    model = CostModel(g, array_from_levels([2]), "accpar")
    rep = verify_assignment(model, [("I",), ("I",), ("II",)])
    assert not rep.ok and len(rep.unsupported) == 1
    assert rep.unsupported[0].startswith("fc: the cost model converts fl (4, 4) from c1, but the folded ops")
    # the full space keeps the Add and its layout: verifies exactly
    full = CostModel(g, array_from_levels([2]), "full")
    asg = [("I",) if n.startswith("c") else ("II",) if n == "fc" else ("S(b)",) for n in full.names]
    assert verify_assignment(full, asg).ok


# ----------------------------------------------------------------------------- plans and corruption

@pytest.fixture()
def mlp(tmp_path):
    return mlp_onnx(tmp_path / "mlp.onnx")


def _partition(model: Path, out: Path, *args: str) -> dict:
    res = make_runner().invoke(cli, ["partition", str(model), "-q", "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    return read_plan(out)


@pytest.mark.parametrize("args", [["--levels", "2"], ["--levels", "4", "--space", "accpar"],
                                  ["--levels", "3"]])
def test_cli_verify_partition_plan(mlp, tmp_path, args):
    dims_ok = args[1] != "3"
    model = mlp if dims_ok else mlp_onnx(tmp_path / "mlp3.onnx", batch=6, dims=(12, 24, 24, 12))
    plan_path = tmp_path / "plan.json"
    _partition(model, plan_path, *args)
    res = make_runner().invoke(cli, ["verify", str(model), str(plan_path), "--batch", "6" if not dims_ok else "8"])
    assert res.exit_code == 0, res.output
    assert "plan costs at batch" in res.output and "every layer and level matches" in res.output
    assert res.output.strip().splitlines()[-1].startswith("PASS")
    assert "tolerance" in res.output


def test_cli_verify_heterogeneous_array(mlp, tmp_path):
    cfg = tmp_path / "het.yaml"
    cfg.write_text("name: het\npe_kinds:\n  slow: {tflops: 100}\n  fast: {tflops: 300}\n"
                   "levels:\n  - {fanout: 2, bandwidth_gbps: 25}\n"
                   "pes:\n  - {kind: slow, count: 1}\n  - {kind: fast, count: 1}\n")
    plan_path = tmp_path / "plan.json"
    _partition(mlp, plan_path, "--array", str(cfg), "--batch", "8")
    res = make_runner().invoke(cli, ["verify", str(mlp), str(plan_path), "--batch", "7"])
    assert res.exit_code == 0, res.output
    assert "array het" in res.output and res.output.strip().splitlines()[-1].startswith("PASS")


def test_cli_verify_k_way_levels(tmp_path):
    """--pes 6 factors into a 3-way and a 2-way level; the partitioned plan verifies exactly."""
    model = mlp_onnx(tmp_path / "mlp6.onnx", batch=12, dims=(12, 24, 24, 12))
    plan_path = tmp_path / "plan.json"
    plan = _partition(model, plan_path, "--pes", "6")
    assert [lv["fanout"] for lv in plan["array"]["levels"]] == [3, 2]
    res = make_runner().invoke(cli, ["verify", str(model), str(plan_path), "--batch", "12"])
    assert res.exit_code == 0, res.output
    assert "fanouts 3x2" in res.output and res.output.strip().splitlines()[-1] == "PASS: 7/7 layers pass"


from paths import FIXTURES


@pytest.mark.parametrize("name", ["transformer_dynamo", "transformer_sdpa_torchscript", "cnn_dynamo"])
def test_cli_verify_real_exports_two_way(tmp_path, name):
    """Real exporter graphs (embedding, q/k/v/output projections over (B, T, D), heads reshape and
    transpose, attention MatMuls, softmax, LayerNorm, GELU, residual Adds; or a conv net): the
    plan from `hypar partition` on a 2-way level verifies exactly."""
    model = FIXTURES / f"{name}.onnx"
    plan_path = tmp_path / "plan.json"
    _partition(model, plan_path, "--levels", "2", "--batch", "4")
    res = make_runner().invoke(cli, ["verify", str(model), str(plan_path), "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("PASS")


def test_uneven_heads_through_a_reshape_reported(tmp_path):
    """3-way level: 64 features split 22/21/21 but 4 heads 2/1/1: the shards do not map through the
    heads reshape (the cost model assumes they do); reported by name, not simulated wrongly."""
    model = FIXTURES / "transformer_dynamo.onnx"
    plan_path = tmp_path / "plan.json"
    plan = _partition(model, plan_path, "--pes", "3", "--batch", "4")
    rep = verify_plan(str(model), plan, batch=4)
    if rep.unsupported:
        assert any("do not map through it" in u for u in rep.unsupported), rep.unsupported
    else:
        assert rep.ok, report_table(rep)


def test_cli_verify_json(mlp, tmp_path):
    plan_path = tmp_path / "plan.json"
    _partition(mlp, plan_path, "--levels", "2", "--space", "accpar")
    res = make_runner().invoke(cli, ["verify", str(mlp), str(plan_path), "--json", "--seed", "3"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["ok"] and d["seed"] == 3 and d["batch"] == 4
    assert [l["name"] for l in d["layers"]] == ["mm0", "mm1", "mm2"]
    for l in d["layers"]:
        assert l["status"] == "PASS"
        for lv in l["levels"]:
            assert lv["counted_bytes"] == lv["predicted_bytes"]
            # the per-edge / per-quantity transfers add up to the layer's bytes at that level
            assert lv["counted_bytes"] == sum(t["bytes"] for t in d["transfers"]
                                              if t["layer"] == l["name"] and t["level"] == lv["level"])
    assert {t["kind"] for t in d["transfers"]} <= {"intra", "fwd", "bwd", "fold"}


def test_cli_verify_minimal_plan(mlp, tmp_path):
    """A minimal {"assignment": ...} plan: default array (four 2-way levels), the other layouts
    completed as `hypar evaluate` does, no recorded costs to check."""
    plan = tmp_path / "min.json"
    plan.write_text(json.dumps({"assignment": {"mm0": ["I"] * 4, "mm1": ["II", "I", "I", "I"],
                                               "mm2": ["III", "I", "I", "I"]}}))
    res = make_runner().invoke(cli, ["verify", str(mlp), str(plan), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["ok"] and not d["plan_costs_checked"] and d["array"]["fanouts"] == [2, 2, 2, 2]
    assert [l["types"] for l in d["layers"] if l["name"].startswith("mm")] == [
        ["I"] * 4, ["II", "I", "I", "I"], ["III", "I", "I", "I"]]


def test_corrupted_plan_types_changed_costs_left(mlp, tmp_path):
    """A hand-edited plan: types changed, recorded costs left. Rejected naming layer and level."""
    plan_path = tmp_path / "plan.json"
    plan = _partition(mlp, plan_path, "--levels", "2", "--space", "accpar")
    row = next(l for l in plan["layers"] if l["name"] == "mm1")
    row["types"] = ["III"] if row["types"] != ["III"] else ["I"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(plan))
    res = make_runner().invoke(cli, ["verify", str(mlp), str(bad)])
    assert res.exit_code == 1
    assert "mm1: level 0: the plan records" in res.output
    rep = verify_plan(str(mlp), json.loads(bad.read_text()))
    assert not rep.ok and any(e.startswith("mm1: level 0") for e in rep.plan_errors)


def test_corrupted_plan_costs_edited(mlp, tmp_path):
    plan_path = tmp_path / "plan.json"
    plan = _partition(mlp, plan_path, "--levels", "2", "--space", "accpar")
    plan["layers"][2]["costs"]["levels"][0]["comm_bytes"] += 2
    errors = check_plan_costs(*_model_and_types(mlp, plan), plan)
    assert len(errors) == 1 and errors[0].startswith("mm2: level 0")


def _model_and_types(path: Path, plan: dict):
    from hypar import api
    from hypar.plan import assignment_from_types, plan_array, plan_types

    arr = plan_array(plan)
    m = CostModel(api.load_graph(str(path), plan["batch"], arr), arr, plan["space"])
    return m, assignment_from_types(m, plan_types(plan))


def test_mutated_transition_fails_naming_layer_and_level(monkeypatch):
    """A wrong transition cell (rows -> cols doubled) makes verify fail at that layer and level.

    The reference convention's cell is checked on one level (there both conventions are the same
    and bytes decide); on 2x2 under reference the byte differences are information since verify
    runs the hierarchical order (issue 10), so the wrong cell shows there as information at that
    layer and level only. The hierarchical pricer's cell (all-to-all doubled) fails on 2x2."""
    real = hypar.cost.model.convert

    def wrong(src, dst, a, bs, fs, fr):
        out = real(src, dst, a, bs, fs, fr)
        return [2 * x for x in out] if (src, dst) == (ROWS, COLS) else out

    monkeypatch.setattr(hypar.cost.model, "convert", wrong)
    for fanouts, types in (([2], [("I",), ("II",), ("I",)]), ([2, 2], [("I", "I"), ("II", "I"), ("I", "I")])):
        model = CostModel(gemm_chain([8, 8, 8, 8], 8), array_from_levels(fanouts), "accpar")
        rep = verify_assignment(model, types)
        if len(fanouts) == 2:
            assert rep.ok and [(l.name, i.level) for l in rep.layers for i in l.information] == [("fc2", 0)], \
                report_table(rep)
            continue
        assert not rep.ok
        fails = rep.failures()
        assert any(f.startswith("fc2: level 0: counted") for f in fails), fails
        assert all(f.startswith("fc2: level 0") for f in fails), fails
        assert "cost-model limitation" not in " ".join(fails)
    real_cells = hypar.cost.hierarchical.member_cells

    def wrong_cells(step, *sizes):
        out = real_cells(step, *sizes)
        return [2 * x for x in out] if step.op == hypar.cost.hierarchical.ALL_TO_ALL else out

    monkeypatch.setattr(hypar.cost.hierarchical, "member_cells", wrong_cells)
    model = CostModel(gemm_chain([8, 8, 8, 8], 8), array_from_levels([2, 2]), "accpar", convention="hierarchical")
    fails = verify_assignment(model, [("I", "I"), ("II", "I"), ("I", "I")]).failures()
    assert fails == ["fc2: level 0: counted 384 bytes, cost model predicts 512"]


def test_unsupported_ops_named(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", op="Softsign")
    plan_path = tmp_path / "plan.json"
    _partition(path, plan_path, "--levels", "2")
    res = make_runner().invoke(cli, ["verify", str(path), str(plan_path)])
    assert res.exit_code == 1
    assert "cannot simulate" in res.output and "op Softsign (kind elementwise): act0, act1, act2" in res.output


def test_uneven_split_reported():
    # one level: uneven shards as the cost model rounds them (6 over 4: 2, 2, 1, 1) verify exactly
    model = CostModel(gemm_chain([6, 8], 8), array_from_levels([4]), "accpar")
    assert verify_assignment(model, [("II",)]).ok
    # several levels: an axis that is split and does not divide is reported (no exact nesting)
    model = CostModel(gemm_chain([6, 8], 8), array_from_levels([2, 2]), "accpar")
    assert verify_assignment(model, [("I", "III")]).ok    # 6 input features are never split
    # 6 input features split at level 0 only: refused by the reference simulator ("does not divide
    # over 4 PEs"); verify now runs the hierarchical order (issue 10), where they split evenly
    assert verify_assignment(model, [("II", "I")]).ok
    # split at both levels, 6 over 2 x 2: once refused ("does not split evenly there"); the one
    # placement rule (hypar/shards.py) lays it out as blocks 2, 1, 2, 1 and it verifies
    rep = verify_assignment(model, [("II", "II")])
    assert rep.ok and not rep.unsupported


def test_numerics_poisoned_when_a_message_is_lost(monkeypatch):
    """Drop every all-to-all message: the PE reads NaN and the simulator refuses to continue."""
    def lossy(self, d, h, new):
        layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
        vals = []
        for p in range(d.mesh.P):
            m = shard_mask(d.mesh, d.shape, layouts, p)
            v = np.full(d.shape, np.nan)
            v[m] = d.vals[p][m]
            vals.append(v)
        return Dist(d.mesh, d.shape, layouts, vals)

    monkeypatch.setattr(Comm, "relayout", lossy)
    model = CostModel(gemm_chain([8, 8, 8], 8), array_from_levels([2]), "accpar")
    with pytest.raises(SimulationError):
        simulate(model, [("I",), ("II",)])
