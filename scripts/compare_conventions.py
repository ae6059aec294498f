"""What the hierarchical convention changes on the zoo: per model, the reference plan priced under
both conventions (per level), and whether the hierarchical search picks a different plan.

Prints a Markdown table (docs/conventions.md quotes it):

    python scripts/compare_conventions.py                       # every zoo model, --levels 2,2,2,2
    python scripts/compare_conventions.py --levels 4,4 --models alexnet,resnet50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hypar import api
from hypar.cost import CostModel

ROOT = Path(__file__).resolve().parent.parent


def per_level_bytes(model: CostModel, assignment: list[tuple]) -> list[float]:
    """Bytes over each level's links of ``assignment`` priced by ``model``."""
    ev = model.evaluate(assignment)
    return [ev.level_comm(h).bytes for h in range(model.n_levels)]


def compare(path: Path, levels: str, objective: str) -> str:
    """One Markdown row: reference plan's per-level MB under reference / hierarchical, the
    hierarchical plan's total, and how many layers change type."""
    array = api.resolve_array(levels=levels)
    plans = {c: api.partition(str(path), array, objective=objective, convention=c)
             for c in ("reference", "hierarchical")}
    graph = api.load_graph(str(path), None, array)
    models = {c: CostModel(graph, array, plans[c]["space"], convention=c) for c in plans}
    ref_asg = [tuple(layer["types"]) for layer in plans["reference"]["layers"]]
    hier_asg = [tuple(layer["types"]) for layer in plans["hierarchical"]["layers"]]
    under_ref = per_level_bytes(models["reference"], ref_asg)
    under_hier = per_level_bytes(models["hierarchical"], ref_asg)
    hier_plan = sum(per_level_bytes(models["hierarchical"], hier_asg))
    changed = sum(a != b for a, b in zip(ref_asg, hier_asg))
    mb = lambda xs: " / ".join(f"{x / 1e6:,.2f}" for x in xs)  # noqa: E731
    return (f"| {path.stem} | {mb(under_ref)} | {mb(under_hier)} | {sum(under_hier) / max(sum(under_ref), 1):.3f} "
            f"| {hier_plan / 1e6:,.2f} | {changed} of {len(ref_asg)} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="2,2,2,2")
    ap.add_argument("--models", default="")
    ap.add_argument("--objective", default="time")
    args = ap.parse_args()
    want = set(filter(None, args.models.split(",")))
    print(f"Array --levels {args.levels}, objective {args.objective}, space full, search auto; MB per level, top first.\n")
    print("| model | reference plan under reference | same plan under hierarchical | ratio | hierarchical plan (total MB) | layers that change |")
    print("|---|---|---|---|---|---|")
    for path in sorted(ROOT.glob("models/*.onnx")):
        if not want or path.stem in want:
            print(compare(path, args.levels, args.objective), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
