"""Every zoo CNN on solver_configs/cim_array.yaml: partitioned within every macro's weight
capacity, or refused with the smallest grown array that fits (checked: that array fits, the one
just smaller does not), or with the statement that no grown array fits (checked at the largest
candidate)."""

from __future__ import annotations

import re

import pytest

from hypar import api
from hypar.array import load_array
from hypar.cost import CostModel
from hypar.cost.stationary import fits_weights, smallest_weight_plan, weights_total_load
from hypar.errors import InfeasibleError
from hypar.search import _grown, smallest_memory
from tests.paths import CONFIGS, MODELS

CNNS = ("lenet", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
        "resnet101", "resnet152", "googlenet", "mobilenetv2")


def _fits_on(g, array) -> bool:
    model = CostModel(g, array, "full", convention="hierarchical")
    return fits_weights(model, smallest_weight_plan(model, smallest_memory(model)))


@pytest.mark.slow
@pytest.mark.parametrize("name", CNNS)
def test_zoo_cnn_fits_cim_array_or_names_the_array(name):
    arr = load_array(CONFIGS / "cim_array.yaml")
    path = str(MODELS / f"{name}.onnx")
    g = api.load_graph(path, None, arr)
    try:
        plan = api.partition(path, arr, graph=g)
    except InfeasibleError as exc:
        found = re.search(r"smallest array that fits has (\d+) PEs \(level fanouts (\d+),16", str(exc))
        if found is None:
            assert "no array of up to 65536 PEs" in str(exc)
            assert not _fits_on(g, _grown(arr, 65536 // 16))
            return
        top = int(found.group(2))
        assert int(found.group(1)) == top * 16
        assert _fits_on(g, _grown(arr, top)) and not _fits_on(g, _grown(arr, top - 1))
        return
    model, asg = api.plan_assignment(path, plan, array=arr)
    assert weights_total_load(model, asg) <= 1.0 + 1e-9
