"""A plan's training step executed on virtual PEs in numpy, counting every byte sent."""

from hypar.sim.step import DEFAULT_TOL, SimResult, simulate

__all__ = ["DEFAULT_TOL", "SimResult", "simulate"]
