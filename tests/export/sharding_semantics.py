"""ONNX's sharding annotations read the way the format describes them, written here apart from
hypar's own reader (hypar/onnx/sharding.py) so the tests judge the writer against the format:

- docs/proposals/0006-ONNXMultiDeviceProposal.md: shard k of a spec lives on ``device[k]`` (a
  device id, or a key of ``index_to_device_group_map`` whose devices each hold a copy); shards
  are numbered by nested loops over the ``sharded_dim`` entries, the first one outermost;
- onnx.proto ``ShardedDimProto``: several ``simple_sharding`` entries read the axis as a fusion
  of sub-axes (outer first), each of ``dim_value`` indices cut into ``num_shards`` equal shards.

:func:`held_indices` gives, per device, the indices of every split axis it holds;
:func:`digit_nesting` what hypar's rule (hypar.shards) gives a device for the same splits.
"""

from __future__ import annotations

import itertools
from math import prod

import numpy as np

from hypar import shards


def entry_pieces(dim) -> list[np.ndarray]:
    """The index sets of one ShardedDimProto's shards, in shard order."""
    values = [s.dim_value for s in dim.simple_sharding]
    cuts = [s.num_shards for s in dim.simple_sharding]
    assert all(v % c == 0 for v, c in zip(values, cuts)), (values, cuts)
    grid = np.arange(prod(values)).reshape(values)
    pieces = []
    for combo in itertools.product(*[range(c) for c in cuts]):
        sel = tuple(slice(i * v // c, (i + 1) * v // c) for i, v, c in zip(combo, values, cuts))
        pieces.append(np.sort(grid[sel].ravel()))
    return pieces


def held_indices(spec, num_devices: int) -> dict[int, dict[int, set[int]]]:
    """Per device that holds any shard: per sharded axis (as written), the indices it holds."""
    groups = {e.key: list(e.value) for e in spec.index_to_device_group_map}
    per_entry = [entry_pieces(d) for d in spec.sharded_dim]
    combos = list(itertools.product(*[range(len(p)) for p in per_entry]))
    assert len(spec.device) == len(combos), (len(spec.device), len(combos))
    out: dict[int, dict[int, set[int]]] = {}
    for k, dev in enumerate(spec.device):
        for p in groups.get(dev, [dev]):
            assert 0 <= p < num_devices
            mine = out.setdefault(p, {d.axis: set() for d in spec.sharded_dim})
            for dim, pieces, i in zip(spec.sharded_dim, per_entry, combos[k]):
                mine[dim.axis] |= set(pieces[i].tolist())
    return out


def digit_nesting(array, axes: dict[int, tuple[int, int, list[int]]]) -> dict[int, dict[int, set[int]]]:
    """Per PE holding anything: per axis ``{axis: (size, unit, levels splitting it)}`` the indices
    hypar.shards gives it (a PE whose share of some axis is empty holds nothing)."""
    fan = array.fanouts
    out = {}
    for p in range(array.n_pes):
        coords = [(p // prod(fan[h + 1:])) % fan[h] for h in range(len(fan))]
        mine = {}
        for axis, (n, unit, levels) in axes.items():
            d = shards.axis_digits(array, n, unit)
            keep = np.ones(n, dtype=bool)
            for h in levels:
                keep &= d[h] == coords[h]
            mine[axis] = set(np.flatnonzero(keep).tolist())
        if all(mine.values()) or not axes:
            out[p] = mine
    return out
