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
  bottlenecks of one ResNet stage). The blocks whose neighbourhoods are identical -- every block
  but the first and the last, each between two twins of itself -- share one decision variable
  per node j (:class:`Ties`); the first and last blocks, whose neighbours differ (the stem, the
  head), keep their own, so a run needs at least 4 blocks. The level problem shrinks by the
  inner blocks' repeats, and its optimum is the best plan with the inner blocks alike: equal to
  the untied optimum when that has such an optimal plan, else above it. Every block must hold
  at least :data:`MIN_DECISIONS_PER_BLOCK` decision layers, so alternating types inside a block
  (column- then row-parallel) stay free, and a run must take at least
  :data:`MIN_REMOVED_NODES` nodes off a problem (a few blocks met by chance in a chain of
  layers are not a repeated block).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from hypar.cost.strategies import NodeModel
from hypar.cost.structure import EdgeModel, Structure
from hypar.graph import Layer, Tensor

NAME_ATTRS = frozenset({"weight", "bias", "bias_layer"})   # layer attrs that hold names, not shapes
MIN_DECISIONS_PER_BLOCK = 2   # a tied block holds at least this many decision layers
MIN_REMOVED_NODES = 4         # a run is tied only when it takes at least this many nodes off a problem
MAX_RUNS = 64                 # runs tied at most


_TENSOR_FIELDS = tuple(f.name for f in fields(Tensor) if f.name != "name")
_LAYER_FIELDS = tuple(f.name for f in fields(Layer) if f.name not in ("name", "inputs", "outputs", "module", "attrs"))
_NODE_FIELDS = tuple(f.name for f in fields(NodeModel) if f.name not in ("name", "layer", "in_tensors", "out_tensor"))


def _tensor_key(tensor: Tensor | None) -> tuple | None:
    """``tensor``'s fields but its name (None stays None)."""
    return None if tensor is None else tuple(getattr(tensor, f) for f in _TENSOR_FIELDS)


def _node_key(structure: Structure, i: int) -> str:
    """Node i's structural identity as text: its NodeModel with every name left out (layer,
    tensors, module, the weight and bias names among the layer's attributes), whether its output
    error is needed, and which input slots receive an error (its backward products)."""
    node = structure.nodes[i]
    layer = node.layer
    attrs = tuple((k, "" if k in NAME_ATTRS else v) for k, v in layer.attrs)
    in_errors = sorted({(structure.edges[k].slot, structure.edges[k].needs_error) for k in structure.in_edges[i]})
    return repr((tuple(getattr(layer, f) for f in _LAYER_FIELDS), attrs,
                 tuple(getattr(node, f) for f in _NODE_FIELDS),
                 tuple(_tensor_key(t) for t in node.in_tensors), _tensor_key(node.out_tensor),
                 structure.needs_error[structure.names[i]], in_errors))


def _number(keys: list) -> list[int]:
    """Each key's class number, numbered in order of first appearance."""
    ids: dict = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


def node_signatures(structure: Structure) -> list[int]:
    """Per node, its twin class number (equal numbers: equal costs under equal types)."""
    return _number([_node_key(structure, i) for i in range(len(structure.nodes))])


def edge_key(e: EdgeModel, node_sig: list[int]) -> tuple:
    """One edge as its tensor twin key sees it (the consumer by its class, never by index)."""
    return (node_sig[e.c], e.slot, _tensor_key(e.tensor), e.needs_error)


