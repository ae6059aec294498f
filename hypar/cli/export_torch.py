"""``hypar export PLAN.json --torch -o placements.json``: a plan as PyTorch DTensor placements per
module path (:func:`hypar.torch.placements`; torch is not needed to write them).

Issue 13's other half adds ``--onnx`` (annotated ONNX) to the same ``export`` command in
``hypar/cli/export_cmd.py``; when both are merged that command calls :func:`write_torch_placements`
for ``--torch`` and this module's command goes.
"""

from __future__ import annotations

import json
import os

import click

from hypar.cli.base import _hypar_errors_and_warnings, cli


def write_torch_placements(plan_path: str, out_path: str) -> str:
    """Write the DTensor placements of the full plan at ``plan_path`` to ``out_path`` (JSON: module
    path -> placements per mesh dim); returns the line to print. PlanError (TorchPlanError) for a
    plan DTensor cannot apply, naming the layer and what would work."""
    from hypar.plan import read_plan
    from hypar.torch import placements

    table = placements(read_plan(plan_path))
    with open(out_path, "w") as f:
        f.write(json.dumps(table, indent=1) + "\n")
    return f"placements of {len(table)} modules written to {os.fspath(out_path)}"


@cli.command("export")
@click.argument("plan_path", metavar="PLAN.json", type=click.Path())
@click.option("--torch", "to_torch", is_flag=True,
              help="Write PyTorch DTensor placements per module path (one per mesh dim = level, top first).")
@click.option("-o", "out_path", required=True, type=click.Path(), metavar="OUT",
              help="Where to write the export.")
def export(plan_path: str, to_torch: bool, out_path: str) -> None:
    """Write a plan in a form a runtime reads: --torch gives, per module path of the model the
    ONNX was exported from, the DTensor placements (Shard(dim=...), Replicate(), Partial(sum))
    of its input, weight, bias and output on each mesh dim (level 0 = mesh dim 0). Apply the plan
    itself with hypar.torch.parallelize(module, plan, mesh).

    \b
    Example:
      hypar partition tests/fixtures/decoder_dynamo.onnx --batch 2 --dim sequence=16 --levels 2,2 -o decoder.json
      hypar export decoder.json --torch -o placements.json
    """
    if not to_torch:
        raise click.UsageError("say what to export: --torch (DTensor placements per module)")
    with _hypar_errors_and_warnings():
        click.echo(write_torch_placements(plan_path, out_path))
