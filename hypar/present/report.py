"""Reports of a sweep (see :mod:`hypar.sweep`): a Markdown summary, a CSV and the plots.

``write_report(RESULTS_DIR)`` reads ``results.jsonl`` (the newest row per case wins), writes
``report.md`` and ``summary.csv`` (one line per case and method) and, with matplotlib installed
(``pip install 'hypar[plot]'``), the PNGs of :mod:`hypar.present.plots`: ``speedup.png``,
``energy_gain.png``, ``comm_vs_pes.png`` and ``solve_time.png``.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict

from hypar.present.plots import plot_comm_vs_pes, plot_gains, plot_solve_time
from hypar.present.results import (METHOD_LABEL, METHOD_ORDER, ReportError, batch_of, convention_of, fmt_bytes,
                                   group_key, latest_rows, mixed_conventions, solved)
from hypar.sweep import METHODS

__all__ = ["CSV_FIELDS", "CSV_FILE", "REPORT_FILE", "ReportError", "geomean", "latest_rows", "markdown",
           "write_csv", "write_report"]

REPORT_FILE = "report.md"
CSV_FILE = "summary.csv"
CSV_FIELDS = ("model", "array", "n_pes", "batch", "objective", "space", "search", "convention", "method", "time_s",
              "comm_bytes",
              "energy_j", "peak_mem_bytes_per_pe", "speedup_over_data", "energy_gain_over_data",
              "comm_reduction_over_data", "solve_status", "case_seconds", "key")


def _x(v) -> str:
    """A gain as ``"1.23×"``; "–" for None."""
    return "–" if v is None else f"{v:.2f}×"


def geomean(values) -> float | None:
    """Geometric mean of the positive values (None and non-positive ones left out); None if none."""
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _conv_head(by_conv: bool) -> tuple[str, str]:
    """The convention column's header and rule cells ("" unless ``by_conv``)."""
    return (" convention |", "---|") if by_conv else ("", "")


def _conv_cell(r: dict, by_conv: bool) -> str:
    """The row's convention cell ("" unless ``by_conv``)."""
    return f" {convention_of(r)} |" if by_conv else ""


def _intro(rows: list[dict], ok: list[dict], errors: list[dict], title: str) -> list[str]:
    """Title, counts, what the gains mean and the methods."""
    objectives = sorted({r.get("objective") for r in rows})
    spaces = sorted({r.get("space") for r in rows})
    conventions = sorted({convention_of(r) for r in rows})
    split = " (the tables split by convention)" if len(conventions) > 1 else ""
    return [f"# {title}", "",
            f"{len(rows)} case(s): {len(ok)} solved, {len(errors)} error(s). hypar's own plan: objective "
            f"{', '.join(map(str, objectives))}, space {', '.join(map(str, spaces))}, every cost priced under "
            f"convention {', '.join(conventions)}{split}. Gains are over data "
            "parallelism (type I everywhere) in hypar's cost model: speedup = data's step time / the "
            "method's; energy gain = data's energy / the method's; > 1 is better than data.", "",
            "Methods: **data** (type I everywhere), **model** (type II everywhere), **owt** (conv I, FC II), "
            "**HyPar** (types I/II, greedy top-down, 2019), **AccPar** (I/II/III greedy, 2020), "
            "**hypar (own)** (this tool's plan).", ""]


def _geomean_table(ok: list[dict], by_conv: bool) -> list[str]:
    """Per (array, batch[, convention with ``by_conv``]): the geometric means over models of every
    method's speedup and energy gain."""
    head, rule = _conv_head(by_conv)
    out = ["## Geometric means over models", "",
           f"| array | PEs | batch |{head} cases | " + " | ".join(
               f"{METHOD_LABEL[m]} speedup / energy" for m in METHOD_ORDER) + " |",
           f"|---|---:|---:|{rule}---:|" + "---:|" * len(METHOD_ORDER)]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ok:
        groups[group_key(r, by_conv)].append(r)
    for key, rs in sorted(groups.items(), key=lambda kv: kv[0]):
        n, arr, b = key[:3]
        cells = [f"{_x(geomean(r['speedup_over_data'].get(m) for r in rs))} / "
                 f"{_x(geomean(r['energy_gain_over_data'].get(m) for r in rs))}" for m in METHOD_ORDER]
        out.append(f"| {arr} | {n} | {b} |{_conv_cell(rs[0], by_conv)} {len(rs)} | " + " | ".join(cells) + " |")
    return out + [""]


def _gain_table(ok: list[dict], what: str, field: str, by_conv: bool) -> list[str]:
    """One line per case: every method's gain ``field`` (bold: hypar's plan and the best baseline),
    the best baseline and hypar's plan over it (and the convention with ``by_conv``)."""
    head, rule = _conv_head(by_conv)
    out = [f"## {what} per case", "",
           f"| model | array | PEs | batch |{head} " + " | ".join(METHOD_LABEL[m] for m in METHOD_ORDER)
           + " | best baseline | own vs best |",
           f"|---|---|---:|---:|{rule}" + "---:|" * len(METHOD_ORDER) + "---|---:|"]
    for r in ok:
        g = r[field]
        base = {m: g.get(m) for m in METHODS if g.get(m) is not None}
        best = max(base, key=base.get) if base else None
        own_vs = (g.get("plan") / base[best]) if best and base[best] and g.get("plan") else None
        cells = [f"**{_x(g.get(m))}**" if m == "plan" or best == m else _x(g.get(m)) for m in METHOD_ORDER]
        out.append(f"| {r['model']} | {r['array']} | {r.get('n_pes')} | {batch_of(r)} |{_conv_cell(r, by_conv)} "
                   + " | ".join(cells)
                   + f" | {METHOD_LABEL.get(best, '–')} | {_x(own_vs)} |")
    return out + [""]


