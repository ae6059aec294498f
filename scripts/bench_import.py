#!/usr/bin/env python3
"""Benchmark ONNX import on a large real export: wall time and peak memory (not a test).

Exports (with torch, when importable) a GPT-2-medium-width transformer stack with random
weights and inline initializers (~565 MB by default) into a temporary folder (or ``--path``;
never commit it), derives a copy with the weights in an external-data file, then measures in a
FRESH subprocess per measurement, so peaks never mix:

  a. ``onnx.load(inline file)``
  b. ``hypar.onnx.importer.load_layer_graph(inline file)``, and ``model_sha256`` of the file (the
     plan's model digest, which ``hypar partition`` also computes: it reads every byte)
  c. the external-data copy: ``onnx.load(..., load_external_data=False)``, a full ``onnx.load``,
     and ``load_layer_graph`` of it (with ``load_external_data=False`` when the importer takes
     that keyword)

Each row: median wall seconds over ``--repeat`` runs, peak RSS of the child (VmHWM on Linux,
else ru_maxrss) and
that peak minus the baseline child's (Python + onnx + hypar imported, nothing loaded), and the
tracemalloc peak (a separate run: tracemalloc slows Python down and misses C++ allocations
made outside the Python allocator, so both are printed).

Usage::

    python scripts/bench_import.py                      # export to a temp dir, measure, clean up
    python scripts/bench_import.py --path big.onnx      # measure an existing file (no torch needed)
    python scripts/bench_import.py --export-only --path big.onnx   # only write the file (torch)
    python scripts/bench_import.py --layers 12 --vocab 50257       # bigger model

The export needs torch (dev-only extra): ``pip install -e .[export]`` (torch==2.13.0 CPU wheel +
onnxscript). The measurement children run with ``--python`` (default: this interpreter), which
needs onnx and hypar; torch and hypar may live in different virtualenvs, e.g.::

    /work/venv-torch/bin/python scripts/bench_import.py --export-only --path /tmp/big.onnx
    /work/venv/bin/python scripts/bench_import.py --path /tmp/big.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Export (torch, in this process)
# --------------------------------------------------------------------------------------------


def export_model(path: Path, *, layers: int, hidden: int, heads: int, ffn: int, vocab: int,
                 seq: int, batch: int, exporter: str) -> int:
    """Write a plain-torch pre-norm transformer stack with random weights; return #params."""
    try:
        import torch
        from torch import nn
    except ImportError:
        sys.exit("bench_import.py: exporting the benchmark model needs torch: "
                 "pip install -e .[export]   (or pass --path FILE.onnx of an existing model)")
    import logging
    import warnings
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")

    d = hidden // heads

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(hidden)
            self.q = nn.Linear(hidden, hidden)
            self.k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, hidden)
            self.proj = nn.Linear(hidden, hidden)
            self.ln2 = nn.LayerNorm(hidden)
            self.fc = nn.Linear(hidden, ffn)
            self.fc2 = nn.Linear(ffn, hidden)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            h = self.ln1(x)
            q = self.q(h).reshape(b, s, heads, d).transpose(1, 2)
            k = self.k(h).reshape(b, s, heads, d).transpose(1, 2)
            v = self.v(h).reshape(b, s, heads, d).transpose(1, 2)
            att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (d ** -0.5), dim=-1)
            ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, s, hidden)
            x = x + self.proj(ctx)
            return x + self.fc2(nn.functional.gelu(self.fc(self.ln2(x))))

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(vocab, hidden)
            self.wpe = nn.Parameter(torch.randn(1, seq, hidden) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(hidden)
            self.head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            x = self.wte(ids) + self.wpe
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    torch.manual_seed(0)
    model = Stack().eval()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, vocab, (batch, seq))
    with torch.no_grad():
        if exporter == "dynamo":
            prog = torch.onnx.export(model, (ids,), dynamo=True, input_names=["ids"],
                                     output_names=["logits"], external_data=False)
            prog.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, (ids,), str(path), dynamo=False, opset_version=17,
                              input_names=["ids"], output_names=["logits"])
    return n_params


