"""A sweep's results as the reports read them: the newest row per case in case order, the methods
compared (in their report order, with labels), the pricing convention of each row (tables and
plots split by it when a sweep mixes conventions) and the small formats they share."""

from __future__ import annotations

import os

from hypar.errors import HyparError
from hypar.sweep import METHODS, read_rows, results_path

METHOD_ORDER = METHODS + ("plan",)
LEGACY_CONVENTION = "reference"    # how rows without a "convention" were priced
METHOD_LABEL = {"data": "data", "model": "model", "owt": "owt", "hypar": "HyPar", "accpar": "AccPar",
                "plan": "hypar (own)"}


class ReportError(HyparError):
    """No results to report, or nothing to draw."""


def latest_rows(results_dir: str) -> list[dict]:
    """One row per case key (the last one written), ordered by model (first appearance), array
    size, array, batch. ReportError when there is no results file or no complete row."""
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


def solved(rows: list[dict]) -> list[dict]:
    """The rows of solved cases."""
    return [r for r in rows if r.get("status") == "ok"]


def batch_of(r: dict):
    """The case's batch: the one used, else the one asked for, else "default"."""
    return r.get("batch") or r.get("batch_requested") or "default"


def convention_of(r: dict) -> str:
    """The row's pricing convention; a row written before conventions existed was priced as
    ``reference`` prices today."""
    return r.get("convention") or LEGACY_CONVENTION


def mixed_conventions(rows: list[dict]) -> bool:
    """True when ``rows`` were priced under more than one convention (reports then split by it)."""
    return len({convention_of(r) for r in rows}) > 1


def group_key(r: dict, by_convention: bool = False) -> tuple:
    """(PEs, array, batch as text), then the convention with ``by_convention``: the cases one table
    row or plot panel groups."""
    key = (r.get("n_pes", 0), r["array"], str(batch_of(r)))
    return key + (convention_of(r),) if by_convention else key


def fmt_bytes(b) -> str:
    """``1.5e6`` -> ``"1.5 MB"`` (3 significant digits, powers of 1000); "–" for None."""
    if b is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(b) < 1000 or unit == "TB":
            return f"{b:.3g} {unit}"
        b /= 1000.0
    return f"{b:.3g} TB"
