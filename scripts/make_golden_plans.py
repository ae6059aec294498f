"""Regenerate the golden plans in tests/golden/ (the refactor guard of issue 9).

Each case partitions one model on one array and writes the plan JSON with the fields that vary
from run to run removed (wall-clock timings, see ``golden_cases.strip_volatile``), and for a
few cases the ``hypar verify`` report of that plan (``*.verify.json``).
tests/test_golden_plans.py recomputes every case and compares byte for byte, so a change that
moves any plan, cost or baseline shows up there. Regenerate only when a change of results is
intended, and say so in the commit message:

    python scripts/make_golden_plans.py            # all cases
    python scripts/make_golden_plans.py lenet_2    # some cases, by name
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))            # this checkout's hypar, not an installed one
sys.path.insert(0, str(ROOT / "tests"))

from golden_cases import CASES, VERIFY_CASES, golden_path, golden_text, verify_path, verify_text  # noqa: E402


def main(names: list[str]) -> None:
    unknown = set(names) - set(CASES)
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}; known: {sorted(CASES)}")
    for name in names or sorted(CASES):
        path = golden_path(name)
        path.write_text(golden_text(name))
        print(f"wrote {path.relative_to(ROOT)}")
        if name in VERIFY_CASES:
            path = verify_path(name)
            path.write_text(verify_text(name))
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