# --------------------------------------------------------------------------------------------
# Measurement (one fresh child per measurement)
# --------------------------------------------------------------------------------------------

CHILD = r"""
import json, resource, sys, time
mode, path, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
import onnx
try:
    import hypar.onnx.importer as imp
except ImportError as e:
    imp = None
    imp_err = str(e)
if trace:
    import tracemalloc
    tracemalloc.start()
info = {}
t0 = time.perf_counter()
if mode == "baseline":
    pass
elif mode == "onnx_load":
    m = onnx.load(path)
    info["nodes"] = len(m.graph.node)
elif mode == "onnx_load_noext":
    m = onnx.load(path, load_external_data=False)
    info["nodes"] = len(m.graph.node)
elif mode == "sha256":
    from hypar.onnx import model_sha256
    info["sha12"] = model_sha256(path)[:12]
elif mode in ("import", "import_noext"):
    if imp is None:
        print(json.dumps({"error": "hypar.onnx.importer not importable: " + imp_err}))
        sys.exit(0)
    import inspect
    kw = {}
    if mode == "import_noext":
        if "load_external_data" not in inspect.signature(imp.load_layer_graph).parameters:
            print(json.dumps({"error": "n/a: load_layer_graph takes no load_external_data keyword "
                              "(it reads only weight shapes, so the row above already "
                              "never loads the external data)"}))
            sys.exit(0)
        kw["load_external_data"] = False
    g = imp.load_layer_graph(path, **kw)
    info["layers"] = g.number_of_nodes()
    info["edges"] = g.number_of_edges()
    info["decision_layers"] = sum(1 for n in g.nodes if g.nodes[n]["layer"].decision)
    info["weight_elements"] = sum(g.nodes[n]["layer"].weight_elements for n in g.nodes)
else:
    raise SystemExit("unknown mode " + mode)
wall = time.perf_counter() - t0
if trace:
    info["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
info["wall"] = wall
# Peak RSS of this process image. VmHWM (Linux) belongs to the new address space made at exec;
# ru_maxrss is inherited across fork+exec, so a child of a big parent (the torch export) would
# report the parent's peak.
try:
    with open("/proc/self/status") as f:
        info["maxrss"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    info["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps(info))
"""


