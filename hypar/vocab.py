"""hypar's vocabulary: the named choices a user makes and the labels a plan holds.

Each is a ``str`` enum, so a member equals (and serialises as) its plain string: plans, JSON and
the CLI keep the strings, while code validates a user's string once, at the boundary, with
:func:`parse` and passes members inward.

>>> parse(Objective, "comm") is Objective.COMM
True
>>> parse(Space, "dense", what="space")
Traceback (most recent call last):
...
ValueError: unknown space 'dense'; choose one of hypar, accpar, full
>>> import json; json.dumps({Objective.TIME: [Space.FULL]})
'{"time": ["full"]}'
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar


class Vocab(str, Enum):
    """Base of hypar's string enums: ``str(member)`` and formatting give the plain value."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every member's string, in declaration order."""
        return tuple(m.value for m in cls)


class Objective(Vocab):
    """What a plan minimises: step time (s), bytes moved or energy (J). The default comes first."""

    TIME = "time"
    COMM = "comm"
    ENERGY = "energy"


class Space(Vocab):
    """Which choices the search has (README: spaces)."""

    HYPAR = "hypar"     # types I/II on weighted layers, other ops folded into edges (HyPar)
    ACCPAR = "accpar"   # types I/II/III, folded (AccPar)
    FULL = "full"       # every ONNX node chooses a layout


class Search(Vocab):
    """How the levels are searched. The default comes first."""

    AUTO = "auto"       # refine, then joint where computable (chains: by DP past the ILP's limit); the better
    GREEDY = "greedy"   # top level first, never revisited (the papers)
    REFINE = "refine"   # re-solve one level at a time while anything improves
    JOINT = "joint"     # all levels in one exact problem, when small enough


class Reached(Vocab):
    """What a search's plan is known to be (a plan's ``solver.reached``)."""

    JOINT_OPTIMAL = "joint-optimal"       # optimal over all levels together (joint problem solved to optimality)
    JOINT_FEASIBLE = "joint-feasible"     # the joint problem's best plan within the time limit
    REFINE_FIXPOINT = "refine-fixpoint"   # no level's re-solve (others fixed, solved optimally) improves it
    REFINE_STOPPED = "refine-stopped"     # refine stopped before its fixpoint (round limit or time-limited solve)
    GREEDY = "greedy"                     # top level first, never revisited


class Convention(Vocab):
    """How traffic on arrays with several levels is priced (SPEC.md §3 "Several levels")."""

    HIERARCHICAL = "hierarchical"   # what an execution with hierarchical collectives sends (default)
    REFERENCE = "reference"         # the papers' code: each level in the consuming layer's view


class Method(Vocab):
    """What solves one level problem."""

    ILP = "ilp"         # PuLP + HiGHS or CBC
    DP = "dp"           # dynamic programming on chains
    BRUTE = "brute"     # enumeration (tiny problems, tests)


class Baseline(Vocab):
    """A fixed or published method a plan is compared with (SPEC.md §6)."""

    DATA = "data"       # type I everywhere (data parallelism)
    MODEL = "model"     # type II everywhere (model parallelism)
    OWT = "owt"         # "one weird trick": conv I, fully connected II
    HYPAR = "hypar"     # HyPar (HPCA 2019): types I/II, greedy top-down, comm objective
    ACCPAR = "accpar"   # AccPar (HPCA 2020): types I/II/III, greedy top-down


class PartitionType(Vocab):
    """A weighted layer's split at one level (SPEC.md §2)."""

    I = "I"             # noqa: E741 - the papers' name: batch split (data parallelism)
    II = "II"           # input-feature split (model parallelism)
    III = "III"         # output-feature split


class Layout(Vocab):
    """A tensor's layout at one level (DTensor's vocabulary)."""

    ROWS = "S(b)"       # Shard(batch)
    COLS = "S(f)"       # Shard(feature / channel / head)
    FULL = "R"          # Replicate
    PARTIAL = "P"       # partial sums, to be reduced


E = TypeVar("E", bound=Vocab)


def parse(kind: type[E], value: str | E, what: str | None = None, error: type[Exception] = ValueError) -> E:
    """``value`` as a member of ``kind`` (a member is returned as is).

    Raises ``error`` (default ValueError) naming ``what`` (default: the enum's name, lower case)
    and every allowed value when ``value`` is not one of them.
    """
    try:
        return kind(value)
    except ValueError:
        name = what or kind.__name__.lower()
        raise error(f"unknown {name} {value!r}; choose one of {', '.join(kind.values())}") from None
