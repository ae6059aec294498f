"""HiGHS in process (highspy) behind PuLP's solver interface: the model passed in bulk, the LP
relaxation tried first, an optional warm start; and the process-wide HiGHS state (one solve at a
time, the worker-thread pool, what a fork must do with both).

HiGHS keeps a thread pool per calling OS thread whose size is fixed at its first solve ("global
scheduler has already been initialized to use N threads"): it is tracked per thread and reset
when another size is asked for. Solves are serialised by a lock.

``highspy`` is imported where HiGHS runs, not at module level: it is optional (CBC needs none).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pulp

#: Largest distance from an integer at which an LP value counts as integral.
INTEGRAL_TOL = 1e-9

_highs_state = threading.local()
_HIGHS_LOCK = threading.RLock()


def _swallow_banner() -> None:
    """Build the process's first ``highspy.Highs`` with file descriptor 1 pointed at /dev/null:
    HiGHS writes its copyright banner to stdout from C++ once per process, on the first
    construction, whatever ``output_flag`` says later (HiGHS 1.16). Later objects print nothing."""
    global _BANNER_SWALLOWED
    if _BANNER_SWALLOWED:
        return
    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _BANNER_SWALLOWED = True


_BANNER_SWALLOWED = False


def use_highs_threads(threads: int) -> None:
    """Make this OS thread's HiGHS pool ``threads`` workers (reset only when it changes); keep
    HiGHS's one-time banner off stdout."""
    _swallow_banner()
    if getattr(_highs_state, "threads", None) != threads:
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
        _highs_state.threads = threads


def _release_workers() -> None:
    """Join this thread's HiGHS workers (before a fork: the child would wait on them)."""
    if getattr(_highs_state, "threads", None) not in (None, 1):
        import highspy

        highspy.Highs.resetGlobalScheduler(True)
        _highs_state.threads = None


@contextmanager
def quiet_for_fork() -> Iterator[None]:
    """Hold the HiGHS lock with no worker thread alive: fork inside this block only."""
    with _HIGHS_LOCK:
        _release_workers()
        yield


def reset_after_fork() -> None:
    """In a forked child: a fresh HiGHS lock (the inherited one is held by the parent)."""
    global _HIGHS_LOCK
    _HIGHS_LOCK = threading.RLock()


