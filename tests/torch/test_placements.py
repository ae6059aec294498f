"""hypar.torch's torch-free half: a plan as DTensor placements per module path, the errors for what
DTensor cannot run, the nesting rule, and ``hypar export --torch`` (no torch needed)."""

from __future__ import annotations

import copy
import json

import pytest

from hypar import api
from hypar.config import resolve_array
from hypar.torch import TorchPlanError, layer_placements, nesting_steps, placements
from hypar.torch.consumers import check_even, output_layouts
from hypar.torch.placements import module_layouts

from paths import ROOT

MLP_ONNX = ROOT / "tests" / "torch" / "mlp_dynamo.onnx"
DECODER_ONNX = ROOT / "tests" / "fixtures" / "decoder_dynamo.onnx"


@pytest.fixture(scope="module")
def mlp_plan():
    """The MLP's plan on 2 x 2 PEs at batch 8 (time objective: Megatron's III / II / III)."""
    return api.partition(str(MLP_ONNX), resolve_array(levels="2,2"), batch=8)


def _row(name, module, kind, types, per_level, weighted=True):
    return {"name": name, "module": module, "kind": kind, "weighted": weighted, "types": types,
            "placements": per_level}


def _plan(*rows, fanouts=(2, 2)):
    return {"array": {"levels": [{"fanout": k} for k in fanouts]}, "layers": list(rows)}


def test_mlp_plan_maps_each_type_to_its_placements(mlp_plan):
    types = {row["module"]: row["types"] for row in mlp_plan["layers"] if row["weighted"]}
    assert types == {"fc1": ["III", "III"], "fc2": ["II", "II"], "fc3": ["III", "III"]}
    table = placements(mlp_plan)
    assert table["fc1"]["weight"] == ["Shard(dim=0)", "Shard(dim=0)"]        # out features
    assert table["fc1"]["bias"] == ["Shard(dim=0)", "Shard(dim=0)"]
    assert table["fc1"]["input"] == ["Replicate()", "Replicate()"]
    assert table["fc1"]["output"] == ["Shard(dim=-1)", "Shard(dim=-1)"]
    assert table["fc2"]["weight"] == ["Shard(dim=1)", "Shard(dim=1)"]        # in features
    assert table["fc2"]["bias"] == ["Replicate()", "Replicate()"]
    assert table["fc2"]["input"] == ["Shard(dim=-1)", "Shard(dim=-1)"]
    assert table["fc2"]["output"] == ["Partial(sum)", "Partial(sum)"]
    assert table["fc2"]["torch_module"] == "torch.nn.Linear"
    assert json.loads(json.dumps(table)) == table


def test_type_one_shards_the_batch_and_replicates_the_weight():
    plan = _plan(_row("n", "fc", "gemm", ["I", "III"],
                      [{"input": "S(b)", "output": "S(b)", "weight": "R"},
                       {"input": "R", "output": "S(f)", "weight": "S(out)"}]))
    p = placements(plan)["fc"]
    assert p["input"] == ["Shard(dim=0)", "Replicate()"]
    assert p["weight"] == ["Replicate()", "Shard(dim=0)"]
    assert p["output"] == ["Shard(dim=0)", "Shard(dim=-1)"]


def test_embedding_rows_and_features():
    plan = _plan(_row("e", "tok", "embedding", ["II", "III"],
                      [{"input": "R", "output": "P", "weight": "S(in)"},
                       {"input": "R", "output": "S(f)", "weight": "S(out)"}]))
    p = placements(plan)["tok"]
    assert p["weight"] == ["Shard(dim=0)", "Shard(dim=1)"]     # (rows, features)
    assert "bias" not in p and p["output"] == ["Partial(sum)", "Shard(dim=-1)"]


def test_convolution_split_by_channels_is_refused_by_name():
    plan = _plan(_row("node_conv", "stem", "conv", ["I", "III"],
                      [{"input": "S(b)", "output": "S(b)", "weight": "R"},
                       {"input": "R", "output": "S(f)", "weight": "S(out)"}]))
    with pytest.raises(TorchPlanError, match=r"'node_conv' \(module 'stem'\).*type III at level 1.*type I at every "
                       r"level.*local_map"):
        placements(plan)


def test_convolution_of_type_one_maps():
    plan = _plan(_row("node_conv", "stem", "conv", ["I", "I"], [{"input": "S(b)", "output": "S(b)", "weight": "R"}] * 2))
    assert placements(plan)["stem"]["weight"] == ["Replicate()", "Replicate()"]


def test_minimal_plan_and_heterogeneous_array_are_refused(mlp_plan):
    with pytest.raises(TorchPlanError, match="full plan"):
        placements({"assignment": {"node_linear": ["I", "I"]}})
    hetero = copy.deepcopy(mlp_plan)
    hetero["array"]["pe_kinds"] = {"a": {"tflops": 100.0}, "b": {"tflops": 50.0}}
    hetero["array"]["pes"] = [{"kind": "a", "count": 2}, {"kind": "b", "count": 2}]
    with pytest.raises(TorchPlanError, match="different throughput.*uneven"):
        placements(hetero)


