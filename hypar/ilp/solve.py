"""Solving one level: :func:`solve_ilp` (reduce, build, run a backend in process or in a killable
child, read the answer back) and :func:`solve`, which picks the ILP, the chain DP or brute force.

The reported objective is always recomputed exactly with :meth:`LevelProblem.objective`, and
equal-cost plans are canonicalised by :func:`hypar.ilp.polish.polish`. PuLP's status and
solution status are both read (:func:`status_of`): a time-limited run may say "Optimal" with a
merely feasible plan.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time

import pulp

from hypar.errors import InfeasibleError, SolverError
from hypar.ilp.arrays import build_arrays
from hypar.ilp.backends import (available_backends, check_backend, make_highs_run,
                                  make_solver)
from hypar.ilp.exact import check_problem, solve_brute_force, solve_chain_dp
from hypar.ilp.isolate import can_fork, hard_deadline, is_short, run_forked
from hypar.ilp.model import build_model
from hypar.ilp.polish import polish
from hypar.ilp.problem import LevelProblem
from hypar.ilp.reduce import ReducedProblem, reduce_problem
from hypar.ilp.solution import LevelSolution


def status_of(lp: pulp.LpProblem) -> str:
    """'optimal', 'feasible', 'infeasible' or 'none' from PuLP's status and solution status.

    Both are read: a time-limited run may report status Optimal with a solution that is only
    integer-feasible.
    """
    if lp.status == pulp.LpStatusInfeasible or lp.sol_status == pulp.LpSolutionInfeasible:
        return "infeasible"
    if lp.status == pulp.LpStatusOptimal and lp.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if lp.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    return "none"


def _assemble(problem: LevelProblem, red: ReducedProblem, chosen: dict[int, int]
              ) -> tuple[int, ...]:
    """The full, polished assignment from the model's choices of the free nodes."""
    return tuple(polish(problem, red.expand(chosen), red.movable()))


def _no_plan(problem, incumbent, backend, time_limit_seconds, gap, start, n_vars=0, n_cons=0,
             why=None):
    """The incumbent as a "feasible" plan, or the error that says how to get one."""
    if incumbent is None:
        raise SolverError(why or (
            f"ILP backend {backend!r} found no plan within {time_limit_seconds:g} s; "
            "raise --time-limit"))
    result = tuple(incumbent)
    return LevelSolution(result, problem.objective(result), "feasible", "incumbent",
                         time.perf_counter() - start, gap, n_vars, n_cons)


def _run_backend(red: ReducedProblem, backend: str, time_limit_seconds: float, gap: float,
                 threads: int, incumbent: tuple[int, ...] | None, tmp_dir: str | None,
                 via_pulp: bool):
    """Build the reduced model and run the backend: (status as :func:`status_of` names it,
    the free nodes' choices, variables, constraints, the solver object for its error).

    HiGHS gets the model as arrays (:func:`hypar.ilp.arrays.build_arrays`) unless
    ``via_pulp``; CBC (and ``via_pulp``) go through PuLP's objects (:func:`build_model`)."""
    if backend == "highs" and not via_pulp:
        model = build_arrays(red)
        run = make_highs_run(time_limit_seconds, gap, threads)
        start = model.start(incumbent) if incumbent is not None else None
        status, col = run.run(model, start)
        chosen = model.chosen(col) if col is not None else {}
        return status, chosen, model.n_variables, model.n_constraints, run
    built = build_model(red)
    warm = incumbent is not None
    if warm:
        built.set_start(incumbent)
    solver = make_solver(backend, time_limit_seconds, gap, threads, warm, tmp_dir)
    try:
        built.lp.solve(solver)
    except pulp.PulpSolverError as exc:
        raise SolverError(f"ILP backend {backend!r} failed: {exc}; try another backend "
                          f"(installed: {available_backends()})") from exc
    status = status_of(built.lp)
    chosen = built.chosen() if status in ("optimal", "feasible") else {}
    return status, chosen, built.n_variables, built.n_constraints, solver


