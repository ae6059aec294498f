"""The commands that read one model: inspect, partition, evaluate and verify."""

from __future__ import annotations

import json
import os
import sys

import click

from hypar.cli.base import (_array_options, _bound, _check_writable, _convention_option, _dim_options,
                            _hypar_errors_and_warnings, _plot_plan, _search_options, _write_file, cli)
from hypar.cli.progress import stage_progress
from hypar.config import solver_settings
from hypar.vocab import Baseline, Objective, Space

_DTYPE_HELP = ("Price every tensor, error, weight and gradient in this precision: fp32, fp16, bf16, fp8, int8, "
               "uint8 or a byte count (default: the widths the model stores below 32 bits, fp32 tensors in the "
               "array's dtype_bytes; docs/precision.md).")


@cli.command("inspect")
@click.argument("model", metavar="MODEL")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Batch size bound to dim 0 of every model input (overrides the model's own).")
@_dim_options
@click.option("--json", "as_json", is_flag=True, help="Print the layer graph as JSON (every node and edge).")
@click.option("--all", "all_nodes", is_flag=True,
              help="Show every node in the table, not only the decision layers.")
@click.option("--sparsity", is_flag=True,
              help="Also read the stored weights and report the fraction of all-zero output channels, input "
                   "channels and elements per weight (structured sparsity of masked pruning); slower: it reads "
                   "every weight's values.")
def inspect_cmd(model: str, batch: int | None, dims: tuple, input_shapes: tuple, as_json: bool, all_nodes: bool,
                sparsity: bool):
    """Show the layers of an ONNX MODEL as hypar sees them.

    One row per decision layer (Conv, Gemm/MatMul with a weight, embedding, attention MatMul):
    its dims (batch B, input/output features Di->Do, spatial sizes, kernel, groups or heads),
    element counts A(F_in), A(F_out), A(W), forward MACs and parameters, then totals.
    --json prints every node with its kind and dims, every edge with its tensor shape and
    batch/feature axes, and the totals. --sparsity reads the weights' values (only then) and adds,
    per weight, its all-zero output channels, input channels and elements (e.g. on a model from
    scripts/prune_channels.py --mode mask); a shapes-only model (such as the zoo's) says
    "weights not stored".

    \b
    Example:
      hypar inspect models/resnet50.onnx --batch 64
    """
    from hypar.present.inspect import inspect_dict, inspect_table
    from hypar.onnx import load_layer_graph

    with _hypar_errors_and_warnings():
        g = load_layer_graph(model, batch=batch, **_bound(dims, input_shapes))
        records = _sparsity_records(model) if sparsity else None
    if as_json:
        doc = inspect_dict(g)
        if records is not None:
            from hypar.present.inspect import sparsity_summary
            doc["sparsity"] = {"weights": records, "totals": sparsity_summary(records)}
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(inspect_table(g, all_nodes=all_nodes))
        if records is not None:
            from hypar.present.inspect import sparsity_table
            click.echo("")
            click.echo(sparsity_table(records))


def _sparsity_records(model: str) -> list[dict]:
    """Every weight's structured-sparsity record as JSON (:mod:`hypar.onnx.sparsity`)."""
    from hypar.onnx.sparsity import weight_sparsity

    return [r.to_json() for r in weight_sparsity(model)]


@cli.command("partition")
@click.argument("model", metavar="MODEL")
@_array_options
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Training batch (overrides the array's and the model's).")
@_dim_options
@_search_options
@click.option("--solver", default=None, metavar="NAME",
              help="highs (default), cbc, or the exact alternatives dp (chains) and brute (tiny graphs).")
@click.option("--time-limit", type=click.FloatRange(min=0.001), default=None, metavar="S",
              help="Per-solve time limit in seconds; the best plan found is kept and marked feasible.")
@click.option("--gap", type=click.FloatRange(min=0), default=None, help="Relative optimality gap (default 1e-6).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Solver threads (default 1).")
@click.option("--memory-gb", type=click.FloatRange(min=0, min_open=True), default=None, metavar="GB",
              help="Per-PE memory capacity the plan must fit (weights + gradients + kept activations).")
@click.option("--no-tie", "no_tie", is_flag=True,
              help="Decide every repeated block (transformer layers, a stage's bottlenecks) on its own instead of "
                   "giving identical blocks one set of decisions (slower; the plan records both problem sizes).")
@click.option("-o", "--output", type=click.Path(), default=None, metavar="PLAN.json",
              help="Write the JSON mapping plan here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON instead of the summary.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png",
              help="Draw the plan's layer x level map of types with the costs per layer (needs matplotlib).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress on stderr (else one updating line on a terminal, one line per stage otherwise).")
@click.option("--dtype", default=None, metavar="DTYPE", help=_DTYPE_HELP)
def partition_cmd(model, array_path, pes, levels, batch, dims, input_shapes, objective, space, search_how, convention,
                  solver, time_limit, gap, threads, memory_gb, no_tie, output, as_json, plot_path, quiet,
                  dtype) -> None:
    """Choose, for every layer and every level of the PE array, how the layer is split.

    Types per level: I = data parallel (split the batch), II = model parallel (split input
    features), III = split output features. Prints the layer x level map, the totals and the gain
    over the data / model / owt / HyPar / AccPar baselines, and writes the JSON plan with -o.
    Costs on arrays with several levels are priced under --convention (hierarchical: what an
    execution with hierarchical collectives sends; reference: the papers' code), recorded in
    the plan. Identical consecutive blocks share one set of decisions unless --no-tie; the plan
    records the tied blocks and a level problem's size with and without.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16 -o alexnet_plan.json
      hypar partition models/bert_base.onnx --pes 1024 --no-tie -o bert_untied.json
      hypar partition models/bert_base.onnx --array solver_configs/gpu_cluster.yaml --objective time
      hypar partition models/vgg16.onnx --pes 16 --plot vgg16_plan.png
      hypar partition models/vgg11.onnx --pes 16 --objective comm --convention reference
      hypar partition tests/fixtures/windowed_attention_dynamic.onnx --pes 4 --batch 8 --dim height=64 --dim width=48
      hypar partition tests/fixtures/cnn_qdq.onnx --levels 2,2 --dtype bf16
    """
    from hypar import api
    from hypar.plan import dumps
    from hypar.present.text import plan_summary

    _check_writable(output, "-o")
    _check_writable(plot_path, "--plot")
    with _hypar_errors_and_warnings():
        settings = solver_settings(solver, time_limit_s=time_limit, gap=gap, threads=threads,
                                   memory_cap_gb=memory_gb, array_path=array_path, tie_blocks=not no_tie)
        array = api.resolve_array(array_path, pes, levels)
        with stage_progress(f"partition {os.path.basename(model)}", first="importing",
                            enabled=not (quiet or as_json)) as progress:
            plan = api.partition(model, array, batch=batch, **_bound(dims, input_shapes), objective=objective,
                                 space=space, search_how=search_how, convention=convention, settings=settings,
                                 progress=progress, dtype=dtype)
        if output:
            _write_file(output, dumps(plan), "-o")
        if plot_path:
            _plot_plan(plan, plot_path)
    if as_json:
        click.echo(dumps(plan), nl=False)
    else:
        click.echo(plan_summary(plan))
        if output:
            click.echo(f"plan written to {output}")
        if plot_path:
            click.echo(f"plot written to {plot_path}")


@cli.command("evaluate")
@click.argument("model", metavar="MODEL")
@click.option("--plan", "plan_path", type=click.Path(), default=None, metavar="PLAN.json",
              help="A plan from `hypar partition`, or a minimal {\"assignment\": {layer: [types per level]}}.")
@click.option("--baseline", type=click.Choice(Baseline.values()), default=None,
              help="Cost a baseline instead of a plan.")
@_array_options
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N", help="Training batch.")
@_dim_options
@click.option("--space", type=click.Choice(Space.values()), default=None,
              help="Partition space (default: the plan's, else full).")
@click.option("--objective", type=click.Choice(Objective.values()), default="time", show_default=True,
              help="Objective used to complete layouts the plan leaves open.")
@_convention_option(read_back=True)
@click.option("--json", "as_json", is_flag=True, help="Print {totals, layers} as JSON.")
@click.option("--dtype", default=None, metavar="DTYPE", help=_DTYPE_HELP + " A plan brings its own.")
def evaluate_cmd(model, plan_path, baseline, array_path, pes, levels, batch, dims, input_shapes, space, objective,
                 convention, as_json, dtype) -> None:
    """Cost a plan or a baseline: per layer and level bytes, time, energy and memory.

    Layers a minimal plan leaves out are type I at every level; non-weighted nodes take their
    best layouts. A full plan brings its own array, batch, bound dims, space and --convention
    unless you override them (a minimal plan and a baseline: hierarchical unless told). A MODEL
    written by `hypar export --onnx` needs neither --plan nor --baseline: its sharding
    annotations are the plan.

    \b
    Example:
      hypar evaluate models/vgg16.onnx --baseline data --pes 16
      hypar evaluate models/alexnet.onnx --plan alexnet_plan.json --json
      hypar evaluate models/alexnet.onnx --plan alexnet_plan.json --convention reference
      hypar evaluate alexnet_sharded.onnx
      hypar evaluate tests/fixtures/cnn_fp16.onnx --baseline data --levels 2,2 --dtype fp32
    """
    from hypar import api
    from hypar.export import annotated_plan
    from hypar.plan import load_plan
    from hypar.present.text import evaluation_summary

    with _hypar_errors_and_warnings():
        plan = load_plan(plan_path) if plan_path else None
        if plan is None and baseline is None:
            plan = annotated_plan(model)          # None without annotations: the library names both options
        array = None
        if array_path is not None or pes is not None or levels is not None:
            array = api.resolve_array(array_path, pes, levels)
        model_, ev = api.evaluate(model, plan=plan, baseline_name=baseline, array=array, batch=batch,
                                  **_bound(dims, input_shapes), space=space, objective=objective,
                                  convention=convention, dtype=dtype)
    rows, totals = ev.layers(), ev.totals()
    if as_json:
        click.echo(json.dumps({"totals": totals, "layers": rows}, indent=1))
    else:
        click.echo(evaluation_summary(rows, totals, model_.n_levels, model_.convention))


@cli.command("verify")
@click.argument("model", metavar="MODEL")
@click.argument("plan_path", metavar="[PLAN.json]", required=False)
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Batch of the simulated step (default: 2 x the number of PEs). The plan's recorded "
                   "costs are checked at the plan's own batch.")
