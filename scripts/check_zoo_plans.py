"""Partition every zoo model at 16 and 64 PEs and check each plan (issue 4's "done when").

Prints one line per case: schema-valid, objective vs the best baseline, search seconds.
Exit code 1 if any plan is invalid or worse than a baseline.

    python scripts/check_zoo_plans.py [--pes 16,64] [--models alexnet,resnet50]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

from hypar import api
from hypar.plan import validate

OBJ_KEY = {"time": "time_s", "comm": "comm_bytes", "energy": "energy_j"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pes", default="16,64")
    ap.add_argument("--models", default="")
    ap.add_argument("--objective", default="time", choices=sorted(OBJ_KEY))
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(root, "models", "*.onnx")))
    if args.models:
        want = set(args.models.split(","))
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in want]
    bad = 0
    for n in [int(x) for x in args.pes.split(",")]:
        arr = api.resolve_array(pes=n)
        for path in paths:
            t0 = time.perf_counter()
            plan = api.partition(path, arr, objective=args.objective)
            secs = time.perf_counter() - t0
            validate(plan)
            key = OBJ_KEY[args.objective]
            mine = plan["totals"][key]
            best_name = min(plan["baselines"], key=lambda b: plan["baselines"][b][key])
            best = plan["baselines"][best_name][key]
            ok = mine <= best * (1 + 1e-9)
            bad += not ok
            print(f"{os.path.basename(path):18} {n:5d} PEs  valid  {args.objective} {mine:.6g} vs best baseline "
                  f"{best_name} {best:.6g} ({best / mine:.3f}x)  status {plan['solver']['status']}  "
                  f"{secs:6.2f} s  {'OK' if ok else 'WORSE'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
