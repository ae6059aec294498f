"""A plan built from an evaluation: the dictionary ``hypar partition`` writes (schema
``hypar-plan/1``).

It records the model, the array, the batch, the input dims bound beyond it (``binding``: the
``dims`` and ``input_shapes`` given, only when some were), the settings (objective, space, the
pricing convention, search, solver), for every node its module path (``module``: the model's
own name for it, e.g. ``layers.0.self_attn.o_proj``, null when the export does not say) and its
type per level (top first) with the placements of input / weight / output in S(dim)/R/P notation, its costs and (for a
weighted layer) which PEs hold which slice of its weight, the totals, and the baselines' totals
with the improvement over each. Fields ending in ``wall_s`` are timings; everything else is
byte-identical for identical inputs (floats keep 12 significant digits).
"""

from __future__ import annotations

from hypar import __version__
from hypar.cost import CostModel, Evaluation
from hypar.cost.strategies import NodeModel
from hypar.plan.document import SCHEMA_ID
from hypar.plan.slices import weight_slices
from hypar.vocab import Objective, Search

# Users' words next to the precise types (HyPar / AccPar / Megatron vocabulary).
TYPE_NAMES = {"I": "data (Type-I, batch split)", "II": "model (Type-II, input-feature split)",
              "III": "output (Type-III, output-feature split)"}

_WEIGHT_PLACEMENT = {"b": "R", "i": "S(in)", "o": "S(out)", "g": "S(group)", "h": "-", "f": "-", None: "R"}


def placements(node: NodeModel, types: tuple) -> list[dict]:
    """Per level of ``types`` (top first), the placements of input, weight (weighted layers) and
    output in DTensor-style notation: S(dim), R, or P (partial sums)."""
    out = []
    for t in types:
        s = node.strategy(t)
        out_p = "P" if "out" in s.intra else s.out_layout
        row = {"input": list(s.in_layouts) if len(s.in_layouts) != 1 else s.in_layouts[0], "output": out_p}
        if node.layer.weighted:
            row["weight"] = _WEIGHT_PLACEMENT[s.split_axis]
        out.append(row)
    return out


def _round(x: float) -> float:
    """Stable JSON floats (12 significant digits) so plans are byte-identical across runs."""
    return float(f"{x:.12g}")


def _clean(obj):
    """``obj`` as plain JSON data: floats rounded by :func:`_round`, tuples as lists, vocabulary
    members (:mod:`hypar.vocab`) as their plain strings."""
    kind = type(obj)
    if kind is float:
        return _round(obj)
    if kind is dict:
        return {str(k): _clean(v) for k, v in obj.items()}
    if kind is list or kind is tuple:
        return [_clean(v) for v in obj]
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if isinstance(obj, float):
        return _round(obj)
    if isinstance(obj, str):                 # vocabulary members (str enums) as plain strings
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _ratio(a: float, b: float) -> float | None:
    """a / b, None when b is not positive."""
    return None if b <= 0 else a / b


def improvement(base: dict, plan: dict) -> dict:
    """Ratios base/plan for time, comm and energy (> 1 means the plan is better; None where the
    plan's figure is 0)."""
    return {"speedup": _ratio(base["time_s"], plan["time_s"]),
            "comm_reduction": _ratio(base["comm_bytes"], plan["comm_bytes"]),
            "energy_gain": _ratio(base["energy_j"], plan["energy_j"])}


def build_plan(model: CostModel, ev: Evaluation, *, model_info: dict, objective: Objective, search: Search,
               solver: dict, baselines: dict[str, Evaluation], greedy: Evaluation | None = None,
               timing: dict | None = None) -> dict:
    """Assemble the plan dictionary (see the module docstring)."""
    totals = ev.totals()
    layers = []
    rows = ev.layers()
    for i, row in enumerate(rows):
        node = model.nodes[i]
        lay = node.layer
        entry = {
            "name": row["name"], "module": lay.module, "op": lay.op, "kind": lay.kind, "weighted": lay.weighted,
            "types": list(ev.assignment[i]),
            "placements": placements(node, ev.assignment[i]),
            "costs": {k: row[k] for k in ("comm_bytes", "compute_s", "time_s", "energy_j", "mem_bytes_per_pe")}
            | {"levels": row["levels"]},
        }
        ws = weight_slices(model, i, ev.assignment[i])
        if ws is not None:
            entry["weight_slices"] = ws
        layers.append(entry)
    base_totals = {k: e.totals() for k, e in baselines.items()}
    plan = {
        "schema": SCHEMA_ID,
        "hypar_version": __version__,
        "model": model_info,
        "array": model.array.to_json(),
        "batch": model.g.graph.get("batch"),
        **({"binding": model.g.graph["binding"]} if model.g.graph.get("binding") else {}),
        "objective": objective,
        "space": model.space,
        "convention": model.convention,
        "search": search,
        "solver": solver,
        "type_names": TYPE_NAMES,
        "layers": layers,
        "totals": totals,
        "baselines": base_totals,
        "improvement": {k: improvement(v, totals) for k, v in base_totals.items()},
    }
    if greedy is not None:
        plan["greedy_totals"] = greedy.totals()
        plan["gain_over_greedy"] = improvement(greedy.totals(), totals)
    if timing:
        plan["timing"] = timing
    return _clean(plan)
