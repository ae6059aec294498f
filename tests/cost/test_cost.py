"""Hand-derived costs of Gemm chains (SPEC.md §2-4): the 3x3 table, intra costs, k-way levels,
deeper levels, imbalance, heterogeneous ratios, time, energy and memory.

Every expected number is derived in the comments from SPEC.md's formulas; none is copied from
the code's output.

Conventions used throughout (SPEC.md "Units and totals"): the tables give the elements each
subgroup receives at one level; a level with fanout k and G groups moves amount x k x G
elements, x dtype bytes (2 by default). So at a single top 2-way level
``comm_bytes = 2 * 2 * amount`` and the per-subgroup amount is ``comm_bytes / 2 / 2``.
"""

import itertools

import pytest

from hypar import graph as G
from hypar.array import array_from_dict, array_from_levels
from hypar.cost import CostModel
from hypar.synthetic import gemm_chain

TYPES = ("I", "II", "III")
DT = 2  # default dtype bytes (bfloat16)


def amount(total_bytes: float, k: int = 2, groups: int = 1, dtype: int = DT) -> float:
    """Per-subgroup elements from a level's bytes (SPEC.md: bytes = amount x k x G x dtype)."""
    return total_bytes / dtype / k / groups


def rows(ev):
    return {r["name"]: r for r in ev.layers()}


# --------------------------------------------------------------------------------------------
# 1. The 3x3 table at one 2-way level, comm objective
#
# Chain x(8x4) -> fc1 -> h1(8x12) -> fc2 -> h2(8x20) [-> fc3 -> h3(8x8)], B = 8.
#   fc1: A(F_in) = 8*4 = 32, A(W1) = 4*12 = 48, A(F_out) = A(h1) = 8*12 = 96
#   fc2: A(F_in) = 96,       A(W2) = 12*20 = 240, A(F_out) = A(h2) = 8*20 = 160
#   fc3: A(F_in) = 160,      A(W3) = 20*8 = 160,  A(F_out) = 8*8 = 64
# Intra (SPEC §2): I -> A(dW) = A(W); II -> A(F_out); III -> A(E_in) = A(F_in), except the
# first layer, which computes no E_in: its III costs 0.
INTRA1 = {"I": 48, "II": 96, "III": 0}      # fc1 (first layer)
INTRA2 = {"I": 240, "II": 160, "III": 96}   # fc2
INTRA3 = {"I": 160, "II": 64, "III": 160}   # fc3


def table(prev: str, this: str, F: float, E: float) -> float:
    """SPEC §3 inter-layer table, typed in from the spec (F = A(F_l), E = A(E_l))."""
    return {
        ("I", "I"): 0, ("I", "II"): (F + E) / 4, ("I", "III"): F / 2,
        ("II", "I"): E / 2, ("II", "II"): E / 2, ("II", "III"): 0,
        ("III", "I"): (F + E) / 4, ("III", "II"): 0, ("III", "III"): F / 2,
    }[(prev, this)]


# h1 has A = 96 (F = E = 96): the table's non-zero cells are all 96/2 = 48 (and (96+96)/4 = 48).
INTER12 = {
    ("I", "I"): 0, ("I", "II"): 48, ("I", "III"): 48,
    ("II", "I"): 48, ("II", "II"): 48, ("II", "III"): 0,
    ("III", "I"): 48, ("III", "II"): 0, ("III", "III"): 48,
}
# h2 has A = 160: non-zero cells 80.
INTER23 = {k: (80 if v else 0) for k, v in INTER12.items()}


@pytest.fixture(scope="module")
def chain2():
    return CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2]), "accpar")


@pytest.fixture(scope="module")
def chain3():
    return CostModel(gemm_chain([4, 12, 20, 8], batch=8), array_from_levels([2]), "accpar")


def test_table_is_the_spec_table():
    # Sanity of the typed-in table against the cell values above.
    for (p, t), v in INTER12.items():
        assert table(p, t, 96, 96) == v


@pytest.mark.parametrize("t1,t2", list(itertools.product(TYPES, TYPES)))
def test_two_layer_chain_every_cell(chain2, t1, t2):
    ev = chain2.evaluate([(t1,), (t2,)])
    r = rows(ev)
    # fc1 carries only its own intra cost; fc2 its intra plus the edge h1 (costed at the consumer).
    assert amount(r["fc1"]["comm_bytes"]) == INTRA1[t1]
    assert amount(r["fc2"]["comm_bytes"]) == INTRA2[t2] + INTER12[(t1, t2)]
    assert amount(ev.totals()["comm_bytes"]) == INTRA1[t1] + INTRA2[t2] + INTER12[(t1, t2)]


