"""``hypar partition --no-tie``: the plan records whether level problems tied repeated blocks,
the runs, and a level problem's size tied and untied."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hypar.cli import cli
from tests.paths import MODELS

ARGS = [str(MODELS / "resnet50.onnx"), "--levels", "2,2", "--space", "accpar", "--search", "greedy", "-q", "--json"]


def _plan(*extra: str) -> dict:
    result = CliRunner().invoke(cli, ["partition", *ARGS, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_plan_records_the_tied_blocks_and_both_sizes():
    ties = _plan()["solver"]["ties"]
    assert ties["tied"] and ties["blocks_tied"] == 3
    assert ties["runs"] == [{"first_layer": "layer3.1.conv1", "last_layer": "layer3.5.conv3",
                             "layers_per_block": 3, "blocks": 5, "tied_blocks": 3}]
    assert ties["tied_size"]["problem_nodes"] == ties["untied_size"]["problem_nodes"] - 3 * 2
    assert ties["tied_size"]["choice_variables"] < ties["untied_size"]["choice_variables"]


def test_no_tie_solves_every_block_on_its_own():
    plan = _plan("--no-tie")
    ties = plan["solver"]["ties"]
    assert not ties["tied"] and ties["blocks_tied"] == 0
    assert ties["tied_size"] == ties["untied_size"]
    assert ties["runs"]                      # the runs found are still reported
