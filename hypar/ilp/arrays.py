"""The model of a :class:`~hypar.ilp.reduce.ReducedProblem` as numpy arrays, for HiGHS's array
API: the same columns, rows and coefficients as :mod:`hypar.ilp.model`'s PuLP model, in the
order PuLP hands that model to a solver (columns sorted by variable name, rows in creation
order, each row's terms in creation order), so HiGHS solves the identical model without one
Python object per variable. Imports numpy only.

Columns by role (see :mod:`hypar.ilp.model` for the formulation): ``x`` one-hot per free node
and choice (the only integer columns), ``y`` per pair and joint choice, ``q`` per factor entry,
one ``w``/``z`` per group term. PuLP's names (``x_{i}_{c}``, ``y_{u}_{v}_{s}_{t}``,
``q_{k}_{j}``, ``w_{k}``, ``z_{k}``; node and term indices zero-padded, choice indices not)
sort as q, w, x, y, z; within a role by padded index, then by the unpadded choice suffix as a
string (choice 10 before choice 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from hypar.ilp.reduce import ReducedGroup, ReducedProblem


@dataclass
class ArrayModel:
    """A minimisation model in HiGHS's terms; costs scaled (``objective * scale + reduced
    const = problem objective``). Rows are CSR: row r's terms are ``index[starts[r]:starts[r+1]]``
    (the last row to ``len(index)``)."""

    cost: np.ndarray                       # per column, scaled
    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray                    # int32 indices of the integer (x) columns, ascending
    row_lower: np.ndarray
    row_upper: np.ndarray
    starts: np.ndarray                     # int32, one per row
    index: np.ndarray                      # int32 column of each term
    value: np.ndarray                      # float coefficient of each term
    x: dict[int, np.ndarray] = field(default_factory=dict)     # free node -> column per choice
    y: list[tuple[int, int, np.ndarray]] = field(default_factory=list)   # u, v, columns [s, t]
    q: list[tuple[tuple[int, ...], np.ndarray]] = field(default_factory=list)  # nodes, columns
    aux: list[tuple[ReducedGroup, int]] = field(default_factory=list)    # group, its column
    scale: float = 1.0

    @property
    def n_variables(self) -> int:
        return len(self.cost)

    @property
    def n_constraints(self) -> int:
        return len(self.row_lower)

    def chosen(self, col: np.ndarray) -> dict[int, int]:
        """Each free node's choice in the solution ``col`` (its largest x; the first on ties)."""
        return {i: int(np.argmax(col[xs])) for i, xs in self.x.items()}

    def start(self, assignment: tuple[int, ...]) -> np.ndarray:
        """Every column's value under ``assignment`` (a warm start)."""
        col = np.zeros(self.n_variables)
        for i, xs in self.x.items():
            col[xs[assignment[i]]] = 1.0
        for u, v, ys in self.y:
            col[ys[assignment[u], assignment[v]]] = 1.0
        for nodes, qs in self.q:
            col[qs[tuple(assignment[v] for v in nodes)]] = 1.0
        for g, k in self.aux:
            on = any(assignment[v] in ts for v, ts in g.members)
            if g.anchor is not None:
                on = on and assignment[g.anchor[0]] == g.anchor[1]
            col[k] = 1.0 if on else 0.0
        return col


@functools.lru_cache(maxsize=None)
def _rank(shape: tuple[int, ...]) -> np.ndarray:
    """Position of each joint choice (C order over ``shape``) among the name suffixes
    ``"{c0}_{c1}..."`` sorted as strings."""
    grid = np.indices(shape).reshape(len(shape), -1).T
    names = ["_".join(map(str, row)) for row in grid]
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    return rank.reshape(shape)


def objective_scale(red: ReducedProblem) -> float:
    """The largest cost coefficient of the model (1 when there is none)."""
    scale = 0.0
    for c in red.lin.values():
        scale = max(scale, float(np.max(c)))
    for _, _, m in red.pairs:
        scale = max(scale, float(np.max(np.abs(m))))
    for g in red.groups:
        scale = max(scale, g.cost)
    for f in red.factors:
        scale = max(scale, float(np.max(f.table)))
    return scale or 1.0


def pairs_with_anchor_links(red: ReducedProblem) -> list[tuple[int, int, np.ndarray]]:
    """The pair costs, plus a zero pair between each group anchor and member node that no
    cost links: anchored groups are bounded through pair variables (z >= sum_t y[a, v][s,
    t]), as tight as the pairwise linearisation; z >= x_a + m_v - 1 has a weak LP."""
    pairs = list(red.pairs)
    have = {(u, v) for u, v, _ in pairs}
    for g in red.groups:
        if g.anchor is None:
            continue
        a = g.anchor[0]
        for v, _ts in g.members:
            if v != a and (a, v) not in have and (v, a) not in have:
                have.add((a, v))
                pairs.append((a, v, np.zeros((red.sizes[a], red.sizes[v]))))
    return pairs


