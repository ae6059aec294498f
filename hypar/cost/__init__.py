"""The cost model: what each node may do per level (strategies), which nodes and edges a space
keeps (structure), what a plan moves, computes and stores (collectives, price, sharing, model),
how each convention shares and prices conversions between layers (conventions; the
``hierarchical`` one's closed form in hierarchical), and one level (or all levels) as an
optimisation problem for :mod:`hypar.ilp` (problems)."""

from hypar.cost.model import OBJECTIVES, SPACES, Cost, CostModel, Evaluation

__all__ = ["OBJECTIVES", "SPACES", "Cost", "CostModel", "Evaluation"]
