"""The commands over many models: sweep and report."""

from __future__ import annotations

import os
import sys

import click

from hypar.cli.base import _bound, _dim_options, _hypar_errors_and_warnings, _search_options, cli
from hypar.config import SettingError, parse_counts, solver_settings


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