def test_two_layer_chain_worked_examples(chain2):
    # I -> II: fc1 all-reduces dW1 (48); h1 rows -> cols forward (96/4 = 24) and E cols -> rows
    # backward (24); fc2 all-reduces its partial F_out (160). 48 + 48 + 160 = 256 elements per
    # subgroup, x 2 subgroups x 2 bytes = 1024 bytes.
    assert chain2.evaluate([("I",), ("II",)]).totals()["comm_bytes"] == 1024
    # III -> II (the Megatron pair): fc1 III costs 0 (first layer), h1 cols == cols both ways,
    # fc2 II all-reduces F_out: 160 -> 640 bytes.
    assert chain2.evaluate([("III",), ("II",)]).totals()["comm_bytes"] == 640
    # II -> III: h1 full -> full is free, E partial all-reduced (fc2's III intra, A(E) = 96);
    # fc1 II all-reduces its F_out (96). 192 -> 768 bytes.
    assert chain2.evaluate([("II",), ("III",)]).totals()["comm_bytes"] == 768
    # I -> I: data parallel, only the two dW all-reduces: 48 + 240 = 288 -> 1152 bytes.
    assert chain2.evaluate([("I",), ("I",)]).totals()["comm_bytes"] == 1152


def test_first_layer_type_III_is_free_but_not_later_layers(chain2):
    ev = chain2.evaluate([("III",), ("III",)])
    r = rows(ev)
    assert r["fc1"]["comm_bytes"] == 0
    # fc2 III: A(E_in) = A(h1) = 96 all-reduced, plus III -> III forward cols -> full F/2 = 48.
    assert amount(r["fc2"]["comm_bytes"]) == 96 + 48


@pytest.mark.parametrize("ts", list(itertools.product(TYPES, repeat=3)))
def test_three_layer_chain_every_combination(chain3, ts):
    t1, t2, t3 = ts
    ev = chain3.evaluate([(t1,), (t2,), (t3,)])
    r = rows(ev)
    assert amount(r["fc1"]["comm_bytes"]) == INTRA1[t1]
    assert amount(r["fc2"]["comm_bytes"]) == INTRA2[t2] + INTER12[(t1, t2)]
    assert amount(r["fc3"]["comm_bytes"]) == INTRA3[t3] + INTER23[(t2, t3)]
    assert amount(ev.totals()["comm_bytes"]) == (INTRA1[t1] + INTRA2[t2] + INTRA3[t3]
                                                 + INTER12[(t1, t2)] + INTER23[(t2, t3)])


def test_three_layer_worked_example(chain3):
    # I, III, II: fc1 dW 48; h1 rows -> full F/2 = 48, E partial all-reduced 96 (fc2 intra);
    # h2: III -> II is free both ways (cols); fc3 all-reduces F_out 64.
    # 48 + 48 + 96 + 0 + 64 = 256 -> 1024 bytes.
    assert chain3.evaluate([("I",), ("III",), ("II",)]).totals()["comm_bytes"] == 1024


def test_hypar_space_has_two_types_and_same_costs():
    m = CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2]), "hypar")
    assert m.labels(0) == ("I", "II") and m.labels(1) == ("I", "II")
    # HyPar's 2x2 table is the top-left block: II -> I costs E/2 = 48 plus intras 96 + 240.
    assert amount(m.evaluate([("II",), ("I",)]).totals()["comm_bytes"]) == 96 + 240 + 48


# --------------------------------------------------------------------------------------------
# 1b. The table at a deeper level: 2 x 2 array (two 2-way levels).
#
# At level 1, a layer's tensors are seen after its own level-0 split (SPEC §3, issue 3):
#   I above halves B  -> halves F_in, F_out (not W)
#   II above halves Di -> halves F_in, W (not F_out)
#   III above halves Do -> halves W, F_out (not F_in)
# Level 1 has G = 2 groups of k = 2, so its bytes = amount x 2 x 2 x 2 = 8 x amount.

def _half(cond: bool) -> float:
    return 0.5 if cond else 1.0


def level1_intra(first: bool, types: tuple, a_in: int, w: int, a_out: int) -> float:
    up, t = types
    if t == "I":
        return w * _half(up in ("II", "III"))
    if t == "II":
        return a_out * _half(up in ("I", "III"))
    return 0 if first else a_in * _half(up in ("I", "II"))


