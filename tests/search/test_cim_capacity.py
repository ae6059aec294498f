"""The weight-capacity row of weights-stationary (compute-in-memory) PEs, on hand-derived chains.

Two fully connected layers 16 -> 16 (256 weights each, 1 byte per element) at batch 512 over
PEs of one 2-way level. Type I replicates a layer's 256 weight bytes on both PEs; II and III put
128 on each. Unconstrained, the comm objective picks I everywhere (a layer's dW all-reduce moves
256 elements, its activations 8,192).
"""

from __future__ import annotations

import pytest

from hypar import api
from hypar.array import array_from_dict
from hypar.cost import CostModel
from hypar.cost.stationary import fits_weights, smallest_weight_plan, weight_bytes_per_pe, weights_total_load
from hypar.errors import InfeasibleError
from hypar.search import smallest_fitting_array, smallest_memory
from tests.reference_networks import RefLayer, build_chain

LAYERS = (RefLayer("fc1", "FC", 16, 16), RefLayer("fc2", "FC", 16, 16))


def _array(capacity_bytes: float | None, fanout: int = 2):
    kind = {"tflops": 1.0}
    if capacity_bytes is not None:
        kind.update(weights_stationary=True, weight_capacity_mb=capacity_bytes / 1e6)
    return array_from_dict({"dtype_bytes": 1, "pe_kinds": {"cim": kind},
                            "levels": [{"fanout": fanout, "bandwidth_gbps": 10}]}, "cim2")


def _plan(capacity_bytes: float | None):
    g = build_chain(LAYERS, batch=512, name="fc2x")
    arr = _array(capacity_bytes)
    plan = api.partition(None, arr, graph=g, objective="comm", space="accpar")
    model = CostModel(g, arr, "accpar", convention="hierarchical")
    types = {layer["name"]: tuple(layer["types"]) for layer in plan["layers"]}
    return model, [types[n] for n in model.names]


def test_unconstrained_plan_replicates_the_weights():
    _model, asg = _plan(None)
    assert asg == [("I",), ("I",)]


def test_capacity_forces_the_weights_to_be_split():
    # 300 bytes per PE: I + I needs 512, I + split 384, split + split 256 -> only the last fits
    model, asg = _plan(300)
    assert all(a[0] in ("II", "III") for a in asg)
    assert [weight_bytes_per_pe(model, i, a) for i, a in enumerate(asg)] == [128, 128]
    assert weights_total_load(model, asg) == pytest.approx(256 / 300)
    assert fits_weights(model, asg)


def test_replicated_plan_is_refused_by_the_fit_check():
    g = build_chain(LAYERS, batch=512, name="fc2x")
    model = CostModel(g, _array(300), "accpar", convention="hierarchical")
    assert weights_total_load(model, [("I",), ("I",)]) == pytest.approx(512 / 300)
    assert not fits_weights(model, [("I",), ("I",)])


def test_smallest_weight_plan_splits_every_layer():
    g = build_chain(LAYERS, batch=512, name="fc2x")
    model = CostModel(g, _array(300), "accpar", convention="hierarchical")
    plan = smallest_weight_plan(model, smallest_memory(model))
    assert weights_total_load(model, plan) == pytest.approx(256 / 300)


def test_infeasible_capacity_names_the_smallest_array():
    # 110 bytes: the lower bound is ceil(512 / 110) = 5 PEs, but 16 rows over 5 PEs leave one
    # PE 4 rows (64 bytes per layer, 128 > 110); over 6 PEs at most 3 rows (48 + 48 = 96 <= 110).
    g = build_chain(LAYERS, batch=512, name="fc2x")
    with pytest.raises(InfeasibleError, match=r"smallest array that fits has 6 PEs \(level fanouts 6"):
        api.partition(None, _array(110), graph=g, objective="comm", space="accpar")
    model = CostModel(g, _array(110), "accpar", convention="hierarchical")
    bigger = smallest_fitting_array(model)
    assert bigger.n_pes == 6 and bigger.kinds["cim"].weights_stationary
    for k, fits in ((5, False), (6, True)):
        m = CostModel(g, _array(110, k), "accpar", convention="hierarchical")
        assert fits_weights(m, smallest_weight_plan(m, smallest_memory(m))) is fits


def test_the_named_array_partitions_within_capacity():
    g = build_chain(LAYERS, batch=512, name="fc2x")
    plan = api.partition(None, _array(110, 6), graph=g, objective="comm", space="accpar")
    model = CostModel(g, _array(110, 6), "accpar", convention="hierarchical")
    types = {layer["name"]: tuple(layer["types"]) for layer in plan["layers"]}
    assert weights_total_load(model, [types[n] for n in model.names]) <= 1.0


def test_hopeless_capacity_says_no_array_fits():
    # one byte per PE: a layer's 16 rows cannot be split below one 16-byte row per PE
    g = build_chain(LAYERS, batch=512, name="fc2x")
    with pytest.raises(InfeasibleError, match="no array of up to 65536 PEs"):
        api.partition(None, _array(1), graph=g, objective="comm", space="accpar")
