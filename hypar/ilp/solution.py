"""The answer of one level solve, whichever method produced it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LevelSolution:
    """One assignment of a :class:`hypar.ilp.problem.LevelProblem` and how it was obtained.

    Attributes
    ----------
    assignment : tuple of int
        Chosen choice index per node, in the problem's node order.
    objective : float
        ``problem.objective(assignment)``, recomputed from the problem (not the backend's value).
    status : {"optimal", "feasible"}
        "optimal" only when the method proved optimality (to ``mip_gap`` for the ILP).
    backend : str
        "highs", "cbc", "dp", "brute", or "incumbent" when a stopped run fell back to it.
    wall_seconds : float
        Wall-clock time of the whole call (model building included).
    mip_gap : float or None
        The relative gap the backend was asked to close (None for exact methods).
    n_variables, n_constraints : int
        Size of the model that was solved (0 for the exact methods).
    """

    assignment: tuple[int, ...]
    objective: float
    status: str
    backend: str
    wall_seconds: float
    mip_gap: float | None = None
    n_variables: int = 0
    n_constraints: int = 0

    @property
    def optimal(self) -> bool:
        """True when the status is "optimal"."""
        return self.status == "optimal"
