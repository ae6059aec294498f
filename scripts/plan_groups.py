#!/usr/bin/env python
"""A plan's types per layer group, its totals and, on a weights-stationary (compute-in-memory)
array, how full the macros' weight capacity is: the tables of docs/cim.md and docs/sparsity.md.

Layer groups: a transformer's repeated block roles (``encoder.layer.N.`` / ``h.N.`` dropped, so
the 12 query projections are one group), otherwise a CNN's stage (the name's first dotted part:
``conv1``, ``layer3``, ``fc``). Each group lists how many of its decision layers took each type
tuple (one type per level, top first).

Examples:
  hypar partition models/resnet50.onnx --array solver_configs/cim_array.yaml -q -o /tmp/r50_cim.json
  python scripts/plan_groups.py models/resnet50.onnx /tmp/r50_cim.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter

from hypar import api
from hypar.cost.stationary import weight_bytes_per_pe, weights_total_load
from hypar.plan import Plan

BLOCK = re.compile(r"^(?:encoder\.|transformer\.)?(?:layer|h)\.\d+\.(.*)$")


def group_of(name: str) -> str:
    """The layer group of a layer name (module docstring)."""
    found = BLOCK.match(name)
    if found:
        return found.group(1).replace("/MatMul", "").replace("/", ".")
    return name.split(".")[0].split("/")[0]


def group_table(plan: dict) -> list[str]:
    """Markdown rows: group, decision layers, type tuples with their counts."""
    groups: dict[str, Counter] = {}
    for layer in plan["layers"]:
        if layer.get("types") and layer.get("kind") in ("conv", "gemm", "embedding", "matmul_act"):
            groups.setdefault(group_of(layer["name"]), Counter())["/".join(layer["types"])] += 1
    rows = ["| layer group | layers | types (levels top first: count) |", "|---|---:|---|"]
    for group, counts in groups.items():
        types = ", ".join(f"{t}: {n}" for t, n in counts.most_common())
        rows.append(f"| {group} | {sum(counts.values())} | {types} |")
    return rows


def totals(model_path: str, plan: dict) -> list[str]:
    """The plan's totals, and on a weights-stationary array the weight load (sum over layers of
    each layer's fullest macro share, <= 1 when the plan fits) and the largest weight bytes a
    layer puts on one macro."""
    t = plan["totals"]
    out = [f"step time {t['time_s'] * 1e3:.3f} ms (compute {t['compute_s'] * 1e3:.3f} ms, comm "
           f"{t['comm_s'] * 1e3:.3f} ms), comm {t['comm_bytes'] / 1e9:.3f} GB, energy {t['energy_j']:.4g} J"]
    model, asg = api.plan_assignment(model_path, Plan.of(plan))
    if model.array.weights_stationary:
        worst = max(weight_bytes_per_pe(model, i, a) for i, a in enumerate(asg))
        out.append(f"weight load {weights_total_load(model, asg):.3f} of each macro's capacity "
                   f"(largest share of one layer on one macro: {worst / 1e3:.1f} kB)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the ONNX model the plan was made for")
    ap.add_argument("plans", nargs="+", help="plan JSON files (hypar partition -o)")
    args = ap.parse_args(argv)
    for path in args.plans:
        with open(path) as f:
            plan = json.load(f)
        print(f"## {plan['model']['name']} on {plan['array']['name']} (batch {plan['batch']}): {path}")
        print("\n".join(group_table(plan)))
        print("\n".join(totals(args.model, plan)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
