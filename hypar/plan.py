"""The JSON mapping plan: building it from an evaluation, validating it, reading it back.

A plan (schema ``hypar-plan/1``, JSON Schema in ``hypar/plan_schema.json``) records the model,
the array, the settings, for every node its type per level (top first) with the placements of
input / weight / output in S(dim)/R/P notation and its costs, the totals, and the baselines'
totals with the improvement over each. Fields ending in ``wall_s`` are timings; everything else
is byte-identical for identical inputs.
"""

from __future__ import annotations

import json
import os
from importlib import resources

from hypar import __version__
from hypar import graph as G
from hypar.array import PEArray, array_from_dict, split_counts
from hypar.cost import CostModel, Evaluation
from hypar.errors import PlanError
from hypar.cost.strategies import NodeModel

SCHEMA_ID = "hypar-plan/1"

# Users' words next to the precise types (HyPar / AccPar / Megatron vocabulary).
TYPE_NAMES = {"I": "data (Type-I, batch split)", "II": "model (Type-II, input-feature split)",
              "III": "output (Type-III, output-feature split)"}

_WEIGHT_PLACEMENT = {"b": "R", "i": "S(in)", "o": "S(out)", "g": "S(group)", "h": "-", "f": "-", None: "R"}


def placements(node: NodeModel, types: tuple) -> list[dict]:
    """Per level, the placements of input, weight and output (DTensor-style notation)."""
    out = []
    for t in types:
        s = node.strategy(t)
        out_p = "P" if "out" in s.intra else s.out_layout
        row = {"input": list(s.in_layouts) if len(s.in_layouts) != 1 else s.in_layouts[0], "output": out_p}
        if node.layer.weighted:
            row["weight"] = _WEIGHT_PLACEMENT[s.split_axis]
        out.append(row)
    return out


def weight_slices(model: CostModel, i: int, types: tuple, max_pes: int = 64) -> list[dict] | None:
    """Which PEs hold which [start, stop) rows (Di) and columns (Do) of the weight; None above max_pes."""
    node = model.nodes[i]
    arr = model.array
    if not node.layer.weighted or arr.n_pes > max_pes or not ({"i", "g"} & set(node.axes)):
        return None
    lay = node.layer
    if "g" in node.axes:
        # Grouped conv: a group split takes whole groups, i.e. matching in and out channel ranges.
        g_axes = node.size("g")
        per_in, per_out = lay.d_in // g_axes, lay.d_out // g_axes
        rows_g: list[tuple[int, tuple[int, int]]] = []

        def walk_g(h: int, start_pe: int, n_pes: int, key, rg: tuple[int, int]) -> None:
            if h == arr.n_levels:
                rows_g.append((start_pe, rg))
                return
            gc = arr.classes[h][key]
            split = node.strategy(types[h]).split_axis == "g"
            parts = split_counts(rg[1] - rg[0], [c[1] for c in gc.children]) if split else None
            pos, sub = rg[0], n_pes // len(gc.children)
            for j, (ck, _f, _n) in enumerate(gc.children):
                seg = rg
                if parts is not None:
                    seg = (pos, pos + parts[j])
                    pos += parts[j]
                walk_g(h + 1, start_pe + j * sub, sub, ck, seg)

        walk_g(0, 0, arr.n_pes, arr.root_key, (0, g_axes))
        rows = [(pe, (a * per_in, b * per_in), (a * per_out, b * per_out)) for pe, (a, b) in rows_g]
        return _merge_slices(rows)
    rows = []

    def walk(h: int, start_pe: int, n_pes: int, key, ri: tuple[int, int], ro: tuple[int, int]) -> None:
        if h == arr.n_levels:
            rows.append((start_pe, ri, ro))
            return
        gc = arr.classes[h][key]
        axis = node.strategy(types[h]).split_axis
        fr = [c[1] for c in gc.children]
        sub = n_pes // len(fr)
        rng = ri if axis == "i" else ro if axis == "o" else None
        parts = split_counts(rng[1] - rng[0], fr) if rng else None
        pos = rng[0] if rng else 0
        for j, (ck, _f, _n) in enumerate(gc.children):
            nri, nro = ri, ro
            if parts is not None:
                seg = (pos, pos + parts[j])
                pos += parts[j]
                nri, nro = (seg, ro) if axis == "i" else (ri, seg)
            walk(h + 1, start_pe + j * sub, sub, ck, nri, nro)

    walk(0, 0, arr.n_pes, arr.root_key, (0, node.size("i")), (0, node.size("o")))
    return _merge_slices(rows)


