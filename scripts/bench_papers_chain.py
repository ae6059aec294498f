#!/usr/bin/env python
"""Greedy vs refine vs joint vs auto on the papers' chain model (SPEC.md §4 "Beyond greedy").

AlexNet and VGG11 as the AccPar reference code describes them (tests/reference_networks.py) and
8-layer MLP chains (``MLPS``, Gemm chains), batch 512, 2-way levels at 16, 32 and 64 PEs, space
accpar, objective comm (bytes over links), convention reference (the papers' setting). For
each case it prints the objective of

- greedy : top level first, each level exact, never revisited (the papers' method);
- refine : hypar's re-solve of each level with the others fixed, from greedy and the baselines
           (hypar.search.search(..., "refine"));
- joint  : all levels at once (hypar.search.joint), only where joint_size(model) is under
           SolverSettings().joint_max_pairs, else "skipped";
- auto   : hypar's default search (refine, then joint where it fits), with what it reached;
- exact  : (unless --no-exact) the same joint problem solved by the chain DP instead of the ILP,
           which has no size limit on a chain -- the true optimum, to measure greedy against;

and each one's % above the best of them, and refine's and auto's volume over data parallelism's.

    python scripts/bench_papers_chain.py [--pes 16,32,64] [--nets alexnet,mlp-funnel] [--no-exact]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from hypar.array import array_from_levels  # noqa: E402
from hypar.cost import CostModel  # noqa: E402
from hypar.ilp.exact import solve_chain_dp  # noqa: E402
from hypar.search import SolverSettings, baseline, greedy, joint, joint_size, search  # noqa: E402
from hypar.synthetic import gemm_chain  # noqa: E402
from reference_networks import NETWORKS, REFERENCE_BATCH, build_chain  # noqa: E402

# 8-layer MLPs (Gemm chains, feature widths from input to output).
MLPS = {"mlp-funnel": [8192, 4096, 2048, 1024, 512, 256, 128, 64, 10],
        "mlp-expand": [64, 128, 256, 512, 1024, 2048, 4096, 8192, 1000],
        "mlp-mixed": [784, 4096, 4096, 1024, 4096, 256, 2048, 512, 10],
        "mlp-uniform": [2048] * 9}


def _graph(net: str):
    """The chain's layer graph at the reference batch: a reference network or an MLP."""
    if net in MLPS:
        return gemm_chain(MLPS[net], REFERENCE_BATCH, net)
    if net not in NETWORKS:
        raise SystemExit(f"unknown network {net!r}; choose from {', '.join([*NETWORKS, *MLPS])}")
    return build_chain(net, batch=REFERENCE_BATCH)


def run_case(net: str, pes: int, settings: SolverSettings, exact: bool) -> dict:
    levels = int(round(math.log2(pes)))
    if 2 ** levels != pes:
        raise SystemExit(f"--pes {pes}: 2-way levels need a power of two")
    model = CostModel(_graph(net), array_from_levels([2] * levels), "accpar", convention="reference")
    out: dict = {"net": net, "pes": pes, "levels": levels, "joint_size": joint_size(model),
                 "data": model.evaluate(baseline(model, "data", "comm", settings)).objective("comm")}

    def timed(key, fn):
        t0 = time.perf_counter()
        asg = fn()
        out[key + "_s"] = time.perf_counter() - t0
        out[key] = None if asg is None else model.evaluate(asg).objective("comm")

    timed("greedy", lambda: greedy(model, "comm", settings))
    timed("refine", lambda: search(model, "refine", "comm", settings)["plan"])

    def auto():
        found = search(model, "auto", "comm", settings)
        out["reached"] = found["reached"]
        return found["plan"]
    timed("auto", auto)
    if joint_size(model) < settings.joint_max_pairs:
        timed("joint", lambda: joint(model, "comm", settings))
    else:
        out["joint"], out["joint_s"] = None, 0.0
    if exact:
        def chain_dp():
            prob = model.joint_problem("comm")
            sol = solve_chain_dp(prob)
            choices = model.joint_choices()
            return [choices[i][sol.assignment[i]] for i in range(len(choices))]
        timed("exact", chain_dp)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pes", default="16,32,64", help="comma-separated PE counts (powers of two)")
    ap.add_argument("--nets", default=",".join([*NETWORKS, *MLPS]))
    ap.add_argument("--no-exact", action="store_true", help="skip the chain-DP joint optimum")
    args = ap.parse_args(argv)
    settings = SolverSettings()
    methods = ["greedy", "refine", "joint", "auto"] + ([] if args.no_exact else ["exact"])
    print(f"reference chains, batch {REFERENCE_BATCH}, 2-way levels, space accpar, objective comm, convention "
          f"reference (GB over all links per step); joint_max_pairs = {settings.joint_max_pairs}")
    head = (f"{'network':11s} {'PEs':>4s} " + " ".join(f"{m:>18s}" for m in methods)
            + "  refine/data  auto/data  auto reached")
    print(head)
    print("-" * len(head))
    for net in args.nets.split(","):
        for pes in (int(p) for p in args.pes.split(",")):
            r = run_case(net, pes, settings, not args.no_exact)
            vals = [r[m] for m in methods if r.get(m) is not None]
            best = min(vals)
            cells = []
            for m in methods:
                v = r.get(m)
                if v is None:
                    cells.append(f"{'skipped':>18s}")
                else:
                    cells.append(f"{v / 1e9:9.4f} {100 * (v / best - 1):+6.2f}%".rjust(18))
            print(f"{net:11s} {pes:4d} " + " ".join(cells) + f"  {r['refine'] / r['data']:11.5f}"
                  f"  {r['auto'] / r['data']:9.5f}  {r['reached']}"
                  + ("" if r.get("joint") is not None else f"   (joint ILP skipped: {r['joint_size']:,} pairs)"))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