def level1_inter(prev: tuple, this: tuple, a: int) -> float:
    # The edge tensor as the consumer sees it: halved by its own I or II above.
    view = a * _half(this[0] in ("I", "II"))
    return table(prev[1], this[1], view, view)


PAIRS = list(itertools.product(TYPES, TYPES))


@pytest.fixture(scope="module")
def chain2x2():
    return CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2, 2]), "accpar")


@pytest.mark.parametrize("a1", PAIRS)
@pytest.mark.parametrize("a2", PAIRS)
def test_two_level_chain_level1_shrinks_by_consumer_splits(chain2x2, a1, a2):
    ev = chain2x2.evaluate([a1, a2])
    r = rows(ev)
    # Level 0 is the one-level table unchanged.
    assert amount(r["fc1"]["levels"][0]["comm_bytes"]) == INTRA1[a1[0]]
    assert amount(r["fc2"]["levels"][0]["comm_bytes"]) == INTRA2[a2[0]] + INTER12[(a1[0], a2[0])]
    # Level 1: 2 groups.
    exp1 = level1_intra(True, a1, 32, 48, 96)
    exp2 = level1_intra(False, a2, 96, 240, 160) + level1_inter(a1, a2, 96)
    assert amount(r["fc1"]["levels"][1]["comm_bytes"], groups=2) == exp1
    assert amount(r["fc2"]["levels"][1]["comm_bytes"], groups=2) == exp2


def test_two_level_chain_worked_examples(chain2x2):
    # fc1 (I, II), fc2 (II, I).
    # Level 0: fc1 I dW1 48; h1 I -> II (96+96)/4 = 48; fc2 II F_out 160: 256 -> 1024 bytes.
    # Level 1: fc1 II under I: F_out 96 halved by B -> 48. fc2 I under II: W2 240 halved by Di
    # -> 120. h1 in fc2's view (II above halves Di) = 48; II -> I costs E/2 = 24.
    # 48 + 120 + 24 = 192 per subgroup x 2 x 2 groups x 2 bytes = 1536 bytes.
    ev = chain2x2.evaluate([("I", "II"), ("II", "I")])
    assert ev.level_comm(0).bytes == 1024
    assert ev.level_comm(1).bytes == 1536
    assert ev.totals()["comm_bytes"] == 2560
    # fc1 (III, III), fc2 (III, III): level 1, fc2's view of h1 is NOT halved (III above splits
    # Do only): III -> III F/2 = 48 plus fc2's E all-reduce 96; fc1 first layer 0.
    # fc2's level-0 view is the same. Level 0: 48 + 96 = 144 -> 576 B; level 1: 144 -> 1152 B.
    ev = chain2x2.evaluate([("III", "III"), ("III", "III")])
    assert ev.level_comm(0).bytes == 576
    assert ev.level_comm(1).bytes == 1152
    # fc1 (I, I), fc2 (I, I): level 1 dW all-reduces are not shrunk by I above: 48 + 240 = 288
    # per subgroup at both levels: 1152 + 2304 bytes.
    ev = chain2x2.evaluate([("I", "I"), ("I", "I")])
    assert ev.level_comm(0).bytes == 1152 and ev.level_comm(1).bytes == 2304


# --------------------------------------------------------------------------------------------
# 2. k-way levels (SPEC §4): all-to-all (k-1)/k^2 A, all-gather (k-1)/k A,
# all-reduce 2(k-1)/k A; Replicate -> anything free. Bytes = amount x k x dtype.
#
# k = 3: chain B = 6, dims 3 -> 6 -> 9. W1 = 18, h1 = 36, W2 = 54, h2 = 54.
#   all-to-all(h1) = 2/9 * 36 = 8, all-gather(h1) = 2/3 * 36 = 24, all-reduce(h1) = 4/3*36 = 48,
#   all-reduce(W1) = 4/3 * 18 = 24, all-reduce(W2) = all-reduce(h2) = 4/3 * 54 = 72.
# k = 4: chain B = 8, dims 4 -> 8 -> 12. W1 = 32, h1 = 64, W2 = 96, h2 = 96.
#   all-to-all(h1) = 3/16 * 64 = 12, all-gather(h1) = 3/4 * 64 = 48, all-reduce(h1) = 3/2*64 = 96,
#   all-reduce(W1) = 3/2 * 32 = 48, all-reduce(W2) = all-reduce(h2) = 3/2 * 96 = 144.
KWAY = {
    3: dict(batch=6, dims=[3, 6, 9], a2a=8, ag=24, ar_h1=48, ar_w1=24, ar_w2=72, ar_h2=72),
    4: dict(batch=8, dims=[4, 8, 12], a2a=12, ag=48, ar_h1=96, ar_w1=48, ar_w2=144, ar_h2=144),
}


