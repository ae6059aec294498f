"""The rows of ``results.jsonl``: one JSON object per case, a solved case's totals and gains or a
failed case's error (schema ``hypar-sweep-row/1``)."""

from __future__ import annotations

import traceback

from hypar import __version__
from hypar.errors import HyparError
from hypar.sweep.cases import Case
from hypar.vocab import Baseline

ROW_SCHEMA = "hypar-sweep-row/1"
METHODS = Baseline.values()   # the baselines a row compares; "plan" is hypar's own plan


def _base_row(case: Case) -> dict:
    """The fields every row has: what the case is."""
    return {"schema": ROW_SCHEMA, "hypar_version": __version__, "key": case.key, "index": case.index,
            "model": case.model_name, "model_path": case.model_path, "model_sha12": case.model_digest,
            "array": case.array.label, "array_source": case.array.value if case.array.kind == "file"
            else f"--pes {case.array.value}", "n_pes": case.array.n_pes,
            "batch_requested": case.batch, "objective": str(case.objective), "space": str(case.space),
            "search": str(case.search_how), "convention": str(case.convention),
            **({"dims": dict(case.dims)} if case.dims else {}),
            **({"input_shapes": {k: list(v) for k, v in case.input_shapes}} if case.input_shapes else {})}


def _ratio(a, b):
    """a / b to 9 decimals; None when either is missing or b is 0."""
    return None if not b or a is None else round(a / b, 9)


def _gains_over(reference: dict | None, methods: dict[str, dict], field: str) -> dict:
    """Per method, ``reference[field] / totals[field]`` ({} without a reference)."""
    if not reference:
        return {}
    return {k: _ratio(reference[field], v[field]) for k, v in methods.items()}


def row_from_plan(case: Case, plan: dict, seconds: float) -> dict:
    """The JSONL row of a finished case: totals, every baseline's totals and gains over data;
    ``seconds`` is the case's wall time."""
    base = dict(plan["baselines"])
    totals = plan["totals"]
    methods = {**{k: base[k] for k in METHODS if k in base}, "plan": totals}
    data = base.get("data")
    layers = plan.get("layers", [])
    solver = plan.get("solver", {})
    return _base_row(case) | {
        "status": "ok",
        "batch": plan.get("batch"),
        "n_levels": len(plan.get("array", {}).get("levels", [])),
        "n_nodes": len(layers),
        "n_weighted": sum(1 for l in layers if l.get("weighted")),
        "totals": totals,
        "baselines": {k: base[k] for k in METHODS if k in base},
        "speedup_over_data": _gains_over(data, methods, "time_s"),
        "energy_gain_over_data": _gains_over(data, methods, "energy_j"),
        "comm_reduction_over_data": _gains_over(data, methods, "comm_bytes"),
        "gain_over_greedy": plan.get("gain_over_greedy"),
        "solve": {"status": solver.get("status"), "reached": solver.get("reached"),
                  "solve_wall_s": solver.get("solve_wall_s"),
                  "level_solves": solver.get("level_solves"),
                  "n_variables_max": solver.get("n_variables_max"),
                  "import_wall_s": plan.get("timing", {}).get("import_wall_s"),
                  "seconds": round(seconds, 6)},
    }


def error_row(case: Case, exc: BaseException | str, seconds: float = 0.0) -> dict:
    """The row of a failed case: the exception's type and one-line message (with the traceback's
    last 4000 characters for an unexpected, non-hypar error), or a string for a worker that died."""
    if isinstance(exc, BaseException):
        msg = " ".join(str(exc).split()) or type(exc).__name__
        err = {"type": type(exc).__name__, "message": msg}
        if not isinstance(exc, HyparError):
            err["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    else:
        err = {"type": "WorkerDied", "message": str(exc)}
    return _base_row(case) | {"status": "error", "error": err, "solve": {"seconds": round(seconds, 6)}}


def case_order_key(row: dict) -> tuple:
    """Sort rows into case order for reports (model order is the rows' own index order)."""
    return (row.get("index", 0), row.get("key", ""))
