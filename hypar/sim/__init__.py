"""A plan's training step executed on virtual PEs in numpy, counting every byte sent.

Modules, bottom up: ``errors``, ``result`` (SimResult), ``mesh`` (PEs and distributed tensors, as
full-shape arrays or as blocks; which PE holds which indices is :mod:`hypar.shards`),
``comm`` (counted sends and collectives), ``kernels`` / ``conv`` / ``ops`` (numpy layer ops and
their dispatch), ``broadcast`` (ops whose operands and output differ in shape: broadcasting
elementwise ops, reductions), ``graphwalk`` (folded ops around kept nodes), ``hierorder`` (the
``hierarchical`` convention's conversion order executed), ``support`` (what can run, found before
any step), ``reference`` (the one-device step), ``background`` (the reference and the numerics
checks on a thread beside the distributed step), ``ledger`` (counting by step), ``norms`` /
``sharded`` / ``weighted`` (layer ops on shards), ``schedule`` / ``convert`` (edge conversions,
``reference`` convention), ``edges`` (which conversions run and share under each convention),
``step`` (the distributed step and :func:`simulate`); ``hierarchy`` is the independent
element-level judge of the hierarchical order.
"""

from hypar.sim.errors import SimulationError
from hypar.sim.result import DEFAULT_TOL, SimResult, default_tol
from hypar.sim.step import simulate

__all__ = ["DEFAULT_TOL", "SimResult", "SimulationError", "default_tol", "simulate"]
