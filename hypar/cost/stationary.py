"""Weights-stationary (compute-in-memory) PEs: the weight-capacity row and the plans that fit it.

What a weights-stationary PE changes (SPEC.md §1-4). A compute-in-memory macro computes where its
weights are stored: the forward product F x W and the backward product E x W^T read the stored
weights, and nothing loads or moves a weight during a step. hypar never charges weight traffic
inside a PE, nor between steps (every layer keeps one weight layout for the whole step), so the
communication model is unchanged:

- type II and type III split the weights (by rows / by columns): each PE keeps its share and no
  weight or weight-gradient collective exists; their collectives move activations (II: the
  forward output's partial sums) and errors (III: the backward error's partial sums), which a
  weights-stationary array must still move -- unchanged.
- type I replicates the weights: every replica keeps the *whole* share of its group in its own
  macros, so a type-I level multiplies the weight bytes every PE must hold (the capacity row
  below prices that), and the dW all-reduce between replicas stays. Each replica computes
  dW from its own batch rows only; for the replicas to apply the same update (synchronous
  training, which is what every hypar plan computes) each must receive the sum of all partial
  dW. Keeping the weights in place does not remove that sum; only a different algorithm
  (local SGD, per-replica models) would, and hypar does not plan those.

So the weights-stationary constraint is capacity: the plan must fit every PE's share of every
layer's weights (each in its stored width, ``Layer.weight_bytes``, else the array's ``dtype_bytes``:
an int8 QDQ model's weights take 1 byte, docs/precision.md) into that PE's ``weight_capacity_bytes``. It is a
hard row in every level problem (:func:`weight_row`): for node i under types t, its *load* is the
largest, over the PE groups of its view, of (weight bytes the group holds) / (the group's weight
capacity). With every level decided a group is one PE and the load is exact; with levels below
undecided it is the group's share spread over its macros (a lower bound, like the memory row's
ideal split). The row sums every node's load and bounds the sum by 1; summing per-node maxima
over PEs never understates the fullest PE. A PE of a kind that is not weights-stationary bounds
nothing (load 0). Gradients and activations are not in the weight capacity: they live in the
PE's buffer (``memory_gb``, bounded only by ``--memory-gb``).

Since the row is a sum of independent per-node terms, the plan with the smallest total load is
each node's own smallest-load types (:func:`smallest_weight_plan`): an array fits some plan iff
that plan fits, which is how :func:`hypar.search.smallest_fitting_array` checks candidates.
"""

from __future__ import annotations

import itertools

import numpy as np

from hypar.cost.priced import memo_of
from hypar.graph import element_bytes
from hypar.cost.strategies import weight_view
from hypar.ilp.problem import memory_limit

__all__ = ["fits_weights", "smallest_weight_plan", "weight_bytes_per_pe", "weight_load", "weight_row",
           "weights_total_load"]


def _decided(types: tuple) -> tuple:
    """The levels of ``types`` decided so far: its labels up to the first ``None``."""
    out = []
    for t in types:
        if t is None:
            break
        out.append(t)
    return tuple(out)


def _loads(model, i: int, types: tuple) -> tuple[float, float]:
    """(load, largest weight bytes on one PE) of node i under ``types`` (module docstring);
    memoised per model by twin class and decided levels."""
    node = model.nodes[i]
    if not node.layer.weighted or not model.array.weights_stationary:
        return 0.0, 0.0
    key = ("weight_load", model.node_sig[i], _decided(types))
    memo = memo_of(model)
    hit = memo.get(key)
    if hit is None:
        load, per_pe = 0.0, 0.0
        for (ck, dims), _m in model.views(i, key[2]).items():
            group_bytes = weight_view(node, dims) * element_bytes(node.layer.weight_bytes, model.array.dtype_bytes)
            per_pe = max(per_pe, group_bytes / sum(n for _k, n in ck))
            cap = model.array.class_weight_capacity_bytes(ck)
            if cap is not None:
                load = max(load, group_bytes / cap)
        hit = memo[key] = (load, per_pe)
    return hit


def weight_load(model, i: int, types: tuple) -> float:
    """Fraction of a weights-stationary PE's capacity node i's weights take under ``types`` (the
    largest over its view's groups; 0.0 for a node without weights or an array without such PEs)."""
    return _loads(model, i, types)[0]


def weight_bytes_per_pe(model, i: int, types: tuple) -> float:
    """Largest weight bytes node i places on one PE under ``types`` (levels left None: the share
    spread evenly below); 0.0 without weights (and on arrays without weights-stationary PEs)."""
    return _loads(model, i, types)[1]


def weights_total_load(model, assignment: list[tuple]) -> float:
    """Sum of every node's :func:`weight_load` under ``assignment`` (the row's left side; the plan
    fits when it is at most 1)."""
    return sum(weight_load(model, i, a) for i, a in enumerate(assignment))


def fits_weights(model, assignment: list[tuple]) -> bool:
    """True when ``assignment`` fits every weights-stationary PE's capacity (always on arrays
    without such PEs)."""
    return not model.array.weights_stationary or weights_total_load(model, assignment) <= memory_limit(1.0)


def weight_row(model, choices: list[list[tuple]], rep: tuple[int, ...], count: tuple[int, ...]):
    """The capacity row of a problem whose problem node v stands for ``count[v]`` nodes, the first
    ``rep[v]``, choosing among ``choices[rep[v]]``: (coefficients per problem node, 1.0). None on
    arrays without weights-stationary PEs, and when no node with weights has two choices (the row
    is then a constant the problem cannot change: the search checks such plans with
    :func:`fits_weights`, so fixed baselines are still costed)."""
    if not model.array.weights_stationary:
        return None
    coef = [np.array([weight_load(model, i, ct) for ct in choices[i]], dtype=float) * m for i, m in zip(rep, count)]
    if not any(len(c) > 1 and c.max() > 0 for c in coef):
        return None
    return coef, 1.0


def smallest_weight_plan(model, base: list[tuple]) -> list[tuple]:
    """``base`` with every weighted node set to its full type tuple of least :func:`weight_load`
    (ties: least ``memory_bytes``, then the first in order): the plan of least total load, since
    the load is a sum of per-node terms."""
    out = [tuple(a) for a in base]
    for i, node in enumerate(model.nodes):
        if not node.layer.weighted:
            continue
        tuples = itertools.product(model.labels(i), repeat=model.n_levels)
        out[i] = min(tuples, key=lambda t: (weight_load(model, i, t), model.memory_bytes(i, t)))
    return out