def _solve_reduced(problem: LevelProblem, red: ReducedProblem, backend: str,
                   time_limit_seconds: float, gap: float, threads: int,
                   incumbent: tuple[int, ...] | None, start: float,
                   tmp_dir: str | None = None, via_pulp: bool = False) -> LevelSolution:
    """Build and solve the reduced model in this process."""
    left = max(time_limit_seconds - (time.perf_counter() - start), 1e-3)
    status, chosen, n_vars, n_cons, solver = _run_backend(
        red, backend, left, gap, threads, incumbent, tmp_dir, via_pulp)
    if status == "infeasible":
        raise InfeasibleError("no assignment satisfies the memory rows; "
                              "raise the per-PE capacity")
    if status == "none":
        why = getattr(solver, "error", None)
        return _no_plan(problem, incumbent, backend, time_limit_seconds, gap, start,
                        n_vars, n_cons,
                        why=f"ILP backend {backend!r} failed ({why}); try backend='cbc'"
                        if why else None)
    result = _assemble(problem, red, chosen)
    if not problem.feasible(result):
        raise SolverError(f"ILP backend {backend!r} returned a plan that breaks a memory row "
                          "by more than the tolerance; try another backend")
    objective = problem.objective(result)
    if status != "optimal" and incumbent is not None:
        inc_obj = problem.objective(incumbent)
        if inc_obj < objective:
            result, objective, backend = tuple(incumbent), inc_obj, "incumbent"
    return LevelSolution(result, objective, status, backend, time.perf_counter() - start,
                         gap, n_vars, n_cons)


def _solve_forked(problem: LevelProblem, red: ReducedProblem, backend: str,
                  time_limit_seconds: float, gap: float, threads: int,
                  incumbent: tuple[int, ...] | None, start: float,
                  via_pulp: bool = False) -> LevelSolution:
    """:func:`_solve_reduced` in a forked child killed at the hard deadline; on a kill, the
    incumbent or the error that says to raise the time limit."""
    limit = time_limit_seconds
    tmp_dir = tempfile.mkdtemp(prefix="hypar-ilp-")
    try:
        return run_forked(
            lambda: _solve_reduced(problem, red, backend, limit, gap, threads, incumbent, start,
                                   tmp_dir, via_pulp),
            hard_deadline(start, limit))
    except TimeoutError:
        return _no_plan(problem, incumbent, backend, limit, gap, start, why=(
            f"ILP backend {backend!r} overran its time limit of {limit:g} s and was stopped; "
            "raise --time-limit"))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _check_options(backend: str, time_limit_seconds: float, gap: float,
                   threads: int | None) -> int:
    """Validate :func:`solve_ilp`'s options; returns the thread count (default 1)."""
    check_backend(backend)
    if not (time_limit_seconds > 0 and math.isfinite(time_limit_seconds)):
        raise ValueError(f"time_limit_seconds must be a positive number, got "
                         f"{time_limit_seconds!r}")
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    threads = int(threads or 1)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


def _check_incumbent(problem: LevelProblem, incumbent) -> tuple[int, ...] | None:
    """The incumbent as a tuple of ints, or None; raises ValueError when invalid or infeasible."""
    if incumbent is None:
        return None
    inc = tuple(int(c) for c in incumbent)
    if len(inc) != len(problem.choices) or any(
            not 0 <= c < len(ch) for c, ch in zip(inc, problem.choices)):
        raise ValueError("incumbent must give one valid choice index per node")
    if not problem.feasible(inc):
        raise ValueError("incumbent breaks a memory row; pass a feasible plan or none")
    return inc


