"""Which subgroup holds each index of a split axis, per level: the digit maps behind every layout
(pure: sizes and fanouts in, integer arrays out).

A layout that shards an axis at levels L gives PE p the indices whose level-h digit equals p's
level-h coordinate for every h in L ("digit nesting": a split at one level is independent of the
splits at the others, so the hierarchical order lands exactly in its target).

- :func:`even_digits`: an axis of ``n`` indices, ``n`` divisible by the number of PEs P: index r
  lies in block ``r // (n / P)``, whose mixed-radix digits (top level first) are its digits. Every
  set of levels then splits the axis evenly.
- :func:`balanced_digits`: any ``n``. Per prime p of the fanouts, the p-part of ``n`` gives
  ``m`` base digits in GF(p) (of the contiguous block index); each level's digit (its fanout's
  p-part written in base p) is a GF(p)-linear map of them, chosen so that as many sets of levels as
  possible -- all single levels, then pairs, ... -- are *balanced*: every combination of their
  digits holds the same number of indices. Equal to :func:`even_digits` when P divides ``n``.

A set of levels that is not balanced (e.g. 6 channels split at both levels of 2x2, or a batch of
4 at all three levels of 2x2x2) has no placement whose per-level shard sizes all match the even
closed form or the top-first rounding: :func:`balanced` tells, and the simulator refuses it
(:class:`hypar.sim.errors.UnevenSplit`).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from math import prod

import numpy as np

MAX_EXHAUSTIVE = 4096          # GF(p) matrices tried exhaustively; above that, rows chosen greedily


def _factor(k: int) -> dict[int, int]:
    """Prime -> exponent of ``k``."""
    out: dict[int, int] = {}
    q = 2
    while k > 1:
        while k % q == 0:
            out[q] = out.get(q, 0) + 1
            k //= q
        q += 1
    return out


def even_digits(n: int, fanouts: tuple[int, ...]) -> np.ndarray:
    """(levels, n) digits of an axis of ``n`` indices, ``n`` divisible by prod(fanouts)."""
    P = prod(fanouts)
    q = np.arange(n) // (n // P)
    return np.array([(q // prod(fanouts[h + 1:])) % fanouts[h] for h in range(len(fanouts))])


def _rank(rows: list[tuple[int, ...]], p: int) -> int:
    """Rank over GF(p) of integer vectors."""
    m = [list(r) for r in rows]
    rank, cols = 0, len(m[0]) if m else 0
    for c in range(cols):
        piv = next((i for i in range(rank, len(m)) if m[i][c] % p), None)
        if piv is None:
            continue
        m[rank], m[piv] = m[piv], m[rank]
        inv = pow(m[rank][c], p - 2, p)
        m[rank] = [(x * inv) % p for x in m[rank]]
        for i in range(len(m)):
            if i != rank and m[i][c] % p:
                f = m[i][c]
                m[i] = [(a - f * b) % p for a, b in zip(m[i], m[rank])]
        rank += 1
    return rank


def _score(matrix: list[tuple[int, ...]], owners: list[int], n_levels: int, p: int) -> tuple:
    """How many level sets of each size (1, 2, ...) the rows balance: a set is balanced when its
    rows (``owners[i]``: the level of row i) have full row rank."""
    counts = []
    for size in range(1, n_levels + 1):
        ok = 0
        for levels in itertools.combinations(range(n_levels), size):
            rows = [r for r, o in zip(matrix, owners) if o in levels]
            if rows and _rank(rows, p) == len(rows):
                ok += 1
        counts.append(ok)
    return tuple(counts)


def _choose_matrix(owners: tuple[int, ...], n_levels: int, m: int, p: int) -> list[tuple[int, ...]]:
    """Rows (one per level digit in base p, top level first) over ``m`` base digits balancing the
    most level sets; the identity-like choice (top levels on the leading base digits) when the
    base digits suffice."""
    rows = len(owners)
    if rows <= m:
        return [tuple(int(j == i) for j in range(m)) for i in range(rows)]
    vectors = [v for v in itertools.product(range(p), repeat=m) if any(v)]
    vectors.sort(key=lambda v: (sum(x != 0 for x in v), [-x for x in v]))
    if len(vectors) ** rows <= MAX_EXHAUSTIVE:
        best = max(itertools.product(vectors, repeat=rows), key=lambda mat: _score(list(mat), list(owners), n_levels, p))
        return list(best)
    chosen: list[tuple[int, ...]] = []
    for i in range(rows):
        chosen.append(max(vectors, key=lambda v: _score(chosen + [v], list(owners[:i + 1]), n_levels, p)))
    return chosen


@lru_cache(maxsize=None)
def _balanced_digits(n: int, fanouts: tuple[int, ...]) -> np.ndarray:
    """:func:`balanced_digits` computed (cached; read-only result)."""
    H = len(fanouts)
    primes = sorted({q for k in fanouts for q in _factor(k)})
    base = {q: min(_factor(n).get(q, 0), sum(_factor(k).get(q, 0) for k in fanouts)) for q in primes}
    D = prod(q ** base[q] for q in primes)
    block = np.arange(n) // (n // D)                       # contiguous blocks, D of them
    out = np.zeros((H, n), dtype=np.int64)
    radix = [1] * H                                        # each level's digit assembled prime by prime
    for q in primes:
        m = base[q]
        owners = tuple(h for h in range(H) for _ in range(_factor(fanouts[h]).get(q, 0)))
        comp = block % (q ** m)
        bits = [(comp // q ** (m - 1 - j)) % q for j in range(m)]   # leading base digit first
        matrix = _choose_matrix(owners, H, m, q) if m else [()] * len(owners)
        per_level: dict[int, np.ndarray] = {}
        for row, h in zip(matrix, owners):
            val = sum((c * b for c, b in zip(row, bits)), np.zeros(n, dtype=np.int64)) % q
            per_level[h] = per_level.get(h, np.zeros(n, dtype=np.int64)) * q + val
        for h, val in per_level.items():
            out[h] += val * radix[h]
            radix[h] *= q ** _factor(fanouts[h])[q]
    out.setflags(write=False)
    return out


def balanced_digits(n: int, fanouts: tuple[int, ...]) -> np.ndarray:
    """(levels, n) digits of an axis of ``n`` indices on ``fanouts`` (module docstring): the even
    digits when prod(fanouts) divides ``n``, else the balanced GF(p)-linear ones. Read-only."""
    fanouts = tuple(int(k) for k in fanouts)
    if n % prod(fanouts) == 0:
        return even_digits(n, fanouts)
    return _balanced_digits(int(n), fanouts)


def balanced(digits: np.ndarray, fanouts: tuple[int, ...], levels) -> bool:
    """Does every combination of the digits at ``levels`` hold the same number of indices."""
    levels = sorted(set(levels))
    if not levels:
        return True
    n = digits.shape[1]
    k = [fanouts[h] for h in levels]
    if n % prod(k):
        return False
    code = np.zeros(n, dtype=np.int64)
    for h, kh in zip(levels, k):
        code = code * kh + digits[h]
    return bool((np.bincount(code, minlength=prod(k)) == n // prod(k)).all())