@pytest.mark.parametrize("k", [3, 4])
def test_k_way_amounts(k):
    c = KWAY[k]
    m = CostModel(gemm_chain(c["dims"], batch=c["batch"]), array_from_levels([k]), "accpar")

    def total(t1, t2):
        return amount(m.evaluate([(t1,), (t2,)]).totals()["comm_bytes"], k=k)

    # I -> I: only the two dW all-reduces.
    assert total("I", "I") == c["ar_w1"] + c["ar_w2"]
    # I -> II: all-to-all forward (rows -> cols) and backward (cols -> rows), + dW1, + F_out2.
    assert total("I", "II") == c["ar_w1"] + 2 * c["a2a"] + c["ar_h2"]
    # II -> I: forward full -> rows free; backward rows -> full all-gather; F_out1 + dW2.
    assert total("II", "I") == c["ar_h1"] + c["ag"] + c["ar_w2"]
    # I -> III: forward rows -> full all-gather; partial E all-reduced.
    assert total("I", "III") == c["ar_w1"] + c["ag"] + c["ar_h1"]
    # III -> I: all-to-all both ways (cols -> rows, rows -> cols); first layer III is free.
    assert total("III", "I") == 2 * c["a2a"] + c["ar_w2"]
    # III -> II: cols -> cols both ways, free.
    assert total("III", "II") == c["ar_h2"]
    # II -> II: forward full -> cols free; backward cols -> full all-gather.
    assert total("II", "II") == c["ar_h1"] + c["ag"] + c["ar_h2"]
    # III -> III: forward cols -> full all-gather; E all-reduced.
    assert total("III", "III") == c["ag"] + c["ar_h1"]


def test_k_way_collective_latency_counts_messages():
    # 3-way level, 1 PE per subgroup, bandwidth 1 GB/s, latency 10 us.
    # Messages: all-reduce 2(k-1) = 4, all-gather / all-to-all k-1 = 2.
    arr = array_from_dict({"levels": [{"fanout": 3, "bandwidth_gbps": 1, "latency_us": 10}],
                           "pe_kinds": {"a": {"tflops": 1}}})
    m = CostModel(gemm_chain([3, 6, 9], batch=6), arr, "accpar")
    ev = m.evaluate([("I",), ("II",)])
    r = rows(ev)
    # fc1 I: all-reduce of W1 = 18: each subgroup receives 24 elements = 48 bytes:
    # 48 / 1e9 s + 4 x 10 us.
    assert r["fc1"]["levels"][0]["comm_s"] == pytest.approx(48e-9 + 40e-6, rel=1e-12)
    # fc2: forward all-to-all 8 elements (16 B) + 2 x 10 us; backward the same; all-reduce of
    # h2 = 54: 72 elements (144 B) + 4 x 10 us.
    exp = 2 * (16e-9 + 20e-6) + (144e-9 + 40e-6)
    assert r["fc2"]["levels"][0]["comm_s"] == pytest.approx(exp, rel=1e-12)


# --------------------------------------------------------------------------------------------
# 4. Compute time, imbalance, heterogeneous ratio, collective time, energy, memory.

def one_level(tflops=1.0, bw=1.0, lat=0.0, pj_bit=10.0, pj_flop=1.0):
    return array_from_dict({
        "levels": [{"fanout": 2, "bandwidth_gbps": bw, "latency_us": lat, "energy_pj_per_bit": pj_bit}],
        "pe_kinds": {"a": {"tflops": tflops, "energy_pj_per_flop": pj_flop}},
    })


def test_compute_time_even_split():
    # Chain B = 8, 4 -> 12 -> 20 on 2 PEs of 1 TFLOP/s.
    # fc1 MACs = 8*4*12 = 384; first layer: forward + gradient = 2 products -> 2*384*2 = 1536 flops.
    # fc2 MACs = 8*12*20 = 1920; forward + backward + gradient -> 2*1920*3 = 11520 flops.
    # Every type splits evenly (8, 4, 12, 20 all even): each PE does half.
    m = CostModel(gemm_chain([4, 12, 20], batch=8), one_level(), "accpar")
    for t1, t2 in itertools.product(TYPES, TYPES):
        ev = m.evaluate([(t1,), (t2,)])
        r = rows(ev)
        assert r["fc1"]["compute_s"] == pytest.approx(768e-12, rel=1e-12)
        assert r["fc2"]["compute_s"] == pytest.approx(5760e-12, rel=1e-12)
        assert ev.totals()["compute_s"] == pytest.approx(6528e-12, rel=1e-12)


