"""The cost model: what each node may do per level (strategies), what a plan moves, computes
and stores, and one level (or all levels) as an optimisation problem for :mod:`hypar.ilp`."""

from hypar.cost.model import OBJECTIVES, SPACES, Cost, CostModel, Evaluation

__all__ = ["OBJECTIVES", "SPACES", "Cost", "CostModel", "Evaluation"]
