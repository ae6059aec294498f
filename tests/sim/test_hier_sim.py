"""The simulator under the ``hierarchical`` convention executes the SPEC's order (hypar/sim/hierorder.py)
and what it sends equals the independent judge's closed form (hypar/sim/hierarchy.py), per level.

Amounts are elements received, summed over every PE (bytes = elements x dtype bytes). Layout codes
in ids: b = S(b), f = S(f), r = R, p = P, one letter per level, top first.
"""

from __future__ import annotations

import itertools
import random
from math import prod

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim_graphs import conv_net, inception_net, random_assignment, relu_dag
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim import simulate
from hypar.sim.comm import Comm
from hypar.sim.edges import HierKey
from hypar.sim.errors import Unsupported
from hypar.sim.hierarchy import closed_form, information_bound
from hypar.sim.hierorder import run_order
from hypar.sim.ledger import IntraKey, StatsKey
from hypar.sim.mesh import Dist, Mesh, gather, scatter
from hypar.sim.result import SimResult
from hypar.sim.step import TrainingStep
from hypar.synthetic import gemm_chain, random_dag
from hypar.verify import report_table, verify_assignment

FANOUTS = [(2, 2), (3, 2), (2, 3), (4, 2), (2, 2, 2)]
LETTER = {ROWS: "b", COLS: "f", FULL: "r", PARTIAL: "p"}
# what a plan edge can produce (SPEC §3): forward, the producer's output (I S(b), II R, III S(f);
# non-weighted nodes S(b) / S(f) / R) into the consumer's input (I S(b), II S(f), III R); backward,
# the consumer's error (I S(b), II S(f), III P; non-weighted R) into the producer's needed error
# (I S(b), II R, III S(f)). A source never mixes P with R (weighted errors have no R, non-weighted
# ones no P).
# a weighted layer's split axis at a level (b batch: I, i input: II, o output: III) -> the layout of
# its weight gradient / its output before the intra-layer all-reduce
DW_LAYOUT = {"b": PARTIAL, "i": ROWS, "o": COLS, "g": COLS}
OUT_LAYOUT = {"b": ROWS, "i": PARTIAL, "o": COLS, "g": COLS}
FWD = ((ROWS, COLS, FULL), (ROWS, COLS, FULL))
BWD = ((ROWS, COLS, PARTIAL), (ROWS, COLS, FULL))


def code(s, t) -> str:
    return "".join(LETTER[x] for x in s) + ">" + "".join(LETTER[x] for x in t)


def plan_pairs(H: int) -> list[tuple[tuple, tuple]]:
    """Every (source, target) pair a plan edge can convert on H levels, without repeats."""
    pairs = set()
    for sources, targets in (FWD, BWD):
        pairs |= set(itertools.product(itertools.product(sources, repeat=H), itertools.product(targets, repeat=H)))
    return sorted(pairs)


def distributed(mesh: Mesh, truth: np.ndarray, s: tuple, rng: np.random.Generator, axes: tuple = (0, 1)) -> Dist:
    """``truth`` laid out in ``s`` (its (batch, feature) ``axes``, with their units when a
    TensorAxes); at P levels the members of each P-group hold random parts summing to it."""
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
    return Dist(mesh, truth.shape, s, vals, d.axes)


