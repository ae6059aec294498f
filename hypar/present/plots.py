"""Plots (matplotlib, ``pip install 'hypar[plot]'``; imported only when a plot is drawn, with the
Agg backend, so no display is needed).

Of a sweep (rows as :func:`hypar.present.results.latest_rows` gives them):

- :func:`plot_gains`: gain over data parallelism per model and method, one panel per (array,
  batch) (``speedup.png`` / ``energy_gain.png``);
- :func:`plot_comm_vs_pes`: bytes moved per training step vs array size, per model (hypar's plan
  solid, data parallelism dashed), one panel per batch;
- where the rows mix pricing conventions, panels (gains) and lines (communication) are per
  convention too;
- :func:`plot_solve_time`: seconds per case vs model size (nodes in the plan), per array size.

Of one plan: :func:`plot_plan`, the layer x level map of types with each layer's costs.
"""

from __future__ import annotations

import math
from collections import defaultdict

from hypar.present.results import (METHOD_LABEL, METHOD_ORDER, ReportError, batch_of, convention_of, fmt_bytes,
                                   group_key, mixed_conventions, solved)


def _plt():
    """matplotlib's pyplot on the Agg backend; ReportError naming the install when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the plots need matplotlib: pip install 'hypar[plot]' (or use --no-plots)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: str, **layout) -> str:
    """Lay ``fig`` out tightly (``layout``: tight_layout's arguments), write it to ``path`` as a PNG
    and close it; returns ``path``."""
    fig.tight_layout(**layout)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grid(n: int, n_models: int = 1) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels (fewer columns for many models)."""
    cols = 1 if n == 1 else (2 if n <= 4 or n_models > 6 else 3)
    return math.ceil(n / cols), cols


def plot_gains(rows: list[dict], path: str, field: str = "speedup_over_data",
               ylabel: str = "speedup over data parallelism") -> str:
    """Bars of each solved case's gain ``field`` per model and method (log scale, 1x dashed), one
    panel per (array, batch[, convention when the rows mix them]); the PNG is written to ``path``
    (returned)."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter
    ok = solved(rows)
    by_conv = mixed_conventions(ok)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ok:
        groups[group_key(r, by_conv)].append(r)
    keys = sorted(groups)
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
        ax.set_title(f"{k[1]} ({k[0]} PEs), batch {k[2]}" + (f", {k[3]}" if by_conv else ""), fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(METHOD_ORDER), fontsize=8)
    return _save(plt, fig, path, rect=(0, 0, 1, 0.95))


def plot_comm_vs_pes(rows: list[dict], path: str) -> str:
    """Bytes moved per step vs array size per model (and convention, when the rows mix them; hypar's
    plan solid, data parallelism dashed), one panel per batch; the PNG is written to ``path``
    (returned)."""
    plt = _plt()
    ok = solved(rows)
    by_conv = mixed_conventions(ok)
    batches = sorted({str(batch_of(r)) for r in ok}, key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.5), squeeze=False)
    colors = plt.get_cmap("tab20")
    series = list(dict.fromkeys((r["model"], convention_of(r) if by_conv else "") for r in ok))
    for ax, b in zip(axes.flat, batches):
        for i, (name, conv) in enumerate(series):
            rs = sorted((r for r in ok if r["model"] == name and str(batch_of(r)) == b
                         and (not by_conv or convention_of(r) == conv)), key=lambda r: r["n_pes"])
            if not rs:
                continue
            xs = [r["n_pes"] for r in rs]
            label = f"{name} ({conv})" if conv else name
            ax.plot(xs, [r["totals"]["comm_bytes"] for r in rs], "o-", color=colors(i % 20), label=label, lw=1.2, ms=3)
            ax.plot(xs, [r["baselines"]["data"]["comm_bytes"] for r in rs], "--", color=colors(i % 20), lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("PEs in the array")
        ax.set_ylabel("bytes moved per step (solid: hypar, dashed: data)")
        ax.set_title(f"communication vs array size, batch {b}", fontsize=10)
    axes.flat[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(plt, fig, path)


def plot_solve_time(rows: list[dict], path: str) -> str:
    """Seconds per case vs model size (nodes in the plan), one colour per array size; the PNG is
    written to ``path`` (returned)."""
    plt = _plt()
    ok = solved(rows)
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
    return _save(plt, fig, path)


TYPE_COLORS = {"I": "#4c72b0", "II": "#dd8452", "III": "#55a868"}


def _draw_type_map(plt, ax, layers: list[dict], plan: dict, all_nodes: bool, wide: bool) -> None:
    """The layer x level map of types, with its title and legend."""
    from matplotlib.patches import Patch
    n, n_levels = len(layers), len(layers[0]["types"])
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
                 f"objective {plan.get('objective')}, space {plan.get('space')}, convention {plan.get('convention')}",
                 fontsize=10)
    handles = [Patch(color=c, label=f"{t}: {plan.get('type_names', {}).get(t, t)}") for t, c in TYPE_COLORS.items()]
    if all_nodes:
        handles.append(Patch(color="#cccccc", label="layout of a non-weighted node"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02),
              ncol=len(handles) if wide else 2, frameon=False)


def layer_label(layer: dict) -> str:
    """How a plot names a plan's layer: its module path (``layers.0.self_attn.o_proj``) when the
    plan records one, else its ONNX node name."""
    return layer.get("module") or layer["name"]


def _draw_layer_costs(ax_t, ax_c, layers: list[dict]) -> None:
    """Per layer: step time (ms, compute and communication stacked) and bytes moved (MB)."""
    xs = range(len(layers))
    comp = [l["costs"]["compute_s"] * 1e3 for l in layers]
    comm = [max(l["costs"]["time_s"] - l["costs"]["compute_s"], 0.0) * 1e3 for l in layers]
    ax_t.bar(xs, comp, color="#8c8c8c", label="compute")
    ax_t.bar(xs, comm, bottom=comp, color="#c44e52", label="communication")
    ax_t.set_ylabel("ms per step", fontsize=8)
    ax_t.legend(fontsize=7, loc="upper right")
    ax_c.bar(xs, [l["costs"]["comm_bytes"] / 1e6 for l in layers], color="#c44e52")
    ax_c.set_ylabel("MB moved", fontsize=8)
    ax_c.set_xticks(list(xs))
    ax_c.set_xticklabels([layer_label(l) for l in layers], rotation=90, fontsize=6 if len(layers) > 40 else 7)
    for a in (ax_t, ax_c):
        a.tick_params(axis="y", labelsize=7)


def plot_plan(plan: dict, path: str, all_nodes: bool = False) -> str:
    """One plan's layer x level map of types (like HyPar's figure), with each layer's step time
    (compute and communication) and bytes moved underneath, written as a PNG to ``path``
    (returned). Non-weighted nodes only with ``all_nodes``. ReportError without matplotlib or
    without a layer to draw; OSError when ``path`` cannot be written."""
    plt = _plt()
    layers = [l for l in plan.get("layers", []) if all_nodes or l.get("weighted")]
    if not layers:
        raise ReportError("the plan has no layers to draw")
    n_levels = len(layers[0]["types"])
    width = min(max(6.0, 0.28 * len(layers) + 2.5), 40.0)
    fig, (ax, ax_t, ax_c) = plt.subplots(3, 1, figsize=(width, 2.2 + 0.35 * n_levels + 4.0), sharex=True,
                                         gridspec_kw={"height_ratios": [max(1.0, 0.35 * n_levels), 1.4, 1.0]})
    _draw_type_map(plt, ax, layers, plan, all_nodes, width >= 12)
    _draw_layer_costs(ax_t, ax_c, layers)
    t = plan.get("totals", {})
    gain = plan.get("improvement", {}).get("data", {}).get("speedup")
    fig.text(0.01, 0.005, f"step {t.get('time_s', 0) * 1e3:.4g} ms, {fmt_bytes(t.get('comm_bytes'))} moved, "
             f"{t.get('energy_j', 0):.4g} J" + (f"; {gain:.2f}x faster than data parallelism" if gain else ""),
             fontsize=8)
    return _save(plt, fig, path, rect=(0, 0.02, 1, 1))
