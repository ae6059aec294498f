"""No solver banner on any command's output (issue 12), checked on the real streams: each command
runs in a fresh process (HiGHS prints its copyright once per process, from C++, on file descriptor
1, where click's CliRunner cannot see it). The control tests show that the pattern does catch the
banners HiGHS and CBC print when nobody keeps them quiet, and that the commands reach HiGHS.
`hypar partition` with stderr on a pseudo-terminal also shows its progress as one updating line."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hypar

pytest.importorskip("highspy")

SOURCE = Path(hypar.__file__).resolve().parent.parent   # the hypar under test (a worktree or the checkout)
# a model whose level problems reach the ILP backend (lenet's are all solved by the reduction)
CNN = str(SOURCE / "tests" / "fixtures" / "cnn_dynamo.onnx")
PARTITION = ("partition", CNN, "--pes", 4, "--batch", 2)
BANNER = re.compile(r"Running HiGHS|Copyright \(c\)|THIRD_PARTY_NOTICES|Welcome to the CBC|"
                    r"command line - .*cbc|Result - |(Cbc|Clp|Coin)\d{4}[A-Z]")
_RUN_CLI = "import sys; from hypar.cli import main; main(sys.argv[1:])"
# The same, with hypar's one-time swallowing of the HiGHS banner switched off (the control).
_RUN_CLI_UNMUFFLED = "import hypar.ilp.highs as h; h._BANNER_SWALLOWED = True; " + _RUN_CLI


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE), os.environ.get("PYTHONPATH")]))}


def _start(code: str, *args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    """stdout and stderr of a finished command (which must exit 0)."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (proc.args, out, err)
    return out + err


def test_the_pattern_catches_both_banners(tmp_path):
    highs = subprocess.run([sys.executable, "-c", "import highspy; highspy.Highs()"], capture_output=True, text=True)
    cbc = subprocess.run([sys.executable, "-c",
                          "import pulp; p = pulp.LpProblem('t'); x = pulp.LpVariable('x', 0, 1, cat='Integer'); "
                          "p += x; p += x >= 0; p.solve(pulp.PULP_CBC_CMD(msg=True))"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert BANNER.search(highs.stdout + highs.stderr), highs.stdout
    assert BANNER.search(cbc.stdout + cbc.stderr), cbc.stdout


def _read_terminal(master: int) -> str:
    """Everything written to a pseudo-terminal until the child closes it."""
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks).decode()


def test_partition_on_a_terminal_one_progress_line_and_no_banner(tmp_path):
    master, slave = pty.openpty()
    plan = tmp_path / "plan.json"
    proc = subprocess.Popen([sys.executable, "-c", _RUN_CLI, *map(str, PARTITION), "-o", str(plan)], cwd=tmp_path,
                            env={**_env(), "COLUMNS": "100"}, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    progress = _read_terminal(master)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert json.loads(plan.read_text())["solver"]["n_variables_max"] > 0  # HiGHS ran
    assert not BANNER.search(out) and not BANNER.search(progress)
    assert progress.count("\n") == 1 and progress.count("\r") > 10        # one line, redrawn per stage
    assert re.search(r"partition cnn_dynamo\.onnx  \[#+\]  \d+  done after \d+\.\d s", progress)
    assert "plan written to" in out and "... imported" not in out


@pytest.mark.slow
def test_no_banner_on_any_command_with_either_solver(tmp_path):
    """partition (--solver highs, cbc), evaluate (a baseline; a plan to complete), verify (a plan to
    complete) and sweep, each in a fresh process (only partition takes a solver choice: the others
    solve with HiGHS, the default). The commands marked ``reaches_highs`` also run with hypar's
    swallowing of the HiGHS banner switched off, and then do print it: they construct HiGHS, so
    their silence is hypar's doing. The CBC plan records CBC as its backend, with variables (CBC ran)."""
    (tmp_path / "plan2.json").write_text(json.dumps({"assignment": {"node_Conv_50": ["I", "II"]}}))
    (tmp_path / "plan4.json").write_text(json.dumps({"assignment": {"node_Conv_50": ["I", "II", "I", "III"]}}))
    commands = {  # name: (arguments, reaches_highs)
        "partition highs": ((*PARTITION, "--solver", "highs"), True),
        "partition cbc": ((*PARTITION, "--solver", "cbc", "-o", "p_cbc.json"), False),
        "evaluate baseline": (("evaluate", CNN, "--baseline", "hypar", "--pes", 4, "--batch", 2), True),
        "evaluate plan": (("evaluate", CNN, "--plan", "plan2.json", "--pes", 4, "--batch", 2), False),
        "verify": (("verify", CNN, "plan4.json", "--batch", 8), False),
        "sweep": (("sweep", CNN, "--pes", 4, "--batch", 2, "-o", "sweep_out"), True),
    }
    quiet = {name: _start(_RUN_CLI, *args, cwd=tmp_path) for name, (args, _) in commands.items()}
    loud = {name: _start(_RUN_CLI_UNMUFFLED, *args, "-o", f"{name}_loud", cwd=tmp_path) if name.startswith("sweep")
            else _start(_RUN_CLI_UNMUFFLED, *args, cwd=tmp_path)
            for name, (args, reaches) in commands.items() if reaches}
    for name, proc in quiet.items():
        found = BANNER.search(_finish(proc))
        assert found is None, (name, found and found.group(0))
    for name, proc in loud.items():
        assert BANNER.search(_finish(proc)), f"{name} never constructed HiGHS: the check above proves nothing for it"
    solver = json.loads((tmp_path / "p_cbc.json").read_text())["solver"]
    assert (solver["backend"], solver["n_variables_max"] > 0) == ("cbc", True)