def executed(fanouts, s, t, shape=None, seed=0) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(elements received per level, reassembled result, truth) of one conversion s -> t."""
    mesh = Mesh(fanouts)
    comm = Comm(mesh)
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(shape or (2 * mesh.P, 2 * mesh.P))
    comm.sink = [0] * mesh.H
    out = run_order(comm, distributed(mesh, truth, s, rng), t)
    assert out.layouts == tuple(t)
    return comm.sink, gather(out), truth


# ----------------------------------------------------------------------------- one conversion

@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "x".join(map(str, f)))
def test_every_plan_pair_sends_the_closed_form(fanouts):
    """Every plan layout pair: the executed order sends exactly the closed form at every level,
    the result is the tensor, and no prefix of levels receives less than the information bound."""
    for s, t in plan_pairs(len(fanouts)):
        sent, got, truth = executed(fanouts, s, t)
        A = truth.size
        assert tuple(sent) == closed_form(fanouts, s, t, A), code(s, t)
        np.testing.assert_allclose(got, truth, rtol=1e-12, atol=1e-12, err_msg=code(s, t))
        bound = information_bound(fanouts, s, t, A, shape=truth.shape, nesting="digit")
        assert all(sum(sent[:h + 1]) >= bound[h] for h in range(len(fanouts))), code(s, t)


def test_pinned_backward_fc1_II_II_from_fc2_I_I():
    """E(h1) 8x8 on 2x2: fc2 (I, I) gives it as S(b)/S(b), fc1 (II, II) needs it R/R. Level 0
    all-gathers 64 elements (32 per subgroup), level 1 all-gathers in each of the two subgroups that
    now hold half of it: 4 PEs x 32 = 128. Total 192 = the information bound (4 PEs x 48 lacked)."""
    sent, got, truth = executed((2, 2), (ROWS, ROWS), (FULL, FULL), shape=(8, 8))
    assert sent == [64, 128]
    assert sum(sent) == information_bound((2, 2), (ROWS, ROWS), (FULL, FULL), 64, (8, 8), "digit")[1] == 192
    np.testing.assert_allclose(got, truth)


def test_pinned_forward_fc1_I_II_to_fc2_II_III():
    """h1 8x8 on 2x2: fc1 (I, II) leaves it S(b)/R, fc2 (II, III) needs S(f)/R. Level 0 all-to-all:
    32; level 1 relays inside each subgroup what its copy lacks: 32. Total 64 = the bound."""
    sent, _got, _truth = executed((2, 2), (ROWS, FULL), (COLS, FULL), shape=(8, 8))
    assert sent == [32, 32]
    assert sum(sent) == information_bound((2, 2), (ROWS, FULL), (COLS, FULL), 64, (8, 8), "digit")[1]


def stats_amounts(fanouts, s, t, A) -> tuple:
    """What the norm statistics' all-reduce sends under the hierarchical convention: the levels R
    in both below a partial level are sliced first (read as a shard in the closed form), the ones
    above every partial level are independent groups each reducing its own copy (the literal
    extra: (k_h - 1) K A (prod k_g over those levels - 1) at each partial level h)."""
    s2 = tuple(ROWS if x == y == FULL and PARTIAL in s[:g] else x for g, (x, y) in enumerate(zip(s, t)))
    extra = []
    for h, kh in enumerate(fanouts):
        K = prod(fanouts[g] for g in range(h) if s2[g] == PARTIAL)
        reps = prod(fanouts[g] for g in range(len(fanouts)) if g != h and s2[g] == t[g] == FULL)
        extra.append((kh - 1) * K * A * (reps - 1) if s2[h] == PARTIAL else 0)
    return tuple(c + e for c, e in zip(closed_form(fanouts, s2, t, A), extra))


@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "x".join(map(str, f)))
def test_norm_statistics_all_reduce(fanouts):
    """Statistics partial at the levels splitting the summed axis, split (kept axis) or replicated
    elsewhere, all-reduced: :func:`stats_amounts` at every level, exact values; with no replicated
    level below a partial one, exactly what today's hierarchical all-reduce sends."""
    mesh = Mesh(fanouts)
    comm = Comm(mesh)
    for keep in (COLS, ROWS):
        for s in itertools.product((PARTIAL, keep, FULL), repeat=len(fanouts)):
            if PARTIAL not in s:
                continue
            t = tuple(FULL if x == PARTIAL else x for x in s)
            rng = np.random.default_rng(0)
            truth = rng.standard_normal((2 * mesh.P, 2 * mesh.P))
            comm.sink = [0] * mesh.H
            out = run_order(comm, distributed(mesh, truth, s, rng), t, virtual_first=True)
            sent = tuple(comm.sink)
            assert sent == stats_amounts(fanouts, s, t, truth.size), code(s, t)
            np.testing.assert_allclose(gather(out), truth, rtol=1e-12, atol=1e-12)
            if not any(x == FULL and PARTIAL in s[:g] for g, x in enumerate(s)):
                comm.sink = [0] * mesh.H
                comm.allreduce_levels(distributed(mesh, truth, s, np.random.default_rng(0)))
                assert sent == tuple(comm.sink), code(s, t)


def test_p_and_rr_is_refused_by_name():
    with pytest.raises(Unsupported, match="P\\+RR"):
        executed((2, 2), (PARTIAL, FULL), (ROWS, FULL))


# ----------------------------------------------------------------------------- whole steps

