#!/usr/bin/env python
"""Solver benchmark: import, greedy and end-to-end partition seconds, level solves and ILP sizes.

Prints figures only (no assertions). For every case (a zoo model or a synthetic graph at a number
of PEs) it reports:

  import_s   ONNX import (zoo models) or building the synthetic graph
  greedy_s   CostModel + hypar.search.greedy (the papers' top-down method), graph already imported
             (not run with --issue12, whose figures are end to end only)
  e2e_s      end to end, as a user sees it: import + hypar.api.partition (greedy, baselines, search,
             plan dict) + JSON written to a temporary file
  solves     plan["solver"]["level_solves"] (every level solve partition ran: greedy, refine, joint,
             the baselines' completions and the papers' greedy runs)
  nvar_max   plan["solver"]["n_variables_max"] (largest ILP after the solver's reductions; 0 when
             every level was solved by reductions alone)
  status     plan["solver"]["status"]
  cpu_s      CPU seconds of the end-to-end step (this process and its solver forks' are not
             included); on a shared machine wall seconds wait for the CPU, so both are printed

Generated models (not in models/): decoder32 is scripts/build_decoder.py's Llama-3-8B-shaped
decoder (32 blocks, batch 8, sequence 2048, shapes-only weights), written on demand to
<tmp>/hypar-bench-models/. ``--issue12`` runs issue 12's cases and prints its targets;
``--export FILE`` adds partition seconds / onnx.load seconds of a real export at 64 PEs (make one
with scripts/export_large_decoder.py).

Each case runs in its own spawned process (Python and the hypar modules are imported before the
clock starts) so that ``--timeout`` can stop it; once a case of a row (one graph, increasing PEs)
exceeds the timeout, the rest of that row is skipped and the table says so.

Examples:
  python scripts/bench_solver.py --quick
  python scripts/bench_solver.py --models resnet50,bert_base --pes 64,1024 --layers none
  python scripts/bench_solver.py --models none --layers 100,300,1000,3000 --graphs chain,dag --pes 16
  python scripts/bench_solver.py --issue12 --export /tmp/large_decoder.onnx
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS_DIR = os.path.join(ROOT, "models")

DEFAULT_MODELS = ["lenet", "alexnet", "vgg16", "resnet50", "mobilenetv2", "bert_base", "gpt2_small"]
DEFAULT_PES = [4, 16, 64, 256, 1024]
DEFAULT_LAYERS = [100, 300, 1000, 3000]
TARGETS = [("resnet50", 64, 3.0), ("bert_base", 1024, 30.0)]   # issue 4: end to end, this machine
CHAIN_WIDTHS = (256, 512, 1024, 2048, 4096)
SYNTH_BATCH = 32
GENERATED = {"decoder32"}                 # written by scripts/build_decoder.py, not in models/
#: issue 12's cases: (name, kind, layers, PEs) and its end-to-end targets in seconds.
ISSUE12 = [("decoder32", "model", None, [1024]), ("bert_base", "model", None, [1024]),
           ("resnet50", "model", None, [64]), ("resnet152", "model", None, [64])] + [
    (f"chain{n}", "chain", n, [64]) for n in (100, 300, 1000, 3000)]
ISSUE12_TARGETS = [("decoder32", 1024, 5.0), ("bert_base", 1024, 3.0), ("resnet50", 64, 1.5),
                   ("resnet152", 64, 3.0)]


def model_path(name: str) -> str:
    """models/NAME.onnx, or a generated model's file (written when absent)."""
    if name not in GENERATED:
        return os.path.join(MODELS_DIR, f"{name}.onnx")
    import tempfile

    sys.path.insert(0, HERE)
    import build_decoder

    folder = os.path.join(tempfile.gettempdir(), "hypar-bench-models")
    path = os.path.join(folder, f"{name}.onnx")
    if not os.path.exists(path):
        build_decoder.write_decoder(path, build_decoder.DecoderShape(layers=int(name[7:])))
    return path


# ------------------------------------------------------------------------------------ the child

