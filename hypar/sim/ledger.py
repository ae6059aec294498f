"""Counting by step: every collective or conversion step runs under a key; the first run of a key
counts its messages per level, a later run of the same key (a step another consumer already ran)
counts nothing. At the end the counts are charged to layers: intra-layer steps to their node,
edge conversions to their first consumer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from hypar.sim.comm import Comm
from hypar.sim.result import SimResult, Transfer

T = TypeVar("T")


class IntraKey(NamedTuple):
    """An intra-layer collective of a weighted node: ``what`` is "F_out" or "dW"."""

    node: int
    what: str


class StatsKey(NamedTuple):
    """A normalisation's statistics all-reduce: ``stat`` "bn" / "ln", ``direction`` "fwd" /
    "bwd", ``where`` "node" (a kept layer), "post" (folded, consumer side) or "pre:<producer>"."""

    stat: str
    node: int
    layer: str
    direction: str
    where: str


class ConversionKey(NamedTuple):
    """One level's step of an edge conversion. Steps of different conversions merge (errors summed
    locally, a tensor converted once) only when they are the same operation on the same state and
    the same source layout at that level, as the cost model's (view, layout) de-duplication."""

    kind: str              # "fwd" / "bwd"
    producer: int          # model node index
    tensor: str            # the producer's tensor ("<source>|<converted>" after producer-side ops)
    level: int
    before: tuple          # layouts before the step
    after: tuple           # layouts after the step
    src_layout: str        # the conversion's source layout at ``level``
    tgt_layout: str        # its target layout at ``level``
    view_size: tuple       # (ROWS, COLS) splits of the consumer's view above ``level``

    @property
    def model_key(self) -> tuple:
        """What the cost model de-duplicates a conversion at a level on (no lower-level state)."""
        return (self.kind, self.producer, self.tensor, self.level, self.src_layout, self.tgt_layout,
                self.view_size)


@dataclass
class StepRecord:
    """Elements received per level by the first run of a step, and every node that ran it."""

    kind: str
    what: str
    counts: list[int]
    nodes: set[int] = field(default_factory=set)


class Ledger:
    """The step records of one simulated training step, in the order steps first ran."""

    def __init__(self, comm: Comm, n_levels: int):
        self.comm = comm
        self.n_levels = n_levels
        self.records: dict[tuple, StepRecord] = {}

    def run(self, key: tuple, kind: str, what: str, node: int, fn: Callable[[], T]) -> T:
        """Execute ``fn`` counting its messages under ``key`` (charged to ``node`` among others);
        a key seen before counts nothing. Returns what ``fn`` returns."""
        rec = self.records.get(key)
        first = rec is None
        if first:
            rec = self.records[key] = StepRecord(kind, what, [0] * self.n_levels)
        rec.nodes.add(node)
        with self.comm.counting(rec.counts if first else [0] * self.n_levels):
            return fn()

    def __contains__(self, key: tuple) -> bool:
        return key in self.records

    def note_split_dedup(self, res: SimResult) -> None:
        """The cost model converts a producer tensor once per (level, consumer view, layout); when
        consumers sharing that key reach the level from different lower-level states the simulator
        cannot share the step: note them (``res.split_dedup``)."""
        groups: dict[tuple, list[tuple[ConversionKey, StepRecord]]] = defaultdict(list)
        for key, rec in self.records.items():
            if isinstance(key, ConversionKey) and any(rec.counts):
                groups[key.model_key].append((key, rec))
        for items in groups.values():
            if len(items) > 1:
                for key, rec in items:
                    res.split_dedup.append((key.kind, rec.what, min(rec.nodes), key.level))

    def attribute(self, res: SimResult, n_nodes: int, width_of: Callable[[tuple], int] | None = None) -> None:
        """Charge every record's counts: ``res.counted`` (elements) and ``res.counted_bytes``
        (per node and level), ``res.transfers``, and ``res.folded_stats`` for folded
        normalisations. ``width_of(key)``: bytes per element of the step ``key``
        (:class:`hypar.sim.widths.StepWidths`; None: ``res.dtype_bytes`` for every step)."""
        counted = [[0] * self.n_levels for _ in range(n_nodes)]
        counted_bytes = [[0] * self.n_levels for _ in range(n_nodes)]
        for key, rec in self.records.items():
            node = min(rec.nodes)
            width = res.dtype_bytes if width_of is None else width_of(key)
            for h, c in enumerate(rec.counts):
                if c:
                    counted[node][h] += c
                    counted_bytes[node][h] += c * width
                    res.transfers.append(Transfer(rec.kind, rec.what, h, c, node, c * width))
                    if rec.kind == "fold":
                        res.folded_stats.append((node, h, rec.what))
        res.counted = counted
        res.counted_bytes = counted_bytes
