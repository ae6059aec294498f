"""Command-line interface (the only module that imports click).

Each command parses its options, calls the library (:mod:`hypar.api`, :mod:`hypar.sweep`,
:mod:`hypar.verify`, :mod:`hypar.present`) and prints what :mod:`hypar.present` formats.
Library code raises :class:`hypar.errors.HyparError`; this module turns it into a one-line
``Error: ...`` on stderr with exit code 1 (usage errors exit 2, as click does), naming the
library's parameters by this CLI's options (``FLAGS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import click

from hypar import __version__
from hypar.config import SettingError, parse_counts, parse_dims, parse_input_shapes, solver_settings
from hypar.errors import HyparError, HyparWarning
from hypar.vocab import Baseline, Convention, Objective, Search, Space

# The library's parameter names (hypar.errors.HyparError.naming) as this CLI's options.
FLAGS = {"array_path": "--array", "arrays": "--array", "pes": "--pes", "n_pes": "--pes", "levels": "--levels",
         "fanouts": "--levels", "batch": "--batch", "plan": "--plan", "baseline_name": "--baseline",
         "solver": "--solver", "memory_cap_gb": "--memory-gb", "executor": "--executor", "scheduler": "--scheduler",
         "out_dir": "-o", "models": "MODELS", "dims": "--dim", "input_shapes": "--input-shape"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hypar")
def cli() -> None:
    """hypar: hybrid-parallelism partitioning of ONNX models over hierarchical PE arrays.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16
    """


def _click_error(exc: HyparError) -> click.ClickException:
    """The click error that prints ``exc`` in this CLI's terms: a SettingError is a usage error of
    its option (exit 2); any other HyparError a one-line ``Error: ...`` (exit 1)."""
    if isinstance(exc, SettingError):
        return click.BadParameter(exc.message_in(FLAGS), param_hint=FLAGS.get(exc.parameter, exc.parameter))
    return click.ClickException(exc.message_in(FLAGS))


@contextlib.contextmanager
def _hypar_errors_and_warnings():
    """Turn HyparError into a one-line ``Error: ...`` (exit 1; usage errors exit 2) and HyparWarning
    into a one-line ``Warning: ...`` on stderr, also under click's CliRunner (which bypasses
    :func:`main`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HyparWarning)
        try:
            yield
        except HyparError as exc:
            raise _click_error(exc) from None
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, HyparWarning):
                    click.echo(f"Warning: {' '.join(str(w.message).split())}", err=True)
                else:
                    others.append(w)
    for w in others:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _dim_options(f):
    """--dim / --input-shape of every command that reads a model (next to --batch); see :func:`_bound`."""
    f = click.option("--input-shape", "input_shapes", multiple=True, metavar="INPUT=D0,D1,...",
                     help="Bind every dim of one model input, e.g. --input-shape x=1,3,640,640 (repeatable; "
                          "fixed dims must match, the batch changes with --batch).")(f)
    return click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Bind a symbolic input "
                        "dim by its name wherever it appears, e.g. --dim sequence=128 (repeatable).")(f)


def _bound(dims: tuple[str, ...], input_shapes: tuple[str, ...]) -> dict:
    """The library's ``dims`` and ``input_shapes`` keywords from the options' texts (None when not
    given); a SettingError (a usage error of the option) when one cannot be read."""
    return {"dims": parse_dims(dims) or None, "input_shapes": parse_input_shapes(input_shapes) or None}