def _synthetic(kind: str, n: int):
    import random

    from hypar import synthetic

    if kind == "chain":
        rng = random.Random(1000 + n)
        dims = [rng.choice(CHAIN_WIDTHS) for _ in range(n + 1)]
        return synthetic.gemm_chain(dims, SYNTH_BATCH, name=f"chain{n}")
    return synthetic.random_dag(n, seed=n, batch=SYNTH_BATCH, name=f"dag{n}")


def _run_case(case: dict, conn) -> None:
    """Child process: time one case, sending partial results as they come."""
    os.setsid()                       # own process group: the parent can stop us and our forks
    import json
    import tempfile

    from hypar import api
    from hypar import graph as G
    from hypar.cost import CostModel
    from hypar.plan import dumps
    from hypar.search import SearchLog, SolverSettings, greedy
    import hypar.ilp.solve  # noqa: F401  (pulp, highspy imported before the clock starts)

    out: dict = {}
    conn.send({"ready": True})        # the parent's clock for --timeout starts here
    try:
        settings = SolverSettings()
        arr = api.resolve_array(pes=case["pes"])
        kind, name = case["kind"], case["name"]
        tmp = tempfile.mkdtemp(prefix="hypar-bench-")
        if kind in ("model", "export"):
            path = case.get("path") or os.path.join(MODELS_DIR, f"{name}.onnx")
            if kind == "export":
                import onnx

                t = time.perf_counter()
                onnx.load(path)
                out["onnx_load_s"] = time.perf_counter() - t

            def load():
                return api.load_graph(path, None, arr)
        else:
            # a small stand-in file describing the graph, so the plan records a path and a sha256
            path = os.path.join(tmp, f"{name}.txt")
            with open(path, "w") as fh:
                fh.write(json.dumps({"synthetic": kind, "layers": case["layers"]}))

            def load():
                return _synthetic(kind, case["layers"])

        t = time.perf_counter()
        g = load()
        out["import_s"] = time.perf_counter() - t
        out["layers"] = len(G.decision_layers(g))
        out["nodes"] = g.number_of_nodes()
        conn.send(dict(out))

        if case.get("greedy", True):      # greedy alone, in a model of its own (not in e2e_s)
            t = time.perf_counter()
            model = CostModel(g, arr, case["space"])
            log = SearchLog()
            greedy(model, case["objective"], settings, log)
            out["greedy_s"] = time.perf_counter() - t
            out["greedy_solves"] = len(log.solves)
            conn.send(dict(out))

        t, cpu = time.perf_counter(), time.process_time()
        g2 = load()
        plan = api.partition(path, arr, objective=case["objective"], space=case["space"],
                             search_how=case["search"], settings=settings, graph=g2)
        with open(os.path.join(tmp, "plan.json"), "w") as fh:
            fh.write(dumps(plan))
        out["e2e_s"] = time.perf_counter() - t
        out["cpu_s"] = time.process_time() - cpu
        s = plan["solver"]
        out.update(solves=s["level_solves"], nvar_max=s["n_variables_max"], status=s["status"],
                   solve_wall_s=s["solve_wall_s"])
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    except Exception as exc:  # report, do not crash the benchmark
        out["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    out["done"] = True
    conn.send(out)
    conn.close()


# ------------------------------------------------------------------------------------ the parent

def run_case(case: dict, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_run_case, args=(case, child), daemon=True)
    p.start()
    child.close()
    result: dict = {}
    deadline = time.perf_counter() + 120.0          # spawning + imports, not timed
    while True:
        if parent.poll(max(0.0, min(0.5, deadline - time.perf_counter()))):
            try:
                msg = parent.recv()
            except EOFError:
                result.setdefault("error", "benchmark process died")
                break
            if msg.get("ready"):
                deadline = time.perf_counter() + timeout
                continue
            result = msg
            if msg.get("done"):
                break
        elif time.perf_counter() >= deadline:
            result["timeout"] = True
            break
        elif not p.is_alive():
            result.setdefault("error", "benchmark process died")
            break
    if p.is_alive():
        try:
            os.killpg(p.pid, signal.SIGKILL)      # the child and only the solver forks it made
        except (ProcessLookupError, PermissionError):
            p.kill()
    p.join(5)
    return result


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


HEAD = (f"{'case':<14} {'PEs':>5} {'layers':>6} {'import_s':>9} {'greedy_s':>9} {'e2e_s':>9} "
        f"{'cpu_s':>7} {'solves':>6} {'nvar_max':>8}  status")


def row(name: str, pes: int, r: dict) -> str:
    status = r.get("status", "")
    if r.get("timeout"):
        status = "TIMEOUT (stopped; rest of row skipped)"
    elif r.get("error"):
        status = "ERROR " + r["error"]
    return (f"{name:<14} {pes:>5} {fmt(r.get('layers'), 'd'):>6} {fmt(r.get('import_s'), '.3f'):>9} "
            f"{fmt(r.get('greedy_s')):>9} {fmt(r.get('e2e_s')):>9} {fmt(r.get('cpu_s')):>7} "
            f"{fmt(r.get('solves'), 'd'):>6} "
            f"{fmt(r.get('nvar_max'), 'd'):>8}  {status}")


def parse_list(s: str, conv=str) -> list:
    if s is None or s.strip().lower() in ("", "none"):
        return []
    return [conv(x) for x in s.replace(" ", "").split(",") if x]


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("Examples:"):])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated zoo model names (models/NAME.onnx, or decoder32), or 'none'")
    ap.add_argument("--pes", default=",".join(map(str, DEFAULT_PES)), help="comma-separated PE counts")
    ap.add_argument("--layers", default=",".join(map(str, DEFAULT_LAYERS)),
                    help="synthetic graph sizes in layers, or 'none'")
    ap.add_argument("--graphs", default="chain,dag", help="synthetic kinds: chain (Gemm chain), dag (random_dag)")
    ap.add_argument("--space", default="full", choices=["hypar", "accpar", "full"])
    ap.add_argument("--objective", default="time", choices=["comm", "time", "energy"])
    ap.add_argument("--search", default="auto", choices=["greedy", "refine", "joint", "auto"],
                    help="the search partition runs (default auto, as `hypar partition`)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per case (import + greedy + end to end); the rest of the row is skipped")
    ap.add_argument("--quick", action="store_true",
                    help="a small subset: resnet50@64, bert_base@1024, Gemm chains of 100 and 1000 layers @64")
    ap.add_argument("--issue12", action="store_true",
                    help="issue 12's cases: decoder32@1024, bert_base@1024, resnet50/152@64, "
                         "chains of 100..3000 layers @64")
    ap.add_argument("--export", default=None,
                    help="a real ONNX export: partition at 64 PEs against onnx.load, seconds each")
    return ap, ap.parse_args(argv)