def test_imbalance_indivisible_batch():
    # B = 3 over 2 subgroups: rows split 2 + 1, the slowest PE computes 2/3 of the work.
    # Chain 4 -> 2 -> 5: fc1 MACs = 3*4*2 = 24, 2 products -> 96 flops; slowest 64 flops.
    # fc2 MACs = 3*2*5 = 30, 3 products -> 180 flops; slowest 120 flops. PE = 1 TFLOP/s.
    m = CostModel(gemm_chain([4, 2, 5], batch=3), one_level(), "accpar")
    ev = m.evaluate([("I",), ("I",)])
    r = rows(ev)
    assert r["fc1"]["compute_s"] == pytest.approx(64e-12, rel=1e-12)
    assert r["fc2"]["compute_s"] == pytest.approx(120e-12, rel=1e-12)
    assert ev.totals()["compute_s"] == pytest.approx(184e-12, rel=1e-12)
    # Type II of fc2 splits Di = 2 evenly: 90 flops; III splits Do = 5 as 3 + 2: 3/5 * 180 = 108.
    assert rows(m.evaluate([("I",), ("II",)]))["fc2"]["compute_s"] == pytest.approx(90e-12, rel=1e-12)
    assert rows(m.evaluate([("I",), ("III",)]))["fc2"]["compute_s"] == pytest.approx(108e-12, rel=1e-12)
    # The time objective sums compute and communication.
    t = ev.totals()
    assert t["time_s"] == pytest.approx(t["compute_s"] + t["comm_s"], rel=1e-12)


def test_imbalance_indivisible_input_channels():
    # Di = 3 input channels over 2 (type II): 2 + 1; fc1 MACs = 4*3*2 = 24, 2 products: 96
    # flops, slowest PE 64.
    m = CostModel(gemm_chain([3, 2], batch=4), one_level(), "accpar")
    assert m.evaluate([("II",)]).totals()["compute_s"] == pytest.approx(64e-12, rel=1e-12)


def hetero(b0=2, b1=2, bw0=1.0, lat0=0.0):
    """2 x 2 array: top level splits 2 slow PEs (1 TFLOP/s, 1 pJ/flop) from 2 fast PEs
    (3 TFLOP/s, 2 pJ/flop): throughput 2 vs 6 -> fractions 1/4 : 3/4."""
    return array_from_dict({
        "pe_kinds": {"slow": {"tflops": 1, "energy_pj_per_flop": 1},
                     "fast": {"tflops": 3, "energy_pj_per_flop": 2}},
        "levels": [{"fanout": 2, "bandwidth_gbps": bw0, "latency_us": lat0, "energy_pj_per_bit": 10},
                   {"fanout": 2, "bandwidth_gbps": 10, "latency_us": 0, "energy_pj_per_bit": 1}],
        "pes": [{"kind": "slow", "count": b0}, {"kind": "fast", "count": b1}],
    })


def test_heterogeneous_partition_ratio_and_compute():
    arr = hetero()
    assert arr.heterogeneous
    (gc,) = arr.classes[0].values()
    assert [c[1] for c in gc.children] == [0.25, 0.75]
    m = CostModel(gemm_chain([4, 12, 20], batch=8), arr, "accpar")
    # fc1 (I, I): B = 8 -> 2 | 6 at level 0, then 1+1 | 3+3. A slow PE does 1/8 of fc1's 1536
    # flops at 1 TFLOP/s = 192 ps; a fast PE 3/8 at 3 TFLOP/s = 192 ps: balanced.
    # fc2 (III, I): Do = 20 -> 5 | 15, then B 8 -> 4 + 4: slow PE 5/20 * 4/8 = 1/8 of 11520 =
    # 1440 flops / 1 TFLOP/s; fast PE 3/8 / 3 TFLOP/s: the same 1440 ps.
    asg = [("I", "I"), ("III", "I")]
    ev = m.evaluate(asg)
    r = rows(ev)
    assert r["fc1"]["compute_s"] == pytest.approx(192e-12, rel=1e-12)
    assert r["fc2"]["compute_s"] == pytest.approx(1440e-12, rel=1e-12)
    # Shares per level-0 subgroup (the views of fc1): batch 2 for the slow pair, 6 for the fast.
    views = m.views(0, ("I",))
    assert sorted(dims[0] for (_k, dims) in views) == [2, 6]
    # Compute energy: slow PEs 1 pJ/flop, fast 2 pJ/flop. fc1: 2 slow PEs x 192 flops x 1 +
    # 2 fast PEs x 576 flops x 2 = 384 + 2304 = 2688 pJ. fc2: 2 x 1440 x 1 + 2 x 4320 x 2 =
    # 2880 + 17280 = 20160 pJ. Total 22848 pJ of compute.
    comm_j = sum(lv["energy_j"] for rr in ev.layers() for lv in rr["levels"])
    assert ev.totals()["energy_j"] - comm_j == pytest.approx(22848e-12, rel=1e-9)


