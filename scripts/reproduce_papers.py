#!/usr/bin/env python
"""Reproduce the HyPar (HPCA 2019) and AccPar (HPCA 2020) experiments with hypar.

HyPar setting: the zoo's networks among HyPar's ten (Lenet-c, AlexNet, VGG-A/B/D/E = lenet,
alexnet, vgg11, vgg13, vgg16, vgg19) on solver_configs/hypar2019.yaml (16 HMC accelerators, four
2-way levels, batch 256), objective comm (HyPar minimises communication), comparing data, model,
owt, hypar (the 2019 method) and hypar's own plan.

AccPar setting: alexnet, vgg11/13/16/19, resnet18/34/50/101/152 on solver_configs/accpar2020.yaml
(16 TPU-v2 + 16 TPU-v3, batch 512), objective time, comparing data, owt, hypar, accpar and hypar's
own plan.

Each setting is a resumable sweep (hypar.sweep) under OUT/ (default results/papers); the script
prints hypar's averages beside the papers' headline figures and, with --write-docs, replaces the
generated block of docs/reproduction.md (between the BEGIN/END GENERATED markers) with them.

    python scripts/reproduce_papers.py --jobs 2 --write-docs
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hypar import sweep as sw  # noqa: E402

BEGIN, END = "<!-- BEGIN GENERATED (scripts/reproduce_papers.py) -->", "<!-- END GENERATED -->"

SETTINGS = {
    "hypar2019": {
        "title": "HyPar (HPCA 2019)",
        "models": ["lenet", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19"],
        "paper_names": {"lenet": "Lenet-c", "alexnet": "AlexNet", "vgg11": "VGG-A", "vgg13": "VGG-B",
                        "vgg16": "VGG-D", "vgg19": "VGG-E"},
        "array": "solver_configs/hypar2019.yaml",
        "objective": "comm",
        "methods": ["data", "model", "owt", "hypar", "plan"],
        # the paper's headline numbers: (what, method, metric, value)
        "paper": [("performance over data parallelism", "hypar", "speedup", 3.39),
                  ("energy efficiency over data parallelism", "hypar", "energy", 1.51),
                  ("performance over owt, best network", "hypar/owt", "speedup_max", 2.40)],
    },
    "accpar2020": {
        "title": "AccPar (HPCA 2020)",
        "models": ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
                   "resnet101", "resnet152"],
        "paper_names": {},
        "array": "solver_configs/accpar2020.yaml",
        "objective": "time",
        "methods": ["data", "owt", "hypar", "accpar", "plan"],
        "paper": [("speedup over data parallelism", "owt", "speedup", 2.98),
                  ("speedup over data parallelism", "hypar", "speedup", 3.78),
                  ("speedup over data parallelism", "accpar", "speedup", 6.30)],
    },
}

# Sensitivity: the HyPar setting with faster PEs (same links), i.e. closer to communication-bound.
for _scale in (10, 100):
    SETTINGS[f"hypar2019-x{_scale}"] = dict(SETTINGS["hypar2019"], title=f"HyPar setting with {_scale}x faster PEs",
                                             derive=("hypar2019", _scale), sensitivity=True)
# AccPar normalises to data parallelism that splits the batch evenly over TPU-v2 and TPU-v3, so
# the v2 half is the straggler; hypar's data baseline already splits in proportion to throughput.
# The same array with every chip a TPU-v2 times that even split (same links, same traffic).
SETTINGS["accpar2020-even"] = dict(SETTINGS["accpar2020"], title="AccPar setting with an even batch split",
                                   derive=("accpar2020", "all_v2"), sensitivity=True)
DEFAULT_SETTINGS = ["hypar2019", "accpar2020-even", "accpar2020", "hypar2019-x10", "hypar2019-x100"]

LABEL = {"data": "data", "model": "model", "owt": "owt", "hypar": "HyPar", "accpar": "AccPar",
         "plan": "hypar (own plan)"}


def geomean(vals):
    vals = [v for v in vals if v]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def mean(vals):
    vals = [v for v in vals if v]
    return sum(vals) / len(vals) if vals else float("nan")


def derived_array(base: str, name: str, change, out_dir: str) -> str:
    """``base`` with every PE kind's tflops scaled by ``change`` (links unchanged), or with every PE a
    TPU-v2 (``change == "all_v2"``), written as YAML into ``out_dir``."""
    import yaml
    with open(base) as fh:
        cfg = yaml.safe_load(fh)
    cfg["name"] = name
    if change == "all_v2":
        cfg["description"] = f"{cfg.get('description', '')} Every chip a TPU-v2 (even-split reference)."
        n = sum(p["count"] for p in cfg["pes"])
        cfg["pes"] = [{"kind": "tpu_v2", "count": n}]
    else:
        cfg["description"] = f"{cfg.get('description', '')} PE throughput x{change}."
        for kind in cfg["pe_kinds"].values():
            kind["tflops"] = kind["tflops"] * change
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path


def run_setting(name: str, out: str, jobs: int, models_dir: str, progress,
                convention: str = "reference") -> list[dict]:
    s = SETTINGS[name]
    paths = [os.path.join(models_dir, f"{m}.onnx") for m in s["models"]]
    missing = [p for p in paths if not os.path.exists(p)]
    paths = [p for p in paths if os.path.exists(p)]
    if missing:
        print(f"  (not in the zoo, skipped: {', '.join(os.path.basename(p) for p in missing)})")
    array = os.path.join(ROOT, s["array"])
    if "derive" in s:
        array = derived_array(array, name, s["derive"][1], os.path.join(out, name))
    summary = sw.sweep(paths, os.path.join(out, name), arrays=[array],
                       objective=s["objective"], convention=convention, jobs=jobs, progress=progress)
    print(f"  {summary.total} case(s): {summary.computed} computed, {summary.skipped} reused, "
          f"{summary.errors} error(s), {summary.seconds:.1f} s")
    rows = {r["key"]: r for r in sw.read_rows(os.path.join(out, name))}
    order = {m: i for i, m in enumerate(s["models"])}
    keep = [r for r in rows.values() if r["model"] in order and r.get("objective") == s["objective"]
            and r.get("convention", "reference") == convention]
    keep.sort(key=lambda r: order[r["model"]])
    return keep


def tables(name: str, rows: list[dict], even: dict | None = None) -> tuple[str, dict]:
    """Markdown for one setting and the averages it contains. ``even``: model -> row of the
    all-TPU-v2 array, whose data-parallel step time is the even-split reference."""
    s = SETTINGS[name]
    ok = [r for r in rows if r.get("status") == "ok"]
    methods = s["methods"]
    even = {m: r for m, r in (even or {}).items() if r.get("status") == "ok"}
    if even:
        ok = [r for r in ok if r["model"] in even]
        for r in ok:
            ref = even[r["model"]]["baselines"]["data"]["time_s"]
            allm = dict(r["baselines"], plan=r["totals"])
            r["speedup_over_even_data"] = {m: ref / allm[m]["time_s"] for m in methods}
    lines = []
    if ok:
        r0 = ok[0]
        arr = s["array"] + (f" ({name})" if "derive" in s else "")
        lines.append(f"Array `{arr}` ({r0['n_pes']} PEs, {r0['n_levels']} levels), batch {r0['batch']}, "
                     f"hypar's own plan minimises `{s['objective']}` (space `{r0['space']}`, search "
                     f"`{r0['search']}`, convention `{r0.get('convention', 'reference')}`). Gains are over data "
                     "parallelism in hypar's cost model.")
        lines.append("")
    lines.append("| network | " + " | ".join(f"{LABEL[m]} speedup" for m in methods) + " | "
                 + " | ".join(f"{LABEL[m]} energy" for m in methods) + " | HyPar comm / data comm |"
                 + ("".join(f" {LABEL[m]} speedup over even-split data |" for m in methods) if even else ""))
    lines.append("|---|" + "---:|" * (2 * len(methods) + 1 + (len(methods) if even else 0)))
    for r in ok:
        net = s["paper_names"].get(r["model"])
        net = f"{r['model']} ({net})" if net else r["model"]
        sp = [f"{r['speedup_over_data'][m]:.2f}×" for m in methods]
        en = [f"{r['energy_gain_over_data'][m]:.2f}×" for m in methods]
        cr = r["baselines"]["hypar"]["comm_bytes"] / r["baselines"]["data"]["comm_bytes"]
        ev = "".join(f" {r['speedup_over_even_data'][m]:.2f}× |" for m in methods) if even else ""
        lines.append(f"| {net} | " + " | ".join(sp) + " | " + " | ".join(en) + f" | {cr:.3f} |" + ev)
    avg = {}
    for m in methods:
        avg[(m, "speedup")] = geomean(r["speedup_over_data"][m] for r in ok)
        avg[(m, "energy")] = geomean(r["energy_gain_over_data"][m] for r in ok)
        avg[(m, "speedup_mean")] = mean(r["speedup_over_data"][m] for r in ok)
        avg[(m, "energy_mean")] = mean(r["energy_gain_over_data"][m] for r in ok)
        avg[(m, "comm")] = geomean(r["comm_reduction_over_data"][m] for r in ok)
        if even:
            avg[(m, "speedup_even")] = geomean(r["speedup_over_even_data"][m] for r in ok)
            avg[(m, "speedup_even_mean")] = mean(r["speedup_over_even_data"][m] for r in ok)
    for a, b in (("hypar", "owt"), ("plan", "owt"), ("plan", "hypar"), ("plan", "accpar")):
        if a in methods and b in methods and ok:
            ratios = [r["speedup_over_data"][a] / r["speedup_over_data"][b] for r in ok]
            avg[(f"{a}/{b}", "speedup_max")] = max(ratios)
            avg[(f"{a}/{b}", "speedup")] = geomean(ratios)
    lines.append("| **geometric mean** | " + " | ".join(f"**{avg[(m, 'speedup')]:.2f}×**" for m in methods) + " | "
                 + " | ".join(f"**{avg[(m, 'energy')]:.2f}×**" for m in methods) + " | |"
                 + ("".join(f" **{avg[(m, 'speedup_even')]:.2f}×** |" for m in methods) if even else ""))
    lines.append("| arithmetic mean | " + " | ".join(f"{avg[(m, 'speedup_mean')]:.2f}×" for m in methods) + " | "
                 + " | ".join(f"{avg[(m, 'energy_mean')]:.2f}×" for m in methods) + " | |"
                 + ("".join(f" {avg[(m, 'speedup_even_mean')]:.2f}× |" for m in methods) if even else ""))
    errors = [r for r in rows if r.get("status") != "ok"]
    for r in errors:
        lines.append(f"\n{r['model']}: error {r['error']['type']}: {r['error']['message']}")
    return "\n".join(lines), avg


def comparison(name: str, avg: dict) -> str:
    s = SETTINGS[name]
    even = ("data", "speedup_even") in avg
    lines = ["| figure | paper | hypar, paper's method (geo. mean) | hypar, paper's method (arith. mean) | "
             "hypar's own plan (geo. mean) |" + (" paper's method over even-split data (geo. / arith. mean) |"
                                                 if even else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if even else "")]
    for what, method, metric, value in s["paper"]:
        if metric == "speedup_max":
            got = avg.get((method, "speedup_max"), float("nan"))
            own = avg.get(("plan/owt", "speedup_max"), float("nan"))
            lines.append(f"| {LABEL.get(method.split('/')[0])} {what} (max) | {value:.2f}× | {got:.2f}× | – | "
                         f"{own:.2f}× |")
            continue
        got = avg[(method, metric)]
        ar = avg[(method, metric + "_mean")]
        own = avg[("plan", metric)]
        ev = (f" {avg[(method, 'speedup_even')]:.2f}× / {avg[(method, 'speedup_even_mean')]:.2f}× |"
              if even and metric == "speedup" else (" – |" if even else ""))
        lines.append(f"| {LABEL[method]} {what} | {value:.2f}× | {got:.2f}× | {ar:.2f}× | {own:.2f}× |" + ev)
    if even:
        lines.append(f"| hypar's own plan over even-split data | – | – | – | – | "
                     f"{avg[('plan', 'speedup_even')]:.2f}× / {avg[('plan', 'speedup_even_mean')]:.2f}× |")
    shown = []
    for m in s["methods"]:
        if m != "data":
            shown.append(f"{LABEL[m]} {avg[(m, 'comm')]:.2f}×")
    lines.append("")
    lines.append("Communication volume reduction over data parallelism (geo. mean): " + ", ".join(shown) + ".")
    return "\n".join(lines)


def generated_block(results: dict, seconds: float, n_cases: int) -> str:
    from hypar import __version__
    parts = [BEGIN, "", f"_Generated by `python scripts/reproduce_papers.py` (hypar {__version__}; {n_cases} "
             f"partitions, {seconds:.0f} s of case time in total; rerunning reuses finished cases)._", ""]
    for name, (md, avg) in results.items():
        title = SETTINGS[name]["title"]
        parts += [f"### {title if 'setting' in title else title + ' setting'}", "", "Headline figures:", "",
                  comparison(name, avg), "", "Per network:", "", md, ""]
    parts.append(END)
    return "\n".join(parts)


def write_docs(path: str, block: str) -> None:
    text = open(path).read() if os.path.exists(path) else f"# Reproducing HyPar and AccPar\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as fh:
        fh.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "papers"),
                    help="Sweep results directory (one sub-directory per setting).")
    ap.add_argument("--jobs", type=int, default=1, help="Local worker processes.")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "models"))
    ap.add_argument("--setting", choices=sorted(SETTINGS), action="append",
                    help="Only this setting (repeatable; default both).")
    ap.add_argument("--write-docs", nargs="?", const=os.path.join(ROOT, "docs", "reproduction.md"), default=None,
                    metavar="FILE", help="Write the numbers into docs/reproduction.md (generated block only).")
    ap.add_argument("--report", action="store_true", help="Also run `hypar report` on each setting's results.")
    ap.add_argument("--convention", choices=["reference", "hierarchical"], default="reference",
                    help="How several levels are priced (default reference: the papers' code).")
    ap.add_argument("-q", "--quiet", action="store_true", help="No per-case progress.")
    args = ap.parse_args(argv)

    progress = None if args.quiet else (lambda msg: print("   ", msg, file=sys.stderr))
    t0 = time.perf_counter()
    results = {}
    rows_of: dict[str, list[dict]] = {}
    for name in args.setting or DEFAULT_SETTINGS:
        s = SETTINGS[name]
        print(f"\n== {s['title']}: {s['array']}{' (' + name + ')' if 'derive' in s else ''}, "
              f"objective {s['objective']} ==")
        rows = run_setting(name, args.out, args.jobs, args.models_dir, progress, args.convention)
        rows_of[name] = rows
        if name == "accpar2020-even":
            print("  (reference only: its data-parallel step time is the even-split baseline of the AccPar setting)")
            continue
        even = {r["model"]: r for r in rows_of.get("accpar2020-even", [])} if name == "accpar2020" else None
        md, avg = tables(name, rows, even)
        results[name] = (md, avg)
        print()
        print(comparison(name, avg))
        print()
        print(md)
        if args.report:
            from hypar.present.report import write_report
            for p in write_report(os.path.join(args.out, name)):
                print(f"  wrote {p}")
    seconds = time.perf_counter() - t0
    if args.write_docs:
        all_rows = [r for rows in rows_of.values() for r in rows]
        case_s = sum((r.get("solve") or {}).get("seconds") or 0.0 for r in all_rows)
        write_docs(args.write_docs, generated_block(results, case_s, len(all_rows)))
        print(f"\nwrote the generated block of {args.write_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
