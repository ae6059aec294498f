"""An element-level judge of the ``hierarchical`` conversion order (SPEC.md §3, "Several levels").

Every amount is in **elements** (times the dtype size for bytes) received, summed over all PEs.
Self-contained: numpy and the standard library (hypar.vocab only for the layout strings).

Mesh. Fanouts ``(k_0, .., k_{H-1})``, top level first; PE ``p`` has mixed-radix digits
``(d_0, .., d_{H-1})``, ``d_0`` most significant. A *level-h group*: the ``k_h`` PEs that differ
only in digit h. A *level-h subgroup*: the PEs sharing digits ``0..h`` (``prod_{g<=h} k_g`` of
them). A send from ``a`` to ``b`` counts its elements at the topmost digit where they differ.

Layout. A tensor of ``N x M`` elements (rows: the batch axis ``S(b)``, cols: the feature axis
``S(f)``; ``N``, ``M`` divisible by ``prod k``) has one placement per level in ``S(b), S(f), R, P``.
A PE holds (row set) x (col set). Along an axis sharded by the levels ``L`` (top first):

- ``canonical`` nesting (DTensor's order, the default): the top level splits first and lower
  levels subdivide, so PE ``p`` holds the contiguous block number ``mixed_radix(d_h, h in L)`` of
  ``prod_{h in L} k_h`` equal blocks;
- ``digit`` nesting (hypar.sim.step's convention): of ``prod k`` equal blocks, those whose digit h
  (mixed radix, top first) is ``d_h`` for every h in L. The two agree when L is a top prefix of the
  levels; ``(R, S(b))`` in digit nesting is DTensor's ``_StridedShard``.

``R`` at level h: the level-h group members hold the same elements and values. ``P`` at level h:
the same elements, and the values of the *P-group* (PEs differing only at P levels) sum to the
true value.

The order executed (SPEC's steps; "shard" = S(b) or S(f)) and the choices the SPEC leaves open.
A *part* of an index set at level h is, in digit nesting, the indices whose digit h is ``d_h``; in
canonical nesting the ``d_h``-th of ``k_h`` consecutive runs ("slice") or, for the temporary splits
("strided"), the indices whose digit h of ``index mod prod k`` is ``d_h`` (the innermost position,
so undoing them re-joins whatever upper levels slice meanwhile; needs sizes divisible by
``(prod k)^2``).

1. top level first, ``R -> shard``: keep the sliced part along t_h's axis (free);
2. bottom level first, ``P`` levels reduce-scatter: each member keeps the strided part along t_h's
   axis (rows for R) and receives the other members' partials of it;
3. bottom level first: ``R -> R`` slices virtually (strided rows part; the copy stays in memory);
   shard -> other shard is an all-to-all (slice the new axis, gather the old one); ``P -> shard``
   all-gathers its reduce-scatter back (the gather half), then slices as in step 1;
4. top level first, ``t_h = R``: the group all-gathers (at ``R -> R`` levels: the relay).

A PE receives only what is not in its memory; it never drops a final value (slices are logical),
only stale partials when they are reduced. In canonical nesting the order can end in another block
order (e.g. ``(R, S(b)) -> (S(b), S(b))``: step 1 can only slice inside the level-1 block; a level
that gathers above a lower level sharding the same axis leaves strided rows). The executor then
moves the data to the canonical holders, top level first, each level-h subgroup receiving a lacked
element once and relaying it inside (:attr:`Execution.fixup`: an upper bound on that cost, not a
minimum over all schedules).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from math import prod

import numpy as np

from hypar.vocab import Layout

ROWS, COLS, FULL, PARTIAL = Layout.ROWS.value, Layout.COLS.value, Layout.FULL.value, Layout.PARTIAL.value
SHARDS = (ROWS, COLS)
SOURCES = (ROWS, COLS, FULL, PARTIAL)
TARGETS = (ROWS, COLS, FULL)
AXIS = {ROWS: 0, COLS: 1}
NESTINGS = ("canonical", "digit")


class JudgeError(AssertionError):
    """The executed order broke an invariant (missing data, wrong values, wrong end layout)."""


# ----------------------------------------------------------------------------- mesh and layouts

class Mesh:
    """PEs of a hierarchy of fanouts (top level first), numbered in mixed radix."""

    def __init__(self, fanouts: tuple[int, ...]) -> None:
        self.k = tuple(int(x) for x in fanouts)
        self.H = len(self.k)
        self.n = prod(self.k)
        self.digits = list(itertools.product(*(range(k) for k in self.k)))

    def level(self, a: int, b: int) -> int:
        """Topmost level where PEs ``a != b`` differ (the level a send from a to b is counted at)."""
        return next(h for h in range(self.H) if self.digits[a][h] != self.digits[b][h])

    def groups(self, h: int) -> list[list[int]]:
        """The level-h groups, each ordered by digit h."""
        keyed: dict[tuple, list[int]] = {}
        for p, d in enumerate(self.digits):
            keyed.setdefault(d[:h] + d[h + 1:], []).append(p)
        return list(keyed.values())

    def subgroups(self, h: int) -> list[list[int]]:
        """The level-h subgroups (PEs sharing digits 0..h); ``h = -1``: the whole mesh."""
        keyed: dict[tuple, list[int]] = {}
        for p, d in enumerate(self.digits):
            keyed.setdefault(d[:h + 1], []).append(p)
        return list(keyed.values())


def _digit(mesh: Mesh, size: int, h: int) -> np.ndarray:
    """For each index of an axis of ``size``: digit h of its block among ``prod k`` equal blocks."""
    if size % mesh.n:
        raise ValueError(f"axis of {size} does not split into {mesh.n} blocks")
    return (np.arange(size) // (size // mesh.n) // prod(mesh.k[h + 1:])) % mesh.k[h]


def axis_block(mesh: Mesh, layout, p: int, axis: int, size: int, nesting: str = "canonical") -> np.ndarray:
    """Boolean mask (length ``size``) of the indices PE ``p`` holds along ``axis`` (0 rows, 1 cols)
    under ``layout``: ``canonical`` nesting (contiguous block, top level splits first) or ``digit``
    (of ``prod k`` equal blocks, those whose digit h is ``d_h`` at every level h sharding the axis:
    hypar.sim.step's convention, DTensor's _StridedShard when a lower level alone shards)."""
    levels = [h for h, x in enumerate(layout) if x in SHARDS and AXIS[x] == axis]
    if nesting == "digit":
        mask = np.ones(size, bool)
        for h in levels:
            mask &= _digit(mesh, size, h) == mesh.digits[p][h]
        return mask
    index, parts = 0, 1
    for h in levels:
        index, parts = index * mesh.k[h] + mesh.digits[p][h], parts * mesh.k[h]
    if size % parts:
        raise ValueError(f"axis of {size} does not split into {parts} blocks")
    mask = np.zeros(size, bool)
    mask[index * (size // parts):(index + 1) * (size // parts)] = True
    return mask


def layout_region(mesh: Mesh, layout, p: int, shape: tuple[int, int], nesting: str = "canonical") -> np.ndarray:
    """``shape`` boolean mask of the elements PE ``p`` holds under ``layout`` (see axis_block)."""
    return np.outer(axis_block(mesh, layout, p, 0, shape[0], nesting),
                    axis_block(mesh, layout, p, 1, shape[1], nesting))


def _check_layouts(mesh: Mesh, s, t) -> None:
    if len(s) != mesh.H or len(t) != mesh.H:
        raise ValueError(f"layouts {s} -> {t} need one placement per level of {mesh.k}")
    if any(x not in SOURCES for x in s) or any(x not in TARGETS for x in t):
        raise ValueError(f"sources in {SOURCES}, targets in {TARGETS}; got {s} -> {t}")


# ----------------------------------------------------------------------------- state and sends

@dataclass
class Step:
    """One collective of the order: SPEC step number, operation, level, elements per level."""

    step: str
    op: str
    level: int
    amounts: list[int]


@dataclass
class _State:
    """Per PE: logical rows/cols (the region later steps treat as held), ``mem`` (elements whose
    current value is in memory, a superset) and ``val`` (int64 values, exact partial sums)."""

    mesh: Mesh
    nesting: str
    rows: list[np.ndarray]
    cols: list[np.ndarray]
    mem: list[np.ndarray]
    val: list[np.ndarray]
    steps: list[Step] = field(default_factory=list)

    def begin(self, step: str, op: str, level: int) -> None:
        self.steps.append(Step(step, op, level, [0] * self.mesh.H))

    def send(self, src: int, dst: int, mask: np.ndarray, values: np.ndarray, add: bool) -> None:
        """``dst`` receives ``values[mask]`` from ``src`` (adds it to its partials when ``add``)."""
        n = int(mask.sum())
        if n == 0:
            return
        self.steps[-1].amounts[self.mesh.level(src, dst)] += n
        self.val[dst][mask] = (self.val[dst][mask] + values[mask]) if add else values[mask]
        self.mem[dst] |= mask

    def region(self, p: int) -> np.ndarray:
        return np.outer(self.rows[p], self.cols[p])


def _initial_state(mesh: Mesh, s, truth: np.ndarray, rng: np.random.Generator, nesting: str) -> _State:
    """Every PE holds its region of ``s``; P levels hold random integer partials."""
    regions = [layout_region(mesh, s, p, truth.shape, nesting) for p in range(mesh.n)]
    val = [np.where(r, truth, 0) for r in regions]
    plevels = [h for h, x in enumerate(s) if x == PARTIAL]
    for p in range(mesh.n):
        if plevels and any(mesh.digits[p][h] for h in plevels):
            val[p] = np.where(regions[p], rng.integers(-99, 100, truth.shape), 0)
    for p in range(mesh.n):  # the P-group member with all P digits 0 completes the sum
        if plevels and not any(mesh.digits[p][h] for h in plevels):
            for q in range(mesh.n):
                if q != p and all(mesh.digits[q][g] == mesh.digits[p][g]
                                  for g in range(mesh.H) if g not in plevels):
                    val[p] = val[p] - val[q]
    rows = [axis_block(mesh, s, p, 0, truth.shape[0], nesting) for p in range(mesh.n)]
    cols = [axis_block(mesh, s, p, 1, truth.shape[1], nesting) for p in range(mesh.n)]
    return _State(mesh, nesting, rows, cols, regions, val)


# ----------------------------------------------------------------------------- collectives

def _split(mask: np.ndarray, k: int, j: int) -> np.ndarray:
    """The ``j``-th of ``k`` consecutive runs of the indices in ``mask``."""
    idx = np.flatnonzero(mask)
    if len(idx) % k:
        raise ValueError(f"{len(idx)} indices do not split into {k} parts")
    out = np.zeros_like(mask)
    out[idx.reshape(k, -1)[j]] = True
    return out


def _part(st: _State, p: int, h: int, mask: np.ndarray, strided: bool) -> np.ndarray:
    """PE ``p``'s level-h part of the indices in ``mask`` (module docstring): digit nesting pins
    the block digit h; canonical nesting slices (consecutive runs) or, when ``strided``, pins digit
    h of ``index mod prod k`` (the innermost position, independent of every other split)."""
    d = st.mesh.digits[p][h]
    if st.nesting == "digit":
        return mask & (_digit(st.mesh, len(mask), h) == d)
    if not strided:
        return _split(mask, st.mesh.k[h], d)
    inner = (np.arange(len(mask)) % st.mesh.n) // prod(st.mesh.k[h + 1:]) % st.mesh.k[h]
    out = mask & (inner == d)
    if out.sum() * st.mesh.k[h] != mask.sum():
        raise ValueError(f"{int(mask.sum())} indices do not split evenly at level {h}")
    return out


def _set_axis(st: _State, p: int, axis: int, mask: np.ndarray) -> None:
    (st.rows if axis == 0 else st.cols)[p] = mask


def _axis(st: _State, p: int, axis: int) -> np.ndarray:
    return (st.rows if axis == 0 else st.cols)[p]


def _slice(st: _State, h: int, axis: int, strided: bool = False) -> None:
    """Each PE keeps (logically) its digit-h part of its indices along ``axis``; no sends."""
    for p in range(st.mesh.n):
        _set_axis(st, p, axis, _part(st, p, h, _axis(st, p, axis), strided))


def _fetch_missing(st: _State, group: list[int]) -> None:
    """Every member receives, from the other members, the elements of its (new) logical region it
    does not hold in memory; JudgeError when no member holds one."""
    for p in group:
        missing = st.region(p) & ~st.mem[p]
        for q in group:
            if q != p:
                take = missing & st.mem[q]
                st.send(q, p, take, st.val[q], add=False)
                missing &= ~take
        if missing.any():
            raise JudgeError(f"PE {p} lacks {int(missing.sum())} elements no group member holds")


def _gather(st: _State, h: int) -> None:
    """All-gather at level h: each member's logical region becomes the union of the group's (which
    must be a product set: the members differ along one axis only)."""
    for group in st.mesh.groups(h):
        for axis in (0, 1):
            masks = [_axis(st, q, axis) for q in group]
            if all(np.array_equal(m, masks[0]) for m in masks):
                continue
            others = [_axis(st, q, 1 - axis) for q in group]
            if any(not np.array_equal(o, others[0]) for o in others):
                raise JudgeError(f"level {h} gather of a non-product region")
            union = np.logical_or.reduce(masks)
            for q in group:
                _set_axis(st, q, axis, union)
        _fetch_missing(st, group)


def _all_to_all(st: _State, h: int, old: int, new: int) -> None:
    """Level h goes from sharding axis ``old`` to axis ``new``: slice ``new``, gather ``old``."""
    for group in st.mesh.groups(h):
        union = np.logical_or.reduce([_axis(st, q, old) for q in group])
        for q in group:
            _set_axis(st, q, new, _part(st, q, h, _axis(st, q, new), False))
            _set_axis(st, q, old, union)
        _fetch_missing(st, group)


def _reduce_scatter(st: _State, h: int, axis: int) -> None:
    """P at level h: members share a region of partials; each keeps its strided part along ``axis``
    (:func:`_part`), receives the other members' partials of it and sums (elements counted per
    sender); stale partials are dropped from memory."""
    for group in st.mesh.groups(h):
        if any(not np.array_equal(st.region(q), st.region(group[0])) for q in group):
            raise JudgeError(f"level {h} partials over different regions")
        before = {q: st.val[q].copy() for q in group}
        for q in group:
            _set_axis(st, q, axis, _part(st, q, h, _axis(st, q, axis), True))
            st.mem[q] = st.region(q)
        for p in group:
            for q in group:
                if q != p:
                    st.send(q, p, st.region(p), before[q], add=True)


# ----------------------------------------------------------------------------- the order

def _virtual_slices(st: _State, s, t, step: str) -> None:
    """Bottom level first, every R -> R level keeps logically its strided part of the rows."""
    for h in reversed(range(st.mesh.H)):
        if s[h] == t[h] == FULL:
            st.begin(step, "virtual slice", h)
            _slice(st, h, 0, strided=True)


def _step3(st: _State, s, t, virtual: bool) -> None:
    """Bottom level first: virtual slices (when ``virtual``), all-to-alls, gather halves."""
    for h in reversed(range(st.mesh.H)):
        if virtual and s[h] == t[h] == FULL:
            st.begin("3", "virtual slice", h)
            _slice(st, h, 0, strided=True)
        elif s[h] in SHARDS and t[h] in SHARDS and s[h] != t[h]:
            st.begin("3", "all-to-all", h)
            _all_to_all(st, h, AXIS[s[h]], AXIS[t[h]])
        elif s[h] == PARTIAL and t[h] in SHARDS:
            st.begin("3", "gather half", h)
            _gather(st, h)
            _slice(st, h, AXIS[t[h]])


def _run_order(st: _State, s, t, virtual_first: bool) -> None:
    """SPEC steps 1-4 (module docstring), recording each collective in ``st.steps``;
    ``virtual_first`` moves step 3's virtual slices before step 2 (see :func:`execute`)."""
    H = st.mesh.H
    for h in range(H):
        if s[h] == FULL and t[h] in SHARDS:
            st.begin("1", "slice", h)
            _slice(st, h, AXIS[t[h]])
    if virtual_first:
        _virtual_slices(st, s, t, "1b")
    for h in reversed(range(H)):
        if s[h] == PARTIAL:
            st.begin("2", "reduce-scatter", h)
            _reduce_scatter(st, h, AXIS.get(t[h], 0))
    _step3(st, s, t, virtual=not virtual_first)
    for h in range(H):
        if t[h] == FULL:
            st.begin("4", "relay" if s[h] == FULL else "all-gather", h)
            _gather(st, h)


