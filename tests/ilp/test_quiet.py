"""HiGHS stays quiet: its one-time copyright banner (printed by the C++ library on the first
``highspy.Highs()`` of a process, whatever the options say) never reaches the user's stdout."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("highspy")


def test_no_highs_banner_on_a_fresh_process():
    code = ("from hypar.ilp.highs import use_highs_threads; use_highs_threads(1); "
            "import highspy; highspy.Highs(); print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "done"
    assert "HiGHS" not in out.stderr
