"""One level's discrete optimisation problem, independent of ONNX, costs and solver backends.

The cost model builds a :class:`LevelProblem` for one level of the PE hierarchy (the other
levels fixed); :mod:`hypar.ilp.solve` (ILP), :mod:`hypar.ilp.exact` (chain DP, brute force) solve it.

Objective of an assignment ``a`` (``a[i]`` = index of node i's chosen choice)::

    sum_i node_cost[i][a[i]]
  + sum_e edge_cost[e][a[u_e], a[v_e]]
  + sum_g cost_g * [anchor_g is None or a[anchor_node] == anchor_choice]
                 * [any(a[v] == t for (v, t) in members_g)]
  + sum_f table_f[a[f.nodes[0]], a[f.nodes[1]], ...]

Group terms express "charged once if any member is active" (a fanned-out tensor converted once
per distinct layout; partial errors from several consumers reduced once). Factor terms express
the same exactly over the joint choice of a producer and its few consumers (a tighter ILP).
Memory constraints: for each (coef, capacity): sum_i coef[i][a[i]] <= capacity.
All costs are finite, non-negative floats.

A problem may stand for more nodes than it has (tied repeated blocks, :mod:`hypar.cost.repeats`):
``node_var[k]`` is then the problem node that outside node k takes its choice from, and
:meth:`LevelProblem.node_labels` / :meth:`LevelProblem.incumbent` translate between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Relative slack of a memory row's capacity: a use up to ``memory_limit(cap)`` fits, so a use
#: exactly at the cap is never refused by rounding. Every solver and check uses this one rule.
MEMORY_RTOL = 1e-12


def memory_limit(cap: float) -> float:
    """The largest use (same unit as ``cap``, bytes per PE) a memory row of capacity ``cap`` allows."""
    return cap * (1 + MEMORY_RTOL)


@dataclass(frozen=True, slots=True)
class GroupTerm:
    """Cost charged once when the anchor choice (if any) and at least one member are chosen."""

    cost: float
    members: tuple[tuple[int, int], ...]          # (node index, choice index)
    anchor: tuple[int, int] | None = None         # (node index, choice index) or None


@dataclass(frozen=True, slots=True)
class FactorTerm:
    """A cost over the joint choice of several nodes: ``table[c_0, c_1, ...]`` for ``nodes``.

    Used for a tensor fanned out to a few consumers, where the cost of converting it depends on
    the producer and on which layouts the consumers need together. ``nodes`` are distinct;
    ``table.shape == tuple(len(choices[n]) for n in nodes)``.
    """

    nodes: tuple[int, ...]
    table: np.ndarray


@dataclass(slots=True)
class LevelProblem:
    """Choices and costs of one level. Node order is deterministic (topological, then name)."""

    names: list[str]                      # node names, for reporting only (never solver names)
    choices: list[tuple[str, ...]]        # per node: choice labels, e.g. ("I", "II", "III")
    node_cost: list[np.ndarray]           # per node: float array, one cost per choice
    edges: list[tuple[int, int]] = field(default_factory=list)    # (u, v) node indices, u != v
    edge_cost: list[np.ndarray] = field(default_factory=list)     # per edge: len(choices[u]) x len(choices[v])
    groups: list[GroupTerm] = field(default_factory=list)
    memory: list[tuple[list[np.ndarray], float]] = field(default_factory=list)
    factors: list[FactorTerm] = field(default_factory=list)
    node_var: tuple[int, ...] | None = None   # per outside node, its problem node (None: the same index)

    def node_labels(self, assignment: list[int] | tuple[int, ...]) -> list[str]:
        """The chosen label of every outside node (every problem node when ``node_var`` is None)."""
        if self.node_var is None:
            return [self.choices[i][c] for i, c in enumerate(assignment)]
        return [self.choices[v][assignment[v]] for v in self.node_var]

    def incumbent(self, labels: list[str]) -> tuple[int, ...] | None:
        """The assignment giving outside node k label ``labels[k]``; None when tied nodes disagree
        (the labels are not a tied plan)."""
        if self.node_var is None:
            return tuple(self.choices[i].index(t) for i, t in enumerate(labels))
        out: list[int | None] = [None] * len(self.names)
        for k, v in enumerate(self.node_var):
            c = self.choices[v].index(labels[k])
            if out[v] is None:
                out[v] = c
            elif out[v] != c:
                return None
        return tuple(out)  # type: ignore[arg-type]

    def objective(self, assignment: list[int] | tuple[int, ...]) -> float:
        """Objective value of a full assignment (choice index per node)."""
        total = sum(float(self.node_cost[i][c]) for i, c in enumerate(assignment))
        for (u, v), m in zip(self.edges, self.edge_cost):
            total += float(m[assignment[u], assignment[v]])
        for g in self.groups:
            if g.anchor is not None and assignment[g.anchor[0]] != g.anchor[1]:
                continue
            if any(assignment[v] == t for v, t in g.members):
                total += g.cost
        for f in self.factors:
            total += float(f.table[tuple(assignment[n] for n in f.nodes)])
        return total

    def feasible(self, assignment: list[int] | tuple[int, ...]) -> bool:
        """True when every memory constraint holds."""
        for coef, cap in self.memory:
            if sum(float(coef[i][c]) for i, c in enumerate(assignment)) > memory_limit(cap):
                return False
        return True

    def is_chain(self) -> bool:
        """True when edges are exactly (0,1), (1,2), ... and there are no groups or memory rows."""
        n = len(self.names)
        return (not self.groups and not self.memory and not self.factors
                and sorted(self.edges) == [(i, i + 1) for i in range(n - 1)]
                and len(set(self.edges)) == len(self.edges))