def _fixup(st: _State, need: list[np.ndarray]) -> None:
    """Bring every PE's ``need`` into memory with the fewest sends, top level first: a level-h
    subgroup lacking an element receives it once from a sibling subgroup, then relays it inside."""
    mesh = st.mesh
    st.begin("fix", "to target layout", -1)
    for h in range(mesh.H):
        for parent in mesh.subgroups(h - 1):
            for child in [c for c in mesh.subgroups(h) if c[0] in parent]:
                outside = [q for q in parent if q not in child]
                held = np.logical_or.reduce([st.mem[q] for q in child])
                for p in child:
                    todo = need[p] & ~st.mem[p] & ~held
                    for q in outside:
                        take = todo & st.mem[q]
                        st.send(q, p, take, st.val[q], add=False)
                        todo &= ~take
                    held |= st.mem[p]
    for p in range(mesh.n):
        if (need[p] & ~st.mem[p]).any():
            raise JudgeError(f"PE {p} still lacks elements of its target region")


@dataclass
class Execution:
    """What an execution of the order sent, in elements summed over all PEs, per level.

    ``order``: the SPEC's steps; ``landed``: the order ended exactly in the target layout (of the
    nesting executed); ``fixup``: the extra sends from the order's end state to the target layout
    (zero when ``landed``); ``total = order + fixup``; ``steps``: every collective (SPEC step, op,
    level, elements per level), the fix-up last (step "fix", level -1)."""

    order: tuple[int, ...]
    fixup: tuple[int, ...]
    landed: bool
    steps: list[Step]

    @property
    def total(self) -> tuple[int, ...]:
        """Elements per level (top first) of the order plus the fix-up to the target layout."""
        return tuple(a + b for a, b in zip(self.order, self.fixup))


