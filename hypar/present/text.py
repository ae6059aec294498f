"""Plain-text summaries of plans, evaluations and sweeps (what `hypar partition` / `evaluate` /
`sweep` print)."""

from __future__ import annotations


def si(x: float, unit: str) -> str:
    """Human number with an SI prefix, e.g. si(1.5e9, 'B') -> '1.50 GB'."""
    for scale, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {p}{unit}"
    if unit == "s" and 0 < abs(x) < 1:
        for scale, p in ((1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
            if abs(x) >= scale:
                return f"{x / scale:.2f} {p}{unit}"
    return f"{x:.3g} {unit}"


def totals_line(t: dict) -> str:
    """One line of totals: step time (compute, comm), bytes moved, energy, memory per PE."""
    return (f"time {si(t['time_s'], 's')} (compute {si(t['compute_s'], 's')}, comm {si(t['comm_s'], 's')}), "
            f"comm {si(t['comm_bytes'], 'B')}, energy {si(t['energy_j'], 'J')}, "
            f"memory/PE {si(t['peak_mem_bytes_per_pe'], 'B')}")


def layer_map(layers: list[dict], only_weighted: bool = True) -> str:
    """HyPar's layer x level map: one row per layer, one column per level, plus its costs; the
    module path beside the layer name when some row has one (``module`` of a plan's layers)."""
    rows = [l for l in layers if (l.get("weighted") or l.get("kind") == "matmul_act") or not only_weighted]
    if not rows:
        rows = layers
    n_levels = len(rows[0]["types"]) if rows else 0
    w = max([len(r["name"]) for r in rows] + [5])
    wm = max([len(r.get("module") or "-") for r in rows] + [6]) if any(r.get("module") for r in rows) else 0
    module = (lambda text: f"  {text:<{wm}}") if wm else (lambda text: "")
    head = f"{'layer':<{w}}{module('module')}  {'op':<14}" + "".join(f" L{h:<4}" for h in range(n_levels)) \
        + "   comm        time"
    out = [head, "-" * len(head)]
    for r in rows:
        c = r.get("costs", r)
        out.append(f"{r['name']:<{w}}{module(r.get('module') or '-')}  {r['op']:<14}" +
                   "".join(f" {t:<5}" for t in r["types"]) +
                   f"   {si(c['comm_bytes'], 'B'):>10}  {si(c['time_s'], 's'):>10}")
    return "\n".join(out)


def _reached(solver: dict) -> str:
    """`` (reached joint-optimal)`` from a plan's solver record ("" for plans that do not say)."""
    return f" (reached {solver['reached']})" if solver.get("reached") else ""


def _ties(solver: dict) -> str:
    """``, 32 blocks tied: 1865 -> 67 problem nodes`` from a plan's solver record ("" when
    nothing was tied or the plan does not say)."""
    t = solver.get("ties")
    if not t or not t["tied"] or not t["blocks_tied"]:
        return ""
    return (f", {t['blocks_tied']} blocks tied: {t['untied_size']['problem_nodes']} -> "
            f"{t['tied_size']['problem_nodes']} problem nodes")


def plan_summary(plan: dict) -> str:
    """The readable summary of a plan: the layer x level map, totals, gains over baselines."""
    arr = plan["array"]
    fan = "x".join(str(l["fanout"]) for l in arr["levels"])
    s = plan["solver"]
    lines = [
        f"model {plan['model']['name']}  batch {plan['batch']}  array {arr['name']} ({arr['n_pes']} PEs, levels {fan})",
        f"objective {plan['objective']}  space {plan['space']}  convention {plan.get('convention', 'reference')}  "
        f"search {plan['search']}{_reached(s)}  "
        f"solver {s['backend']} ({s['status']}, {s['level_solves']} level solves{_ties(s)})",
        "",
        layer_map(plan["layers"]),
        "",
        "plan      " + totals_line(plan["totals"]),
    ]
    for name, t in plan["baselines"].items():
        imp = plan["improvement"][name]
        sp = imp["speedup"]
        cr = imp["comm_reduction"]
        lines.append(f"{name:<9} " + totals_line(t) +
                     f"   -> plan {sp:.2f}x faster" * (sp is not None) + f", {cr:.2f}x less comm" * (cr is not None))
    if s.get("joint_skipped"):
        why = s.get("joint_skipped_why") or "too many levels x layers for one exact ILP"
        lines.append(f"joint search skipped: {why}; refine's plan was kept")
    if "gain_over_greedy" in plan:
        g = plan["gain_over_greedy"]
        lines.append(f"gain over greedy: {g['speedup']:.4f}x time, {g['comm_reduction']:.4f}x comm"
                     if g["speedup"] and g["comm_reduction"] else "gain over greedy: n/a")
    return "\n".join(lines)


def evaluation_summary(rows: list[dict], totals: dict, n_levels: int, convention: str | None = None) -> str:
    """Per-layer, per-level communication and the totals (and, when given, the pricing convention)."""
    w = max([len(r["name"]) for r in rows] + [5])
    head = (f"{'layer':<{w}}  {'types':<{4 * n_levels + 2}}" + "".join(f"{'L' + str(h) + ' bytes':>12}" for h in range(n_levels))
            + f"{'compute':>11}{'time':>11}{'mem/PE':>11}")
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['name']:<{w}}  {'/'.join(r['types']):<{4 * n_levels + 2}}" +
                   "".join(f"{si(l['comm_bytes'], 'B'):>12}" for l in r["levels"]) +
                   f"{si(r['compute_s'], 's'):>11}{si(r['time_s'], 's'):>11}{si(r['mem_bytes_per_pe'], 'B'):>11}")
    out.append("")
    out.append("total: " + totals_line(totals))
    return "\n".join(([f"priced under convention {convention}"] if convention else []) + out)


def sweep_summary(total: int, computed: int, errors: int, skipped: int, seconds: float, results_file: str) -> str:
    """The line `hypar sweep` ends with: cases computed (errors), skipped, seconds, where the rows are."""
    return (f"{total} case(s): {computed} computed ({errors} error(s)), {skipped} already done, {seconds:.1f} s; "
            f"rows in {results_file}")
