"""The cost model's norm-statistics price (hypar/cost/statistics.py, under ``hierarchical``) equals
what the simulator sends all-reducing the statistics, per level, for every layout tuple of the norm.

Graph: fc1 (B x D) -> norm -> fc2, B = D = 2 x PEs (every split even). fc1 and fc2 take, at each
level, types that need no conversion around the norm's layout there, so the norm's row of the
verify report holds its statistics alone. Amounts are elements (bytes = elements x 2).
"""

from __future__ import annotations

import itertools
from math import prod

import pytest

from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.ledger import StatsKey
from hypar.synthetic import gemm_layer
from hypar.verify import report_table, verify_assignment
from test_hier_sim import FANOUTS, check_step, code, hier_step, stats_amounts

NORMS = {  # name -> (kind, op, attrs, summed layout, statistics tensors' count, statistics per kept index)
    "bn": (G.BATCHNORM, "BatchNormalization", (("epsilon", 1e-5),), ROWS, 2, 2),
    "ln": (G.FEATURENORM, "LayerNormalization", (("axis", -1), ("epsilon", 1e-5)), COLS, 2, 2),
    "softmax": (G.SOFTMAX, "Softmax", (("axis", -1),), COLS, 3, 1),
    "rms": (G.FEATURENORM, "RMSNormalization", (("axis", -1), ("epsilon", 1e-5)), COLS, 2, 1),
}
AROUND = {ROWS: ("I", "I"), COLS: ("III", "II"), FULL: ("II", "III")}   # fc1, fc2 types per norm layout


def norm_model(fanouts, norm: str, width: int | None = None) -> CostModel:
    """The graph of the module docstring (D = ``width`` when given)."""
    kind, op, attrs, *_ = NORMS[norm]
    B = 2 * prod(fanouts)
    D = width or B
    g = G.new_graph("t", B)
    h, y = G.Tensor("h", (B, D), 0, 1), G.Tensor("y", (B, D), 0, 1)
    g.graph["inputs"] = (G.Tensor("x", (B, D), 0, 1),)
    g.graph["input_consumers"] = {"x": ("fc1",)}
    G.add_layer(g, gemm_layer("fc1", B, D, D, ("x",), "h"))
    G.add_layer(g, G.Layer(name="mid", op=op, kind=kind, inputs=("h",), outputs=("y",), attrs=attrs))
    G.add_layer(g, gemm_layer("fc2", B, D, D, ("y",), "z"))
    G.add_edge(g, "fc1", "mid", h, 0)
    G.add_edge(g, "mid", "fc2", y, 0)
    g.graph["outputs"] = (G.Tensor("z", (B, D), 0, 1),)
    model = CostModel(g, array_from_levels(list(fanouts)), "full", convention="hierarchical")
    assert model.names == ["fc1", "mid", "fc2"]
    return model


def assignment(layouts: tuple) -> list[tuple]:
    return [tuple(AROUND[x][0] for x in layouts), layouts, tuple(AROUND[x][1] for x in layouts)]


def expected(fanouts, norm: str, layouts: tuple) -> tuple:
    """Elements the statistics' all-reduces send per level (the executed order's amounts, tests
    of hypar/sim/hierorder.py): statistics P where the norm has the summed layout."""
    _k, _o, _a, summed, n_tensors, per_index = NORMS[norm]
    s = tuple(PARTIAL if x == summed else x for x in layouts)
    if PARTIAL not in s:
        return (0,) * len(s)
    t = tuple(FULL if x == PARTIAL else x for x in s)
    A = per_index * 2 * prod(fanouts)          # the kept axis: C channels or B rows, 2 x PEs
    return tuple(n_tensors * a for a in stats_amounts(fanouts, s, t, A))


def priced(model: CostModel, layouts: tuple) -> tuple:
    """The cost model's intra-node price of the norm per level, in elements."""
    return tuple(model.intra_cost(1, layouts, h).bytes / model.array.dtype_bytes for h in range(model.n_levels))


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "x".join(map(str, f)))
def test_price_is_the_executed_amounts(fanouts, norm):
    """Every layout tuple: the price equals the amounts the executed order sends (exact)."""
    model = norm_model(fanouts, norm)
    for layouts in itertools.product((ROWS, COLS, FULL), repeat=len(fanouts)):
        assert priced(model, layouts) == expected(fanouts, norm, layouts), layouts


@pytest.mark.parametrize("norm", ["bn", "ln", "rms"])
@pytest.mark.parametrize("fanouts", [pytest.param(f, marks=pytest.mark.slow) if len(f) > 2 else f for f in FANOUTS],
                         ids=lambda f: "x".join(map(str, f)))
def test_price_equals_the_simulated_statistics(fanouts, norm):
    """Every layout tuple of the norm in a training step: its StatsKey records (forward and
    backward) count exactly the price per level, nothing else is charged to it, and verify passes."""
    model = norm_model(fanouts, norm)
    for layouts in itertools.product((ROWS, COLS, FULL), repeat=len(fanouts)):
        step = hier_step(model, assignment(layouts))
        check_step(model, step)
        stats = [rec.counts for key, rec in step.ledger.records.items()
                 if isinstance(key, StatsKey) and key.node == 1]
        sent = tuple(sum(c[h] for c in stats) for h in range(model.n_levels))
        assert sent == priced(model, layouts) == expected(fanouts, norm, layouts), code(layouts, layouts)
        assert tuple(step.res.counted[1]) == sent
        rep = verify_assignment(model, assignment(layouts))
        assert rep.ok, report_table(rep)


def test_replicated_level_below_a_batch_split():
    """resnet18's layer1.0.bn1 on 2x2x2 (64 channels) as a plan from `hypar partition` types it,
    (S(b), S(b), R): the statistics (2 x 64 per tensor, A = 128 elements; forward and backward) are
    partial at levels 0 and 1 and replicated at level 2, below them: each level-2 replica reduces
    a virtual slice and gathers the others (SPEC §3). Per tensor: level 0 reduce-scatter + all-gather
    A + A; level 1 reduce-scatter with K = 2, all-gather with T = 2: 2A + 2A; level 2 all-gather of
    what the virtual slice left out, T = 4 replicas of the target above: 4A. Level 2 in bytes:
    2 tensors x 4 x 128 x 2 B = 2,048 B (the count verify reported while the model priced 0)."""
    model = norm_model((2, 2, 2), "bn", width=64)
    A = 2 * 64
    assert priced(model, (ROWS, ROWS, FULL)) == (2 * 2 * A, 2 * 4 * A, 2 * 4 * A)
    assert model.intra_cost(1, (ROWS, ROWS, FULL), 2).bytes == 2048
    step = hier_step(model, assignment((ROWS, ROWS, FULL)))
    check_step(model, step)
    assert step.res.counted[1] == [2 * 2 * A, 2 * 4 * A, 2 * 4 * A]
