"""Repeated structure in a cost model's nodes: twins (for exact memoisation) and tied blocks (for
smaller level problems).

Two relations, both read off a :class:`hypar.cost.structure.Structure` once:

- **Twins.** Two nodes are twins when their :class:`~hypar.cost.strategies.NodeModel` is the same
  once every name is blanked (layer, tensors, module) and their output errors are needed alike:
  every cost of a node reads only that, so twins cost the same under the same types. Two
  tensors are twins when their producers are twins and their edges are, edge by edge, into twin
  consumers at the same slot with the same blanked tensor and the same ``needs_error``: their
  conversions cost the same under the same types. :func:`node_signatures` and
  :func:`tensor_signatures` number these classes; the cost model keys its memos by them.
- **Tied blocks.** A run is ``count`` consecutive blocks of ``period`` nodes in the structure's
  topological order, block k's node j a twin of block 0's node j (transformer layers, the
  bottlenecks of one ResNet stage). Tying the run gives all its blocks' node j one decision
  variable (:class:`Ties`): the level problem shrinks by the run's repeats, and its optimum is
  the best *tied* plan -- equal to the untied optimum when that has a tied optimal plan (the
  blocks' neighbourhoods are alike), else above it. Terms at a run's boundary (the first block's
  inputs, the last block's outputs) are not twins of the inner ones and stay their own terms.
  Every block must hold at least :data:`MIN_DECISIONS_PER_BLOCK` decision layers, so
  alternating types inside a block (column- then row-parallel) stay free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hypar.cost.structure import EdgeModel, Structure

NAME_ATTRS = frozenset({"weight", "bias", "bias_layer"})   # layer attrs that hold names, not shapes
MIN_DECISIONS_PER_BLOCK = 2   # a tied block holds at least this many decision layers
MAX_RUNS = 64                 # runs searched for at most (each search is O(nodes^2) numpy work)


def _blank(tensor):
    """``tensor`` with its name blanked (None stays None)."""
    return None if tensor is None else replace(tensor, name="")


def _node_key(structure: Structure, i: int) -> str:
    """Node i's structural identity as text: its NodeModel with every name blanked, whether its
    output error is needed, and which input slots receive an error (its backward products)."""
    node = structure.nodes[i]
    attrs = tuple((k, "" if k in NAME_ATTRS else v) for k, v in node.layer.attrs)
    layer = replace(node.layer, name="", inputs=(), outputs=(), module=None, attrs=attrs)
    blank = replace(node, name="", layer=layer, in_tensors=tuple(_blank(t) for t in node.in_tensors),
                    out_tensor=_blank(node.out_tensor))
    in_errors = sorted({(structure.edges[k].slot, structure.edges[k].needs_error) for k in structure.in_edges[i]})
    return repr((blank, structure.needs_error[structure.names[i]], in_errors))


def _number(keys: list) -> list[int]:
    """Each key's class number, numbered in order of first appearance."""
    ids: dict = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


def node_signatures(structure: Structure) -> list[int]:
    """Per node, its twin class number (equal numbers: equal costs under equal types)."""
    return _number([_node_key(structure, i) for i in range(len(structure.nodes))])


def _edge_key(e: EdgeModel, node_sig: list[int]) -> tuple:
    """One edge as its tensor twin key sees it (the consumer by its class, never by index)."""
    return (node_sig[e.c], e.slot, repr(_blank(e.tensor)), e.needs_error)


def tensor_signatures(structure: Structure, node_sig: list[int]) -> dict[tuple[int, str], int]:
    """Per tensor of ``structure.tensor_edges``, its twin class number (equal numbers: equal
    conversions under equal types of the producer and of the consumers edge by edge)."""
    keys = list(structure.tensor_edges)
    return dict(zip(keys, _number([(node_sig[p], tuple(_edge_key(e, node_sig) for e in structure.tensor_edges[(p, s)]))
                                   for p, s in keys])))


@dataclass(frozen=True, slots=True)
class Run:
    """``count`` blocks of ``period`` consecutive nodes from node ``start``, tied block by block."""

    start: int
    period: int
    count: int

    @property
    def stop(self) -> int:
        """One past the run's last node."""
        return self.start + self.period * self.count