def run_child(python: str, mode: str, path: Path, trace: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([python, "-c", CHILD, mode, str(path), "1" if trace else "0"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(python: str, mode: str, path: Path, repeat: int) -> dict:
    runs = [run_child(python, mode, path, trace=False) for _ in range(repeat)]
    if any("error" in r for r in runs):
        return next(r for r in runs if "error" in r)
    out = dict(runs[0])
    out["wall"] = statistics.median(r["wall"] for r in runs)
    out["wall_min"] = min(r["wall"] for r in runs)
    out["maxrss"] = max(r["maxrss"] for r in runs)
    traced = run_child(python, mode, path, trace=True)
    out["tracemalloc_peak"] = traced.get("tracemalloc_peak")
    out["wall_traced"] = traced.get("wall")
    return out


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MiB"


def warm(path: Path) -> None:
    """Read the file once so every measurement sees a warm page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def make_external_copy(python: str, src: Path, dst: Path) -> None:
    code = ("import onnx, sys; m = onnx.load(sys.argv[1]); "
            "onnx.save_model(m, sys.argv[2], save_as_external_data=True, "
            "all_tensors_to_one_file=True, location=sys.argv[3], size_threshold=1024)")
    subprocess.run([python, "-c", code, str(src), str(dst), dst.name + ".data"], check=True)


def print_rows(rows: list[tuple[str, dict]]) -> None:
    """The table: one row per measurement, peaks also relative to the baseline child's."""
    base = rows[0][1].get("maxrss", 0)
    w = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':{w}}  {'wall s':>8}  {'min s':>7}  {'peak RSS':>10}  "
          f"{'RSS-base':>10}  {'tracemalloc':>11}  result")
    for label, r in rows:
        if "error" in r:
            print(f"{label:{w}}  {r['error']}")
            continue
        what = ", ".join(f"{k}={r[k]:,}" if isinstance(r[k], int) else f"{k}={r[k]}" for k in
                         ("nodes", "layers", "edges", "decision_layers", "weight_elements", "sha12")
                         if k in r)
        print(f"{label:{w}}  {r['wall']:8.3f}  {r.get('wall_min', r['wall']):7.3f}  "
              f"{mib(r['maxrss']):>10}  {mib(max(0, r['maxrss'] - base)):>10}  "
              f"{mib(r.get('tracemalloc_peak')):>11}  {what}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time and peak memory of onnx.load vs "
                                 "hypar.onnx.importer.load_layer_graph on a large export.")
    ap.add_argument("--path", type=Path, help="an existing .onnx file to measure, or where "
                    "--export-only writes (default: a temporary folder, removed at the end)")
    ap.add_argument("--export-only", action="store_true", help="export to --path and stop")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the measurement children (needs onnx and hypar)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement")
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-external", action="store_true", help="skip the external-data copy")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="hypar-bench-"))
    try:
        if args.path is not None and args.path.exists() and not args.export_only:
            path = args.path
            print(f"model: {path} (given)")
        else:
            if args.export_only and args.path is None:
                ap.error("--export-only needs --path")
            path = args.path or tmp / "bench_model.onnx"
            import time
            t0 = time.perf_counter()
            n = export_model(path, layers=args.layers, hidden=args.hidden, heads=args.heads,
                             ffn=args.ffn, vocab=args.vocab, seq=args.seq, batch=args.batch,
                             exporter=args.exporter)
            print(f"exported {path} with {args.exporter}: {n:,} parameters, "
                  f"{path.stat().st_size / 2**20:,.0f} MiB, in {time.perf_counter() - t0:.1f} s "
                  f"(layers {args.layers}, hidden {args.hidden}, heads {args.heads}, "
                  f"ffn {args.ffn}, vocab {args.vocab}, seq {args.seq}, batch {args.batch})")
            if args.export_only:
                return 0
        print(f"file size {path.stat().st_size:,} bytes; children: {args.python}; "
              f"{args.repeat} timed run(s) each")

        rows: list[tuple[str, dict]] = []
        warm(path)
        rows.append(("baseline (imports only)", measure(args.python, "baseline", path, 1)))
        rows.append(("a. onnx.load(inline)", measure(args.python, "onnx_load", path, args.repeat)))
        rows.append(("b. load_layer_graph(inline)",
                     measure(args.python, "import", path, args.repeat)))
        rows.append(("b. model_sha256(inline)", measure(args.python, "sha256", path, args.repeat)))
        ext = None
        if not args.no_external:
            ext = tmp / "bench_model_ext.onnx"
            make_external_copy(args.python, path, ext)
            warm(ext)
            warm(ext.with_name(ext.name + ".data"))
            print(f"external-data copy: {ext.stat().st_size:,} bytes of graph + "
                  f"{ext.with_name(ext.name + '.data').stat().st_size:,} bytes of data")
            rows.append(("c. onnx.load(ext, load_external_data=False)",
                         measure(args.python, "onnx_load_noext", ext, args.repeat)))
            rows.append(("c. onnx.load(ext)", measure(args.python, "onnx_load", ext, args.repeat)))
            rows.append(("c. load_layer_graph(ext)",
                         measure(args.python, "import", ext, args.repeat)))
            rows.append(("c. load_layer_graph(ext, load_external_data=False)",
                         measure(args.python, "import_noext", ext, args.repeat)))

        print_rows(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
