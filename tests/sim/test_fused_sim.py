"""onnxruntime's fused ops in the simulator (hypar/sim/fused.py): the rotary embedding against a
written-out rotation (both pairings, 3-D and 4-D inputs) with its backward the transpose, on
shards of whole heads and refused when a split cuts a head (and the cost model never offering
such a split); the skip norms against numpy and a numerical gradient; and decoder_ort_fused
verifying on 2x2 and 2x2x2 with its skip norms and rotaries split by features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hypar import api
from hypar import graph as G
from hypar.cost import CostModel
from hypar.cost.strategies import COLS, FULL, Q_ROWS2, Q_ROWS4, ROWS, cuts_rotation, quantity
from hypar.sim.comm import Comm
from hypar.sim.errors import Unsupported
from hypar.sim.fused import Rotary, draw_rotary, rotary, skip_norm_error, skip_norm_values
from hypar.sim.ledger import Ledger
from hypar.sim.mesh import Mesh, TensorAxes, gather, scatter
from hypar.sim.ops import backward_op, forward_op, op_class
from hypar.sim.result import SimResult
from hypar.sim.sharded import Charge, ShardContext, local_backward, local_forward
from hypar.verify import verify_assignment, verify_plan

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "decoder_ort_fused.onnx"
EPS = 1e-6


def rot_layer(head: int, rot: int, interleaved: int) -> G.Layer:
    return G.Layer(name="rot", op="RotaryEmbedding", kind=G.ELEMENTWISE, inputs=("x",), outputs=("y",),
                   attrs=(("const_inputs", 2), ("interleaved", interleaved), ("rotary_dim", rot), ("rotary_head", head)))


def written_out_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, head: int, rot: int, inter: bool):
    """The op's definition with loops: per position s, head h and pair k, the pair (i, j) of the
    head's elements -- (2k, 2k+1) interleaved, else (k, k + rot/2) -- rotated by angle (s, k)."""
    out = x.copy()
    S = x.shape[-2]
    for idx in np.ndindex(x.shape[:-2]):
        for s in range(S):
            for h in range(x.shape[-1] // head):
                for k in range(rot // 2):
                    i, j = (2 * k, 2 * k + 1) if inter else (k, k + rot // 2)
                    a, b = x[idx + (s, h * head + i)], x[idx + (s, h * head + j)]
                    out[idx + (s, h * head + i)] = a * cos[s, k] - b * sin[s, k]
                    out[idx + (s, h * head + j)] = b * cos[s, k] + a * sin[s, k]
    return out


@pytest.mark.parametrize("shape, head, rot", [((2, 5, 12), 6, 6), ((2, 5, 12), 6, 4), ((2, 3, 5, 8), 8, 8)])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_equals_the_written_out_rotation_and_backward_is_its_transpose(shape, head, rot, interleaved):
    """Forward: the loops above (a partial rotary dim passes the rest through). Backward: for the
    linear map y = R x, <R x, e> = <x, R^T e> for every x, e."""
    rng = np.random.default_rng(0)
    lay = rot_layer(head, rot, interleaved)
    w = draw_rotary(rng, lay, shape[-2], np.float64)
    x, e = rng.standard_normal(shape), rng.standard_normal(shape)
    y = forward_op(lay, [x], w)
    assert op_class(lay) == "rotary"
    np.testing.assert_allclose(y, written_out_rotary(x, w.cos, w.sin, head, rot, bool(interleaved)), atol=1e-12)
    dx = backward_op(lay, [x], e, w)[0]
    np.testing.assert_allclose((y * e).sum(), (x * dx).sum(), rtol=1e-12)
    np.testing.assert_allclose(rotary(y, w, lay, inverse=True), x, atol=1e-12)   # a rotation: R^T R = 1
    if rot < head:
        np.testing.assert_array_equal(y.reshape(shape[:-1] + (-1, head))[..., rot:],
                                      x.reshape(shape[:-1] + (-1, head))[..., rot:])


def _ctx(mesh: Mesh, params: dict) -> ShardContext:
    return ShardContext(Ledger(Comm(mesh), mesh.H), params, SimResult([], mesh.H, 2), {}, hierarchical=True)


@pytest.mark.parametrize("unit, ok", [(16, True), (32, True), (8, False), (1, False)])
def test_rotary_on_shards_runs_on_whole_heads_and_refuses_a_cut_head(unit, ok):
    """(2, 4, 32) with heads of 16, the features split over a 2x2 mesh in units of ``unit`` (8
    features a PE in units below 16: half heads): whole heads -- some PEs holding none -- give the
    one-device result and its transpose; half heads are Unsupported."""
    rng = np.random.default_rng(1)
    mesh = Mesh((2, 2))
    lay = rot_layer(16, 16, 0)
    w = draw_rotary(rng, lay, 4, np.float64)
    x, e = rng.standard_normal((2, 4, 32)), rng.standard_normal((2, 4, 32))
    axes = TensorAxes((0, 2), (1, unit))
    xd, ed = scatter(mesh, x, (COLS, COLS), axes), scatter(mesh, e, (COLS, COLS), axes)
    ctx = _ctx(mesh, {"rot": w})
    charge = Charge("intra", 0, "node")
    if not ok:
        with pytest.raises(Unsupported, match="part of a head"):
            local_forward(lay, [xd], ctx, charge)
        return
    np.testing.assert_allclose(gather(local_forward(lay, [xd], ctx, charge)), rotary(x, w, lay), atol=1e-12)
    back = local_backward(lay, [xd], ed, 0, (COLS, COLS), ctx, charge)
    np.testing.assert_allclose(gather(back), rotary(e, w, lay, inverse=True), atol=1e-12)


@pytest.mark.parametrize("unit, head, split", [(16, 16, True), (32, 16, True), (8, 16, False), (1, 16, False),
                                               (1, None, False)])
def test_cost_model_offers_a_rotary_feature_split_only_over_whole_heads(unit, head, split):
    attrs = (("rotary_head", head),) if head else ()
    lay = G.Layer(name="rot", op="RotaryEmbedding", kind=G.ELEMENTWISE, inputs=("x",), outputs=("y",), attrs=attrs)
    out = G.Tensor("y", (2, 16, 64), 0, 2, feature_unit=unit)
    assert cuts_rotation(lay, out) == (not split)
    heads_axis = G.Tensor("y", (2, 4, 16, 16), 0, 1)               # 4-D: the features are the heads
    assert not cuts_rotation(lay, heads_axis)


def _skip_layer(op: str, outputs=("y", "s")) -> G.Layer:
    return G.Layer(name="skip", op=op, kind=G.FEATURENORM, inputs=("x", "r"), outputs=outputs,
                   attrs=(("epsilon", EPS),))


def _numpy_skip(op, x, r, w):
    s = x + r
    if op == "SkipSimplifiedLayerNormalization":
        return s / np.sqrt((s ** 2).mean(-1, keepdims=True) + EPS) * w, s
    gamma, beta = w
    return (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + EPS) * gamma + beta, s


@pytest.mark.parametrize("op", ["SkipSimplifiedLayerNormalization", "SkipLayerNormalization"])
def test_skip_norm_equals_numpy_and_a_numerical_gradient(op):
    """Outputs: the norm of x + skip and the sum. Both inputs' error: d/dx of sum(e_y y + e_s s)
    by central differences (every element)."""
    rng = np.random.default_rng(2)
    x, r = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 3, 6))
    scale = 1 + 0.1 * rng.standard_normal(6)
    w = scale if op.startswith("SkipSimplified") else (scale, 0.1 * rng.standard_normal(6))
    lay = _skip_layer(op)
    assert op_class(lay) == "skipnorm"
    got = skip_norm_values(lay, [x, r], w, forward_op)
    want = _numpy_skip(op, x, r, w)
    np.testing.assert_allclose(got["y"], want[0], atol=1e-12)
    np.testing.assert_array_equal(got["s"], want[1])
    ey, es = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    d = skip_norm_error(lay, [x, r], {"y": ey, "s": es}, w, backward_op)
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        f = [sum((e * v).sum() for e, v in zip((ey, es), _numpy_skip(op, z, r, w))) for z in (xp, xm)]
        num[idx] = (f[0] - f[1]) / 2e-6
    np.testing.assert_allclose(d, num, atol=1e-7)
    single = skip_norm_error(_skip_layer(op, ("y",)), [x, r], {"y": ey}, w, backward_op)
    np.testing.assert_allclose(d - single, es, atol=1e-12)       # the sum's error adds straight through


@pytest.mark.parametrize("levels", ["2,2", "2,2,2"])
def test_decoder_ort_fused_verifies_with_skip_norms_and_rotaries_split_by_features(levels):
    """decoder_ort_fused (four SkipSimplifiedLayerNormalization, four RotaryEmbedding; batch 2,
    sequence 16): every other node takes its first choice at every level, the skip norms and the
    rotaries split their features at every level, then batch above features, then features above
    replicas: every plan verifies (numerics, counted == predicted per layer and level); the skip
    norms' statistics are priced Q_ROWS2 and counted, and the partitioner's plan verifies too."""
    g = api.load_layer_graph(str(FIXTURE), batch=2, dims={"sequence": 16})
    arr = api.resolve_array(levels=levels)
    model = CostModel(g, arr, "full", convention="hierarchical")
    H = model.n_levels
    ops = [model.nodes[i].layer.op for i in range(len(model.names))]
    skip = [i for i, op in enumerate(ops) if op == "SkipSimplifiedLayerNormalization"]
    rot = [i for i, op in enumerate(ops) if op == "RotaryEmbedding"]
    assert len(skip) == 4 and len(rot) == 4
    assert all(model.nodes[i].strategy(COLS).intra == (Q_ROWS2,) for i in skip)
    # one statistic per row of the normalised output each way: 2 x (2 x 16) rows, also for the three
    # norms that output x + skip too (their out_elements count both outputs; the sum takes none)
    assert [quantity(model.nodes[i], model.nodes[i].sizes, Q_ROWS2) for i in skip] == [64] * 4
    assert sum(len(model.nodes[i].layer.outputs) == 2 for i in skip) == 3
    assert Q_ROWS4 not in {q for i in skip for q in model.nodes[i].strategy(COLS).intra}
    base = [(model.labels(j)[0],) * H for j in range(len(model.names))]
    for lays in [(COLS,) * H, (ROWS,) + (COLS,) * (H - 1), (COLS,) + (FULL,) * (H - 1)]:
        rep = verify_assignment(model, [lays if j in skip + rot else base[j] for j in range(len(model.names))])
        assert rep.ok and not rep.unsupported, (lays, rep.failures()[:3])
        assert all(sum(l.counted_bytes for l in rep.layers[i].levels) > 0 for i in skip)
    plan = api.partition(str(FIXTURE), arr, batch=2, dims={"sequence": 16}, objective="time")
    rep = verify_plan(str(FIXTURE), plan, batch=2)
    assert rep.ok and not rep.unsupported, rep.failures()[:3]
