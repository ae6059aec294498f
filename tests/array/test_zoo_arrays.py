"""Every shipped array config evaluates every zoo model (issue 3's "done when")."""

import glob
import math
import os

import pytest

from hypar import api
from hypar.array import load_array

from paths import ROOT
ROOT = str(ROOT)
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "solver_configs", "*.yaml")))
MODELS = sorted(glob.glob(os.path.join(ROOT, "models", "*.onnx")))


def test_shipped_configs_and_zoo_are_present():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {"default.yaml", "hypar2019.yaml", "accpar2020.yaml", "gpu_cluster.yaml"} <= names
    assert len(MODELS) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_every_zoo_model_evaluates_on_config(config):
    arr = load_array(config)
    for model in MODELS:
        for baseline in ("data", "owt"):
            _, ev = api.evaluate(model, baseline_name=baseline, array=arr, space="accpar")
            t = ev.totals()
            for key in ("comm_bytes", "time_s", "compute_s", "comm_s", "energy_j", "peak_mem_bytes_per_pe"):
                assert math.isfinite(t[key]) and t[key] >= 0, (model, key, t[key])
            assert t["compute_s"] > 0 and t["time_s"] >= t["compute_s"]
            # Data parallelism all-reduces every weight gradient, so it always moves bytes.
            if baseline == "data":
                assert t["comm_bytes"] > 0


@pytest.mark.parametrize("model", ["lenet", "resnet18"])
def test_data_parallel_on_heterogeneous_array_splits_batch_by_throughput(model):
    """accpar2020: 16 TPU-v2 (45 TFLOP/s) + 16 TPU-v3 (123), batch 512 from the config.

    AccPar's ratio gives the v2 half 512*45/168 = 137 rows (9 per PE at most) and the v3 half
    375 (24 per PE): the slowest PE needs max(9/45, 24/123) = 0.2 row-units of time, close to
    the ideal 512/(16*168) = 0.1905; an even 256/256 split would need 16/45 = 0.356."""
    arr = load_array(os.path.join(ROOT, "solver_configs", "accpar2020.yaml"))
    path = os.path.join(ROOT, "models", f"{model}.onnx")
    model_, data = api.evaluate(path, baseline_name="data", array=arr, space="full")
    assert model_.g.graph["batch"] == 512
    ideal = sum(model_.compute_cost(i, (None,) * arr.n_levels).seconds for i in range(len(model_.nodes)))
    got = data.totals()["compute_s"]
    assert got == pytest.approx(ideal * (0.2 / (512 / (16 * 168))), rel=0.02)
    assert got < ideal * (16 / 45) / (512 / (16 * 168))