@_dim_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights, inputs and output errors.")
@_convention_option(read_back=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(model: str, plan_path: str | None, batch: int | None, dims: tuple, input_shapes: tuple, seed: int,
               convention: str | None, as_json: bool) -> None:
    """Execute PLAN.json on virtual PEs and prove it right: same step, same bytes.

    Runs one training step (forward, backward error, weight gradients) of MODEL on one virtual
    device and again split over the plan's virtual PEs, every exchange an explicit message at a
    named level. Prints per layer PASS/FAIL with the largest difference from the reference and
    the bytes counted vs the cost model's prediction at every level; checks that the costs a
    full plan records match its types (under the plan's own convention). The cost model's
    prediction is priced under --convention (default: the plan's, else hierarchical). Dims bind
    as the plan records unless --dim / --input-shape say. Ops it cannot run are listed by name.
    Exit 0 only when everything matches; under --convention reference on several levels the
    reference prices that differ from what was sent are "info:" lines, not failures. A MODEL
    written by `hypar export --onnx` needs no PLAN.json: its sharding annotations are the plan.

    \b
    Example:
      hypar partition model.onnx --levels 2,2 -o plan.json
      hypar verify model.onnx plan.json --batch 8
      hypar verify model.onnx plan.json --batch 8 --convention reference
      hypar verify tests/fixtures/windowed_attention_dynamic.onnx plan.json --dim height=64 --dim width=48
      hypar export plan.json --onnx model.onnx -o model_sharded.onnx && hypar verify model_sharded.onnx
    """
    from hypar.cli.export_cmd import plan_in_model
    from hypar.plan import load_plan
    from hypar.verify import report_table, verify_plan

    with _hypar_errors_and_warnings():
        plan = load_plan(plan_path) if plan_path else plan_in_model(model)
        rep = verify_plan(model, plan, batch=batch, seed=seed, convention=convention, **_bound(dims, input_shapes))
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        click.echo(report_table(rep))
    if not rep.ok:
        sys.exit(1)