def execute(fanouts, s, t, shape: tuple[int, int] | None = None, seed: int = 0,
            virtual_first: bool = False, nesting: str = "canonical") -> Execution:
    """Run the conversion ``s -> t`` of one random integer tensor of ``shape`` (default
    ``(prod k)^2`` square) on the mesh ``fanouts`` in ``nesting`` (canonical or digit), element by
    element with point-to-point sends.

    Checks (JudgeError otherwise): no PE ever lacks data its step needs; after the order every PE's
    logical region holds exact, fully reduced values; after the fix-up every PE holds exactly the
    values of its region of ``t``.

    ``virtual_first``: slice the R -> R levels virtually before the reduce-scatters of step 2
    instead of in step 3 (SPEC: "every step at level h then runs with all levels below it
    sharded", which the literal order does not give step 2)."""
    mesh = Mesh(tuple(fanouts))
    s, t = tuple(s), tuple(t)
    _check_layouts(mesh, s, t)
    if nesting not in NESTINGS:
        raise ValueError(f"nesting {nesting!r}: choose one of {NESTINGS}")
    shape = shape or (mesh.n ** 2, mesh.n ** 2)
    rng = np.random.default_rng(seed)
    truth = rng.integers(-999, 1000, shape)
    st = _initial_state(mesh, s, truth, rng, nesting)
    _run_order(st, s, t, virtual_first)
    target = [layout_region(mesh, t, p, shape, nesting) for p in range(mesh.n)]
    for p in range(mesh.n):
        region = st.region(p)
        if (region & ~st.mem[p]).any() or not np.array_equal(st.val[p][region], truth[region]):
            raise JudgeError(f"after the order PE {p} does not hold the exact values of its region")
    landed = all(np.array_equal(st.region(p), target[p]) for p in range(mesh.n))
    order = tuple(map(sum, zip(*(x.amounts for x in st.steps)))) if st.steps else (0,) * mesh.H
    _fixup(st, target)
    for p in range(mesh.n):
        if not np.array_equal(st.val[p][target[p]], truth[target[p]]):
            raise JudgeError(f"PE {p} ends with wrong values on its target region")
    return Execution(order, tuple(st.steps[-1].amounts), landed, st.steps)


