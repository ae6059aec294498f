"""Compute-in-memory PE kinds in array files: datasheet figures mapped onto hypar's units, the
capacity keys checked, and the shipped cim_array.yaml."""

from __future__ import annotations

import pytest

from hypar.array import array_from_dict, load_array
from hypar.errors import ArrayConfigError
from tests.paths import CONFIGS

LEVELS = [{"fanout": 2, "bandwidth_gbps": 10}]


def _array(kind: dict, dtype_bytes: int = 1):
    return array_from_dict({"dtype_bytes": dtype_bytes, "pe_kinds": {"cim": kind}, "levels": LEVELS}, "t")


def test_datasheet_figures_map_to_tflops_and_pj_per_flop():
    arr = _array({"tops": 2.5, "tops_per_w": 25.0, "precision_bits": 8, "weights_stationary": True,
                  "weight_capacity_mb": 0.5})
    kind = arr.kinds["cim"]
    assert kind.tflops == 2.5                       # 1 MAC = 2 ops = 2 FLOP
    assert kind.energy_pj_per_flop == pytest.approx(0.04)   # 1 / 25 pJ per op
    assert kind.weight_capacity_bytes == 500_000
    assert arr.weights_stationary
    assert arr.class_weight_capacity_bytes(arr.root_key) == 1_000_000
    assert arr.to_json()["pe_kinds"]["cim"]["weight_capacity_mb"] == 0.5


def test_plain_kinds_keep_their_plan_json():
    arr = array_from_dict({"pe_kinds": {"gpu": {"tflops": 10}}, "levels": LEVELS}, "t")
    assert not arr.weights_stationary
    assert arr.class_weight_capacity_bytes(arr.root_key) is None
    assert set(arr.to_json()["pe_kinds"]["gpu"]) == {"tflops", "memory_gb", "energy_pj_per_flop"}


@pytest.mark.parametrize("kind, words", [
    ({"weights_stationary": True}, "give weight_capacity_mb"),
    ({"weight_capacity_mb": 1.0}, "add weights_stationary: true"),
    ({"tops": 1.0, "tflops": 1.0}, "give tflops or tops, not both"),
    ({"tops_per_w": 0}, "tops_per_w must be positive"),
    ({"weights_stationary": "yes", "weight_capacity_mb": 1.0}, "true or false"),
    ({"precision_bits": 4}, "set dtype_bytes: 1"),
])
def test_bad_cim_kinds_are_named(kind, words):
    with pytest.raises(ArrayConfigError, match=words):
        _array(kind, dtype_bytes=2 if "precision_bits" in kind else 1)


def test_precision_wider_than_the_elements_is_accepted():
    assert _array({"precision_bits": 16}, dtype_bytes=1).kinds["cim"].precision_bits == 16


def test_shipped_cim_array_states_the_talks_efficiency():
    arr = load_array(CONFIGS / "cim_array.yaml")
    kind = arr.kinds["sram_cim_macro"]
    assert kind.energy_pj_per_flop == pytest.approx(1 / 27.4)
    assert kind.weights_stationary and kind.precision_bits == 8 and arr.dtype_bytes == 1
    assert kind.weight_capacity_bytes == 131_072           # 1 Mb of 8-bit weights
    assert arr.n_pes == 256
