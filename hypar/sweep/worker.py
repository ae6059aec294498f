"""One case, as a worker runs it: partition, then the row (a failure becomes an error row).

:func:`partition_case` is the seam tests replace (``monkeypatch.setattr(hypar.sweep.worker,
"partition_case", ...)``) to slow a case down, count calls or kill the worker.
"""

from __future__ import annotations

import time
import warnings

from hypar import api
from hypar.sweep.cases import Case
from hypar.sweep.rows import error_row, row_from_plan


def partition_case(case: Case) -> dict:
    """The plan dictionary of one case (:func:`hypar.api.partition`)."""
    array = case.array.resolve()
    return api.partition(case.model_path, array, batch=case.batch, dims=dict(case.dims) or None,
                         input_shapes=dict(case.input_shapes) or None, objective=case.objective, space=case.space,
                         search_how=case.search_how, convention=case.convention, settings=case.settings)


def run_case(case: Case) -> dict:
    """Partition one case and return its row; never raises (errors become error rows, warnings
    are silenced)."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = partition_case(case)
        return row_from_plan(case, plan, time.perf_counter() - t0)
    except Exception as exc:     # a failing model must not stop the sweep
        return error_row(case, exc, time.perf_counter() - t0)