def hier_step(model: CostModel, assignment: list[tuple], seed: int = 0) -> TrainingStep:
    """A finished training step of ``assignment`` (its ledger kept for inspection)."""
    res = SimResult(list(model.names), model.n_levels, model.array.dtype_bytes)
    step = TrainingStep(model, assignment, seed, res)
    step.run()
    return step


def check_step(model: CostModel, step: TrainingStep) -> int:
    """Every conversion the step ran sent the closed form of its layouts at every level, every
    intra-layer all-reduce the closed form of P -> R (HIER_SEMANTICS §4), the counts add up to the
    result's per-layer table, and the numerics match. Returns the conversions checked."""
    fan = model.array.fanouts
    total = [0] * model.n_levels
    n = 0
    for key, rec in step.ledger.records.items():
        total = [a + b for a, b in zip(total, rec.counts)]
        if isinstance(key, HierKey):
            assert tuple(rec.counts) == closed_form(fan, key.src, key.tgt, key.elements), (key, rec.counts)
            n += 1
        elif isinstance(key, IntraKey):
            assert tuple(rec.counts) == _intra_closed_form(model, step, key), (key, rec.counts)
        elif isinstance(key, StatsKey) and key.stat == "bn" and key.where == "node":
            assert tuple(rec.counts) == _bn_stats_amounts(model, step, key), (key, rec.counts)
    assert total == [sum(c[h] for c in step.res.counted) for h in range(model.n_levels)]
    assert all(step.res.ok_numerics), step.res.max_err
    return n


def _intra_closed_form(model: CostModel, step: TrainingStep, key: IntraKey) -> tuple:
    """The closed form of an intra all-reduce: dW partial at type-I levels (else split by rows at
    II, cols at III), F_out partial at type-II levels (rows at I, cols at III), each P -> R."""
    strat = step.strat[key.node]
    table = DW_LAYOUT if key.what == "dW" else OUT_LAYOUT
    s = tuple(table[x.split_axis] for x in strat)
    if PARTIAL not in s:
        return (0,) * len(s)
    t = tuple(FULL if x == PARTIAL else x for x in s)
    lay = step.layer(key.node)
    w = step.data.weights[model.names[key.node]]
    # shapes from the step's tensor table: the reference drops its values once read (memory)
    A = w.size if key.what == "dW" else int(np.prod(step.shape_of[lay.outputs[0]]))
    return closed_form(model.array.fanouts, s, t, A)


def _bn_stats_amounts(model: CostModel, step: TrainingStep, key: StatsKey) -> tuple:
    """A kept BatchNorm's statistics all-reduce: (sum, sum of squares) per channel, partial where
    the node splits the batch, split where it splits the channels, replicated elsewhere."""
    to_stats = {ROWS: PARTIAL, COLS: COLS, FULL: FULL}
    s = tuple(to_stats[x] for x in step.layouts(key.node, "out_layout"))
    if PARTIAL not in s:
        return (0,) * len(s)
    t = tuple(FULL if x == PARTIAL else x for x in s)
    C = step.shape_of[step.layer(key.node).outputs[0]][1]
    return stats_amounts(model.array.fanouts, s, t, 2 * C)


def test_pinned_case_in_a_training_step():
    """fc1 (II, II) <- fc2 (I, I), 8x8 h1 on 2x2: the backward conversion is charged to fc2, 64
    elements at level 0 and 128 at level 1 (384 B and 768 B at 2 bytes)."""
    model = CostModel(gemm_chain([8, 8, 8], 8), array_from_levels([2, 2]), "accpar", convention="hierarchical")
    step = hier_step(model, [("II", "II"), ("I", "I")])
    check_step(model, step)
    bwd = [(k, r) for k, r in step.ledger.records.items() if isinstance(k, HierKey) and k.kind == "bwd"]
    assert len(bwd) == 1 and bwd[0][1].counts == [64, 128] and min(bwd[0][1].nodes) == 1
    assert [t.elements * 2 for t in step.res.transfers if t.kind == "bwd"] == [128, 256]


@pytest.mark.parametrize("fanouts", [pytest.param(f, marks=pytest.mark.slow) if len(f) > 2 else f for f in FANOUTS],
                         ids=lambda f: "x".join(map(str, f)))
