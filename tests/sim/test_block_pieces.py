"""A block read as runs of its indices (hypar/sim/mesh.py block_pieces) is the block take_block
copies, and the comparison with the reference on those views (max_abs_error) equals the one on the
copy, a missing element still reported."""

from __future__ import annotations

import numpy as np

from hypar.cost.strategies import COLS, FULL, ROWS
from hypar.sim.mesh import MAX_PIECES, Mesh, as_cut, block_pieces, max_abs_error, scatter, take_block


def _non_contiguous(d) -> bool:
    return any(i is not None and not isinstance(as_cut(i), slice) for p in range(d.mesh.P) for i in d.index(p))


def test_pieces_reassemble_the_block():
    mesh = Mesh((2, 2))
    full = np.random.default_rng(0).random((4, 6, 3))
    for layouts in [(FULL, ROWS), (COLS, ROWS), (ROWS, COLS), (FULL, COLS)]:
        d = scatter(mesh, full, layouts)
        for p in range(mesh.P):
            want = take_block(full, d.axes, d.index(p))
            got = np.full(want.shape, np.nan)
            for here, there in block_pieces(d.axes, d.index(p)):
                got[here] = full[there]
            assert np.array_equal(got, want), (layouts, p)


def test_the_layouts_tested_do_cut_non_contiguous_indices():
    mesh = Mesh((2, 2))
    assert _non_contiguous(scatter(mesh, np.zeros((4, 6)), (FULL, ROWS)))


def test_too_many_runs_fall_back_to_a_copy():
    idx = np.arange(0, 4 * MAX_PIECES, 2)
    assert block_pieces((0, 1), (idx, None)) is None
    assert len(block_pieces((0, 1), (idx[:MAX_PIECES], None))) == MAX_PIECES


def test_max_abs_error_on_views_equals_the_copy_and_still_sees_a_nan():
    rng = np.random.default_rng(1)
    mesh = Mesh((2, 2))
    full = rng.random((4, 6, 3))
    ref = full + rng.normal(scale=1e-3, size=full.shape)
    for layouts in [(FULL, ROWS), (COLS, ROWS)]:
        d = scatter(mesh, full, layouts)
        expected = max(float(np.abs(d.blocks[p] - take_block(ref, d.axes, d.index(p))).max())
                       for p in range(mesh.P))
        assert max_abs_error(d, ref) == expected
        d.blocks[3][0, 0, 0] = np.nan                 # a lost element
        assert max_abs_error(d, ref) == float("inf")
