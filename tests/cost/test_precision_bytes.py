"""Bytes per level follow each tensor's precision (docs/precision.md), derived on paper.

Setting for every test: the two-layer models of tests/precision_models.py (x (4, 8) -> fc1 (W
8x8) -> h (4, 8) -> fc2 (W 8x8)), space ``accpar`` (the QDQ pair folds into the edge fc1 -> fc2,
whose tensor is fc2's input ``h_dq`` / ``h``), a 2 x 2 array (two 2-way levels) training in fp32
(``dtype_bytes`` = 4, so that every width differs from the training one), convention
hierarchical, plan fc1 = (I, I), fc2 = (III, III).

Elements crossing each level (SPEC.md §3 "Several levels", A = 4 x 8 = 32, W = 8 x 8 = 64):

- fc1 (I, I) all-reduces dW at both levels: 2 (k_h - 1) k_I W with k_I the fanouts of the type-I
  levels above: level 0 2 x 1 x 1 x 64 = 128, level 1 2 x 1 x 2 x 64 = 256 (fc1's input is the
  graph input: no error goes back);
- fc2 (III, III) reads h replicated: the forward conversion (S(b), S(b)) -> (R, R) all-gathers,
  (k_h - 1) T A with T the fanouts above where the target is R: level 0 32, level 1 2 x 32 = 64;
- fc2's input error is partial at both levels and fc1 needs it (S(b), S(b)): (P, P) -> (S(b),
  S(b)) reduce-scatters ((k_h - 1) K A, K the fanouts above where the source is P) and runs the
  gather half ((k_h - 1) Q A, Q = 1): level 0 32 + 32 = 64, level 1 2 x 32 + 32 = 96;
- fc2 itself all-reduces nothing (no type I or II level).

The edge's conversions are charged to its consumer fc2; fc1 keeps its dW. Bytes = elements x the
width of what moves.
"""

from __future__ import annotations

import dataclasses

import pytest

from hypar.api import with_dtype
from hypar.config import resolve_array
from hypar.cost import CostModel
from hypar.cost.stationary import weight_load
from hypar.onnx import load_layer_graph

import precision_models as pm
from paths import CONFIGS, FIXTURES

ASSIGNMENT = [("I", "I"), ("III", "III")]


def _level_bytes(model_proto, dtype=None) -> dict[str, list[float]]:
    """Per layer, the comm bytes at levels 0 and 1 of :data:`ASSIGNMENT` (fp32 training array)."""
    array = dataclasses.replace(resolve_array(levels="2,2"), dtype_bytes=4, _cache={})
    g, array = with_dtype(load_layer_graph(model_proto), array, dtype)
    model = CostModel(g, array, "accpar", convention="hierarchical")
    assert model.names == ["fc1", "fc2"]
    ev = model.evaluate(ASSIGNMENT)
    return {n: [ev.comm[i][h].bytes for h in range(2)] for i, n in enumerate(model.names)}


def test_int8_qdq_moves_int8_forward_and_fp32_errors():
    """int8: h_dq is int8 (1 byte) forward, its error in the training fp32 (4 bytes); fc1's weight
    and gradient fp32 (4). fc1: 128 x 4 = 512, 256 x 4 = 1,024. fc2: 32 x 1 + 64 x 4 = 288,
    64 x 1 + 96 x 4 = 448."""
    assert _level_bytes(pm.int8_model()) == {"fc1": [512, 1024], "fc2": [288, 448]}


def test_fp16_moves_everything_in_two_bytes():
    """fp16: h and its error 2 bytes, fc1's gradient 2 bytes. fc1: 128 x 2 = 256, 256 x 2 = 512.
    fc2: (32 + 64) x 2 = 192, (64 + 96) x 2 = 320."""
    assert _level_bytes(pm.fp16_model()) == {"fc1": [256, 512], "fc2": [192, 320]}


def test_mix_fp16_weights_with_an_int8_pair():
    """mix: fc1's fp16 gradient 2 bytes (256, 512); the QDQ pair makes h_dq int8 forward (1 byte)
    and its error the training fp32 (the model declares no error type for an int8 tensor): fc2
    32 x 1 + 64 x 4 = 288, 64 x 1 + 96 x 4 = 448."""
    assert _level_bytes(pm.mix_model()) == {"fc1": [256, 512], "fc2": [288, 448]}


