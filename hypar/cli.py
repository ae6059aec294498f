"""Command-line interface (the only module that imports click).

Library code raises :class:`hypar.errors.HyparError`; this module turns it into a one-line
``Error: ...`` on stderr with exit code 1 (usage errors exit 2, as click does).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings

import click

from hypar import __version__
from hypar.errors import HyparError, HyparWarning


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hypar")
def cli() -> None:
    """hypar: hybrid-parallelism partitioning of ONNX models over hierarchical PE arrays.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16
    """


@contextlib.contextmanager
def _hypar_errors_and_warnings():
    """Turn HyparError into a one-line ``Error: ...`` (exit 1) and HyparWarning into a one-line
    ``Warning: ...`` on stderr, also under click's CliRunner (which bypasses :func:`main`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HyparWarning)
        try:
            yield
        except HyparError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, HyparWarning):
                    click.echo(f"Warning: {' '.join(str(w.message).split())}", err=True)
                else:
                    others.append(w)
    for w in others:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


@cli.command("inspect")
@click.argument("model", metavar="MODEL")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Batch size bound to dim 0 of every model input (overrides the model's own).")
@click.option("--json", "as_json", is_flag=True, help="Print the layer graph as JSON (every node and edge).")
@click.option("--all", "all_nodes", is_flag=True,
              help="Show every node in the table, not only the decision layers.")
def inspect_cmd(model: str, batch: int | None, as_json: bool, all_nodes: bool) -> None:
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
    from hypar.inspect_report import inspect_dict, inspect_table
    from hypar.onnx_import import load_layer_graph

    with _hypar_errors_and_warnings():
        g = load_layer_graph(model, batch=batch)
    if as_json:
        click.echo(json.dumps(inspect_dict(g), indent=2))
    else:
        click.echo(inspect_table(g, all_nodes=all_nodes))


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
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    sys.exit(0)