# ----------------------------------------------------------------------------- closed form and bound

def closed_form(fanouts, s, t, A) -> tuple[Fraction, ...]:
    """SPEC.md §3's elements crossing level-h links (summed over all PEs) for a tensor of ``A``
    elements converted ``s -> t``, one entry per level, top first (exact fractions)."""
    k = tuple(fanouts)
    out = []
    for h, kh in enumerate(k):
        above = range(h)
        K = prod(k[g] for g in above if s[g] == PARTIAL)
        Q = prod(k[g] for g in above if s[g] == t[g] == FULL)
        T = prod(k[g] for g in above if t[g] == FULL)
        B = prod((Fraction(k[g]) if s[g] == t[g] == FULL else
                  Fraction(1, k[g]) if SHARDS.count(s[g]) and t[g] in SHARDS and s[g] != t[g]
                  else Fraction(1)) for g in above)
        x, y = s[h], t[h]
        term = Fraction(0)
        term += (kh - 1) * K if x == PARTIAL else 0
        term += (kh - 1) * Q if x == PARTIAL and y in SHARDS else 0
        term += Fraction(kh - 1, kh) * Q if x in SHARDS and y in SHARDS and x != y else 0
        term += (kh - 1) * T if y == FULL and x != FULL else 0
        term += (kh - 1) * (T - B) if x == y == FULL else 0
        out.append(A * term)
    return tuple(out)


