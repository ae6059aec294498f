#!/usr/bin/env python3
"""One training step of a torch module under a hypar plan on a local gloo group, checked against
one process, and the collectives counted per module and level beside the plan's prediction.

Needs the torch extra (``pip install -e ".[torch]"``). The plan is made here with
``hypar.api.partition`` on the module's ONNX export (the MLP: tests/torch/mlp_dynamo.onnx; the
decoder: tests/fixtures/decoder_dynamo.onnx, sequence 16) for an array of the given fanouts,
then one process per PE runs the step (:func:`hypar.torch.step.check_plan`)::

    python scripts/torch_collectives.py mlp --levels 2,2 --batch 8
    python scripts/torch_collectives.py decoder --levels 2,2 --batch 8 --objective comm
    python scripts/torch_collectives.py decoder --levels 2,2,2 --batch 32 --objective comm

It prints the loss and the largest gradient difference against the single-process step, then
the table of :func:`hypar.torch.report.format_table`: per module and level, the bytes hypar's
simulator charges there ("plan B"), the bytes the torch step moved with gloo's all-gather
fallback of an all-to-all counted as the all-to-all ("torch B") and as sent ("gloo B"), and the
collectives counted by CommDebugMode.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mlp": ROOT / "tests" / "torch" / "mlp_dynamo.onnx", "decoder": ROOT / "tests" / "fixtures" / "decoder_dynamo.onnx"}


def make_plan(model: str, levels: str, batch: int, objective: str, search: str = "refine") -> dict:
    """The plan ``hypar partition`` makes for ``model`` on an array of fanouts ``levels`` (search
    ``refine`` by default: the same plan on a busy machine, where ``auto``'s time-limited joint step
    may stop elsewhere)."""
    from hypar import api
    from hypar.config import resolve_array

    array = resolve_array(levels=levels)
    dims = {"sequence": 16} if model == "decoder" else None
    return api.partition(str(MODELS[model]), array, batch=batch, dims=dims, objective=objective, search_how=search)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--levels", default="2,2", help="fanouts top first (one process per PE), default 2,2")
    ap.add_argument("--batch", type=int, default=None, help="batch (default: mlp 8, decoder 2)")
    ap.add_argument("--objective", default="time", choices=("time", "comm", "energy"))
    ap.add_argument("--search", default="refine", choices=("refine", "greedy", "auto", "joint"))
    args = ap.parse_args(argv)
    try:
        from hypar.torch import examples
        from hypar.torch.report import format_table
        from hypar.torch.step import TOL, check_plan
    except ImportError as exc:
        sys.exit(f"torch_collectives.py needs torch ({exc}): pip install -e \".[torch]\"")
    logging.getLogger("torch.distributed").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    batch = args.batch or (8 if args.model == "mlp" else 2)
    plan = make_plan(args.model, args.levels, batch, args.objective, args.search)
    if args.model == "mlp":
        build, data = examples.MLP, functools.partial(examples.mlp_batch, batch)
    else:
        build, data = examples.Decoder, functools.partial(examples.decoder_batch, batch)
    t0 = time.perf_counter()
    check = check_plan(plan, build, data)
    worst = max((err / max(1.0, scale), name) for r in check.results for name, (err, scale) in r["grads"].items())
    print(f"{args.model} on {len(check.results)} gloo processes (levels {args.levels}, batch {batch}, objective "
          f"{args.objective}), {time.perf_counter() - t0:.1f} s")
    print(f"loss {check.results[0]['loss']:.12g} (one process: {check.results[0]['ref_loss']:.12g}, largest "
          f"difference over ranks {check.loss_error:.3g}); largest gradient difference {worst[0]:.3g} x "
          f"max(1, |grad|) ({worst[1]}); tolerance {TOL:g}")
    for said in sorted({w for r in check.results for w in r["warnings"]}):
        print(f"warning: {said}")
    print(format_table(check.rows, len(check.results)))
    return 0 if check.loss_error <= TOL and not check.grad_failures() else 1


if __name__ == "__main__":
    raise SystemExit(main())
