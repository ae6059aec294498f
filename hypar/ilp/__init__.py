"""One level problem and its exact solvers: the ILP (PuLP + HiGHS/CBC), chain DP, brute force.
The only package that imports ``pulp`` or ``highspy``; it knows nothing of models or arrays."""

from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.solution import LevelSolution

__all__ = ["FactorTerm", "GroupTerm", "LevelProblem", "LevelSolution"]
