"""The ``hierarchical`` convention: what converting one tensor from per-level layouts ``s`` to
``t`` sends at each level of a PE array (SPEC.md §3 "Several levels", HIER_SEMANTICS.md).

A tensor is a grid of ``bs x fs`` cells (batch rows x feature columns; a cell holds
``a / (bs fs)`` elements, ``a`` the tensor's elements), its rows placed in units of ``bu`` and its
columns in units of ``fu`` (:mod:`hypar.shards` "Units"; 1 unless the graph says otherwise). ``s`` and ``t`` hold one layout per level,
top first: ``S(b)`` shards rows, ``S(f)`` columns, ``R`` replicates, ``P`` holds partial sums
(sources only). The conversion runs the SPEC's order:

1. slice every level that goes R -> shard (free);
2. bottom level first, reduce-scatter the P levels (along t's axis there; rows when t is R);
3. bottom level first: R -> R levels slice virtually (free), shard -> other shard levels run an
   all-to-all, P -> shard levels the gather half of their all-reduce;
4. top level first: all-gather where t is R (after a shard or a reduce-scatter); where s and t
   are both R, relay what crossed the levels above and the member lacks.

So each step at level h runs while every level below h is sharded, and the layout of the levels
above is fixed by when it runs (:data:`PHASES`): its traffic depends on levels ``0..h`` of both
tuples only. :class:`HierarchicalPricer` prices each step on the tensor *as laid out when it
runs*, group by group, by the one placement rule of :mod:`hypar.shards` (the simulator's too):
a level-h group's region along an axis is the indices whose digits at the levels above sharding
that axis are the group's coordinates there, and a member's part of it those whose level-h digit
is also the member's (the relay's virtual row slice likewise by the level-h row digits). Groups
alike (class, region, member parts) are priced once. For even splits this equals SPEC's closed
form (K, Q, T, B factors) exactly -- checked against the independent judge's
:func:`hypar.sim.hierarchy.closed_form` in tests/cost/test_hierarchical.py; for uneven and
heterogeneous splits it equals, per level, what the simulator's execution of the order sends
(tests/sim/test_uneven.py).

Pairs where ``s`` has a P level and some level is R in both ``s`` and ``t`` ("P + RR") never arise
on plan edges (a source with P comes from type III errors, which have no R level) and are
rejected (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypar.array import PEArray
from hypar.shards import group_shares
from hypar.cost.price import ZERO, Cost, Traffic, collective_cost
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS

SHARDS = (ROWS, COLS)
AXIS = {ROWS: 0, COLS: 1}          # which grid axis a shard layout splits (0 rows, 1 columns)

REDUCE_SCATTER, GATHER_HALF, ALL_TO_ALL, ALL_GATHER, RELAY = (
    "reduce-scatter", "gather half", "all-to-all", "all-gather", "relay")

# When in the order a step runs (SPEC steps 2, 3, 4), which fixes the levels above it.
REDUCING, RESHARDING, GATHERING = "step 2", "step 3", "step 4"
PHASES = (REDUCING, RESHARDING, GATHERING)

# Cells one region holds: levels sharding its rows, levels sharding its columns (top first).
RegionSpec = tuple[frozenset, frozenset]


@dataclass(frozen=True, slots=True)
class Step:
    """One collective of a conversion at one level: ``op`` along grid ``axis`` (0 rows, 1 cols;
    the axis the members' parts split before an all-to-all), run in ``phase``."""

    op: str
    phase: str
    axis: int


def check_pair(s: tuple, t: tuple) -> None:
    """Raise ValueError unless ``s -> t`` is a conversion this module prices: equal lengths, t
    without P, every entry a layout or None (undecided), and not "P + RR" (module docstring)."""
    if len(s) != len(t):
        raise ValueError(f"layouts {s} -> {t}: one placement per level on both sides")
    if PARTIAL in t:
        raise ValueError(f"target {t} holds partial sums; a conversion ends in S(b), S(f) or R")
    if PARTIAL in s and any(x == y == FULL for x, y in zip(s, t)):
        raise ValueError(f"{s} -> {t}: partial sums with a level replicated in both (P + RR) "
                         "never arise on plan edges and are not priced")


def level_steps(x: str, y: str) -> tuple[Step, ...]:
    """The collectives level h runs converting its layout ``x`` into ``y`` (SPEC order; the free
    slices R -> shard and the virtual R -> R slice are not collectives)."""
    if x == PARTIAL:
        scatter = AXIS.get(y, 0)
        last = Step(GATHER_HALF, RESHARDING, scatter) if y in SHARDS else Step(ALL_GATHER, GATHERING, 0)
        return Step(REDUCE_SCATTER, REDUCING, scatter), last
    if x in SHARDS and y in SHARDS and x != y:
        return (Step(ALL_TO_ALL, RESHARDING, AXIS[x]),)
    if x in SHARDS and y == FULL:
        return (Step(ALL_GATHER, GATHERING, AXIS[x]),)
    if x == y == FULL:
        return (Step(RELAY, GATHERING, 0),)
    return ()


def _axis_above(x: str, y: str, phase: str) -> int | None:
    """The grid axis a level above sharded by ``x -> y`` splits when a step of ``phase`` runs
    below it (None: not split)."""
    if phase == GATHERING or x == FULL:
        return AXIS.get(y)                     # final layout; R -> shard was sliced in step 1
    if x == PARTIAL:
        return None if phase == REDUCING else AXIS.get(y, 0)
    return AXIS[x]


def region_above(s: tuple, t: tuple, h: int, phase: str) -> RegionSpec:
    """The level-h group's region while a step of ``phase`` runs at level h: the levels above h
    sharding rows and those sharding columns."""
    axes = [_axis_above(s[g], t[g], phase) for g in range(h)]
    return (frozenset(g for g, a in enumerate(axes) if a == 0),
            frozenset(g for g, a in enumerate(axes) if a == 1))


def overlap_above(s: tuple, t: tuple, h: int) -> RegionSpec:
    """The part of the level-h group's final region (layouts ``t`` above h) that it held at the
    start (``s``): split at every level above where either layout shards that axis."""
    return (frozenset(g for g in range(h) if ROWS in (s[g], t[g])),
            frozenset(g for g in range(h) if COLS in (s[g], t[g])))


def member_cells(step: Step, x: tuple[int, ...], y: int | tuple[int, ...]) -> list[int]:
    """Cells each member of a level group receives in ``step`` (not a relay): ``x`` holds each
    member's part of the group's region along the step's axis, ``y`` the region's size along the
    other axis (an all-to-all: each member's part of it)."""
    k, whole = len(x), sum(x)
    if step.op == REDUCE_SCATTER:
        return [(k - 1) * p * y for p in x]
    if step.op in (GATHER_HALF, ALL_GATHER):
        return [(whole - p) * y for p in x]
    if step.op == ALL_TO_ALL:
        return [q * (whole - p) for p, q in zip(x, y)]
    raise ValueError(f"no cell count for {step.op}")


def relay_cells(final_rows: tuple[int, ...], final_cols: int, held_rows: tuple[int, ...], held_cols: int) -> list[int]:
    """Cells each member of an R -> R level group receives in the relay: the group's final region
    (each member's virtual row slice of it ``final_rows``, all its columns ``final_cols``) less the
    part it held from the start (``held_rows`` x ``held_cols``), less what arrived from above
    inside the member's virtual row slice."""
    new = sum(final_rows) * final_cols - sum(held_rows) * held_cols
    return [new - (pf * final_cols - ph * held_cols) for pf, ph in zip(final_rows, held_rows)]


def step_queries(step: Step, specs: tuple[RegionSpec, ...], bs: int, fs: int, units: tuple[int, int] = (1, 1)) -> tuple:
    """What :func:`hypar.shards.group_shares` must answer to price ``step`` on a ``bs x fs`` grid
    (rows and columns in ``units``) whose region the ``specs`` give (a relay: final and held;
    else one): per axis of each spec, (size, levels above sharding it, whether per member, unit)."""
    sizes = (bs, fs)
    if step.op == RELAY:
        member = (True, False)
    else:
        member = (step.axis == 0 or step.op == ALL_TO_ALL, step.axis == 1 or step.op == ALL_TO_ALL)
    return tuple((sizes[a], tuple(sorted(spec[a])), member[a], units[a]) for spec in specs for a in (0, 1))


class HierarchicalPricer:
    """Prices conversions on one PE array under the hierarchical convention, memoised per
    (level, tensor signature, source prefix, target prefix).

    A tensor signature is ``(elements, batch size, feature size[, batch unit, feature unit])``: the
    tensor's ``a`` elements on a ``bs x fs`` grid of cells placed in those units (module
    docstring; without them, units 1).
    """

    def __init__(self, array: PEArray):
        self.array = array
        self._cells: dict = {}
        self._costs: dict = {}

    def step_cells(self, h: int, step: Step, bs: int, fs: int, specs: tuple[RegionSpec, ...],
                   units: tuple[int, int] = (1, 1)) -> tuple:
        """The level-h groups in ``step`` on a ``bs x fs`` grid (rows and columns in ``units``)
        laid out as ``specs`` say (module docstring): ((group class key, cells each member
        receives, number of groups), ...), sorted; memoised."""
        key = (h, step, bs, fs, specs, units)
        hit = self._cells.get(key)
        if hit is None:
            out = []
            for ck, answers, m in group_shares(self.array, h, step_queries(step, specs, bs, fs, units)):
                if step.op == RELAY:
                    cells = relay_cells(*answers)
                else:
                    x, y = (answers[0], answers[1]) if step.axis == 0 else (answers[1], answers[0])
                    cells = member_cells(step, x, y)
                out.append((ck, tuple(cells), m))
            hit = self._cells[key] = tuple(sorted(out))
        return hit

    def level_cost(self, h: int, sig: tuple, s: tuple, t: tuple, width_bytes: int | None = None) -> Cost:
        """Cost at level h of converting a tensor of signature ``sig`` from ``s`` into ``t`` (full
        tuples or prefixes through level h; levels below h are not read), ``width_bytes`` per
        element (None: the array's training precision ``dtype_bytes``). Zero when the prefixes
        through h are equal. The caller checks the full pair (:func:`check_pair`)."""
        s, t = tuple(s[:h + 1]), tuple(t[:h + 1])
        if s == t or not sig[0]:
            return ZERO
        key = (h, sig, s, t, width_bytes)
        hit = self._costs.get(key)
        if hit is None:
            width = self.array.dtype_bytes if width_bytes is None else width_bytes
            hit = self._costs[key] = self._price(h, sig, s, t, width)
        return hit

    def level_elements(self, h: int, sig: tuple, s: tuple, t: tuple) -> float:
        """Elements crossing level-h links (summed over all PEs) for :meth:`level_cost`."""
        return sum(m * sum(received) for step in self.traffic(h, sig, s, t) for _gc, m, received, _n in step)

    def _price(self, h: int, sig: tuple, s: tuple, t: tuple, width_bytes: int) -> Cost:
        """:meth:`level_cost` computed: one collective per step, their costs added."""
        total = ZERO
        for traffic in self.traffic(h, sig, s, t):
            total = total + collective_cost(self.array.levels[h], width_bytes, traffic)
        return total

    def traffic(self, h: int, sig: tuple, s: tuple, t: tuple) -> list[list[Traffic]]:
        """Per step at level h (SPEC order), each group class's :data:`Traffic`: elements each
        member receives, in ``k - 1`` messages."""
        a, bs, fs = sig[:3]
        units = tuple(sig[3:5]) if len(sig) == 5 else (1, 1)
        cell = a / (bs * fs) if bs * fs else 0.0
        out = []
        for step in level_steps(s[h], t[h]):
            if step.op == RELAY:
                specs = (region_above(s, t, h, GATHERING), overlap_above(s, t, h))
            else:
                specs = (region_above(s, t, h, step.phase),)
            traffic = []
            for ck, cells, m in self.step_cells(h, step, bs, fs, specs, units):
                gc = self.array.classes[h][ck]
                traffic.append((gc, m, [cell * c for c in cells], len(gc.children) - 1))
            out.append(traffic)
        return out
