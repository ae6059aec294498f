"""The ``hierarchical`` convention's price of one conversion (hypar/cost/hierarchical.py) against
the independent judge (hypar/sim/hierarchy.py) and against numbers derived by hand.

- Every layout pair s -> t without "P + RR" (HIER_SEMANTICS.md §1) on 2x2, 3x2, 2x3, 4x2 and 2x2x2:
  the stepwise price per level (elements summed over PEs) equals the SPEC's closed form (K, Q, T,
  B; written once, in the judge), the judge's execution of the
  order with point-to-point sends in digit nesting (which lands exactly in t), and is never
  below the information bound (what some level-h subgroup lacks, over levels 0..h).
- Pinned cases: an edge priced through a CostModel under both conventions (fc1 (II, II) <- fc2
  (I, I) backward, 8 x 8 on 2 x 2), uneven and heterogeneous splits derived by hand, times.
"""

from __future__ import annotations

import itertools
from math import prod

import pytest

from hypar.array import Level, PEArray, PEKind, array_from_levels
from hypar.cost import CostModel
from hypar.cost.hierarchical import HierarchicalPricer, check_pair, level_steps
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.hierarchy import SOURCES, TARGETS, closed_form, execute, information_bound
from hypar.synthetic import gemm_chain

FANOUTS = [(2, 2), (3, 2), (2, 3), (4, 2), (2, 2, 2)]


def pairs(fanouts):
    """Every (s, t) on ``fanouts`` except P + RR."""
    for s in itertools.product(SOURCES, repeat=len(fanouts)):
        for t in itertools.product(TARGETS, repeat=len(fanouts)):
            if not (PARTIAL in s and any(x == y == FULL for x, y in zip(s, t))):
                yield s, t


def priced(fanouts, s, t, a, bs, fs):
    """The pricer's elements per level for a tensor of ``a`` elements on a bs x fs grid."""
    pricer = HierarchicalPricer(array_from_levels(list(fanouts)))
    return tuple(pricer.level_elements(h, (a, bs, fs), s, t) for h in range(len(fanouts)))


@pytest.mark.parametrize("fanouts", FANOUTS, ids=lambda f: "x".join(map(str, f)))
def test_stepwise_equals_closed_forms_on_every_pair(fanouts):
    n = prod(fanouts)
    a = n ** 4
    count = 0
    for s, t in pairs(fanouts):
        mine = priced(fanouts, s, t, a, n * n, n * n)
        spec = closed_form(fanouts, s, t, a)
        assert mine == tuple(float(x) for x in spec), (s, t)
        count += 1
    assert count == 12 ** len(fanouts) - _p_rr(fanouts)


def _p_rr(fanouts) -> int:
    """How many pairs are P + RR (to check the enumeration's size)."""
    return sum(1 for s in itertools.product(SOURCES, repeat=len(fanouts))
               for t in itertools.product(TARGETS, repeat=len(fanouts))
               if PARTIAL in s and any(x == y == FULL for x, y in zip(s, t)))


@pytest.mark.parametrize("fanouts", [pytest.param(f, marks=pytest.mark.slow) if len(f) > 2 else f
                                     for f in FANOUTS], ids=lambda f: "x".join(map(str, f)))
def test_stepwise_equals_execution_and_respects_the_bound(fanouts):
    """The judge runs the order element by element (digit nesting, an n x n tensor); it lands in
    t without any fix-up, and sends exactly what the pricer says at every level."""
    n = prod(fanouts)
    for s, t in pairs(fanouts):
        run = execute(fanouts, s, t, shape=(n, n), nesting="digit")
        assert run.landed and not any(run.fixup), (s, t)
        mine = priced(fanouts, s, t, n * n, n, n)
        assert mine == tuple(float(x) for x in run.order), (s, t)
        bound = information_bound(fanouts, s, t, n * n, shape=(n, n), nesting="digit")
        for h in range(len(fanouts)):
            assert sum(mine[:h + 1]) >= bound[h], (s, t, h)