def test_heterogeneous_rounding_is_the_fastest_split():
    # B = 9 over 1/4 : 3/4 -> 2.25 : 6.75 -> rounded 2 | 7 (largest remainder).
    # fc1 (4 -> 12, 1 layer, I at both levels; level 1 splits 2 -> 1+1, 7 -> 4+3).
    # MACs = 9*4*12 = 432, 2 products: 1728 flops, i.e. 192 flops per batch row.
    # Slow PE: 1 row = 192 flops / 1 TFLOP/s = 192 ps. Fast PE: 4 rows = 768 flops / 3 TFLOP/s
    # = 256 ps. The slowest is a fast PE: 256 ps (the other rounding, 3 | 6, would give a slow
    # PE 2 rows = 384 ps).
    m = CostModel(gemm_chain([4, 12], batch=9), hetero(), "accpar")
    assert m.evaluate([("I", "I")]).totals()["compute_s"] == pytest.approx(256e-12, rel=1e-12)


def test_heterogeneous_unequal_traffic_and_collective_time():
    # Level 0 bandwidth 1 GB/s per PE, latency 2 us; 2 PEs per level-0 subgroup.
    arr = hetero(bw0=1.0, lat0=2.0)
    m = CostModel(gemm_chain([4, 12, 20], batch=8), arr, "accpar")
    ev = m.evaluate([("I", "I"), ("III", "I")])
    r = rows(ev)
    # fc1 level 0: all-reduce of dW1 (48 elements): ring chunks 12 | 36; subgroup j receives
    # (k-1) c_j + (A - c_j) = A = 48 each (k = 2). Bytes: 2 subgroups x 48 x 2 B = 192.
    # Time: 96 B / 2 PEs / 1e9 B/s + 2(k-1) = 2 messages x 2 us.
    lv0 = r["fc1"]["levels"][0]
    assert lv0["comm_bytes"] == 192
    assert lv0["comm_s"] == pytest.approx(48e-9 + 4e-6, rel=1e-12)
    # fc2 level 0 (III after I): forward all-gather of h1 (96 elements, rows 2 | 6):
    # slow subgroup receives (1 - 2/8) * 96 = 72, fast (1 - 6/8) * 96 = 24 -> 96 x 2 B = 192 B;
    # time = slowest per-PE bytes 144 B / 2 PEs / 1e9 + 1 message x 2 us.
    # Backward: partial E (96) all-reduced: 96 each -> 384 B; 192 B / 2 / 1e9 + 2 x 2 us.
    lv0 = r["fc2"]["levels"][0]
    assert lv0["comm_bytes"] == 192 + 384
    assert lv0["comm_s"] == pytest.approx((72e-9 + 2e-6) + (96e-9 + 4e-6), rel=1e-12)
    # Link energy at level 0: 10 pJ/bit x 8 bits x (192 + 576) bytes.
    assert r["fc1"]["levels"][0]["energy_j"] + lv0["energy_j"] == pytest.approx(768 * 8 * 10e-12, rel=1e-12)


def test_heterogeneous_all_to_all_is_unequal():
    # fc1 (I, I) -> fc2 (II, I) on the hetero array: h1 rows (2 | 6 of B = 8) -> cols (3 | 9 of
    # Di = 12). Subgroup j receives A * (cols share f_j) * (1 - rows share f_j):
    # slow: 96 * 3/12 * 6/8 = 18; fast: 96 * 9/12 * 2/8 = 18. Backward cols -> rows:
    # A * (rows share) * (1 - cols share): slow 96 * 2/8 * 9/12 = 18, fast 96 * 6/8 * 3/12 = 18.
    # Forward + backward = 72 elements = 144 bytes at level 0, plus fc2's II all-reduce of h2
    # (160, k = 2: 160 each) = 640 bytes.
    m = CostModel(gemm_chain([4, 12, 20], batch=8), hetero(), "accpar")
    ev = m.evaluate([("I", "I"), ("II", "I")])
    assert rows(ev)["fc2"]["levels"][0]["comm_bytes"] == 144 + 640