def _plan(ap, a) -> list:
    """(name, kind, layers, [PEs]) of every row to run."""
    if a.issue12:
        plan = list(ISSUE12)
    elif a.quick:
        plan = [("resnet50", "model", None, [64]), ("bert_base", "model", None, [1024]),
                ("chain100", "chain", 100, [64]), ("chain1000", "chain", 1000, [64])]
    else:
        pes = parse_list(a.pes, int)
        plan = [(m, "model", None, pes) for m in parse_list(a.models)]
        for kind in parse_list(a.graphs):
            if kind not in ("chain", "dag"):
                ap.error(f"--graphs: unknown kind {kind!r}; use chain and/or dag")
            plan += [(f"{kind}{n}", kind, n, pes) for n in parse_list(a.layers, int)]
    for name, kind, _n, _p in plan:
        if kind == "model" and name not in GENERATED and not os.path.exists(model_path(name)):
            ap.error(f"--models: no models/{name}.onnx")
    if a.export:
        if not os.path.exists(a.export):
            ap.error(f"--export: no {a.export}")
        plan.append((os.path.basename(a.export)[:14], "export", None, [64]))
    return plan


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _run_plan(plan, common: dict, a) -> dict:
    """Run every case, printing its row; results by (name, PEs)."""
    results: dict[tuple[str, int], dict] = {}
    for name, kind, n, pes_list in plan:
        stopped = None
        for pes in pes_list:
            if stopped is not None:
                print(f"{name:<14} {pes:>5}  skipped: {name}@{stopped} exceeded --timeout {a.timeout:g} s")
                continue
            case = dict(common, kind=kind, name=name, layers=n, pes=pes)
            if kind == "model":
                case["path"] = model_path(name)
            elif kind == "export":
                case["path"] = a.export
            r = run_case(case, a.timeout)
            results[(name, pes)] = r
            print(row(name, pes, r), flush=True)
            if r.get("timeout"):
                stopped = pes
    return results


