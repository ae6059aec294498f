"""The command that writes a plan where a runtime reads it: export (``--onnx``: the model with
ONNX's multi-device sharding annotations; ``--torch``: DTensor placements per module path)."""

from __future__ import annotations

import json

import click

from hypar.cli.base import _check_writable, _hypar_errors_and_warnings, cli


@cli.command("export")
@click.argument("plan_path", metavar="PLAN.json")
@click.option("--onnx", "onnx_model", type=click.Path(), default=None, metavar="MODEL.onnx",
              help="Write the plan into this ONNX model as its multi-device sharding annotations (IR version 11: "
                   "a device configuration for the array, per node a sharding spec per tensor).")
@click.option("--torch", "to_torch", is_flag=True,
              help="Write the plan as PyTorch DTensor placements per module path (JSON; torch not needed).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, metavar="OUT",
              help="The file to write: the annotated model for --onnx, the placements (JSON) for --torch.")
def export_cmd(plan_path: str, onnx_model: str | None, to_torch: bool, output: str) -> None:
    """Write PLAN.json where a runtime reads it; choose the target with --onnx or --torch.

    With --onnx MODEL.onnx, the model the plan was made for is written to OUT with the plan as
    ONNX's own multi-device annotations: a device configuration for the PE array (one device per
    PE) and, on every node the plan places, a sharding spec for each of its tensors (activations,
    weight, broadcast constants) with one sharded-dim factor per level of the array; uneven
    splits list a device once per equal shard it holds. The array, batch, bound dims, space,
    objective and convention go into the model's metadata_props, so `hypar evaluate OUT.onnx`
    and `hypar verify OUT.onnx` read the annotations as the plan and cost it as the JSON plan.
    The IR version is raised to 11 when below, and the result is checked with
    onnx.checker.check_model(full_check=True).

    With --torch, OUT is JSON: per module path of the model the ONNX was exported from, the
    DTensor placements (Shard(dim=...), Replicate(), Partial(sum)) of its input, weight, bias and
    output on each mesh dim (level 0 = mesh dim 0). hypar.torch.parallelize(module, plan, mesh)
    applies the plan itself.

    \b
    Example:
      hypar partition models/alexnet.onnx --levels 2,2 -o alexnet_plan.json
      hypar export alexnet_plan.json --onnx models/alexnet.onnx -o alexnet_sharded.onnx
      hypar evaluate alexnet_sharded.onnx
      hypar export alexnet_plan.json --torch -o alexnet_placements.json
    """
    if (onnx_model is None) == (not to_torch):
        raise click.UsageError("choose one target: --onnx MODEL.onnx (the annotated model) or --torch "
                               "(DTensor placements)")
    if to_torch:
        _check_writable(output, "-o")
        with _hypar_errors_and_warnings():
            click.echo(_write_placements(plan_path, output))
        return
    from hypar.export import export_onnx
    from hypar.plan import load_plan

    _check_writable(output, "-o")
    with _hypar_errors_and_warnings():
        summary = export_onnx(load_plan(plan_path), onnx_model, output)
    click.echo(summary.text())


def _write_placements(plan_path: str, output: str) -> str:
    """Write the DTensor placements of the full plan at ``plan_path`` to ``output`` (JSON); the line
    to print. TorchPlanError (a PlanError) naming the layer DTensor cannot place as planned."""
    from hypar.plan import read_plan
    from hypar.torch import placements

    table = placements(read_plan(plan_path))
    with open(output, "w") as f:
        f.write(json.dumps(table, indent=1) + "\n")
    return f"placements of {len(table)} modules written to {output}"


def plan_in_model(model: str):
    """The plan a model annotated by ``hypar export --onnx`` carries (:class:`hypar.plan.Plan`),
    for ``verify MODEL`` without PLAN.json; a PlanError saying what to give when it carries none."""
    from hypar.errors import PlanError
    from hypar.export import annotated_plan

    plan = annotated_plan(model)
    if plan is None:
        raise PlanError(f"{model} carries no hypar sharding annotations; give PLAN.json, or write them with "
                        "`hypar export PLAN.json --onnx MODEL.onnx -o OUT.onnx`")
    return plan
