"""Partition every zoo model and fixture on several arrays and verify each plan (issue 10's "done when").

One line per case: model, array, convention, verify status, per-level bytes predicted / counted
(summed over layers), seconds for partition and verify. Exit 1 if any case fails.

    python scripts/verify_zoo.py                              # everything (slow: minutes)
    python scripts/verify_zoo.py --models lenet,alexnet --arrays 2x2,4x2
    python scripts/verify_zoo.py --convention reference
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypar import api
from hypar.errors import ShapeError
from hypar.verify import verify_plan

ROOT = Path(__file__).resolve().parent.parent
ARRAYS = {"2": "2", "2x2": "2,2", "4x2": "4,2", "2x2x2": "2,2,2", "3x2": "3,2",
          "hetero": str(ROOT / "tests" / "golden" / "hetero_2x2.yaml")}
TRANSFORMER_HINTS = ("bert", "gpt", "transformer", "decoder")
# Dims the exporter-pattern fixtures leave symbolic besides the batch, as a user binds them with
# --dim / --input-shape (a function of the batch).
BINDINGS = {"windowed_attention_dynamic": lambda b: {"dims": {"height": 16, "width": 16}},
            "sequence_pattern_dynamic": lambda b: {"input_shapes": {"ids": [b, 8]}},
            "decoder_dynamo": lambda b: {"dims": {"sequence": 16}},
            "decoder_dynamo_opset23": lambda b: {"dims": {"sequence": 16}},
            "windowed_vit_torchscript": lambda b: {"dims": {"height": 24, "width": 40}}}


def cases(models: set[str]) -> list[Path]:
    """The zoo models and the real-exporter fixtures, filtered by stem (all when ``models`` is empty)."""
    paths = sorted(ROOT.glob("models/*.onnx")) + sorted(ROOT.glob("tests/fixtures/*.onnx"))
    return [p for p in paths if not models or p.stem in models]


def array_of(name: str):
    spec = ARRAYS[name]
    return api.resolve_array(array_path=spec) if spec.endswith(".yaml") else api.resolve_array(levels=spec)


def level_totals(rep) -> list[tuple[float, float]]:
    """(predicted, counted) bytes per level summed over the report's layers."""
    n = max((len(l.levels) for l in rep.layers), default=0)
    out = [[0.0, 0.0] for _ in range(n)]
    for layer in rep.layers:
        for c in layer.levels:
            out[c.level][0] += c.predicted_bytes
            out[c.level][1] += c.counted_bytes
    return [tuple(x) for x in out]


def run_case(path: Path, array_name: str, convention: str | None) -> bool:
    arr = array_of(array_name)
    batch = 2 if any(h in path.stem for h in TRANSFORMER_HINTS) else 4
    t0 = time.perf_counter()
    kw = {"objective": "time"}
    if convention:
        kw["convention"] = convention
    try:
        try:
            plan = api.partition(str(path), arr, **kw)
        except ShapeError:                  # a symbolic batch: a user binds it with --batch (and --dim ...)
            bound = BINDINGS.get(path.stem, lambda b: {})(batch)
            plan = api.partition(str(path), arr, batch=batch, **bound, **kw)
    except Exception as exc:  # noqa: BLE001 - report every case
        print(f"{path.stem:28} {array_name:7} PARTITION-ERROR {exc}")
        return False
    t1 = time.perf_counter()
    try:
        rep = verify_plan(str(path), plan, batch=batch)
    except Exception as exc:  # noqa: BLE001
        print(f"{path.stem:28} {array_name:7} VERIFY-ERROR {str(exc)[:150]}")
        return False
    t2 = time.perf_counter()
    levels = "  ".join(f"L{h} {p:,.0f}/{c:,.0f}" for h, (p, c) in enumerate(level_totals(rep)))
    status = "PASS" if rep.ok else ("UNSUPPORTED" if rep.unsupported else "FAIL")
    print(f"{path.stem:28} {array_name:7} {status:11} b={batch} {levels}  "
          f"partition {t1 - t0:.1f} s verify {t2 - t1:.1f} s", flush=True)
    if not rep.ok:
        for f in rep.failures()[:2]:
            print(f"    {f[:200]}")
    return rep.ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated stems (default: all)")
    ap.add_argument("--arrays", default=",".join(ARRAYS), help=f"comma-separated of {', '.join(ARRAYS)}")
    ap.add_argument("--convention", default=None, help="hierarchical or reference (default: the library's)")
    args = ap.parse_args()
    models = set(filter(None, args.models.split(",")))
    ok = True
    for path in cases(models):
        for a in args.arrays.split(","):
            ok &= run_case(path, a, args.convention)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