class HighsRun:
    """One HiGHS solve of a model given as arrays (:class:`hypar.ilp.arrays.ArrayModel`):
    the LP-first pass, the MIP and the guarded warm start.

    - LP first: the relaxation is solved (no presolve) and, when every integer column comes out
      integral, that vertex is optimal for the ILP as well -- true for every chain and tree,
      where the marginal (local) polytope is integral. Otherwise the MIP runs as usual.
    - ``start`` (a value per column) seeds the MIP. Nothing else does: the relaxation's
      solution is cleared before the MIP runs.
    - A MIP start is checked after the run (:func:`_plan_within_gap`): when the plan HiGHS
      returns costs more than its dual bound allows, the MIP runs again without the start.

    :meth:`run` returns ("optimal" | "feasible" | "infeasible" | "none", values per column or
    None): "optimal" when proven, "feasible" when stopped with a plan, "none" otherwise.

    Why the start is guarded (HiGHS 1.16): a MIP start is mapped into the presolved model,
    where presolve's dual reductions (valid for *an* optimum, not for every feasible point) may
    give it a lower objective than it has. HiGHS then takes that lower value as its primal bound
    but keeps the unreduced start as the plan it returns; when the dual bound meets the lower
    value it stops with "Optimal" and hands back the start, which is not optimal. Seen on a
    7-node level with a memory row used exactly to its cap (tests/ilp/test_mip_start.py).
    """

    def __init__(self, time_limit_seconds: float | None, gap_rel: float | None,
                 gap_abs: float | None, threads: int | None, lp_first: bool = True,
                 options: dict | None = None):
        self.time_limit = time_limit_seconds
        self.options = dict(options or {})
        if gap_rel is not None:
            self.options["mip_rel_gap"] = gap_rel
        if gap_abs is not None:
            self.options["mip_abs_gap"] = gap_abs
        self.threads = threads
        self.lp_first = lp_first
        self.h = None                                    # the highspy.Highs of the run
        self.lp_first_integral: bool | None = None       # for inspection and tests
        self.error: str | None = None                    # why HiGHS gave up, if it failed
        self.restarted_without_start = False             # the MIP start was dropped

    def run(self, model, start: np.ndarray | None = None) -> tuple[str, np.ndarray | None]:
        """Solve ``model`` (columns, rows, integer columns as arrays)."""
        # HiGHS's thread pool is process-global: one HiGHS solve at a time per process.
        with _HIGHS_LOCK:
            return self._run_locked(model, start)

    def _new_highs(self):
        """A quiet highspy.Highs with this run's options."""
        import highspy

        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        if self.threads is not None:
            h.setOptionValue("threads", self.threads)
        if self.time_limit is not None:
            h.setOptionValue("time_limit", float(self.time_limit))
        for key, value in self.options.items():
            h.setOptionValue(key, value)
        return h

    def _run_locked(self, model, start):
        """The solve itself, under the lock: load, LP first when asked, then the MIP."""
        started = time.perf_counter()
        use_highs_threads(self.threads or 1)
        h = self.h = self._new_highs()
        _load_arrays(h, model)
        ints = model.integer
        if self.lp_first and len(ints):
            found = self._solve_relaxation(h, ints)
            if found is not None:
                return found
            # HiGHS keeps the relaxation's (fractional) solution and would take it as a MIP
            # start: completed by a sub-MIP, then subject to the start defect described in the
            # class docstring. Only ``start`` may seed the MIP.
            h.clearSolver()
            h.setOptionValue("presolve", "choose")
            if self.time_limit is not None:
                left = self.time_limit - (time.perf_counter() - started)
                h.setOptionValue("time_limit", max(left, 1e-3))
        return self._solve_mip(h, ints, start)

    def _solve_relaxation(self, h, ints: np.ndarray):
        """The LP relaxation without presolve: the answer when it settles the problem (failed,
        infeasible, or integral hence optimal), else None (the MIP must run)."""
        import highspy

        model = highspy.HighsModelStatus
        h.setOptionValue("presolve", "off")
        if h.run() == highspy.HighsStatus.kError:
            self.error = h.modelStatusToString(h.getModelStatus())
            return "none", None
        if h.getModelStatus() == model.kOptimal:
            col = np.asarray(h.getSolution().col_value)
            self.lp_first_integral = bool(
                np.all(np.abs(col[ints] - np.round(col[ints])) <= INTEGRAL_TOL))
            if self.lp_first_integral:
                return "optimal", col
        elif h.getModelStatus() in (model.kInfeasible, model.kUnboundedOrInfeasible):
            return "infeasible", None
        return None

    def _solve_mip(self, h, ints: np.ndarray, start: np.ndarray | None):
        """The MIP (integrality set, warm start when given)."""
        import highspy

        model = highspy.HighsModelStatus
        if len(ints):
            h.changeColsIntegrality(len(ints), ints,
                                    np.full(len(ints), highspy.HighsVarType.kInteger.value,
                                            np.uint8))
        if start is not None:
            n = len(start)
            h.setSolution(n, np.arange(n, dtype=np.int32), np.asarray(start, float))
        started = time.perf_counter()
        if h.run() == highspy.HighsStatus.kError:
            self.error = h.modelStatusToString(h.getModelStatus())
        status = h.getModelStatus()
        has_plan = h.getInfo().primal_solution_status == 2        # kSolutionStatusFeasible
        col = np.asarray(h.getSolution().col_value) if has_plan else None
        proven = status == model.kOptimal and has_plan and len(ints) > 0
        if start is not None and proven and not _plan_within_gap(h, col):
            # The start was mishandled (class docstring): "Optimal" with a plan that costs
            # more than the dual bound. Solve again from scratch; the caller still holds the
            # start as its fallback plan.
            self.restarted_without_start = True
            left = _option(h, "time_limit") - (time.perf_counter() - started)
            h.clearSolver()
            h.setOptionValue("time_limit", max(left, 1e-3))
            if h.run() == highspy.HighsStatus.kError:
                self.error = h.modelStatusToString(h.getModelStatus())
            status = h.getModelStatus()
            has_plan = h.getInfo().primal_solution_status == 2
            col = np.asarray(h.getSolution().col_value) if has_plan else None
            proven = status == model.kOptimal and has_plan
        if proven and not _plan_within_gap(h, col):
            # Never report a plan as optimal that HiGHS's own dual bound does not prove.
            return "feasible", col
        if status == model.kOptimal:
            return "optimal", col
        if status in (model.kInfeasible, model.kUnboundedOrInfeasible):
            return "infeasible", None
        if has_plan:
            return "feasible", col
        return "none", None


#: PuLP's (status, solution status) for each answer of :meth:`HighsRun.run`.
_PULP_STATUS = {
    "optimal": (pulp.LpStatusOptimal, pulp.LpSolutionOptimal),
    "feasible": (pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible),
    "infeasible": (pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible),
    "none": (pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound),
}


