"""Command-line interface (the only module that imports click).

Library code raises :class:`hypar.errors.HyparError`; this module turns it into a one-line
``Error: ...`` on stderr with exit code 1 (usage errors exit 2, as click does).
"""

from __future__ import annotations

import sys

import click

from hypar import __version__
from hypar.errors import HyparError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hypar")
def cli() -> None:
    """hypar: hybrid-parallelism partitioning of ONNX models over hierarchical PE arrays.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16
    """


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
