"""Command-line interface (the only package that imports click).

Each command parses its options, calls the library (:mod:`hypar.api`, :mod:`hypar.sweep`,
:mod:`hypar.verify`, :mod:`hypar.present`) and prints what :mod:`hypar.present` formats.
Library code raises :class:`hypar.errors.HyparError`; this module turns it into a one-line
``Error: ...`` on stderr with exit code 1 (usage errors exit 2, as click does), naming the
library's parameters by this CLI's options (``FLAGS``).

Modules: :mod:`hypar.cli.base` (the group, errors, shared options), :mod:`hypar.cli.model_cmds`
(inspect, partition, evaluate, verify), :mod:`hypar.cli.sweep_cmds` (sweep, report).
"""

from __future__ import annotations

import sys

import click

from hypar.cli import model_cmds, sweep_cmds  # noqa: F401  (they register their commands on cli)
from hypar.cli import export_cmd  # noqa: F401  (registers export on cli)
from hypar.cli.base import FLAGS, _click_error, cli
from hypar.errors import HyparError

__all__ = ["FLAGS", "cli", "main"]


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