def test_chain_every_type_pair(fanouts):
    """fc1 -> fc2 with every pair of per-level types: every conversion sends its closed form."""
    P = prod(fanouts)
    model = CostModel(gemm_chain([P, 2 * P, P], 2 * P), array_from_levels(list(fanouts)), "accpar",
                      convention="hierarchical")
    types = list(itertools.product(("I", "II", "III"), repeat=len(fanouts)))
    for a, b in itertools.product(types, repeat=2):
        check_step(model, hier_step(model, [a, b]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 5), fanouts=st.sampled_from(FANOUTS),
       space=st.sampled_from(["hypar", "accpar", "full"]), relu=st.booleans())
def test_property_random_dags(seed, n_layers, fanouts, space, relu):
    """Random DAGs (fan-out, residual Adds, Relus) x random plans on several levels: every
    conversion (shared per HIER_SEMANTICS §3) sends its closed form; numerics match."""
    rng = random.Random(seed)
    P = prod(fanouts)
    g = (relu_dag if relu else random_dag)(n_layers, seed, 2 * P, (P, 2 * P))
    model = CostModel(g, array_from_levels(list(fanouts)), space, convention="hierarchical")
    check_step(model, hier_step(model, random_assignment(model, rng), seed))


def _het_array(tflops: list[float]):
    from hypar.array import Level, PEArray, PEKind

    kinds = {f"k{j}": PEKind(f"k{j}", tflops=t) for j, t in enumerate(tflops)}
    return PEArray("het", (Level(len(tflops)),), kinds, tuple(f"k{j}" for j in range(len(tflops))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 4), k=st.sampled_from([2, 3, 4]),
       space=st.sampled_from(["hypar", "accpar", "full"]), uneven=st.booleans())
def test_property_one_level_same_as_reference(seed, n_layers, k, space, uneven):
    """One level: both conventions are the same (SPEC §3): the hierarchical order counts exactly
    what the reference simulator counts, layer by layer, and verifies against the cost model --
    also on a heterogeneous level with sizes that do not divide (``uneven``)."""
    if uneven:
        g, arr = relu_dag(n_layers, seed, 7, (5, 9, 12)), _het_array([100.0, 300.0, 50.0, 200.0][:k])
    else:
        g, arr = relu_dag(n_layers, seed, 2 * k, (k, 2 * k, 3 * k)), array_from_levels([k])
    asg = random_assignment(CostModel(g, arr, space), random.Random(seed))
    counted = {}
    for conv in ("reference", "hierarchical"):
        counted[conv] = simulate(CostModel(g, arr, space, convention=conv), asg, seed=seed).counted
    assert counted["reference"] == counted["hierarchical"]
    rep = verify_assignment(CostModel(g, arr, space, convention="hierarchical"), asg, seed=seed)
    assert rep.ok, report_table(rep)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_blocks=st.integers(1, 2), fanouts=st.sampled_from(FANOUTS),
       space=st.sampled_from(["accpar", "full"]), depthwise=st.booleans())
def test_property_conv_nets(seed, n_blocks, fanouts, space, depthwise):
    """Conv (grouped / depthwise too) / BatchNorm / Relu / MaxPool / GlobalAveragePool / Flatten /
    Gemm nets x random plans on several levels: every conversion sends its closed form, the
    intra all-reduces theirs, numerics match."""
    rng = random.Random(seed)
    P = prod(fanouts)
    g = conv_net(seed, 2 * P, (P, 2 * P), n_blocks=n_blocks, bn=space == "full", depthwise=depthwise)
    model = CostModel(g, array_from_levels(list(fanouts)), space, convention="hierarchical")
    check_step(model, hier_step(model, random_assignment(model, rng), seed))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), fanouts=st.sampled_from(FANOUTS), space=st.sampled_from(["accpar", "full"]))
def test_property_lrn_and_concat(seed, fanouts, space):
    """GoogLeNet's LRN and Concat on random plans: they run where the channels they work across
    are whole (exact counts and numerics), and are refused by name where a plan splits them (or,
    folded, where a pooling follows the Concat: the tensor the cost model converts is not the one
    the folded ops need)."""
    rng = random.Random(seed)
    P = prod(fanouts)
    model = CostModel(inception_net(2 * P, P), array_from_levels(list(fanouts)), space, convention="hierarchical")
    asg = random_assignment(model, rng)
    res = simulate(model, asg, seed=seed)
    if res.unsupported:
        named = ("(LRN): normalisation across split channels", "(Concat): joining along a split axis",
                 "a size-changing op after a folded Add or Concat")
        assert all(any(n in u for n in named) for u in res.unsupported), res.unsupported
        return
    check_step(model, hier_step(model, asg, seed))
