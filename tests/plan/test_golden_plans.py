"""The golden plans: current code reproduces tests/golden/*.json byte for byte (timings removed).

They guard refactors (issue 9): a change that alters any plan, cost, baseline or verify count
fails here. Regenerate with ``python scripts/make_golden_plans.py`` only for intended changes.
"""

from __future__ import annotations

import difflib

import pytest

from golden_cases import CASES, VERIFY_CASES, golden_path, golden_text, verify_path, verify_text


def _same_text(expected: str, actual: str, what: str) -> None:
    if expected != actual:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            "golden", "now", n=2))
        pytest.fail(f"{what} differs from the golden file:\n{diff[:4000]}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("gpt2") else n
                                  for n in sorted(CASES)])
def test_plan_matches_golden(name):
    _same_text(golden_path(name).read_text(), golden_text(name), f"plan {name}")


@pytest.mark.parametrize("name", sorted(VERIFY_CASES))
def test_verify_report_matches_golden(name):
    _same_text(verify_path(name).read_text(), verify_text(name), f"verify report of {name}")
