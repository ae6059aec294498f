"""Exact elimination of leaf and series nodes from the pair graph of a reduced problem, as a
dynamic program would do it, and the record that restores their choices after the solve.

A leaf v next to u adds ``min_t M[s,t] + lin_v[t]`` to ``lin_u[s]``; a node v between u and w
becomes the pair matrix ``min_t M_uv[s,t] + lin_v[t] + M_vw[t,r]`` on (u, w). The minimising
choices are kept (lowest index on ties). Chains, trees and series-parallel graphs (residual
blocks) vanish entirely; the ILP is left with the rest.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from hypar.ilp.tables import fold_pair_into_nodes, is_separable


@dataclass(frozen=True)
class EliminatedNode:
    """One eliminated node and its best choice for every choice of its neighbours.

    ``best_choice`` has one axis per neighbour, in ``neighbours`` order (1 or 2 axes).
    """

    node: int
    neighbours: tuple[int, ...]
    best_choice: np.ndarray

    def restore(self, assignment: list[int]) -> None:
        """Set ``assignment[node]`` from its neighbours' entries (already assigned), in place."""
        assignment[self.node] = int(
            self.best_choice[tuple(assignment[u] for u in self.neighbours)])


class _PairGraph:
    """Pair matrices keyed ``(u, v)``, ``u < v`` (rows: u's choices), with their adjacency.

    Shares ``pairs`` and the node costs ``lin`` with the caller and changes both in place.
    """

    def __init__(self, lin: list[np.ndarray], pairs: dict[tuple[int, int], np.ndarray]):
        self.lin = lin
        self.pairs = pairs
        self.adj: dict[int, set[int]] = {}
        for u, v in pairs:
            self.adj.setdefault(u, set()).add(v)
            self.adj.setdefault(v, set()).add(u)

    def get(self, u: int, v: int) -> np.ndarray:
        """The matrix between u and v with u's choices as rows."""
        return self.pairs[(u, v)] if u < v else self.pairs[(v, u)].T

    def drop(self, u: int, v: int) -> None:
        """Remove the pair (u, v)."""
        del self.pairs[(min(u, v), max(u, v))]
        self.adj[u].discard(v)
        self.adj[v].discard(u)

    def put(self, u: int, v: int, m: np.ndarray) -> None:
        """Add ``m`` (rows: u's choices) to the pair (u, v); a zero or separable sum becomes
        node costs and the pair goes."""
        key, m = ((u, v), m) if u < v else ((v, u), m.T)
        if key in self.pairs:
            m = self.pairs[key] + m
        if not np.any(m) or is_separable(m):
            fold_pair_into_nodes(self.lin, key[0], key[1], m)
            if key in self.pairs:
                self.drop(*key)
            return
        self.pairs[key] = m
        self.adj.setdefault(u, set()).add(v)
        self.adj.setdefault(v, set()).add(u)

    def eliminate_leaf(self, v: int, u: int) -> EliminatedNode:
        """Fold leaf v into its only neighbour u."""
        total = self.get(u, v) + self.lin[v][None, :]
        choice = np.argmin(total, axis=1)
        self.lin[u] += total[np.arange(len(choice)), choice]
        self.drop(u, v)
        return EliminatedNode(v, (u,), choice)

    def eliminate_series(self, v: int, u: int, w: int) -> EliminatedNode:
        """Replace series node v between u and w by one pair matrix on (u, w)."""
        total = self.get(u, v)[:, :, None] + self.lin[v][None, :, None] + self.get(v, w)[None, :, :]
        choice = np.argmin(total, axis=1)                 # (T_u, T_w)
        best = np.take_along_axis(total, choice[:, None, :], axis=1)[:, 0, :]
        self.drop(u, v)
        self.drop(v, w)
        self.put(u, w, best)
        return EliminatedNode(v, (u, w), choice)


def eliminate_nodes(lin: list[np.ndarray], pairs: dict[tuple[int, int], np.ndarray],
                    pinned: set[int], fixed: dict[int, int]) -> list[EliminatedNode]:
    """Eliminate free nodes of pair-degree 1 (leaves) and 2 (series) exactly, lowest node first.

    Parameters
    ----------
    lin : list of arrays
        Node costs per node (all nodes); changed in place.
    pairs : dict
        Pair matrices keyed ``(u, v)`` with ``u < v``; changed in place (pairs removed, added).
    pinned : set of int
        Nodes never eliminated (in a group term, a factor term or a memory row).
    fixed : dict
        Nodes with no variable (node -> choice); never eliminated.

    Returns
    -------
    list of EliminatedNode
        In elimination order; restore them in reverse. A neighbour left with no pair keeps its
        folded costs (the caller fixes it).
    """
    graph = _PairGraph(lin, pairs)
    todo = [v for v in graph.adj if v not in pinned and v not in fixed]
    heapq.heapify(todo)
    done: set[int] = set()
    eliminated: list[EliminatedNode] = []
    while todo:
        v = heapq.heappop(todo)
        if v in done or v in pinned:
            continue
        nbrs = sorted(graph.adj.get(v, ()))
        if len(nbrs) == 1:
            eliminated.append(graph.eliminate_leaf(v, nbrs[0]))
        elif len(nbrs) == 2:
            eliminated.append(graph.eliminate_series(v, nbrs[0], nbrs[1]))
        else:
            continue
        done.add(v)
        for u in nbrs:
            if u not in pinned and u not in done:
                heapq.heappush(todo, u)
    return eliminated
