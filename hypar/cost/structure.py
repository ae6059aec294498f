"""The structure a cost model sees in a layer graph: which nodes it keeps in a partition space,
and the edges that carry tensors between kept nodes (SPEC.md §1).

Spaces ``hypar`` / ``accpar`` keep only decision layers (and opaque ops, which need the full
tensor): the ops between are folded into edges, as in the papers. ``full`` keeps every node.
The cost model prices this structure; the simulator (:mod:`hypar.sim`) walks the same one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypar import graph as G
from hypar.cost.strategies import NodeModel, node_model
from hypar.vocab import Space

SPACES = Space.values()


@dataclass(frozen=True, slots=True)
class EdgeModel:
    """Tensor ``tensor`` flows from problem node ``p`` into input ``slot`` of problem node ``c``.

    ``source`` names the tensor as it leaves ``p`` (the same as ``tensor.name`` unless folded
    ops lie between): conversions are shared per source, so a skip tensor reaching a consumer
    directly and another through a folded residual Add is converted once.
    ``needs_error``: the backward pass sends an error along this edge (``p`` or an ancestor of
    ``p`` holds weights).
    """

    p: int
    c: int
    slot: int
    tensor: G.Tensor
    needs_error: bool
    source: str = ""


class Structure:
    """The kept nodes of layer graph ``g`` in partition space ``space`` and the edges between them.

    Attributes (all fixed at construction):

    - ``names``: kept layer names in topological order; ``index``: name -> position in ``names``;
    - ``nodes``: the :class:`NodeModel` of each kept node (same order);
    - ``needs_error``: for every layer name (kept or folded), whether its output error is needed;
    - ``edges``: every :class:`EdgeModel`, consumer by consumer in topological order;
      ``in_edges[i]``: positions in ``edges`` of node i's input edges;
    - ``tensor_edges``: {(producer index, source tensor name): the edges carrying that tensor to
      its consumers, in edge order}, one entry per tensor leaving a kept node.

    Raises ValueError for a space not in :data:`SPACES`.
    """

    def __init__(self, g, space: str):
        if space not in SPACES:
            raise ValueError(f"unknown space '{space}'; choose one of {', '.join(SPACES)}")
        self.g = g
        self.space = space
        order = G.topo_layers(g)
        if space == "full":
            keep = order
        else:
            keep = [n for n in order if G.layer(g, n).decision or G.layer(g, n).kind == G.OPAQUE]
        self.names: list[str] = keep
        self.index: dict[str, int] = {n: i for i, n in enumerate(keep)}
        self.needs_error: dict[str, bool] = self._needs_error(order)
        self.nodes: list[NodeModel] = [node_model(g, n, space, self.needs_error) for n in keep]
        self.edges: list[EdgeModel] = self._full_edges(order) if space == "full" else self._folded_edges(order)
        self.in_edges: list[list[int]] = [[] for _ in keep]
        self.tensor_edges: dict[tuple[int, str], list[EdgeModel]] = defaultdict(list)
        for e, em in enumerate(self.edges):
            self.in_edges[em.c].append(e)
            self.tensor_edges[(em.p, em.source)].append(em)

    def _needs_error(self, order: list[str]) -> dict[str, bool]:
        """A node's output error is needed when it or any ancestor holds weights."""
        need: dict[str, bool] = {}
        for n in order:
            need[n] = G.layer(self.g, n).weighted or any(need[p] for p in self.g.predecessors(n))
        return need

    def _full_edges(self, order: list[str]) -> list[EdgeModel]:
        """Every graph edge, one per input slot, as it is (the ``full`` space folds nothing)."""
        out: list[EdgeModel] = []
        for c in order:
            for p in sorted(self.g.predecessors(c), key=self.index.__getitem__):
                data = self.g.edges[p, c]
                t = data["tensor"]
                for s in data["slots"]:
                    out.append(EdgeModel(self.index[p], self.index[c], s, t, self.needs_error[p], t.name))
        return out

    def _folded_edges(self, order: list[str]) -> list[EdgeModel]:
        """Edges from each kept node's nearest kept sources, through the folded nodes between.

        The tensor is the consumer's own input tensor of the slot (the graph edge's when it has
        none); the source is the producer's first output.
        """
        position = {n: k for k, n in enumerate(order)}
        out: list[EdgeModel] = []
        for c in self.names:
            node = self.nodes[self.index[c]]
            for p_direct, _, data in sorted(self.g.in_edges(c, data=True), key=lambda e: position[e[0]]):
                for s in data["slots"]:
                    own = node.in_tensors[s] if s < len(node.in_tensors) else None
                    tensor = own or data["tensor"]
                    for p in self.kept_sources(p_direct):
                        outs = G.layer(self.g, p).outputs
                        source = outs[0] if outs else tensor.name
                        out.append(EdgeModel(self.index[p], self.index[c], s, tensor, self.needs_error[p], source))
        return out

    def kept_sources(self, start: str) -> list[str]:
        """Kept nodes reached walking backwards from layer ``start`` through folded nodes
        (``[start]`` when ``start`` is kept), in topological order."""
        found, seen, stack = [], set(), [start]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.index:
                found.append(n)
                continue
            stack.extend(self.g.predecessors(n))
        return sorted(found, key=self.index.__getitem__)
