"""The simulator counts what it sends in each tensor's width, and verify passes on models stored
in int8 (QDQ), fp16 and a mix: the counted bytes equal the cost model's, which
tests/cost/test_precision_bytes.py derives on paper (same models, array and plan)."""

from __future__ import annotations

import dataclasses

import pytest

from hypar.api import partition, plan_assignment
from hypar.config import SolverSettings, resolve_array
from hypar.cost import CostModel
from hypar.onnx import load_layer_graph
from hypar.verify import verify_assignment

import precision_models as pm
from paths import FIXTURES

ASSIGNMENT = [("I", "I"), ("III", "III")]
# per layer, (level 0, level 1) bytes: the docstrings of tests/cost/test_precision_bytes.py
HAND_BYTES = {"int8": {"fc1": (512, 1024), "fc2": (288, 448)},
              "fp16": {"fc1": (256, 512), "fc2": (192, 320)},
              "mix": {"fc1": (256, 512), "fc2": (288, 448)}}
BUILD = {"int8": pm.int8_model, "fp16": pm.fp16_model, "mix": pm.mix_model}


def _fp32_training_array(levels: str):
    return dataclasses.replace(resolve_array(levels=levels), dtype_bytes=4, _cache={})


@pytest.mark.parametrize("which", sorted(HAND_BYTES))
def test_counted_bytes_are_the_hand_derived_ones(which):
    """accpar on 2 x 2 under fc1 (I, I), fc2 (III, III): every layer passes and the simulator's
    counted bytes per level are the hand-derived ones."""
    model = CostModel(load_layer_graph(BUILD[which]()), _fp32_training_array("2,2"), "accpar",
                      convention="hierarchical")
    rep = verify_assignment(model, ASSIGNMENT)
    assert rep.ok, rep.failures()
    counted = {l.name: tuple(c.counted_bytes for c in l.levels) for l in rep.layers}
    assert counted == HAND_BYTES[which]


@pytest.mark.parametrize("which", sorted(HAND_BYTES))
def test_full_space_every_layout_of_the_pair_verifies(which):
    """In the full space the quantiser and dequantiser are nodes of their own; under every type
    of fc2 at the top level verify passes (counted = predicted per layer and level)."""
    model = CostModel(load_layer_graph(BUILD[which]()), _fp32_training_array("2,2"), "full",
                      convention="hierarchical")
    for top in ("I", "II", "III"):
        asg = [(top, "I") if node.layer.decision else (model.labels(i)[0],) * 2 for i, node in enumerate(model.nodes)]
        rep = verify_assignment(model, asg)
        assert rep.ok, (top, rep.failures())


@pytest.mark.parametrize("fixture", ["cnn_qdq", "cnn_fp16"])
def test_fixture_plans_verify(fixture):
    """The precision fixtures partitioned on 2 x 2 (objective comm) verify, and their plans move
    fewer bytes than the same plan search under --dtype fp32 (every tensor 4 bytes)."""
    path = str(FIXTURES / f"{fixture}.onnx")
    array = resolve_array(levels="2,2")
    settings = SolverSettings(time_limit_s=20)
    own = partition(path, array, objective="comm", settings=settings)
    wide = partition(path, array, objective="comm", settings=settings, dtype="fp32")
    assert wide["model"]["dtype"] == "fp32" and "dtype" not in own["model"]
    assert own["totals"]["comm_bytes"] < wide["totals"]["comm_bytes"]
    model, asg = plan_assignment(path, own)
    rep = verify_assignment(model, asg)
    assert rep.ok, rep.failures()
