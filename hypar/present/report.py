"""Reports of a sweep (see hypar.sweep): a Markdown summary and PNG plots.

``write_report(RESULTS_DIR)`` reads ``results.jsonl`` (the newest row per case wins), writes
``report.md``, ``summary.csv`` (one line per case and method) and, with matplotlib installed (``pip install 'hypar[plot]'``), the PNGs:

- ``speedup.png`` / ``energy_gain.png``: gain over data parallelism per model and method, one panel
  per (array, batch);
- ``comm_vs_pes.png``: bytes moved per training step vs array size, per model (hypar's plan solid,
  data parallelism dashed), one panel per batch;
- ``solve_time.png``: seconds per case vs model size (nodes in the plan), per array size.

matplotlib is imported inside the plotting functions only (the Agg backend, no display needed).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from hypar.errors import HyparError
from hypar.sweep import METHODS, read_rows, results_path

REPORT_FILE = "report.md"
CSV_FILE = "summary.csv"
CSV_FIELDS = ("model", "array", "n_pes", "batch", "objective", "space", "search", "method", "time_s", "comm_bytes",
              "energy_j", "peak_mem_bytes_per_pe", "speedup_over_data", "energy_gain_over_data",
              "comm_reduction_over_data", "solve_status", "case_seconds", "key")
METHOD_ORDER = METHODS + ("plan",)
METHOD_LABEL = {"data": "data", "model": "model", "owt": "owt", "hypar": "HyPar", "accpar": "AccPar",
                "plan": "hypar (own)"}


class ReportError(HyparError):
    """No results to report."""


def latest_rows(results_dir: str) -> list[dict]:
    """One row per case key (the last one written), in case order."""
    if not os.path.exists(results_path(results_dir)):
        raise ReportError(f"no {os.path.basename(results_path(results_dir))} in {results_dir}; "
                          f"run `hypar sweep ... -o {results_dir}` first")
    by_key: dict[str, dict] = {}
    for r in read_rows(results_dir):
        by_key[r["key"]] = r
    rows = list(by_key.values())
    if not rows:
        raise ReportError(f"{results_path(results_dir)} has no complete row yet")
    model_order: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r.get("index", 0)):
        model_order.setdefault(r["model"], len(model_order))
    rows.sort(key=lambda r: (model_order[r["model"]], r.get("n_pes", 0), r.get("array", ""),
                             r.get("batch") or r.get("batch_requested") or 0, r["key"]))
    return rows


def _batch(r: dict):
    return r.get("batch") or r.get("batch_requested") or "default"


def _x(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _fmt_bytes(b) -> str:
    if b is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(b) < 1000 or unit == "TB":
            return f"{b:.3g} {unit}"
        b /= 1000.0
    return f"{b:.3g} TB"


def _group_key(r: dict) -> tuple:
    return (r.get("n_pes", 0), r["array"], str(_batch(r)))


def markdown(rows: list[dict], title: str = "hypar sweep report") -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    errors = [r for r in rows if r.get("status") != "ok"]
    out = [f"# {title}", ""]
    objectives = sorted({r.get("objective") for r in rows})
    spaces = sorted({r.get("space") for r in rows})
    out.append(f"{len(rows)} case(s): {len(ok)} solved, {len(errors)} error(s). hypar's own plan: objective "
               f"{', '.join(map(str, objectives))}, space {', '.join(map(str, spaces))}. Gains are over data "
               "parallelism (type I everywhere) in hypar's cost model: speedup = data's step time / the "
               "method's; energy gain = data's energy / the method's; > 1 is better than data.")
    out.append("")
    out.append("Methods: **data** (type I everywhere), **model** (type II everywhere), **owt** (conv I, FC II), "
               "**HyPar** (types I/II, greedy top-down, 2019), **AccPar** (I/II/III greedy, 2020), "
               "**hypar (own)** (this tool's plan).")
    out.append("")
    if ok:
        out += ["## Geometric means over models", ""]
        out.append("| array | PEs | batch | cases | " + " | ".join(
            f"{METHOD_LABEL[m]} speedup / energy" for m in METHOD_ORDER) + " |")
        out.append("|---|---:|---:|---:|" + "---:|" * len(METHOD_ORDER))
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in ok:
            groups[_group_key(r)].append(r)
        for (n, arr, b), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            cells = []
            for m in METHOD_ORDER:
                s = geomean(r["speedup_over_data"].get(m) for r in rs)
                e = geomean(r["energy_gain_over_data"].get(m) for r in rs)
                cells.append(f"{_x(s)} / {_x(e)}")
            out.append(f"| {arr} | {n} | {b} | {len(rs)} | " + " | ".join(cells) + " |")
        out.append("")
        for what, field, label in (("Speedup over data parallelism", "speedup_over_data", "speedup"),
                                   ("Energy gain over data parallelism", "energy_gain_over_data", "energy gain")):
            out += [f"## {what} per case", ""]
            out.append("| model | array | PEs | batch | " + " | ".join(METHOD_LABEL[m] for m in METHOD_ORDER)
                       + " | best baseline | own vs best |")
            out.append("|---|---|---:|---:|" + "---:|" * len(METHOD_ORDER) + "---|---:|")
            for r in ok:
                g = r[field]
                base = {m: g.get(m) for m in METHODS if g.get(m) is not None}
                best = max(base, key=base.get) if base else None
                own_vs = (g.get("plan") / base[best]) if best and base[best] and g.get("plan") else None
                cells = []
                for m in METHOD_ORDER:
                    v = g.get(m)
                    cell = _x(v)
                    if m == "plan" or (best == m):
                        cell = f"**{cell}**"
                    cells.append(cell)
                out.append(f"| {r['model']} | {r['array']} | {r.get('n_pes')} | {_batch(r)} | " + " | ".join(cells)
                           + f" | {METHOD_LABEL.get(best, '–')} | {_x(own_vs)} |")
            out.append("")
        out += ["## Plan totals and solve", "",
                "| model | array | batch | step time | comm | energy | peak mem/PE | data comm | nodes | "
                "weighted | solve status | solve s | case s |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
        for r in ok:
            t, s = r["totals"], r.get("solve", {})
            d = r.get("baselines", {}).get("data", {})
            out.append(f"| {r['model']} | {r['array']} | {_batch(r)} | {t['time_s'] * 1e3:.4g} ms | "
                       f"{_fmt_bytes(t['comm_bytes'])} | {t['energy_j']:.4g} J | "
                       f"{_fmt_bytes(t.get('peak_mem_bytes_per_pe'))} | {_fmt_bytes(d.get('comm_bytes'))} | "
                       f"{r.get('n_nodes')} | {r.get('n_weighted')} | {s.get('status')} | "
                       f"{(s.get('solve_wall_s') or 0):.3f} | {(s.get('seconds') or 0):.2f} |")
        out.append("")
    if errors:
        out += ["## Errors", "", "| model | array | batch | error |", "|---|---|---:|---|"]
        for r in errors:
            e = r.get("error", {})
            msg = f"{e.get('type')}: {e.get('message')}".replace("|", "\\|")
            out.append(f"| {r['model']} | {r['array']} | {_batch(r)} | {msg} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots

def _plt():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the plots need matplotlib: pip install 'hypar[plot]' (or use --no-plots)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _grid(n: int, n_models: int = 1) -> tuple[int, int]:
    cols = 1 if n == 1 else (2 if n <= 4 or n_models > 6 else 3)
    return math.ceil(n / cols), cols


def plot_gains(rows: list[dict], path: str, field: str = "speedup_over_data",
               ylabel: str = "speedup over data parallelism") -> str:
    plt = _plt()
    from matplotlib.ticker import FuncFormatter
    ok = [r for r in rows if r.get("status") == "ok"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ok:
        groups[_group_key(r)].append(r)
    keys = sorted(groups, key=lambda k: (k[0], k[1], k[2]))
    models = list(dict.fromkeys(r["model"] for r in ok))
    nr, nc = _grid(len(keys), len(models))
    width = max(6.0, 0.55 * len(models) + 2)
    fig, axes = plt.subplots(nr, nc, figsize=(width * nc, 3.6 * nr), squeeze=False)
    colors = plt.get_cmap("tab10")
    bw = 0.8 / len(METHOD_ORDER)
    for ax, k in zip(axes.flat, keys):
        rs = {r["model"]: r for r in groups[k]}
        for j, m in enumerate(METHOD_ORDER):
            xs, ys = [], []
            for i, name in enumerate(models):
                v = rs.get(name, {}).get(field, {}).get(m) if name in rs else None
                if v:
                    xs.append(i - 0.4 + bw * (j + 0.5))
                    ys.append(v)
            ax.bar(xs, ys, bw, label=METHOD_LABEL[m], color=colors(j),
                   edgecolor="black" if m == "plan" else None, linewidth=0.6)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}×" if f"{v:e}"[0] in "2357" else ""))
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{k[1]} ({k[0]} PEs), batch {k[2]}", fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(METHOD_ORDER), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_comm_vs_pes(rows: list[dict], path: str) -> str:
    plt = _plt()
    ok = [r for r in rows if r.get("status") == "ok"]
    batches = sorted({str(_batch(r)) for r in ok}, key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.5), squeeze=False)
    colors = plt.get_cmap("tab20")
    models = list(dict.fromkeys(r["model"] for r in ok))
    for ax, b in zip(axes.flat, batches):
        for i, name in enumerate(models):
            rs = sorted((r for r in ok if r["model"] == name and str(_batch(r)) == b), key=lambda r: r["n_pes"])
            if not rs:
                continue
            xs = [r["n_pes"] for r in rs]
            ax.plot(xs, [r["totals"]["comm_bytes"] for r in rs], "o-", color=colors(i % 20), label=name, lw=1.2, ms=3)
            ax.plot(xs, [r["baselines"]["data"]["comm_bytes"] for r in rs], "--", color=colors(i % 20), lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("PEs in the array")
        ax.set_ylabel("bytes moved per step (solid: hypar, dashed: data)")
        ax.set_title(f"communication vs array size, batch {b}", fontsize=10)
    axes.flat[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_solve_time(rows: list[dict], path: str) -> str:
    plt = _plt()
    ok = [r for r in rows if r.get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted({r["n_pes"] for r in ok})
    cmap = plt.get_cmap("viridis")
    for i, n in enumerate(sizes):
        rs = [r for r in ok if r["n_pes"] == n]
        ax.scatter([r["n_nodes"] for r in rs], [max(r["solve"]["seconds"], 1e-3) for r in rs],
                   color=cmap(i / max(len(sizes) - 1, 1)), label=f"{n} PEs", s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size (nodes in the plan)")
    ax.set_ylabel("seconds per case (import + all solves)")
    ax.set_title("solve time vs model size", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_csv(rows: list[dict], path: str) -> str:
    """One line per (case, method) for spreadsheets and pandas; method "plan" is hypar's own plan.
    A failed case is one line with method "error"."""
    import csv
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            base = {"model": r["model"], "array": r["array"], "n_pes": r.get("n_pes"), "batch": _batch(r),
                    "objective": r.get("objective"), "space": r.get("space"), "search": r.get("search"),
                    "key": r["key"], "case_seconds": (r.get("solve") or {}).get("seconds")}
            if r.get("status") != "ok":
                w.writerow(base | {"method": "error", "solve_status": "error"})
                continue
            for m in METHOD_ORDER:
                t = r["totals"] if m == "plan" else r["baselines"].get(m)
                if t is None:
                    continue
                w.writerow(base | {"method": m, "time_s": t["time_s"], "comm_bytes": t["comm_bytes"],
                                   "energy_j": t["energy_j"], "peak_mem_bytes_per_pe": t.get("peak_mem_bytes_per_pe"),
                                   "speedup_over_data": r["speedup_over_data"].get(m),
                                   "energy_gain_over_data": r["energy_gain_over_data"].get(m),
                                   "comm_reduction_over_data": r.get("comm_reduction_over_data", {}).get(m),
                                   "solve_status": r["solve"].get("status")})
    return path


def write_report(results_dir: str, plots: bool = True) -> list[str]:
    """Write report.md, summary.csv (and the PNGs); returns the paths written."""
    rows = latest_rows(results_dir)
    written = [write_csv(rows, os.path.join(results_dir, CSV_FILE))]
    md = markdown(rows)
    ok = any(r.get("status") == "ok" for r in rows)
    if plots and ok:
        pngs = [plot_gains(rows, os.path.join(results_dir, "speedup.png")),
                plot_gains(rows, os.path.join(results_dir, "energy_gain.png"), "energy_gain_over_data",
                           "energy gain over data parallelism"),
                plot_comm_vs_pes(rows, os.path.join(results_dir, "comm_vs_pes.png")),
                plot_solve_time(rows, os.path.join(results_dir, "solve_time.png"))]
        md += "\n## Plots\n\n" + "\n".join(f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})"
                                           for p in pngs) + "\n"
        written += pngs
    path = os.path.join(results_dir, REPORT_FILE)
    with open(path, "w") as fh:
        fh.write(md)
    return [path] + written


# ----------------------------------------------------------------------------- one plan

TYPE_COLORS = {"I": "#4c72b0", "II": "#dd8452", "III": "#55a868"}


def plot_plan(plan: dict, path: str, all_nodes: bool = False) -> str:
    """One plan's layer x level map of types (like HyPar's figure), with each layer's step time
    (compute and communication) and bytes moved underneath. Non-weighted nodes only with ``all_nodes``."""
    plt = _plt()
    from matplotlib.patches import Patch
    layers = [l for l in plan.get("layers", []) if all_nodes or l.get("weighted")]
    if not layers:
        raise ReportError("the plan has no layers to draw")
    n_levels = len(layers[0]["types"])
    n = len(layers)
    width = min(max(6.0, 0.28 * n + 2.5), 40.0)
    fig, (ax, ax_t, ax_c) = plt.subplots(3, 1, figsize=(width, 2.2 + 0.35 * n_levels + 4.0), sharex=True,
                                         gridspec_kw={"height_ratios": [max(1.0, 0.35 * n_levels), 1.4, 1.0]})
    for x, l in enumerate(layers):
        for h, t in enumerate(l["types"]):
            color = TYPE_COLORS.get(t, "#cccccc")
            ax.add_patch(plt.Rectangle((x - 0.5, h - 0.5), 1, 1, facecolor=color, edgecolor="white", lw=0.8))
            if n <= 60:
                ax.text(x, h, t, ha="center", va="center", fontsize=6 if len(t) > 3 else 7,
                        color="white" if t in TYPE_COLORS else "black")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n_levels - 0.5, -0.5)
    ax.set_yticks(range(n_levels))
    ax.set_yticklabels([f"L{h} (top)" if h == 0 else f"L{h}" for h in range(n_levels)], fontsize=8)
    model = plan.get("model", {}).get("name", "model")
    arr = plan.get("array", {})
    ax.set_title(f"{model} on {arr.get('name', 'array')} ({arr.get('n_pes', '?')} PEs), batch {plan.get('batch')}, "
                 f"objective {plan.get('objective')}, space {plan.get('space')}", fontsize=10)
    handles = [Patch(color=c, label=f"{t}: {plan.get('type_names', {}).get(t, t)}") for t, c in TYPE_COLORS.items()]
    if all_nodes:
        handles.append(Patch(color="#cccccc", label="layout of a non-weighted node"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02),
              ncol=len(handles) if width >= 12 else 2, frameon=False)
    xs = range(n)
    comp = [l["costs"]["compute_s"] * 1e3 for l in layers]
    comm = [max(l["costs"]["time_s"] - l["costs"]["compute_s"], 0.0) * 1e3 for l in layers]
    ax_t.bar(xs, comp, color="#8c8c8c", label="compute")
    ax_t.bar(xs, comm, bottom=comp, color="#c44e52", label="communication")
    ax_t.set_ylabel("ms per step", fontsize=8)
    ax_t.legend(fontsize=7, loc="upper right")
    ax_c.bar(xs, [l["costs"]["comm_bytes"] / 1e6 for l in layers], color="#c44e52")
    ax_c.set_ylabel("MB moved", fontsize=8)
    ax_c.set_xticks(list(xs))
    ax_c.set_xticklabels([l["name"] for l in layers], rotation=90, fontsize=6 if n > 40 else 7)
    for a in (ax_t, ax_c):
        a.tick_params(axis="y", labelsize=7)
    t = plan.get("totals", {})
    gain = plan.get("improvement", {}).get("data", {}).get("speedup")
    fig.text(0.01, 0.005, f"step {t.get('time_s', 0) * 1e3:.4g} ms, {_fmt_bytes(t.get('comm_bytes'))} moved, "
             f"{t.get('energy_j', 0):.4g} J" + (f"; {gain:.2f}x faster than data parallelism" if gain else ""),
             fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