class _Columns:
    """Column positions of every role, in PuLP's name order (q, w, x, y, z)."""

    def __init__(self, red: ReducedProblem, pairs: list[tuple[int, int, np.ndarray]]):
        at = 0
        self.q: list[np.ndarray] = []
        for f in red.factors:                     # q_k_j: k and j zero-padded
            self.q.append(at + np.arange(f.table.size).reshape(f.table.shape))
            at += f.table.size
        self.aux: list[int] = [0] * len(red.groups)
        for k, g in enumerate(red.groups):        # w_k (no anchor) before x
            if g.anchor is None:
                self.aux[k], at = at, at + 1
        self.x: dict[int, np.ndarray] = {}
        for i in red.free:                        # x_i_c: free is ascending
            self.x[i] = at + _rank((red.sizes[i],))
            at += red.sizes[i]
        self.y: list[np.ndarray | None] = [None] * len(pairs)
        for p in sorted(range(len(pairs)), key=lambda p: pairs[p][:2]):     # y_u_v_s_t
            shape = pairs[p][2].shape
            self.y[p] = at + _rank(shape)
            at += int(np.prod(shape))
        for k, g in enumerate(red.groups):        # z_k (anchored) last
            if g.anchor is not None:
                self.aux[k], at = at, at + 1
        self.count = at


class _Rows:
    """Rows being collected in runs: per run its terms' columns and coefficients (flat), each
    row's length, and the run's bounds (one pair for every row of the run)."""

    def __init__(self) -> None:
        self.index: list[np.ndarray] = []
        self.value: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.bounds: list[tuple[float, float]] = []

    def add(self, cols, coefs, lower: float, upper: float) -> None:
        """One row."""
        cols = np.asarray(cols, np.int64).ravel()
        self.run(cols, np.asarray(coefs, float).ravel(), np.array([len(cols)]), lower, upper)

    def block(self, cols: np.ndarray, coefs: np.ndarray, lower: float, upper: float) -> None:
        """One row per line of the 2-D ``cols`` / ``coefs`` (same shape)."""
        self.run(cols.ravel(), coefs.ravel(), np.full(len(cols), cols.shape[1]), lower, upper)

    def run(self, index: np.ndarray, value: np.ndarray, lengths: np.ndarray, lower: float,
            upper: float) -> None:
        """Rows of ``lengths`` terms each, their terms ``index`` / ``value`` one after another."""
        if len(lengths):
            self.index.append(index)
            self.value.append(value)
            self.lengths.append(lengths)
            self.bounds.append((lower, upper))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(row_lower, row_upper, row lengths, index, value) of all rows in order."""
        if not self.lengths:
            return np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0)
        counts = [len(n) for n in self.lengths]
        lower = np.repeat([lo for lo, _ in self.bounds], counts).astype(float)
        upper = np.repeat([up for _, up in self.bounds], counts).astype(float)
        return (lower, upper, np.concatenate(self.lengths).astype(np.int64),
                np.concatenate(self.index).astype(np.int32), np.concatenate(self.value).astype(float))


@functools.lru_cache(maxsize=None)
def _pair_pattern(tu: int, tv: int) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, row lengths) of one pair's marginal rows: ``tu`` rows ``sum_t y - x_u``,
    then ``tv - 1`` rows ``sum_s y - x_v``."""
    coefs = np.concatenate([np.tile([1.0] * tv + [-1.0], tu), np.tile([1.0] * tu + [-1.0], tv - 1)])
    return coefs, np.array([tv + 1] * tu + [tu + 1] * (tv - 1), np.int64)


