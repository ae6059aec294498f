"""hypar.torch.parallelize on one process (a fake process group stands for the mesh): the
placements it gives, and the errors it raises before changing anything."""

from __future__ import annotations

import copy
import warnings

import pytest

from torch_runtime import needs_torch

needs_torch()

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.tensor import DTensor, Replicate, Shard  # noqa: E402

from hypar import api  # noqa: E402
from hypar.config import resolve_array  # noqa: E402
from hypar.errors import HyparWarning  # noqa: E402
from hypar.torch import TorchPlanError, parallelize  # noqa: E402
from hypar.torch.examples import MLP, Decoder, parameter_count  # noqa: E402
from hypar.torch.local import splits_only_batch_dims  # noqa: E402

from paths import ROOT  # noqa: E402

MLP_ONNX = str(ROOT / "tests" / "torch" / "mlp_dynamo.onnx")


@pytest.fixture(scope="module")
def plan():
    """The MLP's plan on 2 x 2 PEs (III / II / III at both levels)."""
    return api.partition(MLP_ONNX, resolve_array(levels="2,2"), batch=8, search_how="refine")


def _model(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return MLP(**kwargs)


def test_weights_take_the_plans_placements(fake_mesh, plan):
    model = parallelize(_model(), plan, fake_mesh((2, 2)), model_path=MLP_ONNX)
    assert model.fc1.weight.placements == (Shard(0), Shard(0))
    assert model.fc1.bias.placements == (Shard(0), Shard(0))
    assert model.fc2.weight.placements == (Shard(1), Shard(1))
    assert model.fc2.bias.placements == (Replicate(), Replicate())
    assert model.fc1.weight.to_local().shape == (8, 16)       # 32 out features over 4 PEs


def test_other_parameters_are_replicated(fake_mesh):
    plan = api.partition(str(ROOT / "tests" / "fixtures" / "decoder_dynamo.onnx"), resolve_array(levels="2,2"),
                         batch=8, dims={"sequence": 16}, objective="comm", search_how="refine")
    torch.manual_seed(0)
    model = Decoder()
    assert parameter_count(model) == plan["model"]["parameters"] == 90432     # the fixture's module
    model = parallelize(model, plan, fake_mesh((2, 2)))
    norm = model.model.layers[0].input_layernorm.weight
    assert isinstance(norm, DTensor) and norm.placements == (Replicate(), Replicate())
    assert all(isinstance(p, DTensor) for p in model.parameters())


def test_mesh_of_another_shape_is_refused(fake_mesh, plan):
    model = _model()
    with pytest.raises(TorchPlanError, match=r"mesh has shape \(2, 4\).*fanouts \(2, 2\).*init_device_mesh"):
        parallelize(model, plan, fake_mesh((2, 4)), model_path=MLP_ONNX)
    assert not isinstance(model.fc1.weight, DTensor)          # nothing changed


def test_module_the_model_lacks_is_refused(fake_mesh, plan):
    other = copy.deepcopy(plan)
    for row in other["layers"]:
        if row["module"] == "fc2":
            row["module"] = "encoder.fc2"
    with pytest.raises(TorchPlanError, match=r"names module 'encoder.fc2'.*\(similar: fc2\)"):
        parallelize(_model(), other, fake_mesh((2, 2)), model_path=MLP_ONNX)


def test_module_of_another_kind_is_refused(fake_mesh, plan):
    model = _model()
    model.fc2 = nn.Conv1d(32, 32, 1)
    with pytest.raises(TorchPlanError, match=r"'node_linear_1' is a gemm but module 'fc2' is a Conv1d"):
        parallelize(model, plan, fake_mesh((2, 2)), model_path=MLP_ONNX)


def test_uneven_weight_is_refused_before_changing_anything(fake_mesh, plan):
    model = _model(out_features=6)          # fc3 (III / III) would split 6 out features over 4 PEs
    with pytest.raises(TorchPlanError, match=r"'node_linear_2' \(module 'fc3'\): its weight of shape \(6, 32\) "
                       r"splits dim 0 \(6\) over 4 PEs unevenly"):
        parallelize(model, plan, fake_mesh((2, 2)), model_path=MLP_ONNX)
    assert not any(isinstance(p, DTensor) for p in model.parameters())


def test_uneven_batch_is_refused_when_the_layer_runs(fake_mesh):
    data = api.partition(MLP_ONNX, resolve_array(levels="2,2"), batch=64, objective="comm", search_how="refine")
    assert [row["types"] for row in data["layers"] if row["weighted"]] == [["I", "III"], ["I", "II"], ["I", "I"]]
    model = parallelize(_model(), data, fake_mesh((2, 2)), model_path=MLP_ONNX)
    # fc1 (I / III) splits the batch of 6 in 2, fc3 (I / I) in 4: refused there, by name
    with pytest.raises(TorchPlanError, match=r"'node_linear_2' \(module 'fc3'\): its input of shape \(6, 32\) "
                       r"splits dim 0 \(6\) over 4 PEs unevenly"):
        model(torch.randn(6, 16))


def test_without_the_onnx_file_it_warns(fake_mesh, plan):
    lost = copy.deepcopy(plan)
    lost["model"]["path"] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallelize(_model(), lost, fake_mesh((2, 2)))
    assert any(issubclass(w.category, HyparWarning) and "no ONNX model for the plan" in str(w.message)
               for w in caught)
    with pytest.raises(TorchPlanError, match="no such model file"):
        parallelize(_model(), lost, fake_mesh((2, 2)), model_path=str(ROOT / "missing.onnx"))


def test_local_matmul_only_for_batch_splits(fake_mesh):
    from torch.distributed.tensor import distribute_tensor

    mesh = fake_mesh((2, 2))
    a = distribute_tensor(torch.randn(4, 4, 8, 8), mesh, [Shard(0), Shard(1)], src_data_rank=None)
    assert splits_only_batch_dims(a, a)
    b = distribute_tensor(torch.randn(4, 4, 8, 8), mesh, [Shard(0), Shard(2)], src_data_rank=None)
    assert not splits_only_batch_dims(b, b)             # a split of the rows is not local
    assert not splits_only_batch_dims(a, b)