def test_uneven_weight_slices_are_refused():
    row = _row("n", "fc", "gemm", ["III", "I"], [{"input": "R", "output": "S(f)", "weight": "S(out)"},
                                                 {"input": "S(b)", "output": "S(b)", "weight": "R"}])
    row["weight_slices"] = [{"pes": [0, 2], "in": [0, 4], "out": [0, 2]}, {"pes": [2, 4], "in": [0, 4], "out": [2, 3]}]
    with pytest.raises(TorchPlanError, match=r"'n' \(module 'fc'\).*unevenly over the PEs \(4x2, 4x1\)"):
        placements(_plan(row))


def test_layer_without_module_only_as_type_one():
    row = _row("n", None, "gemm", ["I", "I"], [{"input": "S(b)", "output": "S(b)", "weight": "R"}] * 2)
    assert layer_placements(_plan(row)) == {}
    row = _row("n", None, "gemm", ["I", "III"], [{"input": "S(b)", "output": "S(b)", "weight": "R"},
                                                 {"input": "R", "output": "S(f)", "weight": "S(out)"}])
    with pytest.raises(TorchPlanError, match="no module path.*dynamo"):
        layer_placements(_plan(row))


def test_norm_modules_take_their_one_layout():
    plan = _plan(_row("pow", "norm", "elementwise", ["R", "S(b)"], [{"input": "R", "output": "R"}] * 2, False),
                 _row("mul", "norm", "elementwise", ["R", "S(b)"], [{"input": "R", "output": "R"}] * 2, False),
                 _row("a", "attn", "elementwise", ["R", "R"], [], False),
                 _row("b", "attn", "reshape", ["S(f)", "R"], [], False))
    assert module_layouts(plan) == {"norm": ("Replicate()", "Shard(dim=0)")}


# (source, target, DTensor's extra step) per mesh dim on 2 x 2: what torch 2.13's greedy planner does
# (tests/torch/test_dtensor_nesting.py checks the rule against DTensor itself on every pair).
@pytest.mark.parametrize("src, tgt, extra", [
    ([("R",), ("S", 0)], [("S", 0), ("S", 0)], [(1, "all_gather", "none")]),
    ([("S", 0), ("S", 0)], [("R",), ("S", 0)], [(1, "all_gather", "none")]),
    ([("S", 0), ("P",)], [("R",), ("S", 0)], [(1, "all_reduce", "reduce_scatter")]),
    ([("S", 0), ("S", 1)], [("S", 1), ("S", 1)], [(1, "all_gather", "none")]),
    ([("S", 1), ("S", 0)], [("R",), ("S", 0)], []),
    ([("R",), ("P",)], [("S", 0), ("S", 0)], []),           # a source without shards is never misaligned
    ([("S", 0), ("R",)], [("S", 0), ("S", 0)], []),
])
def test_nesting_steps(src, tgt, extra):
    assert nesting_steps(src, tgt) == extra


def test_decoder_outputs_convert_to_what_their_consumers_read():
    plan = api.partition(str(DECODER_ONNX), resolve_array(levels="2,2"), batch=8, dims={"sequence": 16},
                         objective="comm")
    after = output_layouts(plan, DECODER_ONNX)
    names = {row["module"]: row["name"] for row in plan["layers"] if row["weighted"]}
    # k_proj (I/III) feeds the head split: batch at level 0, heads at level 1
    assert after[names["model.layers.0.self_attn.k_proj"]] == ("S(b)", "S(f)")
    # the embedding (III/III) feeds the first norm, computed on whole rows of a batch split
    assert after[names["model.embed_tokens"]] == ("S(b)", "R")


def test_uneven_head_split_is_refused_before_running():
    plan = api.partition(str(DECODER_ONNX), resolve_array(levels="2,2"), batch=4, dims={"sequence": 16})
    model, assignment = api.plan_assignment(str(DECODER_ONNX), plan)
    with pytest.raises(TorchPlanError, match=r"'node_view_1' \(module 'model.layers.0.self_attn'\) splits its "
                       r"feature axis of 2 over 4 PEs"):
        check_even(plan, model, assignment)


def test_export_torch_writes_placements(tmp_path, mlp_plan, cli_run):
    from hypar.plan import dumps

    plan_path, out = tmp_path / "plan.json", tmp_path / "placements.json"
    plan_path.write_text(dumps(mlp_plan))
    res = cli_run("export", plan_path, "--torch", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "placements of 3 modules written" in res.stdout
    assert json.loads(out.read_text()) == placements(mlp_plan)
    assert "Example:" in cli_run("export", "--help").stdout
    res = cli_run("export", plan_path, "-o", out)
    assert res.exit_code == 2 and "--torch" in res.stderr


def test_export_torch_errors_name_the_layer(tmp_path, cli_run):
    plan = _plan(_row("node_conv", "stem", "conv", ["II", "I"],
                      [{"input": "S(f)", "output": "P", "weight": "S(in)"},
                       {"input": "S(b)", "output": "S(b)", "weight": "R"}]))
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"assignment": {}}))
    res = cli_run("export", plan_path, "--torch", "-o", tmp_path / "out.json")
    assert res.exit_code == 1 and "full plan" in res.stderr
    assert "node_conv" in str(pytest.raises(TorchPlanError, placements, plan).value)
