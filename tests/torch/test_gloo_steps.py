"""The proof on a real runtime: one training step of the MLP and of the decoder fixture's module
under hypar plans (``hypar.api.partition`` on their ONNX, search refine) on local gloo groups of
4 processes ((2, 2) mesh) and 8 ((2, 2, 2)), against the same step on one process.

Numerics: float64, the loss and every parameter's gradient (gathered whole) within
``TOL = 1e-9`` x max(1, max |reference|) on every rank (measured: <= 5e-17). Collectives: per
module and level, the bytes the torch step received (gloo's all-gather fallback of an all-to-all
counted as the all-to-all) next to what hypar's simulator predicts for the plan
(hypar.torch.report); the assertions say where they must agree exactly and where they may not
(the table of each run is printed with -s, or by scripts/torch_collectives.py).
"""

from __future__ import annotations

import functools

import pytest

from torch_runtime import needs_torch

needs_torch()

from hypar import api  # noqa: E402
from hypar.config import resolve_array  # noqa: E402
from hypar.torch import examples  # noqa: E402
from hypar.torch.report import format_table, totals  # noqa: E402
from hypar.torch.step import TOL, check_plan  # noqa: E402

from paths import ROOT  # noqa: E402

MLP_ONNX = str(ROOT / "tests" / "torch" / "mlp_dynamo.onnx")
DECODER_ONNX = str(ROOT / "tests" / "fixtures" / "decoder_dynamo.onnx")
TIMEOUT_S = 600.0       # a bound on a busy 2-core machine; about 15-70 s each when it is quiet


def _run(onnx_path, levels, batch, objective, build, data, dims=None):
    plan = api.partition(onnx_path, resolve_array(levels=levels), batch=batch, dims=dims, objective=objective,
                         search_how="refine")
    check = check_plan(plan, build, data, timeout_s=TIMEOUT_S)
    print(format_table(check.rows, len(check.results)))
    assert check.loss_error <= TOL * max(1.0, abs(check.results[0]["ref_loss"]))
    assert not check.grad_failures(), check.grad_failures()
    return plan, check


def _weighted(plan) -> dict[str, list[str]]:
    return {row["module"]: row["types"] for row in plan["layers"] if row["weighted"]}


@pytest.mark.parametrize("levels", ["2,2", "2,2,2"])
def test_mlp_megatron_plan_moves_exactly_the_plans_bytes(levels):
    plan, check = _run(MLP_ONNX, levels, 8, "time", examples.MLP, functools.partial(examples.mlp_batch, 8))
    n = levels.count(",") + 1
    assert _weighted(plan) == {"fc1": ["III"] * n, "fc2": ["II"] * n, "fc3": ["III"] * n}
    assert [r for r in check.rows if r.module != "Global" and not r.matches] == []
    assert {r.module for r in check.rows} == {"fc2", "fc3", "Global"}
    assert all(not r["warnings"] for r in check.results)


def test_mlp_mixed_plan_and_the_nesting_warning():
    """(2, 2), batch 8, comm: fc3 reads fc2's [R, S(f)] output as [S(f), S(f)], a free slice in
    hypar's digit nesting but an all-gather on mesh dim 1 in DTensor's (both ways): parallelize
    warns, and exactly there the torch step moves more."""
    plan, check = _run(MLP_ONNX, "2,2", 8, "comm", examples.MLP, functools.partial(examples.mlp_batch, 8))
    assert _weighted(plan) == {"fc1": ["III", "III"], "fc2": ["II", "III"], "fc3": ["II", "II"]}
    said = {w for r in check.results for w in r["warnings"]}
    assert len(said) == 1 and "'node_linear_2' (module 'fc3')" in next(iter(said))
    fc2 = [r for r in check.rows if r.module == "fc2"]
    assert fc2 and all(r.matches for r in fc2)
    fc3 = {r.level: r for r in check.rows if r.module == "fc3"}
    assert fc3["1"].bytes > fc3["1"].plan_bytes


def _decoder(levels, batch):
    return _run(DECODER_ONNX, levels, batch, "comm", examples.Decoder,
                functools.partial(examples.decoder_batch, batch), dims={"sequence": 16})


def _decoder_rows_match(plan, check) -> None:
    """Every Linear's rows equal the plan's; the rows that differ are the embedding's output
    conversion (torch runs it at the embedding, hypar charges it to the first norm, its consumer)
    and the RMSNorm scales' gradient all-reduce under a batch split (not charged by hypar)."""
    linears = {m for m, types in _weighted(plan).items() if m != "model.embed_tokens"}
    assert len(linears) == 15
    assert [r for r in check.rows if r.module in linears and not r.matches] == []
    differ = {r.module for r in check.rows if not r.matches} - {"Global"}
    assert differ <= {"model.embed_tokens", "model.norm"} | {
        f"model.layers.{i}.{n}" for i in (0, 1) for n in ("input_layernorm", "post_attention_layernorm")}


def test_decoder_on_4_processes():
    plan, check = _decoder("2,2", 8)
    assert _weighted(plan)["model.layers.0.self_attn.q_proj"] == ["III", "I"]
    _decoder_rows_match(plan, check)


@pytest.mark.slow
def test_decoder_on_8_processes():
    plan, check = _decoder("2,2,2", 32)
    assert _weighted(plan)["model.layers.0.self_attn.q_proj"] == ["I", "I", "III"]
    _decoder_rows_match(plan, check)
    assert totals(check.rows)["2"][0] == totals(check.rows)["2"][1]