def test_heterogeneous_3way_allreduce_is_unequal():
    # One 3-way level over PEs of 1, 1, 2 TFLOP/s: fractions 1/4, 1/4, 1/2. Single layer
    # 4 -> 2, B = 4, type I: all-reduce of dW (A = 8): chunks 2, 2, 4; subgroup j receives
    # (k-1) c_j + (A - c_j) = 2*2 + 6 = 10, 10, 2*4 + 4 = 12 elements. Total 32 x 2 B = 64 B.
    # Time (bandwidth 1 GB/s, 1 PE each): slowest 24 B / 1e9.
    arr = array_from_dict({
        "pe_kinds": {"s": {"tflops": 1}, "f": {"tflops": 2}},
        "levels": [{"fanout": 3, "bandwidth_gbps": 1, "latency_us": 0}],
        "pes": [{"kind": "s", "count": 2}, {"kind": "f", "count": 1}],
    })
    m = CostModel(gemm_chain([4, 2], batch=4), arr, "accpar")
    r = rows(m.evaluate([("I",)]))["fc1"]["levels"][0]
    assert r["comm_bytes"] == 64
    assert r["comm_s"] == pytest.approx(24e-9, rel=1e-12)


def test_energy_is_flops_times_pj_plus_bits_times_pj():
    # 2 PEs of 1 TFLOP/s at 3 pJ/flop; link 5 pJ/bit. Chain B = 8, 4 -> 12 -> 20, I then II.
    # Compute: 1536 + 11520 = 13056 flops x 3 pJ = 39168 pJ.
    # Comm: I -> II at one level: 256 elements per subgroup = 1024 bytes = 8192 bits x 5 pJ
    # = 40960 pJ. Total 80128 pJ.
    m = CostModel(gemm_chain([4, 12, 20], batch=8), one_level(pj_bit=5, pj_flop=3), "accpar")
    t = m.evaluate([("I",), ("II",)]).totals()
    assert t["comm_bytes"] == 1024
    assert t["energy_j"] == pytest.approx(80128e-12, rel=1e-12)


def test_time_objective_is_compute_plus_collectives():
    # 1 GB/s, latency 1 us, 1 TFLOP/s. Chain B = 8, 4 -> 12 -> 20, (I, II):
    # fc1: compute 768 ps; dW1 all-reduce 48 elements = 96 B / 1e9 + 2 x 1 us.
    # fc2: compute 5760 ps; all-to-all 24 elements = 48 B + 1 us, twice; F_out all-reduce
    # 160 elements = 320 B + 2 us.
    m = CostModel(gemm_chain([4, 12, 20], batch=8), one_level(lat=1.0), "accpar")
    t = m.evaluate([("I",), ("II",)]).totals()
    comm = (96e-9 + 2e-6) + 2 * (48e-9 + 1e-6) + (320e-9 + 2e-6)
    assert t["comm_s"] == pytest.approx(comm, rel=1e-12)
    assert t["compute_s"] == pytest.approx(6528e-12, rel=1e-12)
    assert t["time_s"] == pytest.approx(comm + 6528e-12, rel=1e-12)


def test_memory_per_pe():
    # Memory per PE = (2 x weight shard + input activation shard) x dtype bytes.
    # Chain B = 8, 4 -> 12 -> 20, one 2-way level, 2 bytes:
    #   fc1 I:   W1 48 whole, x 32 by rows -> 16:       (96 + 16) x 2 = 224
    #   fc1 III: W1 by cols -> 24, x whole 32:          (48 + 32) x 2 = 160
    #   fc2 II:  W2 240 by rows -> 120, h1 96 by cols -> 48: (240 + 48) x 2 = 576
    #   fc2 I:   W2 240 whole, h1 96 by rows -> 48:     (480 + 48) x 2 = 1056
    m = CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2]), "accpar")
    ev = m.evaluate([("I",), ("II",)])
    r = rows(ev)
    assert r["fc1"]["mem_bytes_per_pe"] == 224
    assert r["fc2"]["mem_bytes_per_pe"] == 576
    assert ev.totals()["peak_mem_bytes_per_pe"] == 800
    ev = m.evaluate([("III",), ("I",)])
    assert ev.totals()["peak_mem_bytes_per_pe"] == 160 + 1056
    # Two levels, fc2 (II, III): W2 halved twice -> 60, h1 halved by II only -> 48:
    # (120 + 48) x 2 = 336.
    m2 = CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2, 2]), "accpar")
    assert rows(m2.evaluate([("I", "I"), ("II", "III")]))["fc2"]["mem_bytes_per_pe"] == 336


