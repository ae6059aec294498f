"""Typed errors. Library code raises these; only hypar.cli turns them into `Error: ...` lines.

Every message names what to do instead (the fix), on one line. A message that names one of the
library's parameters writes it as a ``{field}`` of :meth:`HyparError.naming`: ``str(error)``
shows the parameter's name, and a front end shows its own word for it (:meth:`HyparError.
message_in`; hypar.cli shows its option flags):

>>> e = ArrayConfigError.naming("give only one of {array_path}, {pes} and {levels}")
>>> str(e)
'give only one of array_path, pes and levels'
>>> e.message_in({"array_path": "--array", "pes": "--pes", "levels": "--levels"})
'give only one of --array, --pes and --levels'
"""

from __future__ import annotations

import re
from typing import Mapping, TypeVar

_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

E = TypeVar("E", bound="HyparError")


class HyparError(Exception):
    """Base class of every error hypar raises on bad input or an impossible request.

    ``template`` is the message with the parameter names it mentions as ``{field}`` s (None for a
    message that names no parameter); see :meth:`naming`.
    """

    template: str | None = None

    @classmethod
    def naming(cls: type[E], template: str) -> E:
        """An error whose message ``template`` names library parameters as ``{parameter}`` fields
        (lower-case identifiers in braces; any other text is kept as written)."""
        error = cls(_FIELD.sub(lambda m: m.group(1), template))
        error.template = template
        return error

    def message_in(self, words: Mapping[str, str]) -> str:
        """The message with each named parameter written as ``words[parameter]`` (a parameter
        missing from ``words`` keeps its own name); ``str(self)`` when no parameter is named."""
        if self.template is None:
            return str(self)
        return _FIELD.sub(lambda m: words.get(m.group(1), m.group(1)), self.template)


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