class HighsSolver(pulp.HiGHS):  # type: ignore[misc,valid-type]
    """pulp.HiGHS running a :class:`HighsRun`: the PuLP model goes to highspy as whole arrays
    (PuLP's own glue adds one column at a time), LP first, an optional warm start (the values
    set on the variables with ``setInitialValue``). Status is reported like PuLP's HiGHS:
    (Optimal, Optimal) when proven; (Optimal, IntegerFeasible) when stopped with a plan;
    (NotSolved, NoSolutionFound) otherwise."""

    def __init__(self, *args, warm_start: bool = False, lp_first: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.warm_start = warm_start
        self.lp_first = lp_first
        self.lp_first_integral: bool | None = None       # for inspection and tests
        self.error: str | None = None                    # why HiGHS gave up, if it failed
        self.restarted_without_start = False             # the MIP start was dropped

    def actualSolve(self, lp, **kwargs):  # noqa: N802 - PuLP's name
        """Solve ``lp`` (a pulp.LpProblem); returns and assigns PuLP's status."""
        variables = lp.variables()
        model = _lp_arrays(lp, variables)
        start = None
        if self.warm_start:
            start = np.array([v.varValue if v.varValue is not None else 0.0
                              for v in variables], float)
        run = HighsRun(self.timeLimit, self.gapRel, self.gapAbs, self.threads, self.lp_first,
                       self.optionsDict)
        answer, col = run.run(model, start)
        lp.solverModel = run.h
        self.lp_first_integral = run.lp_first_integral
        self.error = run.error
        self.restarted_without_start = run.restarted_without_start
        return _finish(lp, variables, col, *_PULP_STATUS[answer])


#: Slack of :func:`_plan_within_gap` beyond the MIP gaps, relative to the objective (float
#: noise of a plan's continuous columns).
PLAN_BOUND_RTOL = 1e-9


def _option(h, name: str) -> float:
    """A numeric HiGHS option's value (highspy returns (status, value))."""
    value = h.getOptionValue(name)
    return float(value[1] if isinstance(value, tuple) else value)


def _plan_within_gap(h, col: np.ndarray) -> bool:
    """True when the plan ``col``, costed on the model itself, is within HiGHS's MIP gaps of
    its dual bound, as a plan reported "Optimal" must be.

    Costed here, not read from HiGHS's objective value: after a mishandled MIP start that value
    belongs to another point than ``col`` (see :class:`HighsSolver`).
    """
    model = h.getLp()
    objective = float(np.dot(np.asarray(model.col_cost_), col)) + float(model.offset_)
    bound = float(h.getInfo().mip_dual_bound)
    allowed = max(_option(h, "mip_abs_gap"), _option(h, "mip_rel_gap") * abs(objective))
    return objective - bound <= allowed + PLAN_BOUND_RTOL * max(1.0, abs(objective))


def _load_arrays(h, model) -> None:
    """Pass ``model``'s columns and rows (arrays) to the highspy model ``h``."""
    n = len(model.cost)
    h.addCols(n, model.cost, model.lower, model.upper, 0, np.zeros(n, np.int32),
              np.zeros(0, np.int32), np.zeros(0, float))
    h.addRows(len(model.row_lower), model.row_lower, model.row_upper, len(model.index),
              model.starts, model.index, model.value)


def _lp_arrays(lp, variables) -> SimpleNamespace:
    """``lp``'s columns and rows as the arrays :func:`_load_arrays` takes; numbers the
    variables and constraints (``.index``) in that order."""
    import highspy

    inf = highspy.kHighsInf
    for k, var in enumerate(variables):
        var.index = k
    cost = np.array([lp.objective.get(var, 0.0) for var in variables], dtype=float)
    lower = np.array([-inf if v.lowBound is None else v.lowBound for v in variables], float)
    upper = np.array([inf if v.upBound is None else v.upBound for v in variables], float)
    row_lo, row_up, starts, index, value = [], [], [], [], []
    for k, con in enumerate(lp._constraints.values()):
        con.index = k
        starts.append(len(index))
        for var, coef in con.items():
            if coef != 0:
                index.append(var.index)
                value.append(coef)
        lb, ub = con.getLb(), con.getUb()
        row_lo.append(-inf if lb is None else lb)
        row_up.append(inf if ub is None else ub)
    ints = np.array([v.index for v in variables if v.cat == pulp.LpInteger], np.int32)
    return SimpleNamespace(cost=cost, lower=lower, upper=upper, integer=ints,
                           row_lower=np.array(row_lo, float), row_upper=np.array(row_up, float),
                           starts=np.array(starts, np.int32), index=np.array(index, np.int32),
                           value=np.array(value, float))


def _finish(lp, variables, col, status, sol_status):
    """Set every variable's value from ``col`` (None: no values) and ``lp``'s statuses; returns
    ``status``."""
    for k, var in enumerate(variables):
        var.varValue = None if col is None else float(col[k])
    lp.assignStatus(status, sol_status)
    return status
