"""`hypar partition`'s progress (hypar/cli/progress.py): one updating line on a terminal, one
``... message`` line per stage otherwise, nothing with -q or --json."""

from __future__ import annotations

import io
import re

import pytest

from hypar.cli.progress import stage_progress

LENET = "models/lenet.onnx"
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _redraws(text: str) -> list[str]:
    """The successive states of a terminal line: the text between carriage returns, escapes removed."""
    return [_ESCAPE.sub("", part).rstrip() for part in text.split("\r") if _ESCAPE.sub("", part).strip()]


def test_not_a_terminal_one_line_per_message():
    out = io.StringIO()
    with stage_progress("partition m", stream=out) as progress:
        progress("imported m: 3 decision layers (0.01 s)")
        progress("greedy level 0: optimal in 0.00 s")
    assert out.getvalue() == "... imported m: 3 decision layers (0.01 s)\n... greedy level 0: optimal in 0.00 s\n"


def test_disabled_writes_nothing():
    out = _Terminal()
    with stage_progress("partition m", enabled=False, stream=out) as progress:
        assert progress is None
    assert out.getvalue() == ""


def test_terminal_one_line_redrawn_within_its_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = _Terminal()
    messages = ["imported m: 3 decision layers (0.01 s)", "greedy level 0: optimal in 0.00 s",
                "a message far longer than the terminal is wide, " * 3, "two\nlines"]
    with stage_progress("partition m", first="importing", stream=out) as progress:
        for msg in messages:
            progress(msg)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")      # one line, ended when the block ends
    states = _redraws(text)
    assert len(states) == 1 + len(messages) + 1               # first, each message, the final state
    assert all(len(s) < 80 for s in states)                   # never wraps
    assert states[0].startswith("partition m  [") and states[0].endswith("  0  importing")
    assert states[1].endswith("  1  imported m: 3 decision layers (0.01 s)")
    assert states[3].endswith("...") and "  3  a message far longer" in states[3]
    assert states[4].endswith("  4  two lines")
    assert re.search(r"\[#+\]  4  done after \d+\.\d s$", states[-1])


def test_terminal_line_says_stopped_when_the_block_raises():
    out = _Terminal()
    with pytest.raises(RuntimeError, match="boom"):
        with stage_progress("partition m", stream=out) as progress:
            progress("greedy level 0: optimal in 0.00 s")
            raise RuntimeError("boom")
    assert out.getvalue().endswith("\n")
    assert re.search(r"  1  stopped after \d+\.\d s$", _redraws(out.getvalue())[-1])


# ------------------------------------------------------------------------------------------------
# Through the CLI (CliRunner: stderr is not a terminal)


def test_partition_prints_one_line_per_stage_on_stderr(cli_run):
    res = cli_run("partition", LENET, "--pes", 4)
    assert res.exit_code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("... imported lenet: 5 decision layers (")
    assert len(lines) > 2
    assert all(re.fullmatch(r"\.\.\. \w+( level \d)?: optimal in \d+\.\d\d s", l) for l in lines[1:]), lines
    assert "\r" not in res.stderr


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_partition_quiet_and_json_print_no_progress(cli_run, flag):
    res = cli_run("partition", LENET, "--pes", 4, flag)
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