def tensor_signatures(structure: Structure, node_sig: list[int]) -> dict[tuple[int, str], int]:
    """Per tensor of ``structure.tensor_edges``, its twin class number (equal numbers: equal
    conversions under equal types of the producer and of the consumers edge by edge)."""
    keys = list(structure.tensor_edges)
    return dict(zip(keys, _number([(node_sig[p], tuple(edge_key(e, node_sig) for e in structure.tensor_edges[(p, s)]))
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

    @property
    def tied_blocks(self) -> int:
        """Blocks sharing decisions: all but the first and the last."""
        return self.count - 2

    @property
    def tied_range(self) -> range:
        """The nodes of the tied blocks."""
        return range(self.start + self.period, self.stop - self.period)


def _candidates(sigs: np.ndarray, decisions: np.ndarray):
    """Every maximal run of four or more blocks, per period, as (nodes tying its inner blocks
    removes from a problem, -period, start, count): one numpy pass per period."""
    n = len(sigs)
    csum = np.concatenate([[0], np.cumsum(decisions)])
    for period in range(1, n // 2 + 1):
        same = sigs[period:] == sigs[:-period]
        if not same.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
            count = (b - a) // period + 1
            removed = (count - 3) * period
            if count >= 4 and removed >= MIN_REMOVED_NODES and csum[a + period] - csum[a] >= MIN_DECISIONS_PER_BLOCK:
                yield removed, -period, a, count


def find_runs(node_sig: list[int], decision: list[bool]) -> list[Run]:
    """Disjoint runs of tied blocks (see the module docstring): the runs removing the most nodes
    first (the shorter period on a tie), each kept unless it overlaps one kept before."""
    sigs = np.asarray(node_sig)
    free = np.ones(len(sigs), bool)
    runs: list[Run] = []
    for _gain, neg_period, start, count in sorted(_candidates(sigs, np.asarray(decision, dtype=np.int64)),
                                                  reverse=True):
        run = Run(start, -neg_period, count)
        if len(runs) < MAX_RUNS and free[run.start:run.stop].all():
            runs.append(run)
            free[run.start:run.stop] = False
    return sorted(runs, key=lambda r: r.start)


@dataclass(frozen=True)
class Ties:
    """Which nodes share one decision variable: ``node_class[i]`` is the first node of i's class
    (i itself when untied); ``runs`` the tied runs; ``n_nodes`` and ``n_classes`` the sizes."""

    node_class: tuple[int, ...]
    runs: tuple[Run, ...]

    @cached_property
    def in_run(self) -> tuple[bool, ...]:
        """Per node, whether it lies in a tied block (computed once: every level problem reads it)."""
        inside = [False] * len(self.node_class)
        for run in self.runs:
            for i in run.tied_range:
                inside[i] = True
        return tuple(inside)

    @property
    def n_nodes(self) -> int:
        """Nodes of the structure."""
        return len(self.node_class)

    @cached_property
    def n_classes(self) -> int:
        """Decision variables per level problem once tied (one per class; computed once)."""
        return len(set(self.node_class))

    def summary(self, structure: Structure, tied: bool) -> dict:
        """What a plan records (its ``solver.ties``): whether level problems were tied, each run
        (first and last layer, layers per block, blocks, blocks tied), the blocks tied, and a level problem's
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
                 "layers_per_block": r.period, "blocks": r.count, "tied_blocks": r.tied_blocks} for r in self.runs]
        return {"tied": tied, "runs": runs, "blocks_tied": sum(r.tied_blocks for r in self.runs) if tied else 0,
                "untied_size": untied_size, "tied_size": tied_size}


def find_ties(structure: Structure, node_sig: list[int]) -> Ties:
    """The tied runs of ``structure`` (:func:`find_runs` over its twin classes ``node_sig``)."""
    decision = [node.layer.decision for node in structure.nodes]
    runs = find_runs(node_sig, decision)
    node_class = list(range(len(node_sig)))
    for run in runs:
        for i in run.tied_range[run.period:]:
            node_class[i] = node_class[i - run.period]
    return Ties(tuple(node_class), tuple(runs))


class Twins:
    """What a cost model reads off ``structure``'s repetition, computed once: ``node_sig`` and
    ``tensor_sig`` (twin classes), ``ties`` (the tied runs), and per tensor its edges one per
    twin edge, the tensor groups a tied problem or evaluation prices once, and whether an
    assignment is tied."""

    def __init__(self, structure: Structure):
        self.structure = structure
        self.node_sig = node_signatures(structure)
        self.tensor_sig = tensor_signatures(structure, self.node_sig)
        self.ties = find_ties(structure, self.node_sig)
        self._run_nodes = [i for i, inside in enumerate(self.ties.in_run) if inside]
        self._edge_twins: dict[int, tuple] = {}      # by id(edge): the structure's edges live as long as it
        self._twin_edges: dict[tuple[int, str], list[EdgeModel]] = {}
        self._tied_groups: list | None = None

    def edge_twin(self, e: EdgeModel) -> tuple:
        """Edge e's twin-edge class: its consumer's tie class, slot, tensor and whether it carries
        an error. Twin edges into nodes with equal types need equal conversions."""
        hit = self._edge_twins.get(id(e))
        if hit is None:
            hit = self._edge_twins[id(e)] = (self.ties.node_class[e.c],) + edge_key(e, self.node_sig)[1:]
        return hit

    def twin_edges(self, key: tuple[int, str]) -> list[EdgeModel]:
        """The edges of tensor ``key`` (a key of ``structure.tensor_edges``), the first of each
        twin-edge class (:meth:`edge_twin`); the very list of ``structure.tensor_edges`` when all
        differ. Memoised: the list's identity is stable."""
        hit = self._twin_edges.get(key)
        if hit is None:
            edges = self.structure.tensor_edges[key]
            first: dict[tuple, EdgeModel] = {}
            for e in edges:
                first.setdefault(self.edge_twin(e), e)
            hit = self._twin_edges[key] = edges if len(first) == len(edges) else list(first.values())
        return hit

    def tied_tensor_groups(self) -> list[tuple[tuple[int, str], list[tuple[int, str]]]]:
        """The tensors grouped by twin class and the tie classes of their producer and of their
        consumers edge by edge, as (the first tensor's key, every member's key), in order of
        first tensor: under a tied assignment a group's tensors cost the same (memoised)."""
        if self._tied_groups is None:
            cls, groups = self.ties.node_class, {}
            for key, edges in self.structure.tensor_edges.items():
                group = (self.tensor_sig[key], cls[key[0]], tuple(cls[e.c] for e in edges))
                groups.setdefault(group, []).append(key)
            self._tied_groups = [(keys[0], keys) for keys in groups.values()]
        return self._tied_groups

    def is_tied(self, assignment: list[tuple]) -> bool:
        """True when every node of a tied run has its tie class's types in ``assignment``."""
        cls = self.ties.node_class
        return all(assignment[i] == assignment[cls[i]] for i in self._run_nodes)
