"""Embedding lookups with constant indices (a position table read by a constant Range, a
relative-position bias read by a constant index tensor, token-type rows read by zeros): the
seeded indices the step uses, the one-device forward and weight gradient, and the lookup on every
PE's (vocabulary rows, row columns) block of the table.

The importer models such a Gather as an embedding layer without an activation input (batch 1,
the indices' dims spatial; :func:`hypar.cost.strategies._embedding_node`): type I replicates the
lookup (output R, its needed error R: every PE computes the whole table gradient, nothing is
all-reduced), type II splits the vocabulary rows (partial rows all-reduced: ``F_out``), type III
the row columns (output S(f)). The model's index values are not recorded in the layer graph;
the simulator draws them (seeded, below the table's rows, repeats included), as it draws every
weight, so the reference and the distributed step read the same rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import FULL, PARTIAL
from hypar.sim.errors import SimulationError
from hypar.sim.kernels import embedding_grad
from hypar.sim.ledger import IntraKey, Ledger
from hypar.sim.mesh import Dist, as_cut, axis_mask, per_pe, sub_block
from hypar.sim.weighted import OUT_LAYOUT, WeightGrad, reduced_blocks


class Lookup(NamedTuple):
    """A constant-index embedding's parameters: the table (rows, row size), the indices (int64,
    the indices' shape) and the output shape (the indices' shape + (row size,))."""

    table: np.ndarray
    ids: np.ndarray
    out_shape: tuple


def lookup_problem(lay: G.Layer, out_shape: tuple | None) -> str | None:
    """Why the constant-index lookup ``lay`` with output shape ``out_shape`` cannot be simulated
    (None: it can): a Gather along axis 0 of a (rows, row size) table only."""
    if lay.op != "Gather" or int(lay.attr("axis", 0)) != 0:
        return f"{lay.name} ({lay.op}): only a Gather along axis 0 of a table is simulated"
    if out_shape is None or tuple(out_shape) != tuple(lay.in_spatial) + (lay.d_out,):
        return f"{lay.name} (Gather): constant indices of a table of rank > 2 (output {out_shape})"
    return None


def draw_lookup(rng: np.random.Generator, lay: G.Layer, dtype, draw) -> Lookup:
    """Seeded parameters of ``lay``: the table by ``draw(rng, shape, dtype)`` (unit scale), then
    indices uniform over the table's rows in the indices' shape (``lay.in_spatial``)."""
    table = draw(rng, (lay.d_in, lay.d_out), dtype)
    ids = rng.integers(0, lay.d_in, tuple(lay.in_spatial)).astype(np.int64)
    return Lookup(table, ids, tuple(lay.in_spatial) + (lay.d_out,))


def lookup_grad(w: Lookup, e: np.ndarray) -> np.ndarray:
    """The one-device table gradient (rows, row size) for output error ``e``: each index's error
    added into its row (``np.add.at``)."""
    dw = np.zeros(w.table.shape, e.dtype)
    np.add.at(dw, w.ids, e)
    return dw


def _levels(strat: list, axis: str) -> list[int]:
    return [h for h, s in enumerate(strat) if s.split_axis == axis]


def _own(mesh, w: Lookup, strat: list, p: int) -> tuple[np.ndarray, np.ndarray]:
    """PE p's (vocabulary rows mask, row column indices) under ``strat`` (per level)."""
    rows, cols = w.table.shape
    return axis_mask(mesh, rows, _levels(strat, "i"), p), np.flatnonzero(axis_mask(mesh, cols, _levels(strat, "o"), p))


def lookup_forward(ledger: Ledger, i: int, lay: G.Layer, w: Lookup, strat: list, out_axes: tuple) -> Dist:
    """Node i's output on every PE: its rows of the table at the indices (zero where another PE
    holds the row: type II), its columns (type III); the partial output all-reduced over the
    type II levels (counted as ``IntraKey(i, "F_out")``). Raises SimulationError when the output's
    layouts are not the strategy's."""
    mesh = ledger.comm.mesh
    owned = [_own(mesh, w, strat, p) for p in range(mesh.P)]

    def block(p: int) -> np.ndarray:
        rm, oi = owned[p]
        cut = as_cut(oi)
        rows = w.table[:, cut] if isinstance(cut, slice) else w.table.take(cut, axis=1)
        return np.where(rm[w.ids][..., None], rows[w.ids], 0.0).astype(w.table.dtype)

    blocks = per_pe(mesh.P, lambda p: (owned[p][0].tobytes(), owned[p][1].tobytes()), block)
    lays = tuple(OUT_LAYOUT[s.split_axis] for s in strat)
    blocks = reduced_blocks(ledger, IntraKey(i, "F_out"), blocks, lays)
    out_l = tuple(FULL if l == PARTIAL else l for l in lays)
    if out_l != tuple(s.out_layout for s in strat):
        raise SimulationError(f"{lay.name}: output layouts {out_l} differ from the strategy's")
    return Dist(mesh, w.out_shape, out_l, axes=out_axes, blocks=blocks)


def lookup_backward(ledger: Ledger, i: int, lay: G.Layer, w: Lookup, eo: Dist, strat: list) -> WeightGrad:
    """Node i's table gradient on every PE's (rows, columns) block from the output error ``eo``
    (in the strategy's needed layouts: R, or S(f) under type III): each PE adds the errors of
    the indices reading its rows. No level splits a batch, so nothing is all-reduced (the
    ``dW`` step is run and counts nothing)."""
    mesh = ledger.comm.mesh
    index, dw = [], []
    for p in range(mesh.P):
        rm, oi = _own(mesh, w, strat, p)
        eb = sub_block(eo, p, (None, oi))
        rows = np.flatnonzero(rm)
        index.append((rows, oi))
        dw.append(embedding_grad(w.ids, eb, rows))
    lays = tuple(PARTIAL if s.split_axis == "b" else FULL for s in strat)
    return WeightGrad(index, reduced_blocks(ledger, IntraKey(i, "dW"), dw, lays))