def test_pinned_edge_fc1_II_II_from_fc2_I_I_backward_on_2x2():
    """An 8 x 8 activation between fc1 and fc2 (batch 8, 8 features); fc1 (II, II), fc2 (I, I).
    Forward R -> S(b) is a free slice. Backward fc2's error is S(b) at both levels, fc1 needs it
    R at both. Level 0 all-gathers first (top first): every PE holds a quarter of the rows and
    receives the level-0 sibling's quarter, 4 x 16 = 64 elements over level-0 links. Level 1 then
    gathers with level 0 already R (T = 2): every PE holds half the rows and receives the other
    half, 4 x 32 = 128 elements. Reference prices 64 + 64 = 128 in total, below the 192 the
    information bound requires over levels 0..1 (ISSUE10)."""
    g = gemm_chain([8, 8, 8], 8)
    asg = [("II", "II"), ("I", "I")]
    elements = {}
    for convention in ("reference", "hierarchical"):
        model = CostModel(g, array_from_levels([2, 2]), "accpar", convention)
        elements[convention] = [{i: c.bytes / 2 for i, c in model.level_edge_costs(asg, h).items()} for h in (0, 1)]
    assert elements["hierarchical"] == [{1: 64.0}, {1: 128.0}]
    assert elements["reference"] == [{1: 64.0}, {1: 64.0}]
    assert information_bound((2, 2), (ROWS, ROWS), (FULL, FULL), 64, shape=(8, 8), nesting="digit")[1] == 192


def test_top_level_equals_reference_on_one_level():
    """On a one-level array both conventions price every edge alike (SPEC: at level 0 every
    factor is 1 and the closed form is the 3x3 table)."""
    g = gemm_chain([12, 8, 6, 10], 12)
    arr = array_from_levels([2])
    ref, hier = (CostModel(g, arr, "accpar", c) for c in ("reference", "hierarchical"))
    for types in itertools.product(("I", "II", "III"), repeat=3):
        asg = [(x,) for x in types]
        assert ref.level_edge_costs(asg, 0) == hier.level_edge_costs(asg, 0), types


def test_uneven_split_is_priced_on_the_sizes_as_laid_out():
    """3 x 3 cells of 2 elements over 2 x 2, by hand (split_counts(3, halves) = [2, 1]):
    - S(b) -> S(f) at level 0: member 0 keeps rows {0,1}, needs cols {0,1} of all rows: 2 x 1
      cells; member 1 needs col {2} of rows {0,1}: 1 x 2 cells. 4 cells = 8 elements (an even
      split would give 4.5 cells).
    - (R, S(b)) -> (R, S(f)) at level 1 with level 0 R in both: each level-0 half runs the same
      all-to-all on the whole 3 x 3 region: 2 x 8 = 16 elements; level 0 (R -> R, nothing above)
      moves nothing."""
    pricer = HierarchicalPricer(array_from_levels([2, 2]))
    sig = (18, 3, 3)
    assert pricer.level_elements(0, sig, (ROWS, ROWS), (COLS, COLS)) == 8
    assert pricer.level_elements(0, sig, (FULL, ROWS), (FULL, COLS)) == 0
    assert pricer.level_elements(1, sig, (FULL, ROWS), (FULL, COLS)) == 16


def hetero_array() -> PEArray:
    """Two levels: a slow half (1 PE kind "a", 2 PEs) and a fast half (kind "b", 3x faster)."""
    kinds = {"a": PEKind("a", tflops=100.0), "b": PEKind("b", tflops=300.0)}
    levels = (Level(2, bandwidth_gbps=10.0, latency_us=1.0), Level(2, bandwidth_gbps=100.0, latency_us=0.5))
    return PEArray("hetero", levels, kinds, ("a", "a", "b", "b"))