def _merge_slices(rows: list[tuple[int, tuple[int, int], tuple[int, int]]]) -> list[dict]:
    """Consecutive PEs holding the same (in, out) slice become one {"pes": [first, stop), ...} row."""
    merged: list[dict] = []
    for pe, ri, ro in rows:
        if merged and merged[-1]["in"] == list(ri) and merged[-1]["out"] == list(ro) and merged[-1]["pes"][1] == pe:
            merged[-1]["pes"][1] = pe + 1
        else:
            merged.append({"pes": [pe, pe + 1], "in": list(ri), "out": list(ro)})
    return merged


def _round(x: float) -> float:
    """Stable JSON floats (12 significant digits) so plans are byte-identical across runs."""
    return float(f"{x:.12g}")


def _clean(obj):
    if isinstance(obj, float):
        return _round(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def improvement(base: dict, plan: dict) -> dict:
    """Ratios base/plan for time, comm and energy (> 1 means the plan is better)."""
    def ratio(a: float, b: float) -> float | None:
        return None if b <= 0 else a / b
    return {"speedup": ratio(base["time_s"], plan["time_s"]),
            "comm_reduction": ratio(base["comm_bytes"], plan["comm_bytes"]),
            "energy_gain": ratio(base["energy_j"], plan["energy_j"])}


def build_plan(model: CostModel, ev: Evaluation, *, model_info: dict, objective: str, search: str,
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
            "name": row["name"], "op": lay.op, "kind": lay.kind, "weighted": lay.weighted,
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
        "objective": objective,
        "space": model.space,
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


def schema() -> dict:
    return json.loads(resources.files("hypar").joinpath("plan_schema.json").read_text())


def validate(plan: dict) -> None:
    """Raise PlanError when ``plan`` breaks the JSON Schema."""
    import jsonschema

    try:
        jsonschema.validate(plan, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise PlanError(f"plan does not match schema {SCHEMA_ID} at {where}: {exc.message}") from None


def read_plan(path: str | os.PathLike) -> dict:
    """Load a plan file (full or minimal ``{"assignment": {...}}``); clear errors on bad JSON."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PlanError(f"no such plan file {path!r}; write one with `hypar partition MODEL -o {path}`")
    try:
        with open(path) as f:
            plan = json.load(f)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix or regenerate it") from None
    if not isinstance(plan, dict) or not ("layers" in plan or "assignment" in plan):
        raise PlanError(f"{path} is neither a hypar plan (no 'layers') nor a minimal plan "
                        "({\"assignment\": {\"<layer>\": [\"I\", ...]}})")
    if "layers" in plan:
        validate(plan)
    return plan


def plan_array(plan: dict) -> PEArray | None:
    """The array recorded in a full plan (None for a minimal plan)."""
    d = plan.get("array")
    if not d:
        return None
    d = {k: v for k, v in d.items() if k != "n_pes"}
    return array_from_dict(d, d.get("name", "plan-array"))


def plan_types(plan: dict) -> dict[str, list]:
    """Layer name -> types per level, from either plan form."""
    if "layers" in plan:
        return {l["name"]: l["types"] for l in plan["layers"]}
    a = plan["assignment"]
    if not isinstance(a, dict):
        raise PlanError("'assignment' must map layer names to lists of types, e.g. {\"conv1\": [\"I\", \"II\"]}")
    return a


def assignment_from_types(model: CostModel, types: dict[str, list]) -> list[tuple | None]:
    """Per-node types from a name->types map; decision layers left out default to I at every level,
    non-weighted nodes left out are None (to be completed). Errors name the layer."""
    H = model.n_levels
    unknown = sorted(set(types) - set(model.names))
    if unknown:
        hint = ""
        g = model.g
        if unknown[0] in g and not G.layer(g, unknown[0]).decision:
            hint = " (it is a non-weighted node; only space 'full' assigns those)"
        raise PlanError(f"plan names layer {unknown[0]!r} that the model does not have in space "
                        f"{model.space!r}{hint}; see `hypar inspect MODEL` for layer names")
    out: list[tuple | None] = []
    for i, name in enumerate(model.names):
        node = model.nodes[i]
        if name not in types:
            out.append(("I",) * H if node.layer.decision else None)
            continue
        t = types[name]
        if not isinstance(t, list) or len(t) != H:
            raise PlanError(f"layer {name!r}: plan gives {t!r} but the array has {H} level(s); "
                            f"give one type per level, top first, e.g. {['I'] * H}")
        for x in t:
            if x not in model.labels(i):
                raise PlanError(f"layer {name!r}: unknown type {x!r}; choose from {list(model.labels(i))}")
        out.append(tuple(t))
    return out


def dumps(plan: dict) -> str:
    return json.dumps(plan, indent=1, sort_keys=False) + "\n"
