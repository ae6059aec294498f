"""One tensor's layout over a PE array as an ONNX sharding spec, and back.

A :class:`Placement` says, per level of the array (top first), which axis of the tensor that
level splits (:class:`TensorAxis`: the axis, its size and unit) or None (the level replicates
it). Which PE holds which indices is hypar's one rule, :mod:`hypar.shards` ("digit nesting"):
every index of an axis has one digit per level, the level coordinate of the PE whose leaf block
holds it, and a PE holds the indices whose digits at the levels splitting the axis are its own
coordinates there. :func:`encode` writes exactly that as a :class:`TensorSharding` (one
``ShardedDimProto`` per split axis):

- **Even axis** (:func:`hypar.shards.is_even`: the PE count divides it, in units, on a
  homogeneous array). The axis of ``n`` is read as the fusion of one factor per level ``0..m``
  (``m`` the deepest level splitting it, outer first): level ``h < m`` contributes a factor of
  ``k_h`` indices (the level's fanout), level ``m`` the rest, ``n / (k_0 ... k_{m-1})``; a
  level splitting the axis cuts its factor into ``k_h`` shards, any other into 1. So one level
  gives the common single entry ``{dim_value: n, num_shards: k_0}``; levels 0 and 1 give
  ``[{k_0, k_0}, {n / k_0, k_1}]`` (contiguous blocks of ``n / (k_0 k_1)``); level 1 alone
  gives ``[{k_0, 1}, {n / k_0, k_1}]`` -- strided, as digit nesting places it (DTensor's
  ``_StridedShard``).
- **Uneven or heterogeneous axis** (blocks of unequal size: a dimension the PE count does not
  divide, or shares in proportion to the PEs' throughput). ``SimpleShardedDimProto`` states no
  shard sizes, only equal shards, so the axis becomes ``n / g`` equal shards of ``g`` indices
  (``g``: the largest size dividing every run of indices with the same digits) and a device
  holding several consecutive shards is listed once per shard: the explicit sizes are the
  number of times each device (or group) appears. A PE whose block is empty holds no shard.

Why one entry per axis with one factor per level, not one entry per level: the proposal's
entries each cut an axis of the whole tensor (its nested loops index every entry's axis from
the full shape), so two entries naming one axis say nothing defined, while several
``simple_sharding`` factors of one entry are the format's own way to nest cuts of one axis. A
level that splits nothing of the tensor shows only in who holds the shards (a group of devices
per shard). ``dim_value`` is the axis size the plan was costed at (its batch and bound dims).

Shards are numbered row-major over the entries (tensor axes in ascending order) and, inside an
entry, over its factors; the devices holding a shard are the PEs whose coordinates at the
splitting levels are the shard's digits (a group when some level replicates the tensor).
:func:`split_levels` reads a spec back into, per level, the axes that level could be splitting
(:func:`hypar.export.onnx_sharding.decode` matches them against a node's types and then
re-encodes to compare exactly).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import reduce
from math import gcd, prod

import numpy as np

from hypar import shards
from hypar.array import PEArray
from hypar.onnx.sharding import AxisSplit, TensorSharding


@dataclass(frozen=True)
class TensorAxis:
    """An axis a level may split: its index in the tensor (negative counts from the back, as
    the spec writes it), its size and its unit (:mod:`hypar.shards` "Units")."""

    axis: int
    size: int
    unit: int = 1


@dataclass(frozen=True)
class Placement:
    """One tensor of one node: per level (top first) the axis that level splits, None where it
    replicates the tensor."""

    tensor: str
    levels: tuple[TensorAxis | None, ...]

    @property
    def replicated(self) -> bool:
        """True when no level splits the tensor."""
        return all(a is None for a in self.levels)


def encode(array: PEArray, placement: Placement) -> TensorSharding:
    """The spec of ``placement`` on ``array`` (module docstring). ValueError when two levels
    split one axis with different sizes or units (not one tensor)."""
    by_axis: dict[int, tuple[TensorAxis, list[int]]] = {}
    for h, ta in enumerate(placement.levels):
        if ta is None:
            continue
        seen = by_axis.setdefault(ta.axis, (ta, []))
        if seen[0] != ta:
            raise ValueError(f"tensor {placement.tensor!r}: axis {ta.axis} given as {seen[0]} and {ta}")
        seen[1].append(h)
    splits, shard_digits = [], []
    for axis in sorted(by_axis):
        ta, levels = by_axis[axis]
        if shards.is_even(array, ta.size, ta.unit):
            factors, digits = _even(array.fanouts, ta.size, levels)
        else:
            factors, digits = _explicit(array, ta, levels)
        splits.append(AxisSplit(axis, factors))
        shard_digits.append(digits)
    return TensorSharding(placement.tensor, tuple(splits), _holders(array.fanouts, shard_digits))


def _even(fanouts: tuple[int, ...], n: int, levels: list[int]) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """Factors of an evenly split axis of ``n`` split at ``levels``, and each shard's digits: a
    (shards, levels of the array) array, -1 at the levels not splitting the axis."""
    deepest = max(levels)
    factors = []
    for h in range(deepest + 1):
        value = fanouts[h] if h < deepest else n // prod(fanouts[:deepest])
        factors.append((value, fanouts[h] if h in levels else 1))
    digits = np.full((prod(fanouts[h] for h in levels), len(fanouts)), -1, dtype=np.int64)
    digits[:, levels] = list(itertools.product(*[range(fanouts[h]) for h in levels]))
    return tuple(factors), digits


def _explicit(array: PEArray, ta: TensorAxis, levels: list[int]) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """One factor of ``n / g`` equal shards of an unevenly split axis, and each shard's digits
    (as :func:`_even` gives them)."""
    digit_rows = shards.axis_digits(array, ta.size, ta.unit)[levels]          # (levels, n)
    n = ta.size
    changes = np.flatnonzero((digit_rows[:, 1:] != digit_rows[:, :-1]).any(axis=0)) + 1
    g = reduce(gcd, changes.tolist(), n)
    digits = np.full((n // g, array.n_levels), -1, dtype=np.int64)
    digits[:, levels] = digit_rows[:, ::g].T
    return ((n, n // g),), digits


def _holders(fanouts: tuple[int, ...], shard_digits: list[np.ndarray]) -> tuple[tuple[int, ...], ...]:
    """The PEs holding each shard, row-major over the splits' shards (one shard held by every PE
    when nothing is split): those whose coordinates equal the shard's digits where it has them."""
    coords = _coords(fanouts)
    held = np.ones((1, len(coords)), dtype=bool)
    for digits in shard_digits:
        fits = ((digits[:, None, :] < 0) | (digits[:, None, :] == coords[None, :, :])).all(axis=2)   # (shards, PEs)
        held = (held[:, None, :] & fits[None, :, :]).reshape(-1, len(coords))
    rows, which = np.unique(held, axis=0, return_inverse=True)
    pes = [tuple(int(p) for p in np.flatnonzero(r)) for r in rows]
    return tuple(pes[k] for k in which.ravel())


