"""One level problem and its exact solvers: the ILP (PuLP + HiGHS/CBC), chain DP, brute force.
The only package that imports ``pulp`` or ``highspy``; it knows nothing of models or arrays.

Modules, each one job (those marked * import pulp; this package imports none of them):

- ``problem``, ``solution``: the level problem and its answer (values only).
- ``exact``: problem checks, chain DP, brute force.
- ``tables``, ``eliminate``, ``reduce``: exact reductions to a smaller, equivalent problem.
- ``arrays``: the same model as numpy arrays in PuLP's column order (HiGHS's fast path).
- ``model`` *: the PuLP model of a reduced problem (CBC's path); ``build_ilp``.
- ``highs`` *, ``backends`` *: HiGHS in process (``HighsRun`` on arrays, ``HighsSolver`` for
  PuLP); the backends by name, ``available_backends``.
- ``polish``: the deterministic tie-breaking descent.
- ``isolate`` *: a solve in a forked child killed at a hard deadline (holding the HiGHS lock).
- ``solve`` *: ``solve_ilp`` and ``solve``, the driver.
"""

from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.solution import LevelSolution

__all__ = ["FactorTerm", "GroupTerm", "LevelProblem", "LevelSolution"]
