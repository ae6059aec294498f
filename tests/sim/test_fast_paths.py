"""The simulator's fast paths give what the plain numpy they replace gives: convolutions (pointwise
and im2col) against a direct sum, GEMM blocks cut into runs of weight views, the embedding
gradient, the vectorised erf, max |a - b| in pieces, contiguous indices as slices, replicas
sharing arrays and per-PE work done once per distinct input; the reference run node by node
equals the whole one; a float32 step still computes and still poisons a lost message; the
reference's thread ends when the step stops early."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.cost.strategies import FULL, ROWS
from hypar.sim import SimulationError, simulate
from hypar.sim.comm import Comm
from hypar.sim.conv import conv_forward, conv_input_grad, conv_weight_grad
from hypar.sim.kernels import _erf, embedding_grad
from hypar.sim.mesh import Dist, Mesh, as_cut, max_abs_diff, per_pe, scatter, shard_mask, share_replicas
from hypar.sim.reference import ReferenceBackward, reference_forward, reference_step, seeded_data
from hypar.sim.weighted import gemm_forward, gemm_input_error
from hypar.synthetic import gemm_chain


class ConvLayer:
    """The attributes the conv kernels read."""

    def __init__(self, k, st, pads, groups, d_in):
        self.kernel, self.groups, self.d_in = k, groups, d_in
        self._a = {"strides": st, "pads": pads}

    def attr(self, name, default=None):
        return self._a.get(name, default)


def direct_conv(x, w, st, pads, G):
    """out[b, o, y, x] = sum over the group's channels and the kernel of w * padded x (loops)."""
    B, Ci, H, W = x.shape
    cin, Co, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    Ho, Wo = (xp.shape[2] - kh) // st[0] + 1, (xp.shape[3] - kw) // st[1] + 1
    out = np.zeros((B, Co, Ho, Wo))
    for o in range(Co):
        g = o // (Co // G)
        for i, j in itertools.product(range(kh), range(kw)):
            patch = xp[:, g * cin:(g + 1) * cin, i:i + st[0] * (Ho - 1) + 1:st[0], j:j + st[1] * (Wo - 1) + 1:st[1]]
            out[:, o] += np.einsum("bchw,c->bhw", patch, w[:, o, i, j])
    return out


@pytest.mark.parametrize("k,st,pads,G", [((1, 1), (1, 1), (0, 0, 0, 0), 1), ((1, 1), (2, 2), (0, 0, 0, 0), 1),
                                         ((1, 1), (1, 1), (0, 0, 0, 0), 2), ((3, 3), (1, 1), (1, 1, 1, 1), 1),
                                         ((3, 3), (2, 2), (1, 1, 1, 1), 2), ((2, 3), (1, 2), (0, 1, 1, 0), 1)])
def test_conv_kernels_equal_a_direct_sum(k, st, pads, G):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4 * G, 7, 6))
    w = rng.standard_normal((4, 2 * G) + k)
    lay = ConvLayer(k, st, pads, G, 4 * G)
    y = direct_conv(x, w, st, pads, G)
    np.testing.assert_allclose(conv_forward(x, w, lay), y, atol=1e-12)
    e = rng.standard_normal(y.shape)
    # the weight gradient and the input error are the directional derivatives of <conv(x, w), e>
    dw, dx = rng.standard_normal(w.shape), rng.standard_normal(x.shape)
    np.testing.assert_allclose(np.sum(conv_weight_grad(x, e, lay) * dw), np.sum(direct_conv(x, dw, st, pads, G) * e),
                               rtol=1e-10)
    np.testing.assert_allclose(np.sum(conv_input_grad(x, w, e, lay) * dx), np.sum(direct_conv(dx, w, st, pads, G) * e),
                               rtol=1e-10)
    assert conv_forward(x.astype(np.float32), w.astype(np.float32), lay).dtype == np.float32


@pytest.mark.parametrize("ii,oi", [(np.arange(8), np.arange(2, 6)), (np.r_[0:2, 4:6], np.r_[1:3, 5:7, 9:10]),
                                   (np.r_[6:8, 0:2], np.r_[3:5, 0:2])])
def test_gemm_blocks_from_weight_views_equal_the_block_product(ii, oi):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 10))
    x, e = rng.standard_normal((2, 3, len(ii))), rng.standard_normal((2, 3, len(oi)))
    block = w[np.ix_(ii, oi)]
    np.testing.assert_allclose(gemm_forward(x, w, ii, oi), x @ block, atol=1e-12)
    np.testing.assert_allclose(gemm_input_error(e, w, ii, oi), e @ block.T, atol=1e-12)