def _coords(fanouts: tuple[int, ...]) -> np.ndarray:
    """(PEs, levels) coordinates of every PE, mixed radix, top level first."""
    pe = np.arange(prod(fanouts))
    return np.stack([(pe // prod(fanouts[h + 1:])) % fanouts[h] for h in range(len(fanouts))], axis=1)


def split_levels(spec: TensorSharding, fanouts: tuple[int, ...]) -> list[set[int]]:
    """Per level (top first), the axes of ``spec`` that level could be splitting: those along
    which some shard's holders are not closed under changing the PEs' coordinate at that level
    (a level splitting an axis always shows; a level may also show on an axis whose PEs hold
    nothing, so the caller confirms by re-encoding)."""
    counts = tuple(s.shards for s in spec.splits)
    n_pes = prod(fanouts)
    held = np.zeros((max(len(spec.holders), 1), n_pes), dtype=bool)
    counts_per_shard = [len(holders) for holders in spec.holders]
    pes = np.fromiter(itertools.chain.from_iterable(spec.holders), dtype=np.int64, count=sum(counts_per_shard))
    held[np.repeat(np.arange(len(counts_per_shard)), counts_per_shard), pes] = True
    held = held.reshape(counts + tuple(fanouts))
    out: list[set[int]] = [set() for _ in fanouts]
    for i, split in enumerate(spec.splits):
        others = tuple(j for j in range(len(counts)) if j != i)
        union = held.any(axis=others) if others else held                  # (shards of axis i,) + fanouts
        for h in range(len(fanouts)):
            if not np.array_equal(union.any(axis=1 + h), union.all(axis=1 + h)):
                out[h].add(split.axis)
    return out
