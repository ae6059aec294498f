"""The ILP backends by hypar name: which are installed, the error that says how to get one, and
a configured PuLP solver for a run (HiGHS in process, CBC as PuLP's bundled binary)."""

from __future__ import annotations

import functools
import warnings

import pulp

from hypar.errors import SolverError
from hypar.ilp.highs import HighsRun, HighsSolver

#: hypar backend name -> PuLP solver name.
BACKENDS = {"highs": "HiGHS", "cbc": "PULP_CBC_CMD"}

#: HiGHS: try the LP relaxation first (exact when it comes out integral; see HighsSolver).
LP_FIRST = True


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[str, ...]:
    """PuLP's names of the solvers available here (asked once per process)."""
    return tuple(pulp.listSolvers(onlyAvailable=True))


def available_backends() -> list[str]:
    """Names of the ILP backends that can run here, in preference order.

    Examples
    --------
    >>> "highs" in available_backends()
    True
    """
    found = set(_installed())
    names = []
    if "HiGHS" in found:
        names.append("highs")
    if "PULP_CBC_CMD" in found or "COIN_CMD" in found:
        names.append("cbc")
    return names


def _backend_error(backend: str, why: str) -> SolverError:
    """The error for an unusable backend: hypar's names, PuLP's installed ones, how to install."""
    installed = list(_installed())
    return SolverError(
        f"ILP backend {backend!r} {why}; hypar backends are {sorted(BACKENDS)}, "
        f"installed PuLP solvers: {installed or 'none'}; "
        "install HiGHS with `pip install highspy` (CBC comes with `pip install pulp`)")


def check_backend(backend: str) -> None:
    """Raise :class:`SolverError` unless ``backend`` is a known and available backend name."""
    if backend not in BACKENDS:
        raise _backend_error(backend, "is unknown")
    if backend not in available_backends():
        raise _backend_error(backend, "is not available")


#: HiGHS's options beyond time, gap and threads (both model paths).
HIGHS_OPTIONS = {"random_seed": 0}
#: HiGHS's absolute MIP gap (objective units of the scaled model).
HIGHS_ABS_GAP = 1e-9


def make_highs_run(time_limit_seconds: float, gap: float, threads: int) -> HighsRun:
    """A quiet, seeded HiGHS run for a model given as arrays (the options of
    :func:`make_solver`'s HiGHS)."""
    return HighsRun(time_limit_seconds, gap, HIGHS_ABS_GAP, threads, LP_FIRST, HIGHS_OPTIONS)


def make_solver(backend: str, time_limit_seconds: float, gap: float, threads: int,
                warm_start: bool, tmp_dir: str | None = None) -> pulp.LpSolver:
    """A PuLP solver for one run: quiet, seeded, with a time limit, relative gap and threads.

    Parameters
    ----------
    backend : {"highs", "cbc"}
        A name accepted by :func:`check_backend`.
    time_limit_seconds, gap, threads
        The backend's own limits: seconds of wall clock, relative MIP gap, worker threads.
    warm_start : bool
        Seed the run with the variables' initial values.
    tmp_dir : str, optional
        CBC only: where its files go (a killed run leaves them; the caller removes the folder).
    """
    if backend == "highs":
        return HighsSolver(msg=False, timeLimit=time_limit_seconds, gapRel=gap,
                           gapAbs=HIGHS_ABS_GAP, threads=threads, warm_start=warm_start,
                           lp_first=LP_FIRST, **HIGHS_OPTIONS)
    found = _installed()
    kwargs = dict(msg=False, timeLimit=time_limit_seconds, gapRel=gap, gapAbs=1e-9,
                  threads=threads, warmStart=warm_start,
                  options=["randomSeed 1", "randomCbcSeed 1"])
    if "COIN_CMD" in found:
        cbc = pulp.COIN_CMD(**kwargs)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cbc = pulp.PULP_CBC_CMD(**kwargs)
    if tmp_dir is not None:
        cbc.tmpDir = tmp_dir
    return cbc
