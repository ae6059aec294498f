"""What users write, read into library values: which PE array (a YAML file, ``pes`` or a
``levels`` string such as ``"2,2,4"``), lists of counts (``"4,16,64"``), input dims bound by
name (``"sequence=128"``) or whole input shapes (``"x=1,3,640,640"``) and the solver settings
(options over the ``solver:`` section of an array file over the defaults).

Nothing here is ignored quietly: a value or a key that cannot be used is an error naming it and
the fix. Errors name the library's parameters (:meth:`hypar.errors.HyparError.naming`); the CLI
shows its option flags in their place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from hypar.array import (PEArray, array_from_levels, array_from_pes, default_array, load_array,
                         read_array_file)
from hypar.errors import ArrayConfigError, HyparError
from hypar.vocab import Method, parse


class SettingError(HyparError):
    """A setting's value cannot be used; ``parameter`` names the setting (in the CLI: a usage
    error of that option)."""

    def __init__(self, message: str = "", parameter: str = "") -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class SolverSettings:
    """How each level problem is solved: ``method`` (a :class:`hypar.vocab.Method` or its string;
    ValueError when unknown), the ILP ``backend`` and limits (seconds, relative gap, threads),
    the joint search's size limits (pair variables: for the ILP, and for the chain DP that search
    ``auto`` uses on chains beyond the ILP's limit), the time budget (s) search ``auto`` gives the
    joint ILP (at most ``time_limit_s``; a cut solve keeps the better of its best plan and
    refine's, reported as joint-feasible), the per-PE memory cap (GB) and whether level problems tie
    repeated blocks (``tie_blocks``: their optimum is then the best plan giving every block of a
    run the same types, :mod:`hypar.cost.repeats`)."""

    method: Method = Method.ILP
    backend: str = "highs"
    time_limit_s: float = 60.0
    gap: float = 1e-6
    threads: int | None = None
    joint_max_pairs: int = 400_000      # joint search refused above this many pair variables (ILP)
    joint_dp_max_pairs: int = 10_000_000  # search auto: a chain's joint problem by DP up to this many pairs
    auto_joint_time_limit_s: float = 5.0  # search auto: the joint ILP's budget (s); refine's plan is its start
    memory_cap_gb: float | None = None  # per-PE capacity the plan must fit (None: unconstrained)
    tie_blocks: bool = True             # repeated blocks share decision variables (hypar.cost.repeats)
    via_pulp: bool = False              # HiGHS fed through PuLP objects, not arrays (a cross-check; slower)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", parse(Method, self.method))

    @property
    def memory_cap_bytes(self) -> float | None:
        """The memory cap in bytes per PE (None: unconstrained)."""
        return None if self.memory_cap_gb is None else self.memory_cap_gb * 1e9


# What a user calls a solver -> (method, ILP backend). "ilp" is accepted as HiGHS.
SOLVERS: dict[str, tuple[Method, str]] = {
    "highs": (Method.ILP, "highs"), "cbc": (Method.ILP, "cbc"), "ilp": (Method.ILP, "highs"),
    "dp": (Method.DP, "highs"), "brute": (Method.BRUTE, "highs"),
}
_SOLVER_CHOICES = "highs, cbc, dp or brute"

# Keys of an array file's ``solver:`` section.
SOLVER_KEYS = ("backend", "gap", "threads", "time_limit_s")


def _parts(text: str) -> list[str]:
    """The non-empty comma-separated parts of ``text``, spaces removed."""
    return [x for x in str(text).replace(" ", "").split(",") if x]


def parse_levels(text: str) -> list[int]:
    """``"2,2,4"`` -> ``[2, 2, 4]`` (fanouts top first; checked by :func:`hypar.array.
    array_from_levels`). ArrayConfigError naming ``levels`` when a part is not an integer."""
    try:
        return [int(x) for x in _parts(text)]
    except ValueError:
        raise ArrayConfigError.naming(f"{{levels}} {text!r}: give comma-separated fanouts, e.g. "
                                      "{levels} 2,2,4") from None


def _positive_int(part: str, parameter: str, example: str, text: str | None = None) -> int:
    """``part`` as a positive integer; SettingError naming ``parameter`` (and the whole ``text``
    it is part of, when given) otherwise."""
    where = f"{text!r}: " if text is not None else ""
    try:
        n = int(part)
    except ValueError:
        raise SettingError(f"{where}{part!r} is not an integer; give e.g. {example}", parameter) from None
    if n < 1:
        raise SettingError(f"{where}{n} must be at least 1", parameter)
    return n


def parse_counts(texts: Iterable[str | int], parameter: str = "counts") -> list[int]:
    """``["4,16", "64"]`` -> ``[4, 16, 64]``: every comma-separated part of every text, each a
    positive integer. SettingError (naming ``parameter``) on the first part that is not."""
    return [_positive_int(part, parameter, "4,16,64") for text in texts or () for part in _parts(text)]


def _name_value(text: str, parameter: str, example: str) -> tuple[str, str]:
    """``"NAME=VALUE"`` -> ``(NAME, VALUE)`` (spaces removed); SettingError naming ``parameter``
    when there is no ``=`` or either side is empty."""
    name, sep, value = str(text).replace(" ", "").partition("=")
    if not sep or not name or not value:
        raise SettingError(f"{text!r}: give NAME=VALUE, e.g. {example}", parameter)
    return name, value


def parse_dims(texts: Iterable[str]) -> dict[str, int]:
    """``["height=640", "width=480"]`` -> ``{"height": 640, "width": 480}`` (symbolic input dims
    bound by name). SettingError naming ``dims`` for a text that is not NAME=N with N >= 1, or
    a name given twice with different values."""
    out: dict[str, int] = {}
    for text in texts or ():
        name, value = _name_value(text, "dims", "sequence=128")
        n = _positive_int(value, "dims", "sequence=128", text)
        if out.get(name, n) != n:
            raise SettingError(f"{name} is given twice ({out[name]} and {n}); give it once", "dims")
        out[name] = n
    return out


def parse_input_shapes(texts: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,3,640,640"]`` -> ``{"x": (1, 3, 640, 640)}`` (whole input shapes by input name).
    SettingError naming ``input_shapes`` for a text that is not INPUT=D0,D1,... with every Dk
    >= 1, or an input given twice with different shapes."""
    out: dict[str, tuple[int, ...]] = {}
    for text in texts or ():
        name, value = _name_value(text, "input_shapes", "x=1,3,224,224")
        shape = tuple(_positive_int(p, "input_shapes", "x=1,3,224,224", text) for p in _parts(value))
        if out.get(name, shape) != shape:
            raise SettingError(f"input {name} is given twice with different shapes; give it once", "input_shapes")
        out[name] = shape
    return out


def resolve_array(array_path: str | None = None, pes: int | None = None,
                  levels: str | list[int] | None = None) -> PEArray:
    """One array from at most one of a YAML file (``array_path``), ``pes`` identical PEs or
    ``levels`` fanouts (a list or a ``"2,2,4"`` string); none: the default array (default.yaml).
    ArrayConfigError when more than one is given or the one given is invalid."""
    if sum(x is not None for x in (array_path, pes, levels)) > 1:
        raise ArrayConfigError.naming("give only one of {array_path}, {pes} and {levels}")
    if array_path is not None:
        return load_array(array_path)
    if pes is not None:
        return array_from_pes(int(pes))
    if levels is not None:
        return array_from_levels(parse_levels(levels) if isinstance(levels, str) else list(levels))
    return default_array()


def solver_of(name: str) -> tuple[Method, str]:
    """A solver name (highs, cbc, dp, brute) as (method, ILP backend); SettingError naming
    ``solver`` when unknown."""
    if name not in SOLVERS:
        raise SettingError(f"unknown solver {name!r}; choose {_SOLVER_CHOICES}", "solver")
    return SOLVERS[name]


def _number(section: dict, key: str, where: str, minimum: float, integer: bool = False) -> float | int | None:
    """``section[key]`` checked to be a number (an integer with ``integer``) >= ``minimum``;
    None when absent."""
    v = section.get(key)
    if v is None:
        return None
    kinds = (int,) if integer else (int, float)
    if not isinstance(v, kinds) or isinstance(v, bool) or v < minimum:
        what = "an integer" if integer else "a number"
        raise ArrayConfigError(f"{where}: solver.{key} must be {what} >= {minimum:g}, got {v!r}")
    return v


def solver_section(array_path: str) -> dict:
    """The checked ``solver:`` section of an array file ({} when it has none): ``backend`` a
    solver name, ``time_limit_s`` > 0 seconds, ``gap`` >= 0, ``threads`` >= 1. ArrayConfigError
    naming the file and the key for anything else (unknown keys included)."""
    section = read_array_file(array_path).get("solver")
    if section is None:
        return {}
    where = str(array_path)
    if not isinstance(section, dict):
        raise ArrayConfigError(f"{where}: 'solver' must be a mapping, e.g. solver: {{backend: highs, "
                               f"time_limit_s: 60}}; got {section!r}")
    extra = sorted(set(section) - set(SOLVER_KEYS), key=str)
    if extra:
        raise ArrayConfigError(f"{where}: solver.{extra[0]} is not a solver setting; allowed: "
                               f"{', '.join(SOLVER_KEYS)}")
    backend = section.get("backend")
    if backend is not None and backend not in SOLVERS:
        raise ArrayConfigError(f"{where}: solver.backend {backend!r} is not a solver; choose {_SOLVER_CHOICES}")
    _number(section, "time_limit_s", where, 1e-3)
    _number(section, "gap", where, 0.0)
    _number(section, "threads", where, 1, integer=True)
    return dict(section)


def solver_settings(solver: str | None = None, *, time_limit_s: float | None = None, gap: float | None = None,
                    threads: int | None = None, memory_cap_gb: float | None = None,
                    array_path: str | None = None, tie_blocks: bool = True) -> SolverSettings:
    """The settings a user asked for: each given value wins over the ``solver:`` section of the
    array file ``array_path`` (if any), which wins over the defaults (HiGHS, 60 s, gap 1e-6).
    SettingError for an unknown ``solver`` (checked before the file is read); ArrayConfigError
    for a bad file or section."""
    if solver:
        solver_of(solver)
    section = solver_section(array_path) if array_path else {}
    method, backend = solver_of(solver or section.get("backend", "highs"))
    return SolverSettings(method=method, backend=backend,
                          time_limit_s=float(time_limit_s if time_limit_s is not None
                                             else section.get("time_limit_s", 60.0)),
                          gap=float(gap if gap is not None else section.get("gap", 1e-6)),
                          threads=threads if threads is not None else section.get("threads"),
                          memory_cap_gb=memory_cap_gb, tie_blocks=tie_blocks)