def information_bound(fanouts, s, t, A, shape: tuple[int, int] | None = None,
                      nesting: str = "canonical") -> tuple[Fraction, ...]:
    """Per level h, ``I_h`` = sum over level-h subgroups S of the elements some PE of S needs (its
    region of ``t``) whose value no PE of S holds at the start (regions of ``s``; with P at a level
    <= h, S holds only partials and lacks every element), in elements for a tensor of ``A``
    elements, both layouts in ``nesting``.

    Every such element must enter S from outside at least once, and a send enters a level-h
    subgroup from outside exactly when its counted level is <= h. So ``I_h`` bounds the sends
    counted at levels ``0..h`` together (equivalently: the elements entering level-h subgroups over
    their uplinks in a tree network); a per-level bound under topmost-digit counting does not exist
    (any element can be routed over a higher level instead)."""
    mesh = Mesh(tuple(fanouts))
    shape = shape or (mesh.n, mesh.n)
    out = []
    for h in range(mesh.H):
        lacked = 0
        for sub in mesh.subgroups(h):
            need = np.logical_or.reduce([layout_region(mesh, t, p, shape, nesting) for p in sub])
            partial = any(s[g] == PARTIAL for g in range(h + 1))
            have = np.logical_or.reduce([layout_region(mesh, s, p, shape, nesting) for p in sub]) & (not partial)
            lacked += int((need & ~have).sum())
        out.append(Fraction(lacked * A, shape[0] * shape[1]))
    return tuple(out)
