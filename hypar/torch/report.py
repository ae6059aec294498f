"""The collectives a torch step ran, per module and level, beside what the plan predicts (pure: no
torch; the counts come from :class:`hypar.torch.comms.LayerComms` as JSON).

Both sides are in one unit: elements received at a level, summed over every process, times the
plan's bytes per element (the plan's ``comm_bytes`` unit). The plan's side is hypar's own
simulator executing the plan (:func:`hypar.sim.simulate`: every transfer charged to a node --
intra-layer steps to their layer, edge conversions to their first consumer -- here summed per
module path). The torch side is what each process counted (:mod:`hypar.torch.comms`), with
gloo's all-gather fallback of an all-to-all both as sent (``gloo_bytes``) and as the all-to-all
it stands for (``bytes``), so ``bytes`` is what the plan's amounts are compared with.

A module path None in the plan (an op the export gave no module) is listed as "(no module)";
"Global" collects what ran outside every module (the output gathered for the loss, which hypar
does not charge).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hypar import api
from hypar.sim import simulate

__all__ = ["Row", "comparison", "format_table", "predicted"]

NO_MODULE = "(no module)"
_SHORT = {"all_gather": "ag", "reduce_scatter": "rs", "all_reduce": "ar", "all_to_all": "a2a"}


@dataclass
class Row:
    """One module at one level: the plan's predicted bytes, the torch step's bytes (all-to-all
    counted as such; ``gloo_bytes`` as sent, fallbacks included) and its collectives by
    direction ("fwd ag x2, bwd a2a(ag) x1")."""

    module: str
    level: str
    plan_bytes: float = 0.0
    bytes: float = 0.0
    gloo_bytes: float = 0.0
    collectives: dict = field(default_factory=lambda: defaultdict(int))

    @property
    def matches(self) -> bool:
        """Do the torch step's bytes equal the plan's (up to float rounding)."""
        return abs(self.bytes - self.plan_bytes) <= 1e-9 * max(1.0, self.plan_bytes)

    def collectives_text(self, processes: int = 1) -> str:
        """The collectives counted, per process (the counts summed over ``processes`` divided by
        it), e.g. "fwd rs x1 ag x1; bwd a2a(ag) x1"."""
        parts: dict[str, list[str]] = defaultdict(list)
        for (direction, op), n in sorted(self.collectives.items()):
            parts["fwd" if direction == "forward" else "bwd"].append(f"{op} x{n / processes:g}")
        return "; ".join(f"{d} {' '.join(ops)}" for d, ops in sorted(parts.items(), key=lambda kv: kv[0] != "fwd"))


def predicted(plan: Mapping, model_path: str | os.PathLike) -> dict[tuple[str, str], float]:
    """(module path, level) -> bytes the plan's execution receives there (hypar's simulator on
    the plan's types, batch and binding; summed over PEs, times the plan's bytes per element)."""
    model, assignment = api.plan_assignment(os.fspath(model_path), dict(plan))
    res = simulate(model, assignment)
    modules = {row["name"]: row.get("module") or NO_MODULE for row in plan["layers"]}
    out: dict[tuple[str, str], float] = defaultdict(float)
    for t in res.transfers:
        out[(modules.get(model.names[t.node], NO_MODULE), str(t.level))] += t.elements * res.dtype_bytes
    return dict(out)


def comparison(plan: Mapping, model_path: str | os.PathLike, collectives: Iterable[Mapping]) -> list[Row]:
    """One :class:`Row` per (module, level) the plan or the torch step moves data at, in the
    plan's module order (then the rest by name); ``collectives``: every process's
    :meth:`hypar.torch.comms.Collective.to_json` dicts."""
    dtype_bytes = plan["array"].get("dtype_bytes", 2)
    rows: dict[tuple[str, str], Row] = {}

    def row(module: str, level: str) -> Row:
        return rows.setdefault((module, level), Row(module, level))

    for (module, level), b in predicted(plan, model_path).items():
        row(module, level).plan_bytes += b
    for c in collectives:
        r = row(c["module"], "+".join(str(d) for d in c["mesh_dims"]))
        r.bytes += c["a2a_elements"] * dtype_bytes
        r.gloo_bytes += c["elements"] * dtype_bytes
        fallback = c["op"] == "all_to_all" and c["elements"] != c["a2a_elements"]
        r.collectives[(c["direction"], _SHORT[c["op"]] + ("(ag)" if fallback else ""))] += 1
    order = {m: i for i, m in enumerate(dict.fromkeys(row.get("module") or NO_MODULE for row in plan["layers"]))}
    return sorted(rows.values(), key=lambda r: (order.get(r.module, len(order)), r.module, r.level))


def totals(rows: Iterable[Row], skip: tuple[str, ...] = ("Global",)) -> dict[str, tuple[float, float, float]]:
    """Level -> (plan bytes, torch bytes, torch bytes on gloo) summed over the rows, leaving out
    modules in ``skip`` (the loss's gather)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        if r.module not in skip:
            t = out[r.level]
            t[0], t[1], t[2] = t[0] + r.plan_bytes, t[1] + r.bytes, t[2] + r.gloo_bytes
    return {level: tuple(v) for level, v in sorted(out.items())}


def format_table(rows: list[Row], processes: int) -> str:
    """The rows as a text table, then the totals per level (without "Global"), for people."""
    head = ("module", "level", "plan B", "torch B", "gloo B", "", "collectives per process (torch)")
    body = [(r.module, r.level, f"{r.plan_bytes:,.0f}", f"{r.bytes:,.0f}", f"{r.gloo_bytes:,.0f}",
             "=" if r.matches else ("loss" if r.module == "Global" else "!="), r.collectives_text(processes))
            for r in rows]
    for level, (p, t, g) in totals(rows).items():
        body.append(("total", level, f"{p:,.0f}", f"{t:,.0f}", f"{g:,.0f}", "=" if abs(p - t) <= 1e-9 * max(1, p)
                     else "!=", ""))
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.ljust(w) for x, w in zip(b, widths)).rstrip() for b in body]
    lines.append(f"bytes: elements received at the level, summed over {processes} processes, x the plan's bytes "
                 "per element; torch B counts gloo's all-gather fallback of an all-to-all as the all-to-all, "
                 "gloo B as sent; Global: the output gathered for the loss (not in the plan)")
    return "\n".join(lines)
