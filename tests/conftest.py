"""Shared test helpers: the CLI runner and the `slow` marker.

pytest puts this folder on ``sys.path`` (rootdir conftest, no ``__init__.py``), so test modules in
the room folders (tests/onnx, tests/cost, ...) import the helper modules kept here
(``reference_networks``, ``golden_cases``) by name.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")


def make_runner() -> CliRunner:
    """A CliRunner with stdout and stderr kept apart (click >= 8.2 always separates them)."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


@pytest.fixture
def cli_run():
    """``cli_run(*args)`` invokes ``hypar`` with ``args`` (each turned into str) and returns click's
    Result (``exit_code``, ``stdout``, ``stderr``, ``exception``)."""
    from hypar.cli import cli

    runner = make_runner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args])