def test_memory_uses_the_largest_shard_with_imbalance():
    # B = 3 over 2 (I): the bigger subgroup keeps 2 of 3 rows of x (3 x 4 = 12 elements -> 8).
    # W (4 x 2 = 8) whole: (16 + 8) x 2 = 48 bytes.
    m = CostModel(gemm_chain([4, 2], batch=3), array_from_levels([2]), "accpar")
    assert m.evaluate([("I",)]).totals()["peak_mem_bytes_per_pe"] == 48


def test_greedy_finds_the_table_minimum():
    # The nine totals (intra1 + intra2 + inter): I,I 288; I,II 256; I,III 192; II,I 384;
    # II,II 304; II,III 192; III,I 288; III,II 160; III,III 0 + 96 + 48 = 144 (the least).
    best = min(INTRA1[a] + INTRA2[b] + INTER12[(a, b)] for a, b in itertools.product(TYPES, TYPES))
    assert best == 144
    m = CostModel(gemm_chain([4, 12, 20], batch=8), array_from_levels([2]), "accpar")
    from hypar.search import SolverSettings, greedy
    asg = greedy(m, "comm", SolverSettings(method="dp"))
    assert asg == [("III",), ("III",)]
    assert amount(m.evaluate(asg).totals()["comm_bytes"]) == 144
    assert G.decision_layers(m.g) == ["fc1", "fc2"]


# --------------------------------------------------------------------------------------------
# Conv chain (SPEC §1: sizes carry the spatial multipliers; spatial dims are never split).

def conv_chain_onnx():
    """x (2,3,8,8) -> Conv 3->4 3x3 pad 1 -> h1 (2,4,8,8) -> Conv 4->6 3x3 pad 1 -> y (2,6,8,8)."""
    import numpy as np
    from onnx import TensorProto, helper
    f = TensorProto.FLOAT
    inits = [helper.make_tensor(n, f, s, np.zeros(s, np.float32).ravel().tolist())
             for n, s in (("w1", (4, 3, 3, 3)), ("w2", (6, 4, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", f, (2, 3, 8, 8))],
                              [helper.make_tensor_value_info("y", f, (2, 6, 8, 8))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_conv_chain_table_with_spatial_sizes():
    from hypar.onnx import load_layer_graph
    g = load_layer_graph(conv_chain_onnx())
    m = CostModel(g, array_from_levels([2]), "accpar")
    # conv1: A(F_in) = 2*3*8*8 = 384, A(W1) = 3*4*3*3 = 108, A(h1) = 2*4*8*8 = 512.
    # conv2: A(W2) = 4*6*3*3 = 216, A(F_out) = 2*6*8*8 = 768.
    # Intra: conv1 I 108, II 512, III 0; conv2 I 216, II 768, III 512 (E of h1).
    # Inter on h1 (A = 512): non-zero cells 256.
    i1 = {"I": 108, "II": 512, "III": 0}
    i2 = {"I": 216, "II": 768, "III": 512}
    for t1, t2 in itertools.product(TYPES, TYPES):
        inter = 256 if INTER12[(t1, t2)] else 0
        assert amount(m.evaluate([(t1,), (t2,)]).totals()["comm_bytes"]) == i1[t1] + i2[t2] + inter


def test_conv_three_input_channels_over_two_subgroups():
    # SPEC §4's example: 3 input channels over 2 subgroups (type II) split 2 + 1.
    # conv1 MACs = B*Hout*Wout*Cout*Cin*Kh*Kw = 2*8*8*4*3*9 = 13824; first layer: forward +
    # gradient = 2 products -> 55296 flops; the slowest PE does 2/3 -> 36864 flops at 1 TFLOP/s.
    from hypar.onnx import load_layer_graph
    g = load_layer_graph(conv_chain_onnx())
    m = CostModel(g, one_level(), "accpar")
    r = rows(m.evaluate([("II",), ("I",)]))
    assert r["conv1"]["compute_s"] == pytest.approx(36864e-12, rel=1e-12)
    # conv2 I: B = 2 -> 1 + 1; MACs 2*8*8*6*4*9 = 27648, 3 products -> 165888 flops, half each.
    assert r["conv2"]["compute_s"] == pytest.approx(82944e-12, rel=1e-12)
