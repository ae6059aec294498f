"""Batch sweeps: partition many (model, array, batch) cases and append one JSONL row per case.

Durability: every finished case is appended to ``RESULTS_DIR/results.jsonl`` as one line, flushed
and fsynced before the next one is awaited, so killing a sweep loses at most the cases still
running. A rerun reads the file, skips every case whose ``key`` is already there and computes only
the rest (a torn last line from a kill is cut off first). A case that raises is recorded as an
error row (``status: "error"``) and the sweep goes on; a worker process that dies is retried alone
once and then recorded as an error too.

Executors: local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`, ``jobs``) or
a Dask distributed cluster (``executor="dask"``, ``scheduler=ADDRESS``; dask is imported only
then). Workers must see the model files at the same paths (paths are made absolute).

No click and no matplotlib here; progress goes to an optional callback. Modules, by job:
:mod:`~hypar.sweep.cases` (what to compute), :mod:`~hypar.sweep.worker` (one case),
:mod:`~hypar.sweep.rows` (its JSONL row), :mod:`~hypar.sweep.results` (the results file),
:mod:`~hypar.sweep.executors` (where cases run), :mod:`~hypar.sweep.progress` (the progress
line), :mod:`~hypar.sweep.driver` (the sweep from start to end).
"""

from hypar.sweep.cases import ArraySpec, Case, SweepError, array_spec, make_cases, zoo_dir, zoo_models
from hypar.sweep.driver import SweepSummary, run_sweep, sweep
from hypar.sweep.results import LOCK_FILE, RESULTS_FILE, ResultsWriter, read_rows, results_path
from hypar.sweep.rows import METHODS, ROW_SCHEMA, case_order_key, error_row, row_from_plan
from hypar.sweep.worker import run_case

__all__ = ["ArraySpec", "Case", "LOCK_FILE", "METHODS", "RESULTS_FILE", "ROW_SCHEMA", "ResultsWriter", "SweepError",
           "SweepSummary", "array_spec", "case_order_key", "error_row", "make_cases", "read_rows", "results_path",
           "row_from_plan", "run_case", "run_sweep", "sweep", "zoo_dir", "zoo_models"]
