"""Cost-table algebra shared by the reductions: separability tests, folding a separable pair
matrix into node costs, and placing a table over some nodes inside a larger node set.

A pair matrix ``M`` is additively separable when ``M[s, t] = a[s] + b[t]``; a k-node table ``T``
when ``T[j] = sum_a g_a(j[a])``. Such costs need no joint variable: they are node costs.
"""

from __future__ import annotations

import numpy as np

#: Relative tolerance (to the table's largest magnitude) of the separability tests.
SEPARABLE_RTOL = 1e-12


def is_separable(m: np.ndarray) -> bool:
    """True when the pair matrix ``m`` is ``a[s] + b[t]`` within :data:`SEPARABLE_RTOL`."""
    resid = m - m[:, :1] - m[:1, :] + m[0, 0]
    scale = float(np.max(np.abs(m)))
    return bool(np.all(np.abs(resid) <= SEPARABLE_RTOL * scale))


def is_separable_table(t: np.ndarray) -> bool:
    """True when ``t[j] = sum_a g_a(j[a])`` (within :data:`SEPARABLE_RTOL`)."""
    k = t.ndim
    resid = t + (k - 1) * t[(0,) * k]
    for a in range(k):
        resid = resid - axis_slice(t, a)
    scale = float(np.max(np.abs(t)))
    return bool(np.all(np.abs(resid) <= SEPARABLE_RTOL * scale))


def axis_slice(t: np.ndarray, a: int) -> np.ndarray:
    """``t`` at index 0 on every axis but ``a``, shaped to broadcast against ``t``."""
    idx = tuple(slice(None) if b == a else slice(0, 1) for b in range(t.ndim))
    return t[idx]


def on_nodes(t: np.ndarray, nodes: tuple[int, ...], into: tuple[int, ...]) -> np.ndarray:
    """A table over ``nodes`` (ascending, within ``into``) shaped to broadcast over ``into``."""
    shape = [1] * len(into)
    pos = {v: k for k, v in enumerate(into)}
    for v, size in zip(nodes, t.shape):
        shape[pos[v]] = size
    return t.reshape(shape)


def fold_pair_into_nodes(lin: list[np.ndarray], u: int, v: int, m: np.ndarray) -> None:
    """Add a separable pair matrix ``m`` (rows: u's choices) to the node costs ``lin`` of u, v.

    ``lin[u] += m[:, 0]`` and ``lin[v] += m[0, :] - m[0, 0]``: exact when ``m`` is separable
    (:func:`is_separable`) or zero; ``lin`` is changed in place.
    """
    lin[u] += m[:, 0]
    lin[v] += m[0, :] - m[0, 0]


def fold_table_into_nodes(lin: list[np.ndarray], nodes: tuple[int, ...], t: np.ndarray) -> None:
    """Add a separable table ``t`` over ``nodes`` to their node costs ``lin`` (in place).

    Node ``nodes[0]`` takes ``t``'s slice along its axis; every other node its slice less
    ``t[0, ..., 0]``, so the constant is counted once. Exact when :func:`is_separable_table`.
    """
    t0 = float(t[(0,) * t.ndim])
    for a, v in enumerate(nodes):
        lin[v] += axis_slice(t, a).ravel() - (t0 if a else 0.0)