def test_embedding_gradient_equals_add_at():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 40, (3, 9)).astype(float)
    e = rng.standard_normal((3, 9, 5))
    full = np.zeros((40, 5))
    np.add.at(full, ids.astype(int).ravel(), e.reshape(-1, 5))
    np.testing.assert_allclose(embedding_grad(ids, e, np.arange(40)), full, atol=1e-12)
    rows = np.array([0, 3, 7, 21, 39])
    np.testing.assert_allclose(embedding_grad(ids, e, rows), full[rows], atol=1e-12)


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 2.0, -2.0, np.inf, -np.inf]])
    assert np.max(np.abs(_erf(x) - np.array([math.erf(v) for v in x]))) < 1e-14
    assert np.isnan(_erf(np.array([np.nan]))).all()
    assert _erf(x.astype(np.float32)).dtype == np.float32


def test_max_abs_diff_in_pieces_equals_the_whole_difference():
    rng = np.random.default_rng(3)
    for shape in [(4, 1024, 7, 7), (2, 300, 40, 5), (5,), (0, 3)]:
        a, b = rng.standard_normal(shape), rng.standard_normal(shape)
        assert max_abs_diff(a, b) == (np.abs(a - b).max() if a.size else 0.0)
    a = rng.standard_normal((4, 256, 16, 16))
    assert max_abs_diff(a[:, ::2], a[:, 1::2]) == np.abs(a[:, ::2] - a[:, 1::2]).max()   # strided views
    b = a.copy()
    b[3, 255, 15, 15] = np.nan
    assert np.isnan(max_abs_diff(a, b))


def test_contiguous_indices_become_slices_others_stay():
    assert as_cut(np.arange(3, 9)) == slice(3, 9)
    assert as_cut(np.array([], int)) == slice(0, 0)
    for idx in (np.array([0, 1, 3]), np.array([1, 0, 2]), np.array([2, 3, 0, 1])):
        assert isinstance(as_cut(idx), np.ndarray)


def test_replicas_share_equal_blocks_and_per_pe_work_runs_once_per_array():
    mesh = Mesh((2, 2))
    full = np.arange(32.0).reshape(4, 8)
    d = scatter(mesh, full, (FULL, ROWS))          # PEs 0, 2 and 1, 3 hold the same rows
    d.blocks[2] = d.blocks[2].copy()
    d.blocks[3] = d.blocks[3] + 1.0                # a replica that differs stays apart
    share_replicas(d)
    assert d.blocks[2] is d.blocks[0] and d.blocks[3] is not d.blocks[1]
    calls = []
    out = per_pe(mesh.P, lambda p: (id(d.blocks[p]),), lambda p: calls.append(p) or d.blocks[p] * 2)
    assert calls == [0, 1, 3] and out[2] is out[0]


def test_reference_node_by_node_equals_the_whole_step():
    model = CostModel(gemm_chain([8, 8, 8, 8], 8), array_from_levels([2, 2]), "accpar")
    data = seeded_data(model.g, np.random.default_rng(4))
    whole = reference_step(model.g, data)
    keep = {"h1", "h2"}
    back = ReferenceBackward(model.g, data, reference_forward(model.g, data), keep, frugal=True)
    for name in reversed(model.names):
        ref = back.through(name)
    assert set(ref.err) <= keep | {t.name for t in model.g.graph["inputs"]}    # the rest dropped once used
    for t in keep:
        np.testing.assert_array_equal(ref.err[t], whole.err[t])
    for n in model.names:
        np.testing.assert_array_equal(ref.dW[n], whole.dW[n])


def test_float32_step_computes_and_still_poisons_a_lost_message(monkeypatch):
    model = CostModel(gemm_chain([8, 8, 8], 8), array_from_levels([2]), "accpar")
    res = simulate(model, [("I",), ("II",)], dtype=np.float32)
    assert res.tol > 1e-9 and all(res.ok_numerics) and max(res.max_err) > 0

    def lossy(self, d, h, new):                    # every message dropped (as test_verify's)
        layouts = d.layouts[:h] + (new,) + d.layouts[h + 1:]
        vals = [np.where(shard_mask(d.mesh, d.shape, layouts, p), d.vals[p], np.nan) for p in range(d.mesh.P)]
        return Dist(d.mesh, d.shape, layouts, vals)

    monkeypatch.setattr(Comm, "relayout", lossy)
    with pytest.raises(SimulationError):
        simulate(model, [("I",), ("II",)], dtype=np.float32)


def test_the_reference_thread_ends_when_the_step_stops_early():
    model = CostModel(gemm_chain([6, 8], 8), array_from_levels([2, 2]), "accpar")
    res = simulate(model, [("II", "I")])             # an uneven split found while running
    assert res.unsupported
    assert not [t for t in threading.enumerate() if t.name.startswith("hypar-reference")]
