"""The simulator's errors: what went wrong in a distributed step, and what it cannot run."""

from __future__ import annotations


class SimulationError(RuntimeError):
    """The distributed step went wrong (a PE lacked data it needed): a simulator or plan bug."""


class UnevenSplit(SimulationError):
    """An axis that does not split evenly over several levels, under the ``reference`` convention
    (its cost model rounds each level's view on its own; the hierarchical convention runs any
    sizes)."""


class Unsupported(Exception):
    """Raised mid-simulation for a construct the simulator cannot run; its text names the layer and
    is reported in ``SimResult.unsupported``."""