@cli.command("inspect")
@click.argument("model", metavar="MODEL")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Batch size bound to dim 0 of every model input (overrides the model's own).")
@_dim_options
@click.option("--json", "as_json", is_flag=True, help="Print the layer graph as JSON (every node and edge).")
@click.option("--all", "all_nodes", is_flag=True,
              help="Show every node in the table, not only the decision layers.")
def inspect_cmd(model: str, batch: int | None, dims: tuple, input_shapes: tuple, as_json: bool, all_nodes: bool):
    """Show the layers of an ONNX MODEL as hypar sees them.

    One row per decision layer (Conv, Gemm/MatMul with a weight, embedding, attention MatMul):
    its dims (batch B, input/output features Di->Do, spatial sizes, kernel, groups or heads),
    element counts A(F_in), A(F_out), A(W), forward MACs and parameters, then totals.
    --json prints every node with its kind and dims, every edge with its tensor shape and
    batch/feature axes, and the totals.

    \b
    Example:
      hypar inspect models/resnet50.onnx --batch 64
    """
    from hypar.present.inspect import inspect_dict, inspect_table
    from hypar.onnx import load_layer_graph

    with _hypar_errors_and_warnings():
        g = load_layer_graph(model, batch=batch, **_bound(dims, input_shapes))
    if as_json:
        click.echo(json.dumps(inspect_dict(g), indent=2))
    else:
        click.echo(inspect_table(g, all_nodes=all_nodes))


def _array_options(f):
    """--array / --pes / --levels, shared by the commands that need a PE array."""
    f = click.option("--levels", default=None, metavar="F1,F2,...",
                     help="Fanout of every level, top first (e.g. 2,2,4), default PE figures.")(f)
    f = click.option("--pes", type=click.IntRange(min=2), default=None, metavar="N",
                     help="N identical PEs in 2-way levels (N not a power of two: k-way levels).")(f)
    f = click.option("--array", "array_path", type=click.Path(), default=None, metavar="CFG.yaml",
                     help="PE array description (see solver_configs/README.md).")(f)
    return f


_CONVENTION_HELP = ("How traffic on arrays with several levels is priced: hierarchical = what an execution "
                    "with hierarchical collectives sends; reference = the papers' code (AccPar).")


def _convention_option(read_back: bool):
    """--convention: for a new plan default hierarchical; for a plan read back (``read_back``:
    evaluate, verify) default the plan's own, else hierarchical."""
    if read_back:
        return click.option("--convention", type=click.Choice(Convention.values()), default=None,
                            help=_CONVENTION_HELP + " Default: the plan's, else hierarchical.")
    return click.option("--convention", type=click.Choice(Convention.values()), default=Convention.HIERARCHICAL.value,
                        show_default=True, help=_CONVENTION_HELP)


def _search_options(f):
    """--objective / --space / --search / --convention of hypar's own plan, shared by partition and
    sweep."""
    f = _convention_option(read_back=False)(f)
    f = click.option("--search", "search_how", type=click.Choice(Search.values()), default=Search.AUTO.value,
                     show_default=True, help="auto: refine, then the joint problem where it is computable "
                     "(the ILP where small enough, chains also by DP; the plan says what it reached); greedy: "
                     "top level first (the papers); refine: re-solve one level at a time until nothing improves; "
                     "joint: refine, then all levels in one ILP where small enough.")(f)
    f = click.option("--space", type=click.Choice(Space.values()), default="full", show_default=True,
                     help="hypar: types I/II; accpar: I/II/III; full: also the layouts of non-weighted nodes.")(f)
    f = click.option("--objective", type=click.Choice(Objective.values()), default="time",
                     show_default=True, help="time: step seconds (AccPar); comm: bytes moved (HyPar); "
                     "energy: joules.")(f)
    return f


def _check_writable(path: str | None, flag: str) -> None:
    """Before any long work: a one-line error naming ``flag`` when ``path`` could not be written
    (its folder is missing or not writable, or ``path`` is a folder). Writes nothing."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    why = None
    if os.path.isdir(path):
        why = "it is a folder"
    elif not os.path.isdir(folder):
        why = f"folder {os.path.dirname(path) or folder} does not exist"
    elif not os.access(folder, os.W_OK):
        why = f"folder {os.path.dirname(path) or folder} is not writable"
    if why:
        raise click.ClickException(f"cannot write {path}: {why}; choose another {flag} path")


def _write_file(path: str, text: str, flag: str) -> None:
    """Write ``text`` to ``path``; a one-line error naming ``flag`` when it cannot be written."""
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}; choose another {flag} path") from None


def _plot_plan(plan: dict, path: str) -> None:
    """Draw ``plan`` into ``path``; a one-line error when it cannot be written."""
    from hypar.present.plots import plot_plan

    try:
        plot_plan(plan, path)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}; choose another --plot path") from None


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
@click.option("-o", "--output", type=click.Path(), default=None, metavar="PLAN.json",
              help="Write the JSON mapping plan here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON instead of the summary.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png",
              help="Draw the plan's layer x level map of types with the costs per layer (needs matplotlib).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def partition_cmd(model, array_path, pes, levels, batch, dims, input_shapes, objective, space, search_how, convention,
                  solver, time_limit, gap, threads, memory_gb, output, as_json, plot_path, quiet) -> None:
    """Choose, for every layer and every level of the PE array, how the layer is split.

    Types per level: I = data parallel (split the batch), II = model parallel (split input
    features), III = split output features. Prints the layer x level map, the totals and the gain
    over the data / model / owt / HyPar / AccPar baselines, and writes the JSON plan with -o.
    Costs on arrays with several levels are priced under --convention (hierarchical: what an
    execution with hierarchical collectives sends; reference: the papers' code), recorded in
    the plan.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16 -o alexnet_plan.json
      hypar partition models/bert_base.onnx --array solver_configs/gpu_cluster.yaml --objective time
      hypar partition models/vgg16.onnx --pes 16 --plot vgg16_plan.png
      hypar partition models/vgg11.onnx --pes 16 --objective comm --convention reference
      hypar partition tests/fixtures/windowed_attention_dynamic.onnx --pes 4 --batch 8 --dim height=64 --dim width=48
    """
    from hypar import api
    from hypar.plan import dumps
    from hypar.present.text import plan_summary

    progress = None if quiet or as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    _check_writable(output, "-o")
    _check_writable(plot_path, "--plot")
    with _hypar_errors_and_warnings():
        settings = solver_settings(solver, time_limit_s=time_limit, gap=gap, threads=threads,
                                   memory_cap_gb=memory_gb, array_path=array_path)
        array = api.resolve_array(array_path, pes, levels)
        plan = api.partition(model, array, batch=batch, **_bound(dims, input_shapes), objective=objective,
                             space=space, search_how=search_how, convention=convention, settings=settings,
                             progress=progress)
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
def evaluate_cmd(model, plan_path, baseline, array_path, pes, levels, batch, dims, input_shapes, space, objective,
                 convention, as_json) -> None:
    """Cost a plan or a baseline: per layer and level bytes, time, energy and memory.

    Layers a minimal plan leaves out are type I at every level; non-weighted nodes take their
    best layouts. A full plan brings its own array, batch, bound dims, space and --convention
    unless you override them (a minimal plan and a baseline: hierarchical unless told).

    \b
    Example:
      hypar evaluate models/vgg16.onnx --baseline data --pes 16
      hypar evaluate models/alexnet.onnx --plan alexnet_plan.json --json
      hypar evaluate models/alexnet.onnx --plan alexnet_plan.json --convention reference
    """
    from hypar import api
    from hypar.plan import load_plan
    from hypar.present.text import evaluation_summary

    with _hypar_errors_and_warnings():
        plan = load_plan(plan_path) if plan_path else None
        array = None
        if array_path is not None or pes is not None or levels is not None:
            array = api.resolve_array(array_path, pes, levels)
        model_, ev = api.evaluate(model, plan=plan, baseline_name=baseline, array=array, batch=batch,
                                  **_bound(dims, input_shapes), space=space, objective=objective,
                                  convention=convention)
    rows, totals = ev.layers(), ev.totals()
    if as_json:
        click.echo(json.dumps({"totals": totals, "layers": rows}, indent=1))
    else:
        click.echo(evaluation_summary(rows, totals, model_.n_levels, model_.convention))


def _int_list(ctx, param, value) -> list[int]:
    """'4,16,64' (or repeated options) -> [4, 16, 64]; a usage error for anything else."""
    try:
        return parse_counts(value, param.name)
    except SettingError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_sweep_options(executor: str, scheduler: str | None, pes: list[int], arrays: tuple[str, ...]) -> None:
    """Usage errors of option combinations `hypar sweep` cannot run."""
    if executor == "dask" and not scheduler:
        raise click.UsageError("--executor dask needs --scheduler ADDRESS")
    if scheduler and executor != "dask":
        raise click.UsageError("--scheduler is only for --executor dask")
    if not pes and not arrays:
        raise click.UsageError("give array sizes with --pes 4,16,64 and/or --array CFG.yaml")


def _sweep_progress(quiet: bool, is_tty: bool):
    """The sweep's progress callback (None with ``quiet``): the progress bar rewrites one line on a
    terminal, other messages get their own lines, all on stderr."""
    if quiet:
        return None

    def progress(msg: str) -> None:
        if msg.startswith("["):
            click.echo(("\r\x1b[2K" if is_tty else "") + msg, err=True, nl=not is_tty)
        else:
            click.echo(msg, err=True)

    return progress


@cli.command("sweep")
@click.argument("models", nargs=-1, metavar="[MODELS]...")
@click.option("--zoo", is_flag=True, help="Add every model of the zoo (models/, or $HYPAR_ZOO).")
@click.option("--pes", multiple=True, callback=_int_list, metavar="N,N,...",
              help="Array sizes of N identical PEs, comma-separated (e.g. 4,16,64).")
@click.option("--batch", multiple=True, callback=_int_list, metavar="B,B,...",
              help="Batch sizes, comma-separated (default: the array's, else the model's own).")
@click.option("--array", "arrays", multiple=True, type=click.Path(), metavar="CFG.yaml",
              help="A PE array description; repeat for several.")
@_dim_options
@_search_options
@click.option("--time-limit", type=click.FloatRange(min=0.001), default=None, metavar="S",
              help="Per-solve time limit in seconds (default 60).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: worker processes on this machine; dask: a Dask distributed cluster.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address for --executor dask (e.g. tcp://10.0.0.1:8786).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, metavar="RESULTS_DIR",
              help="Directory of results.jsonl (appended; rerun to resume).")
@click.option("--retry-errors", is_flag=True, help="Also recompute cases recorded as errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def sweep_cmd(models, zoo, pes, batch, arrays, dims, input_shapes, objective, space, search_how, convention,
              time_limit, jobs, executor, scheduler, out_dir, retry_errors, quiet) -> None:
    """Partition every (model, array, batch) case and append one JSONL row per case.

    Each row of RESULTS_DIR/results.jsonl holds hypar's plan totals, every baseline's totals
    (data, model, owt, hypar, accpar), speedup and energy gain over data parallelism, and the
    solve status and seconds, or the error of a failing model (the sweep goes on). Rows are
    written as cases finish; rerunning the same command skips finished cases, so an interrupted
    sweep resumes where it stopped. --executor dask --scheduler ADDRESS runs the cases on a Dask
    cluster (pip install 'hypar[dask]'; workers must see the model files at the same paths).
    Each row records the --convention its costs were priced under (part of the case's key).
    Each model binds the --dim names and --input-shape inputs it has.

    \b
    Example:
      hypar sweep --zoo --pes 4,16,64 --batch 32,512 --jobs 2 -o results/zoo
      hypar sweep --zoo --pes 16 --convention reference -o results/zoo
      hypar sweep tests/fixtures/windowed_attention_dynamic.onnx --pes 4 --batch 8 --dim height=64 --dim width=48 -o results/w
      hypar report results/zoo
    """
    from hypar import sweep as sw
    from hypar.present.text import sweep_summary

    _check_sweep_options(executor, scheduler, pes, arrays)
    is_tty = sys.stderr.isatty()
    results_file = os.path.join(out_dir, sw.RESULTS_FILE)
    with _hypar_errors_and_warnings():
        paths = list(models) + (sw.zoo_models() if zoo else [])
        if not paths:
            raise click.UsageError("give MODELS or --zoo")
        settings = solver_settings(time_limit_s=time_limit)
        try:
            summary = sw.sweep(paths, out_dir, pes=pes, arrays=arrays, batches=batch or [None],
                               objective=objective, space=space, search_how=search_how, convention=convention,
                               settings=settings, jobs=jobs, executor=executor, scheduler=scheduler,
                               progress=_sweep_progress(quiet, is_tty), retry_errors=retry_errors,
                               **_bound(dims, input_shapes))
        except KeyboardInterrupt:
            click.echo(f"\nInterrupted: the finished cases are in {results_file}; "
                       "rerun the same command to resume.", err=True)
            raise
    if is_tty and not quiet and summary.computed:
        click.echo("", err=True)
    click.echo(sweep_summary(summary.total, summary.computed, summary.errors, summary.skipped, summary.seconds,
                             results_file))


@cli.command("report")
@click.argument("results_dir", metavar="RESULTS_DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--no-plots", is_flag=True, help="Only report.md and summary.csv, no PNGs (no matplotlib needed).")
def report_cmd(results_dir, no_plots) -> None:
    """Summarise a sweep: RESULTS_DIR/report.md (tables), summary.csv and PNG plots.

    The tables give, per (model, array, batch) case, the speedup and energy gain over data
    parallelism of data, model, owt, hypar (2019), accpar (2020) and hypar's own plan, the solve
    status and seconds, and the errors; summary.csv has one line per case and method. The plots (matplotlib, pip install 'hypar[plot]') show
    speedup and energy gain per model and method, communication vs array size, and solve time
    vs model size.

    \b
    Example:
      hypar report results/zoo
    """
    from hypar.present import report as rp

    with _hypar_errors_and_warnings():
        written = rp.write_report(results_dir, plots=not no_plots)
    for path in written:
        click.echo(f"wrote {path}")


@cli.command("verify")
@click.argument("model", metavar="MODEL")
@click.argument("plan_path", metavar="PLAN.json")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Batch of the simulated step (default: 2 x the number of PEs). The plan's recorded "
                   "costs are checked at the plan's own batch.")
@_dim_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights, inputs and output errors.")
@_convention_option(read_back=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(model: str, plan_path: str, batch: int | None, dims: tuple, input_shapes: tuple, seed: int,
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
    reference prices that differ from what was sent are "info:" lines, not failures.

    \b
    Example:
      hypar partition model.onnx --levels 2,2 -o plan.json
      hypar verify model.onnx plan.json --batch 8
      hypar verify model.onnx plan.json --batch 8 --convention reference
      hypar verify tests/fixtures/windowed_attention_dynamic.onnx plan.json --dim height=64 --dim width=48
    """
    from hypar.plan import load_plan
    from hypar.verify import report_table, verify_plan

    with _hypar_errors_and_warnings():
        plan = load_plan(plan_path)
        rep = verify_plan(model, plan, batch=batch, seed=seed, convention=convention, **_bound(dims, input_shapes))
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    else:
        click.echo(report_table(rep))
    if not rep.ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hypar`` console script and ``python -m hypar``."""
    try:
        cli.main(args=argv, prog_name="hypar", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HyparError as exc:
        error = _click_error(exc)
        error.show()
        sys.exit(error.exit_code)
    sys.exit(0)