def _verdict(what: str, value, target: float, unit: str, extra: str = "") -> None:
    if value is None:
        print(f"  {what}: no figure (target {target:g}{unit}) -> MISSED")
        return
    ok = "met" if value <= target else f"MISSED ({value / target:.1f}x the target)"
    print(f"  {what}: {value:.2f}{unit} (target {target:g}{unit}) -> {ok}{extra}")


def _issue12_targets(plan, results: dict) -> None:
    """Issue 12's done-when figures from one run."""
    print("targets (issue 12, end to end = import + solve + plan + JSON write, this machine; "
          "wall seconds, CPU seconds after them):")
    for name, pes, target in ISSUE12_TARGETS:
        r = results.get((name, pes), {})
        _verdict(f"{name} @ {pes} PEs", r.get("e2e_s"), target, " s",
                 f"; cpu {fmt(r.get('cpu_s'))} s, {r.get('solves')} level solves")
    t100, t3000 = (results.get((f"chain{n}", 64), {}).get("e2e_s") for n in (100, 3000))
    if t100 and t3000:
        _verdict("chain 100 -> 3000 layers, time per layer ratio", (t3000 / 3000) / (t100 / 100),
                 1.2, "x")
    _export_ratio(plan, results)


def _export_ratio(plan, results: dict) -> None:
    """Partition seconds at 64 PEs over ``onnx.load`` seconds of each ``--export`` file."""
    for name, kind, _n, _p in plan:
        if kind == "export":
            r = results.get((name, 64), {})
            ratio = r["e2e_s"] / r["onnx_load_s"] if r.get("e2e_s") and r.get("onnx_load_s") else None
            _verdict(f"{name}: partition @ 64 / onnx.load", ratio, 2.0, "x",
                     f"; onnx.load {fmt(r.get('onnx_load_s'))} s")


def main(argv=None) -> int:
    ap, a = _args(argv)
    plan = _plan(ap, a)
    common = dict(space=a.space, objective=a.objective, search=a.search, greedy=not a.issue12)
    import platform

    print(f"hypar solver benchmark: space {a.space}, objective {a.objective}, search {a.search}, "
          f"timeout {a.timeout:g} s/case; {os.cpu_count()} CPUs, load average {_load()}, "
          f"Python {platform.python_version()}")
    print("synthetic: chainN = Gemm chain of N layers (widths from "
          f"{CHAIN_WIDTHS}, batch {SYNTH_BATCH}); dagN = hypar.synthetic.random_dag(N, seed=N)")
    print(HEAD)
    print("-" * len(HEAD))
    results = _run_plan(plan, common, a)
    print(f"load average at the end: {_load()}")
    print()
    if a.issue12:
        _issue12_targets(plan, results)
        return 0
    _export_ratio(plan, results)
    print("targets (issue 4, end to end = import + solve + plan + JSON write, this machine):")
    for name, pes, target in TARGETS:
        r = results.get((name, pes))
        if r is None:
            if name not in [p[0] for p in plan if p[1] == "model"]:
                print(f"  {name} @ {pes} PEs: not run (add it to --models; target {target:g} s)")
                continue
            r = run_case(dict(common, kind="model", name=name, layers=None, pes=pes,
                              path=model_path(name)), max(a.timeout, 10 * target))
            results[(name, pes)] = r
        _verdict(f"{name} @ {pes} PEs", r.get("e2e_s"), target, " s",
                 f"; solver wall {r.get('solve_wall_s', 0):.2f} s over {r.get('solves')} level "
                 f"solves, greedy alone {fmt(r.get('greedy_s'))} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