def solve_ilp(problem: LevelProblem, backend: str = "highs", time_limit_seconds: float = 60.0,
              gap: float = 1e-6, threads: int | None = None,
              incumbent: tuple[int, ...] | list[int] | None = None,
              isolate: bool | None = None, eliminate: bool = True,
              via_pulp: bool = False) -> LevelSolution:
    """Solve one level exactly (to ``gap``) as an integer linear program.

    Parameters
    ----------
    problem : LevelProblem
    backend : {"highs", "cbc"}
        HiGHS runs in process (highspy); CBC is the binary bundled with PuLP.
    time_limit_seconds : float
        Wall-clock budget of the whole call (model building included); the backend gets what
        is left. When it stops early the best plan found is returned with status "feasible".
    gap : float
        Relative MIP gap at which the backend may stop and still report "optimal".
    threads : int, optional
        Backend threads; default 1 (deterministic).
    incumbent : sequence of int, optional
        A known feasible plan: the backend starts from it, and it is returned (status
        "feasible", backend "incumbent") when the backend finds nothing better in time.
    isolate : bool, optional
        Run the backend in a forked child that is killed
        :data:`hypar.ilp.isolate.HARD_STOP_MARGIN_SECONDS` after the time limit, even if the
        backend overruns its own limit (POSIX only). Default: only when the time limit is short
        for the model's size; a fork costs about 5-10 ms.
    eliminate : bool
        Before the ILP, eliminate nodes that only have one or two pair neighbours (no group
        term, no memory row) exactly, as a DP would: chains, trees and residual blocks need no
        ILP at all. False keeps every multi-choice node in the model (for cross-checks).
    via_pulp : bool
        HiGHS only: build the model as PuLP objects (the portable path CBC takes) instead of
        handing HiGHS arrays; the same model either way (for cross-checks).

    Returns
    -------
    LevelSolution

    Raises
    ------
    SolverError
        Unknown or missing backend (the message lists the installed ones), or no plan found in
        time and no incumbent.
    InfeasibleError
        No plan satisfies the memory rows.
    ValueError
        Bad options, a malformed problem, or an invalid or infeasible incumbent.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a", "b"], [("I", "II"), ("I", "II")],
    ...                  [np.array([0.0, 1.0]), np.array([3.0, 0.0])],
    ...                  edges=[(0, 1)], edge_cost=[np.array([[0.0, 2.0], [5.0, 4.0]])])
    >>> sol = solve_ilp(p)
    >>> sol.assignment, sol.objective, sol.status
    ((0, 1), 2.0, 'optimal')
    """
    start = time.perf_counter()
    threads = _check_options(backend, time_limit_seconds, gap, threads)
    check_problem(problem)
    inc = _check_incumbent(problem, incumbent)
    limit = float(time_limit_seconds)
    red = reduce_problem(problem, eliminate)
    if not red.free:
        result = _assemble(problem, red, {})
        if not problem.feasible(result):        # only the tolerance could cause this
            raise SolverError("the reduced plan breaks a memory row; retry with "
                              "eliminate=False")
        return LevelSolution(result, problem.objective(result), "optimal", backend,
                             time.perf_counter() - start, gap, 0, 0)
    if isolate is None:
        isolate = is_short(limit, red.estimated_variables())
    if not (isolate and can_fork()):
        return _solve_reduced(problem, red, backend, limit, gap, threads, inc, start,
                              via_pulp=via_pulp)
    return _solve_forked(problem, red, backend, limit, gap, threads, inc, start, via_pulp)


def solve(problem: LevelProblem, method: str = "ilp", **opts) -> LevelSolution:
    """Solve one level with the named method.

    Parameters
    ----------
    problem : LevelProblem
    method : {"ilp", "dp", "brute"}
        "ilp": :func:`solve_ilp` (options: backend, time_limit_seconds, gap, threads,
        incumbent); "dp": :func:`hypar.ilp.exact.solve_chain_dp` (chains only);
        "brute": :func:`hypar.ilp.exact.solve_brute_force` (option: max_assignments).

    Raises
    ------
    SolverError
        Unknown method, or one that cannot solve this problem.
    TypeError
        Options given to "dp", or unknown options.

    Examples
    --------
    >>> import numpy as np
    >>> p = LevelProblem(["a"], [("I", "II")], [np.array([2.0, 1.0])])
    >>> solve(p, "dp").assignment
    (1,)
    """
    if method == "ilp":
        return solve_ilp(problem, **opts)
    if method == "dp":
        if opts:
            raise TypeError(f"method 'dp' takes no options, got {sorted(opts)}")
        return solve_chain_dp(problem)
    if method == "brute":
        return solve_brute_force(problem, **opts)
    raise SolverError(f"unknown solve method {method!r}; use 'ilp', 'dp' or 'brute'")