@pytest.mark.parametrize("dtype, width", [("fp32", 4), ("bf16", 2), ("1", 1)])
def test_dtype_override_prices_every_tensor_alike(dtype, width):
    """--dtype drops the declared widths: every quantity in ``width`` bytes. fc1: 128 w, 256 w;
    fc2: (32 + 64) w, (64 + 96) w -- the same for all three models."""
    want = {"fc1": [128 * width, 256 * width], "fc2": [96 * width, 160 * width]}
    for build in (pm.int8_model, pm.fp16_model, pm.mix_model):
        assert _level_bytes(build(), dtype) == want


def test_memory_counts_each_width():
    """Memory per PE of fc2 under (III, III) on 4 PEs: its weight (int8, 1 byte) and gradient
    (fp32, 4 bytes) split four ways, 64 / 4 = 16 elements each, and its whole input h_dq (int8,
    replicated: 32 elements): 16 x 1 + 16 x 4 + 32 x 1 = 112 bytes; fp16 everywhere: 16 x 2 + 16 x 2
    + 32 x 2 = 128."""
    array = dataclasses.replace(resolve_array(levels="2,2"), dtype_bytes=4, _cache={})
    for build, want in ((pm.int8_model, 112), (pm.fp16_model, 128)):
        model = CostModel(load_layer_graph(build()), array, "accpar", convention="hierarchical")
        assert model.memory_bytes(1, ("III", "III")) == want


def test_reference_convention_uses_the_same_widths():
    """Under ``reference`` on one level (where both conventions agree) fc2's forward all-gather is
    A (k - 1) = 32 elements, its partial error all-reduce 2 x 32 = 64: int8 32 x 1 + 64 x 4 = 288."""
    array = dataclasses.replace(resolve_array(levels="2"), dtype_bytes=4, _cache={})
    model = CostModel(load_layer_graph(pm.int8_model()), array, "accpar", convention="reference")
    ev = model.evaluate([("I",), ("III",)])
    assert ev.comm[1][0].bytes == 288


def test_layers_alike_but_for_width_are_not_twins():
    """fc1 and fc2 have the same shapes; in the mix model fc1's gradient is fp16 (2 bytes) and
    fc2's the training fp32 (its weight is int8). Both (I, I), no conversion between (S(b) both
    sides): only the dW all-reduces, 128 / 256 elements at levels 0 / 1. fc1: 256, 512; fc2: 512,
    1,024 -- the twin memo (hypar.cost.repeats keys every Tensor and Layer field) keeps them apart."""
    array = dataclasses.replace(resolve_array(levels="2,2"), dtype_bytes=4, _cache={})
    model = CostModel(load_layer_graph(pm.mix_model()), array, "accpar", convention="hierarchical")
    assert model.node_sig[0] != model.node_sig[1]
    ev = model.evaluate([("I", "I"), ("I", "I")])
    assert [[ev.comm[i][h].bytes for h in range(2)] for i in range(2)] == [[256, 512], [512, 1024]]


def test_weight_capacity_counts_the_stored_width():
    """On solver_configs/cim_array.yaml (8-bit macros, dtype_bytes 1) an fp16 model's weights take
    2 bytes each: every weighted layer's capacity load is exactly twice the load of the same
    graph priced in the array's 1 byte (--dtype int8)."""
    array = resolve_array(str(CONFIGS / "cim_array.yaml"))
    g = load_layer_graph(str(FIXTURES / "cnn_fp16.onnx"))
    own = CostModel(g, array, "accpar", convention="hierarchical")
    plain = CostModel(*with_dtype(g, array, "int8"), "accpar", convention="hierarchical")
    types = ("I",) * array.n_levels
    loads = [(weight_load(own, i, types), weight_load(plain, i, types)) for i in range(len(own.nodes))]
    assert loads and all(a > 0 and a == 2 * b for a, b in loads)