def _totals_table(ok: list[dict], by_conv: bool) -> list[str]:
    """One line per case: the plan's totals, data's bytes, the model's size and the solve (and the
    convention with ``by_conv``)."""
    head, rule = _conv_head(by_conv)
    out = ["## Plan totals and solve", "",
           f"| model | array | batch |{head} step time | comm | energy | peak mem/PE | data comm | nodes | "
           "weighted | solve status | solve s | case s |",
           f"|---|---|---:|{rule}---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in ok:
        t, s = r["totals"], r.get("solve", {})
        d = r.get("baselines", {}).get("data", {})
        out.append(f"| {r['model']} | {r['array']} | {batch_of(r)} |{_conv_cell(r, by_conv)} "
                   f"{t['time_s'] * 1e3:.4g} ms | "
                   f"{fmt_bytes(t['comm_bytes'])} | {t['energy_j']:.4g} J | "
                   f"{fmt_bytes(t.get('peak_mem_bytes_per_pe'))} | {fmt_bytes(d.get('comm_bytes'))} | "
                   f"{r.get('n_nodes')} | {r.get('n_weighted')} | {s.get('status')} | "
                   f"{(s.get('solve_wall_s') or 0):.3f} | {(s.get('seconds') or 0):.2f} |")
    return out + [""]


def _errors_table(errors: list[dict]) -> list[str]:
    """One line per failed case with its error."""
    out = ["## Errors", "", "| model | array | batch | error |", "|---|---|---:|---|"]
    for r in errors:
        e = r.get("error", {})
        msg = f"{e.get('type')}: {e.get('message')}".replace("|", "\\|")
        out.append(f"| {r['model']} | {r['array']} | {batch_of(r)} | {msg} |")
    return out + [""]


def markdown(rows: list[dict], title: str = "hypar sweep report") -> str:
    """The Markdown report of ``rows``: geometric means, per-case speedup and energy gain, plan
    totals and solves, then the errors; every table gets a convention column (and the means one
    group per convention) when the rows mix conventions."""
    ok = solved(rows)
    errors = [r for r in rows if r.get("status") != "ok"]
    by_conv = mixed_conventions(rows)
    out = _intro(rows, ok, errors, title)
    if ok:
        out += _geomean_table(ok, by_conv)
        out += _gain_table(ok, "Speedup over data parallelism", "speedup_over_data", by_conv)
        out += _gain_table(ok, "Energy gain over data parallelism", "energy_gain_over_data", by_conv)
        out += _totals_table(ok, by_conv)
    if errors:
        out += _errors_table(errors)
    return "\n".join(out)


def _csv_lines(r: dict) -> list[dict]:
    """The CSV lines of one row: one per method, or one "error" line for a failed case."""
    base = {"model": r["model"], "array": r["array"], "n_pes": r.get("n_pes"), "batch": batch_of(r),
            "objective": r.get("objective"), "space": r.get("space"), "search": r.get("search"),
            "convention": convention_of(r),
            "key": r["key"], "case_seconds": (r.get("solve") or {}).get("seconds")}
    if r.get("status") != "ok":
        return [base | {"method": "error", "solve_status": "error"}]
    lines = []
    for m in METHOD_ORDER:
        t = r["totals"] if m == "plan" else r["baselines"].get(m)
        if t is not None:
            lines.append(base | {"method": m, "time_s": t["time_s"], "comm_bytes": t["comm_bytes"],
                                 "energy_j": t["energy_j"], "peak_mem_bytes_per_pe": t.get("peak_mem_bytes_per_pe"),
                                 "speedup_over_data": r["speedup_over_data"].get(m),
                                 "energy_gain_over_data": r["energy_gain_over_data"].get(m),
                                 "comm_reduction_over_data": r.get("comm_reduction_over_data", {}).get(m),
                                 "solve_status": r["solve"].get("status")})
    return lines


def write_csv(rows: list[dict], path: str) -> str:
    """One line per (case, method) for spreadsheets and pandas; method "plan" is hypar's own plan.
    A failed case is one line with method "error". Returns ``path``."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerows(_csv_lines(r))
    return path


def _write_plots(rows: list[dict], results_dir: str) -> list[str]:
    """The four PNGs of a sweep in ``results_dir``; their paths."""
    return [plot_gains(rows, os.path.join(results_dir, "speedup.png")),
            plot_gains(rows, os.path.join(results_dir, "energy_gain.png"), "energy_gain_over_data",
                       "energy gain over data parallelism"),
            plot_comm_vs_pes(rows, os.path.join(results_dir, "comm_vs_pes.png")),
            plot_solve_time(rows, os.path.join(results_dir, "solve_time.png"))]


def write_report(results_dir: str, plots: bool = True) -> list[str]:
    """Write report.md, summary.csv (and, with ``plots`` and a solved case, the PNGs) into
    ``results_dir``; returns the paths written, report.md first. ReportError without results, or
    without matplotlib when plots are asked for."""
    rows = latest_rows(results_dir)
    written = [write_csv(rows, os.path.join(results_dir, CSV_FILE))]
    md = markdown(rows)
    if plots and solved(rows):
        pngs = _write_plots(rows, results_dir)
        md += "\n## Plots\n\n" + "\n".join(f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})"
                                           for p in pngs) + "\n"
        written += pngs
    path = os.path.join(results_dir, REPORT_FILE)
    with open(path, "w") as fh:
        fh.write(md)
    return [path] + written
