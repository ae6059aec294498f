"""Typed errors. Library code raises these; only hypar.cli turns them into `Error: ...` lines.

Every message names what to do instead (the fix), on one line.
"""


class HyparError(Exception):
    """Base class of every error hypar raises on bad input or an impossible request."""


class ModelLoadError(HyparError):
    """The model file is missing, unreadable, not ONNX, or truncated."""


class ShapeError(HyparError):
    """A tensor shape is unknown or symbolic and could not be bound (e.g. batch without --batch)."""


class ModelStructureError(HyparError):
    """The model has nothing to partition (e.g. no weighted layer)."""


class ArrayConfigError(HyparError):
    """The PE array description is invalid or impossible."""


class PlanError(HyparError):
    """A mapping plan is malformed or does not match the model/array."""


class SolverError(HyparError):
    """A solver backend is missing or failed."""


class InfeasibleError(SolverError):
    """No assignment satisfies the constraints (e.g. the per-PE memory capacity)."""


class HyparWarning(UserWarning):
    """Something was handled conservatively (e.g. an unknown op kept opaque); results still valid."""