def test_heterogeneous_split_and_time_by_hand():
    """Rows split 1:3 at level 0 (throughput), then evenly in each half. A 8 x 4 tensor of
    32 elements (one per cell), S(b) -> R at both levels:
    - level 0 all-gather: the slow half holds 2 rows and receives 6 x 4 = 24 elements, the fast
      half holds 6 and receives 8: 32 elements; time = the slowest subgroup's per-PE bytes
      (24 x 2 B / 2 PEs) / 10 GB/s + 1 message x 1 us;
    - level 1 all-gather, run after level 0's (SPEC step 4, top first): each half's region is now
      all 8 rows, its two members hold 4 rows each and receive 4 x 4: 2 halves x 2 x 16 = 64
      elements; the slowest member: 16 x 2 B / 1 PE / 100 GB/s + 0.5 us."""
    pricer = HierarchicalPricer(hetero_array())
    sig = (32, 8, 4)
    s, t = (ROWS, ROWS), (FULL, FULL)
    assert pricer.level_elements(0, sig, s, t) == 32
    assert pricer.level_elements(1, sig, s, t) == 64
    c0, c1 = pricer.level_cost(0, sig, s, t), pricer.level_cost(1, sig, s, t)
    assert c0.bytes == 64 and c1.bytes == 128
    assert c0.seconds == pytest.approx(24 * 2 / 2 / 10e9 + 1e-6, rel=1e-12)
    assert c1.seconds == pytest.approx(16 * 2 / 1 / 100e9 + 0.5e-6, rel=1e-12)


def test_steps_and_rejected_pairs():
    assert [s.op for s in level_steps(PARTIAL, ROWS)] == ["reduce-scatter", "gather half"]
    assert [s.op for s in level_steps(PARTIAL, FULL)] == ["reduce-scatter", "all-gather"]
    assert [s.op for s in level_steps(FULL, FULL)] == ["relay"]
    assert level_steps(FULL, COLS) == () and level_steps(ROWS, ROWS) == ()
    with pytest.raises(ValueError, match="P \\+ RR"):
        check_pair((PARTIAL, FULL), (ROWS, FULL))
    with pytest.raises(ValueError, match="partial sums"):
        check_pair((ROWS,), (PARTIAL,))


def fan_out_graph():
    """fc0 (8 -> 8, batch 8) feeding fc1 and fc2 (8 -> 8 each): one 8 x 8 tensor, two consumers."""
    from hypar import graph as G
    from hypar.synthetic import gemm_layer

    g = G.new_graph("fan", 8)
    g.graph["inputs"] = (G.Tensor("x", (8, 8), 0, 1),)
    g.graph["input_consumers"] = {"x": ("fc0",)}
    h0 = G.Tensor("h0", (8, 8), 0, 1)
    G.add_layer(g, gemm_layer("fc0", 8, 8, 8, ("x",), "h0"))
    outs = []
    for i in (1, 2):
        G.add_layer(g, gemm_layer(f"fc{i}", 8, 8, 8, ("h0",), f"y{i}"))
        G.add_edge(g, "fc0", f"fc{i}", h0, 0)
        outs.append(G.Tensor(f"y{i}", (8, 8), 0, 1))
    g.graph["outputs"] = tuple(outs)
    return g


def test_fan_out_shares_per_full_tuple():
    """HIER_SEMANTICS §3 on 2 x 2, fc0 (I, I) -> fc1 (III, I) and fc2 (III, II), elements:
    - forward into fc1, (S(b), S(b)) -> (R, S(b)): level 0 all-gather 64, level 1 nothing;
    - forward into fc2, (S(b), S(b)) -> (R, S(f)): level 0 64 again (a distinct full tuple
      converts separately, though both read R at level 0), level 1 all-to-all 32;
    - backward from fc1, (P, S(b)) -> (S(b), S(b)): level 0 reduce-scatter 64 + gather half 64;
    - backward from fc2, (P, S(f)) -> (S(b), S(b)): level 0 128, level 1 all-to-all 32.
    With fc2 (III, I) as well both conversions are shared and charged to fc1 alone."""
    model = CostModel(fan_out_graph(), array_from_levels([2, 2]), "accpar", "hierarchical")

    def per_level(asg):
        return [{i: c.bytes / 2 for i, c in model.level_edge_costs(asg, h).items() if c.bytes} for h in (0, 1)]

    assert per_level([("I", "I"), ("III", "I"), ("III", "II")]) == [{1: 192, 2: 192}, {2: 64}]
    assert per_level([("I", "I"), ("III", "I"), ("III", "I")]) == [{1: 192}, {}]
