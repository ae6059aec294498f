"""Seconds `hypar verify` takes per case (issue 10's speed targets: every zoo CNN at batch 4 on a
2x2x2 array under 20 s, transformers at batch 2 under 20 s).

For each model and array, in a process of its own: partition at the bench batch (seconds printed
apart, not part of the target), then simulate the plan's training step and compare it with the
cost model (:func:`hypar.verify.verify_assignment`), printing its seconds, the case's peak memory
and whether it passed. Nothing is asserted.

    python scripts/bench_verify.py                                # zoo CNNs at 4, transformers at 2, on 2x2x2
    python scripts/bench_verify.py --models alexnet --arrays 2x2 --batch 4
    python scripts/bench_verify.py --fixtures                     # also the test fixtures
    python scripts/bench_verify.py --models lenet --profile 25    # cProfile's top 25 functions
    python scripts/bench_verify.py --dtype float32 --threads 2     # float32 steps, BLAS on 2 threads

Wall seconds on a busy machine are noisy; the CPU seconds of the process are printed too (every
thread: the step's own, the reference's thread beside it, BLAS threads) and those of the main
thread alone: on two idle cores the wall time is about the larger of the main thread's and the
rest. Unless ``--threads`` (or OPENBLAS_NUM_THREADS) says otherwise, each of the simulator's two
threads calls BLAS with its share of the cores (:mod:`hypar.sim.blas`).
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)          # this checkout's hypar, not an installed one

from hypar import api  # noqa: E402
from hypar.array import array_from_levels  # noqa: E402
from hypar.cost import CostModel  # noqa: E402
from hypar.sim.blas import share_of_cores  # noqa: E402
from hypar.verify import verify_assignment  # noqa: E402

TRANSFORMERS = ("bert_base", "gpt2_small")


def cases(args) -> list[tuple[str, str]]:
    """(name, path) of every model benchmarked."""
    paths = sorted(glob.glob(os.path.join(ROOT, "models", "*.onnx")))
    if args.fixtures:
        paths += sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "*.onnx")))
    out = [(os.path.splitext(os.path.basename(p))[0], p) for p in paths]
    if args.models:
        want = set(args.models.split(","))
        out = [(n, p) for n, p in out if n in want]
    return out


def default_batch(name: str) -> int:
    """Issue 10's batch: 2 for transformers, 4 otherwise."""
    return 2 if name in TRANSFORMERS or name.startswith("transformer") else 4


def peak_mb() -> float:
    """The process's peak resident memory (MB): the case's own, each case running in a process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str, path: str, fanouts: str, batch: int, args) -> None:
    """Partition, then verify one case, printing one line."""
    arr = array_from_levels([int(k) for k in fanouts.split("x")])
    t0 = time.perf_counter()
    plan = api.partition(path, arr, batch=batch, objective=args.objective, space=args.space)
    t_part = time.perf_counter() - t0
    model, asg = api.plan_assignment(path, plan, array=arr, batch=batch)
    if args.convention:
        model = CostModel(model.g, model.array, model.space, convention=args.convention)
    prof = cProfile.Profile() if args.profile else None
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    if prof:
        prof.enable()
    try:
        rep = verify_assignment(model, asg, name=name, dtype=args.dtype)
        status = "PASS" if rep.ok else ("UNSUPPORTED" if rep.unsupported else "FAIL")
        detail = (rep.unsupported[:1] or rep.failures()[:1] or [""])[0]
    except Exception as exc:        # a bench reports every case, whatever happens
        status, detail = "ERROR", f"{type(exc).__name__}: {exc}"
    if prof:
        prof.disable()
    secs, cpu, main = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
    print(f"{name:20} {fanouts:7} batch {batch:2d}  partition {t_part:6.2f} s  verify {secs:6.2f} s (cpu {cpu:6.2f} s, "
          f"main thread {main:6.2f} s)  peak {peak_mb():6.0f} MB  {status} {detail[:80]}", flush=True)
    if prof:
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.profile)


def _one(args) -> int:
    """Run the single case ``--one NAME PATH FANOUTS BATCH`` in this process."""
    name, path, fanouts, batch = args.one
    run_case(name, path, fanouts, int(batch), args)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated model names (default: the zoo)")
    ap.add_argument("--arrays", default="2x2x2", help="comma-separated fanouts, e.g. 2x2,2x2x2")
    ap.add_argument("--batch", type=int, default=None, help="default: 4, transformers 2")
    ap.add_argument("--fixtures", action="store_true", help="also the ONNX fixtures of tests/")
    ap.add_argument("--objective", default="time")
    ap.add_argument("--space", default="full")
    ap.add_argument("--convention", default="hierarchical", help="hierarchical / reference ('' = the plan's)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="float type of the step")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads of each case (sets OPENBLAS/OMP/MKL_NUM_THREADS; default: inherited)")
    ap.add_argument("--profile", type=int, default=0, help="print cProfile's top N functions per case")
    ap.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative, tottime, ...)")
    ap.add_argument("--one", nargs=4, metavar=("NAME", "PATH", "FANOUTS", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return _one(args)
    passed = [a for a in sys.argv[1:]]
    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    share = f"unset (each simulator thread: {share_of_cores()})"
    print(f"# {args.dtype}, BLAS threads: {env.get('OPENBLAS_NUM_THREADS', share)}", flush=True)
    for fanouts in args.arrays.split(","):
        for name, path in cases(args):
            batch = args.batch or default_batch(name)
            # one process per case: its peak memory is the case's own, and a failure stays local
            res = subprocess.run([sys.executable, __file__, *passed, "--one", name, path, fanouts, str(batch)],
                                 capture_output=True, text=True, env=env)
            out = [l for l in res.stdout.splitlines() if l.strip() and (args.profile or l.startswith(name))]
            print("\n".join(out) if out else f"{name:20} {fanouts:7} batch {batch:2d}  CRASHED "
                  f"(exit {res.returncode}): {res.stderr.strip().splitlines()[-1:] or ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
