"""Which PEs hold which slice of a weight: the ``weight_slices`` a plan records per weighted layer.

A weight is a Di x Do matrix (a grouped conv's is a stack of groups, each Di/G x Do/G). Walking
the array's group tree top down, a level of type II splits the rows (Di) among its subgroups, a
level of type III the columns (Do), a grouped conv's type II whole groups (rows and columns
together), each in proportion to the subgroups' throughput (:func:`hypar.array.split_counts`);
a level of type I keeps the slice whole in every subgroup (a replica).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from hypar.array import PEArray, split_counts
from hypar.cost import CostModel
from hypar.cost.strategies import NodeModel

Range = tuple[int, int]          # [start, stop)


@dataclass(frozen=True)
class _TreeWalk:
    """One node's types walked down ``array``'s group tree."""

    array: PEArray
    node: NodeModel
    types: tuple

    def leaves(self, ranges: dict[str, Range], level: int = 0, first_pe: int = 0,
               n_pes: int | None = None, key=None) -> Iterator[tuple[int, dict[str, Range]]]:
        """(first PE, ranges) of every leaf group in PE order; a level whose split axis is a key of
        ``ranges`` splits that range among its subgroups."""
        arr = self.array
        if level == arr.n_levels:
            yield first_pe, ranges
            return
        n_pes = arr.n_pes if n_pes is None else n_pes
        group = arr.classes[level][arr.root_key if key is None else key]
        axis = self.node.strategy(self.types[level]).split_axis
        sub_pes = n_pes // len(group.children)
        parts = None
        if axis in ranges:
            start, stop = ranges[axis]
            parts = split_counts(stop - start, [c[1] for c in group.children])
            pos = start
        for j, (child_key, _fraction, _n) in enumerate(group.children):
            child = ranges
            if parts is not None:
                child = {**ranges, axis: (pos, pos + parts[j])}
                pos += parts[j]
            yield from self.leaves(child, level + 1, first_pe + j * sub_pes, sub_pes, child_key)


def weight_slices(model: CostModel, i: int, types: tuple, max_pes: int = 64) -> list[dict] | None:
    """Which PEs hold which [start, stop) rows (``in``, Di) and columns (``out``, Do) of node
    ``i``'s weight under ``types`` (one per level, top first), as rows ``{"pes": [first, stop),
    "in": [a, b), "out": [c, d)}`` in PE order; None for a node without a weight to split, or
    above ``max_pes`` PEs."""
    node = model.nodes[i]
    if not node.layer.weighted or model.array.n_pes > max_pes or not ({"i", "g"} & set(node.axes)):
        return None
    walk = _TreeWalk(model.array, node, tuple(types))
    if "g" in node.axes:
        # Grouped conv: a group split takes whole groups, i.e. matching in and out channel ranges.
        n_groups = node.size("g")
        per_in, per_out = node.layer.d_in // n_groups, node.layer.d_out // n_groups
        rows = [(pe, (a * per_in, b * per_in), (a * per_out, b * per_out))
                for pe, r in walk.leaves({"g": (0, n_groups)}) for a, b in (r["g"],)]
    else:
        rows = [(pe, r["i"], r["o"]) for pe, r in walk.leaves({"i": (0, node.size("i")), "o": (0, node.size("o"))})]
    return _merge_slices(rows)


def _merge_slices(rows: list[tuple[int, Range, Range]]) -> list[dict]:
    """Consecutive PEs holding the same (in, out) slice become one {"pes": [first, stop), ...} row."""
    merged: list[dict] = []
    for pe, ri, ro in rows:
        if merged and merged[-1]["in"] == list(ri) and merged[-1]["out"] == list(ro) and merged[-1]["pes"][1] == pe:
            merged[-1]["pes"][1] = pe + 1
        else:
            merged.append({"pes": [pe, pe + 1], "in": list(ri), "out": list(ro)})
    return merged
