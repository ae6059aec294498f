"""Closed forms of the collectives (SPEC.md §3-4): how many elements each subgroup receives, and
in how many messages, to all-reduce a tensor or to convert it from one layout to another.

Pure functions of sizes, throughput fractions and layouts: no graph, no array, no pricing. A
group splits into ``k = len(fractions)`` subgroups; shards follow the fractions (largest
remainder, :func:`hypar.array.split_counts`). Amounts are elements, not bytes.
"""

from __future__ import annotations

from hypar.array import split_counts
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS


def allreduce(elements: int, fractions: tuple[float, ...]) -> list[float]:
    """Elements each subgroup receives in a ring all-reduce of ``elements`` chunked by ``fractions``.

    Subgroup j owns chunk c_j: it receives the k-1 other partial chunks of its own and the
    ``elements - c_j`` reduced elements it does not own: ``(k - 1) * c_j + (elements - c_j)``.

    >>> allreduce(8, (0.5, 0.5))
    [8, 8]
    """
    k = len(fractions)
    return [(k - 1) * c + (elements - c) for c in split_counts(elements, fractions)]


def convert(src: str, dst: str, a: int, bs: int, fs: int, fr: tuple[float, ...]) -> list[float]:
    """Elements each subgroup receives to turn layout ``src`` into ``dst`` (SPEC.md §3-4).

    ``a``: tensor elements in view; ``bs`` / ``fs``: its batch / feature sizes in view; shards
    follow the throughput fractions ``fr``. Partial sums are all-reduced whatever ``dst`` is; a
    full (replicated) source or an equal layout moves nothing. Raises ValueError for a pair of
    layouts with no conversion.

    An 8 x 4 tensor (32 elements) over two equal halves: gathering rows costs each half the other
    half; rows to columns, the quarter it lacks.

    >>> convert(ROWS, FULL, 32, 8, 4, (0.5, 0.5))
    [16.0, 16.0]
    >>> convert(ROWS, COLS, 32, 8, 4, (0.5, 0.5))
    [8.0, 8.0]
    """
    k = len(fr)
    if src == PARTIAL:
        return allreduce(a, fr)
    if src == dst or src == FULL or a == 0:
        return [0.0] * k
    pb = split_counts(bs, fr)
    pf = split_counts(fs, fr)
    if dst == FULL:
        if src == ROWS:
            return [a * (1 - pb[j] / bs) for j in range(k)]
        return [a * (1 - pf[j] / fs) for j in range(k)]
    if src == ROWS and dst == COLS:
        return [a * (pf[j] / fs) * (1 - pb[j] / bs) for j in range(k)]
    if src == COLS and dst == ROWS:
        return [a * (pb[j] / bs) * (1 - pf[j] / fs) for j in range(k)]
    raise ValueError(f"no conversion {src} -> {dst}")


def messages(src: str, dst: str, k: int) -> int:
    """Messages a subgroup receives converting ``src`` into ``dst`` among ``k`` subgroups: a ring
    all-reduce of partial sums takes 2(k-1), a gather or re-shard k-1, nothing to move 0.

    >>> messages(PARTIAL, FULL, 4), messages(ROWS, COLS, 4), messages(FULL, ROWS, 4)
    (6, 3, 0)
    """
    if src == PARTIAL:
        return 2 * (k - 1)
    if src == dst or src == FULL:
        return 0
    return k - 1