def _best_run(sigs: np.ndarray, free: np.ndarray, decisions: np.ndarray) -> Run | None:
    """The run among ``free`` nodes that removes the most nodes from a problem ((count - 1) x
    period; ties: the shorter period), None when no run of two blocks exists."""
    n = len(sigs)
    best, gain = None, 0
    csum = np.concatenate([[0], np.cumsum(decisions)])
    for period in range(1, n // 2 + 1):
        same = (sigs[period:] == sigs[:-period]) & free[period:] & free[:-period]
        if not same.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            count = (b - a) // period + 1
            if count < 2 or (count - 1) * period <= gain:
                continue
            if csum[a + period] - csum[a] < MIN_DECISIONS_PER_BLOCK:
                continue
            best, gain = Run(int(a), period, int(count)), (count - 1) * period
    return best


def find_runs(node_sig: list[int], decision: list[bool]) -> list[Run]:
    """Disjoint runs of tied blocks, the largest first (see the module docstring)."""
    sigs = np.asarray(node_sig)
    free = np.ones(len(sigs), bool)
    decisions = np.asarray(decision, dtype=np.int64)
    runs: list[Run] = []
    while len(runs) < MAX_RUNS:
        run = _best_run(sigs, free, decisions)
        if run is None:
            break
        runs.append(run)
        free[run.start:run.stop] = False
    return sorted(runs, key=lambda r: r.start)


@dataclass(frozen=True)
class Ties:
    """Which nodes share one decision variable: ``node_class[i]`` is the first node of i's class
    (i itself when untied); ``runs`` the tied runs; ``n_nodes`` and ``n_classes`` the sizes."""

    node_class: tuple[int, ...]
    runs: tuple[Run, ...]

    @property
    def in_run(self) -> tuple[bool, ...]:
        """Per node, whether it lies in a tied run."""
        inside = [False] * len(self.node_class)
        for run in self.runs:
            inside[run.start:run.stop] = [True] * (run.stop - run.start)
        return tuple(inside)

    @property
    def n_nodes(self) -> int:
        """Nodes of the structure."""
        return len(self.node_class)

    @property
    def n_classes(self) -> int:
        """Decision variables per level problem once tied (one per class)."""
        return len(set(self.node_class))

    def summary(self, structure: Structure, tied: bool) -> dict:
        """What a plan records (its ``solver.ties``): whether level problems were tied, each run
        (first and last layer, layers per block, blocks), the blocks tied, and a level problem's
        size untied and tied: problem nodes, choice variables (one per node and label) and
        producer-consumer pairs (each a pair term of the ILP)."""
        labels = [len(node.labels()) for node in structure.nodes]
        var = self.node_class if tied else tuple(range(self.n_nodes))
        tied_size = {"problem_nodes": len(set(var)),
                     "choice_variables": sum(labels[c] for c in set(var)),
                     "pairs": len({(var[e.p], var[e.c]) for e in structure.edges if var[e.p] != var[e.c]})}
        untied_size = {"problem_nodes": self.n_nodes, "choice_variables": sum(labels),
                       "pairs": len({(e.p, e.c) for e in structure.edges})}
        runs = [{"first_layer": structure.names[r.start], "last_layer": structure.names[r.stop - 1],
                 "layers_per_block": r.period, "blocks": r.count} for r in self.runs]
        return {"tied": tied, "runs": runs, "blocks_tied": sum(r.count for r in self.runs) if tied else 0,
                "untied_size": untied_size, "tied_size": tied_size}

    @classmethod
    def untied(cls, n_nodes: int) -> "Ties":
        """Every node its own class."""
        return cls(tuple(range(n_nodes)), ())


def find_ties(structure: Structure, node_sig: list[int]) -> Ties:
    """The tied runs of ``structure`` (:func:`find_runs` over its twin classes ``node_sig``)."""
    decision = [node.layer.decision for node in structure.nodes]
    runs = find_runs(node_sig, decision)
    node_class = list(range(len(node_sig)))
    for run in runs:
        for i in range(run.start + run.period, run.stop):
            node_class[i] = node_class[i - run.period]
    return Ties(tuple(node_class), tuple(runs))
