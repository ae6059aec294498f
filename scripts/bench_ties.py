#!/usr/bin/env python
"""Tied vs untied plans on the zoo: does tying repeated blocks (and building the ILP as arrays)
cost any plan quality?

For every model and PE count it partitions twice with the defaults (objective time, space full,
search auto, hierarchical):

  tied      the default: repeated blocks tied, each ILP handed to HiGHS as arrays
  untied    --no-tie, and every ILP built through PuLP's objects (``SolverSettings.via_pulp``)

and prints both plans' objective (step time, s), the relative difference (tied - untied) /
untied, whether the two plans are the same, both CPU times, and the problem size with and
without ties. Figures only, no assertions. A difference means the best tied plan is not the best
plan (tying is a restriction), or -- because the search is a local one (greedy, then refine
level by level) -- that the two searches stopped at different local optima; the column
``note`` says which: "tied better" can only be the latter.

Examples:
  python scripts/bench_ties.py
  python scripts/bench_ties.py --models resnet50,bert_base --pes 16,64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ZOO = ["lenet", "alexnet", "vgg11", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
       "mobilenetv2", "googlenet", "bert_base", "gpt2_small"]


def _run(path: str, pes: int, tied: bool) -> tuple[dict, float]:
    """The plan and its CPU seconds."""
    from hypar import api
    from hypar.config import SolverSettings

    settings = SolverSettings() if tied else SolverSettings(tie_blocks=False, via_pulp=True)
    t = time.process_time()
    plan = api.partition(path, api.resolve_array(pes=pes), settings=settings)
    return plan, time.process_time() - t


def _note(diff: float, same: bool) -> str:
    if same:
        return "same plan"
    if abs(diff) <= 1e-12:
        return "same cost, other plan"
    return "tied better (untied search stopped higher)" if diff < 0 else "untied better (tying restricts)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("Examples:"):])
    ap.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names (models/NAME.onnx)")
    ap.add_argument("--pes", default="16", help="comma-separated PE counts")
    a = ap.parse_args(argv)
    print(f"{'model':<12} {'PEs':>5} {'tied_s':>13} {'untied_s':>13} {'rel_diff':>9} {'cpu_tied':>8} "
          f"{'cpu_untied':>10} {'nodes':>11}  note")
    for name in [m for m in a.models.split(",") if m]:
        path = os.path.join(os.path.dirname(HERE), "models", f"{name}.onnx")
        for pes in [int(p) for p in a.pes.split(",") if p]:
            tied, cpu_t = _run(path, pes, True)
            untied, cpu_u = _run(path, pes, False)
            t, u = tied["totals"]["time_s"], untied["totals"]["time_s"]
            same = [x["types"] for x in tied["layers"]] == [x["types"] for x in untied["layers"]]
            size = tied["solver"]["ties"]
            nodes = f"{size['untied_size']['problem_nodes']}->{size['tied_size']['problem_nodes']}"
            print(f"{name:<12} {pes:>5} {t:>13.6e} {u:>13.6e} {(t - u) / u:>+9.1e} {cpu_t:>8.2f} {cpu_u:>10.2f} "
                  f"{nodes:>11}  {_note((t - u) / u, same)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