def _pair_rows(pairs, cols: "_Columns", rows: _Rows) -> None:
    """Every pair's marginal rows, pair after pair, built for all pairs of one shape at once."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for p, (_u, _v, m) in enumerate(pairs):
        by_shape.setdefault(m.shape, []).append(p)
    segments: list[np.ndarray | None] = [None] * len(pairs)
    for (tu, tv), ps in by_shape.items():
        y = np.stack([cols.y[p] for p in ps])                               # k, tu, tv
        xu = np.stack([cols.x[pairs[p][0]] for p in ps])[:, :, None]        # k, tu, 1
        xv = np.stack([cols.x[pairs[p][1]] for p in ps])[:, :tv - 1, None]  # k, tv-1, 1
        flat = np.concatenate([np.concatenate([y, xu], axis=2).reshape(len(ps), -1),
                               np.concatenate([y.transpose(0, 2, 1)[:, :tv - 1], xv],
                                              axis=2).reshape(len(ps), -1)], axis=1)
        for j, p in enumerate(ps):
            segments[p] = flat[j]
    if pairs:
        patterns = [_pair_pattern(*m.shape) for _u, _v, m in pairs]
        rows.run(np.concatenate(segments), np.concatenate([c for c, _ in patterns]),
                 np.concatenate([n for _, n in patterns]), 0.0, 0.0)


def build_arrays(red: ReducedProblem) -> ArrayModel:
    """The model of ``red`` as arrays; the same model :func:`hypar.ilp.model.build_model`
    hands to a PuLP solver, column for column and row for row."""
    inf = np.inf
    pairs = pairs_with_anchor_links(red)
    cols = _Columns(red, pairs)
    scale = objective_scale(red)
    cost = np.zeros(cols.count)
    upper = np.ones(cols.count)
    rows = _Rows()

    def put(at: np.ndarray, values: np.ndarray) -> None:
        values = np.asarray(values, float)
        cost[at] = np.where(values != 0, values / scale, 0.0)

    for i in red.free:
        put(cols.x[i], red.lin[i])
        rows.add(cols.x[i], np.ones(red.sizes[i]), 1.0, 1.0)
    ypos: dict[tuple[int, int], np.ndarray] = {}
    for (u, v, m), ys in zip(pairs, cols.y):
        ypos[(u, v)] = ys
        put(ys, m)
    _pair_rows(pairs, cols, rows)
    _factor_rows(red, cols, rows, put)
    for g, k in zip(red.groups, cols.aux):
        put(np.array([k]), [g.cost])
        for v, ts in g.members:
            if g.anchor is None:
                member = cols.x[v][list(ts)]
            else:
                a, s_ = g.anchor
                member = ypos[(a, v)][s_, list(ts)] if (a, v) in ypos else ypos[(v, a)][list(ts), s_]
            rows.add(np.concatenate([[k], member]), [1.0] + [-1.0] * len(ts), 0.0, inf)
    for row, rhs in red.memory:
        top = max(float(np.max(c)) for c in row.values())
        at, coefs = [], []
        for i, coef in sorted(row.items()):
            nz = np.flatnonzero(np.asarray(coef) != 0)
            at.append(cols.x[i][nz])
            coefs.append(np.asarray(coef, float)[nz] / top)
        rows.add(np.concatenate(at), np.concatenate(coefs), -inf, rhs / top)
    return _finish(red, cols, pairs, cost, upper, rows, scale)


def _factor_rows(red: ReducedProblem, cols: _Columns, rows: _Rows, put) -> None:
    """Each factor's costs and marginal rows (the first node's full set sums q to 1; for the
    others the last choice's is implied)."""
    for f, qs in zip(red.factors, cols.q):
        put(qs, f.table)
        flat = qs.ravel()
        grid = np.indices(f.table.shape).reshape(len(f.nodes), -1)
        for a, v in enumerate(f.nodes):
            for c in range(f.table.shape[a] - (1 if a else 0)):
                members = flat[np.flatnonzero(grid[a] == c)]
                rows.add(np.append(members, cols.x[v][c]), [1.0] * len(members) + [-1.0],
                         0.0, 0.0)


def _finish(red: ReducedProblem, cols: _Columns, pairs, cost, upper, rows: _Rows,
            scale: float) -> ArrayModel:
    """The collected parts as one :class:`ArrayModel`."""
    row_lower, row_upper, lengths, index, value = rows.arrays()
    starts = np.zeros(len(lengths), np.int32)
    if len(lengths):
        starts[1:] = np.cumsum(lengths)[:-1]
    keep = value != 0
    if not keep.all():                         # PuLP's loader drops zero coefficients
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        index, value = index[keep], value[keep]
        counts = np.bincount(row_of[keep], minlength=len(lengths))
        starts = np.zeros(len(lengths), np.int32)
        starts[1:] = np.cumsum(counts)[:-1]
    integer = np.sort(np.concatenate(list(cols.x.values()))).astype(np.int32) \
        if cols.x else np.zeros(0, np.int32)
    return ArrayModel(
        cost=cost, lower=np.zeros(cols.count), upper=upper, integer=integer,
        row_lower=row_lower, row_upper=row_upper,
        starts=starts, index=index, value=value, x=cols.x,
        y=[(u, v, ys) for (u, v, _), ys in zip(pairs, cols.y)],
        q=[(f.nodes, qs) for f, qs in zip(red.factors, cols.q)],
        aux=list(zip(red.groups, cols.aux)), scale=scale)
