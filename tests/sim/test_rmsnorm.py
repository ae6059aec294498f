"""RMSNorm (RMSNormalization, SimplifiedLayerNormalization): the one-device kernel against numpy
and a numerical gradient, the kernel on shards against it with the statistics it all-reduces
(one value per row each way), the cost model's quantity for a feature split, and the opset-23 decoder verifying with its norms
split by features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hypar import api
from hypar import graph as G
from hypar.cost import CostModel
from hypar.cost.strategies import COLS, FULL, Q_ROWS2, Q_ROWS4, RMS_NORM_OPS, ROWS, _feature_split_intra
from hypar.sim.comm import Comm
from hypar.sim.ledger import Ledger, StatsKey
from hypar.sim.mesh import Mesh, gather, scatter
from hypar.sim.norms import LAYERNORM, RMSNORM, rms_norm, rms_norm_bwd
from hypar.sim.ops import op_class
from hypar.sim.result import SimResult
from hypar.sim.sharded import Charge, ShardContext
from hypar.verify import verify_assignment

EPS = 1e-6


def rms_layer(op: str = "RMSNormalization", axis: int = -1) -> G.Layer:
    return G.Layer(name="rms", op=op, kind=G.FEATURENORM, inputs=("x",), outputs=("y",),
                   attrs=(("axis", axis), ("epsilon", EPS)))


def numpy_rms(x: np.ndarray, scale: np.ndarray, axes: tuple) -> np.ndarray:
    """The definition, written out: x / sqrt(mean of squares over ``axes`` + eps) x scale."""
    ms = (x ** 2).sum(axis=axes, keepdims=True) / np.prod([x.shape[a] for a in axes])
    return x / np.sqrt(ms + EPS) * scale


@pytest.mark.parametrize("shape, axis", [((3, 8), -1), ((2, 5, 6), -1), ((2, 3, 4), 1)])
def test_kernel_equals_numpy_and_a_numerical_gradient(shape, axis):
    """Forward: the written-out definition. Backward: d/dx of sum(e * y) by central differences
    (every element), the error the kernel returns."""
    rng = np.random.default_rng(0)
    lay = rms_layer(axis=axis)
    axes = tuple(range(axis % len(shape), len(shape)))
    x, e = rng.standard_normal(shape), rng.standard_normal(shape)
    scale = 1.0 + 0.1 * rng.standard_normal(shape[axis % len(shape):])
    np.testing.assert_allclose(rms_norm(x, scale, lay), numpy_rms(x, scale, axes), rtol=1e-12)
    num = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = ((e * numpy_rms(xp, scale, axes)).sum() - (e * numpy_rms(xm, scale, axes)).sum()) / (2 * h)
    np.testing.assert_allclose(rms_norm_bwd(x, e, scale, lay), num, atol=1e-7)


def test_rms_ops_dispatch_to_the_rms_kernel():
    for op in ("RMSNormalization", "SimplifiedLayerNormalization"):
        assert op_class(rms_layer(op)) == "rmsnorm"
    skip = G.Layer(name="s", op="SkipSimplifiedLayerNormalization", kind=G.FEATURENORM, inputs=("x", "r"),
                   outputs=("y",))
    assert op_class(skip) != "rmsnorm"                   # two activations: hypar.sim.fused's skip norm class


def _stats_counts(norm, lay, params, mesh, x, e, layouts) -> tuple[dict, np.ndarray, np.ndarray]:
    """Run ``norm`` forward and backward on x, e scattered in ``layouts`` (hierarchical order):
    (elements sent per level by direction, output, input error)."""
    ledger = Ledger(Comm(mesh), mesh.H)
    ctx = ShardContext(ledger, {lay.name: params}, SimResult([], mesh.H, 2), {}, hierarchical=True)
    xd, ed = scatter(mesh, x, layouts, (0, 1)), scatter(mesh, e, layouts, (0, 1))
    charge = Charge("intra", 0, "node")
    y, dx = gather(norm.forward(ctx, lay, xd, charge)), gather(norm.backward(ctx, lay, xd, ed, charge))
    counts = {key.direction: list(rec.counts) for key, rec in ledger.records.items() if isinstance(key, StatsKey)}
    return counts, y, dx


@pytest.mark.parametrize("layouts", [(COLS, FULL), (ROWS, COLS), (COLS, COLS), (FULL, COLS), (COLS, ROWS)],
                         ids=lambda ls: "/".join(ls))
def test_on_shards_equals_one_device_with_one_statistic_per_row(layouts):
    """The features split over a 2x2 mesh: the shards' result equals the one-device kernel, and
    each direction all-reduces one value per row -- exactly half of what LayerNorm's two per row
    send on the same layouts, at every level (nothing when no level splits the features)."""
    rng = np.random.default_rng(3)
    mesh = Mesh((2, 2))
    lay = rms_layer()
    shape = (4, 8)
    scale = 1.0 + 0.1 * rng.standard_normal(shape[-1])
    x, e = rng.standard_normal(shape), rng.standard_normal(shape)
    counts, y, dx = _stats_counts(RMSNORM, lay, scale, mesh, x, e, layouts)
    np.testing.assert_allclose(y, rms_norm(x, scale, lay), atol=1e-12)
    np.testing.assert_allclose(dx, rms_norm_bwd(x, e, scale, lay), atol=1e-12)
    ln = G.Layer(name="rms", op="LayerNormalization", kind=G.FEATURENORM, inputs=("x",), outputs=("y",),
                 attrs=(("axis", -1), ("epsilon", EPS)))
    w = (scale, np.zeros(shape[-1]))
    ln_counts, _y, _dx = _stats_counts(LAYERNORM, ln, w, mesh, x, e, layouts)
    for d in ("fwd", "bwd"):
        assert [2 * c for c in counts[d]] == ln_counts[d], (d, counts, ln_counts)
        assert [c > 0 for c in counts[d]][0] == (layouts[0] == COLS)
    assert sum(counts["fwd"]) > 0 and counts["fwd"] == counts["bwd"]


@pytest.mark.parametrize("op", RMS_NORM_OPS)
def test_feature_split_prices_two_values_per_row(op):
    """A feature split of an RMS norm all-reduces Q_ROWS2 (2 x rows: one forward, one backward);
    LayerNormalization keeps Q_ROWS4 (4 x rows); a norm over a trailing axis that leaves the
    features out all-reduces nothing."""
    out = G.Tensor("y", (6, 10, 16), 0, 2)
    assert _feature_split_intra(G.FEATURENORM, rms_layer(op, axis=2), out) == (Q_ROWS2,)
    assert _feature_split_intra(G.FEATURENORM, rms_layer("LayerNormalization", axis=2), out) == (Q_ROWS4,)
    feat1 = G.Tensor("y", (6, 16, 10), 0, 1)
    assert _feature_split_intra(G.FEATURENORM, rms_layer(op, axis=2), feat1) == ()


DECODER23 = Path(__file__).resolve().parent.parent / "fixtures" / "decoder_dynamo_opset23.onnx"


@pytest.mark.parametrize("levels", ["2,2", "2,2,2"])
def test_decoder_opset23_verifies_with_its_rms_norms_feature_split(levels):
    """decoder_dynamo_opset23 (five RMSNormalization ops; batch 2, sequence 16): every other
    node takes its first choice at every level and the norms split their features at every level,
    then batch above features, then features above replicas: every plan verifies (numerics and
    counted == predicted per layer and level), and the norms' statistics are priced Q_ROWS2.
    (The partitioner's own plans on 2x2 and 2x2x2 stop earlier, at a GQA Reshape whose shards
    do not map: the placement work, not the norms.)"""
    g = api.load_layer_graph(str(DECODER23), batch=2, dims={"sequence": 16})
    model = CostModel(g, api.resolve_array(levels=levels), "full", convention="hierarchical")
    H = model.n_levels
    rms = [i for i, n in enumerate(model.names) if model.nodes[i].layer.op == "RMSNormalization"]
    assert len(rms) == 5 and all(model.nodes[i].strategy(COLS).intra == (Q_ROWS2,) for i in rms)
    base = [(model.labels(j)[0],) * H for j in range(len(model.names))]
    for lays in [(COLS,) * H, (ROWS,) + (COLS,) * (H - 1), (COLS,) + (FULL,) * (H - 1)]:
        rep = verify_assignment(model, [lays if j in rms else base[j] for j in range(len(model.names))])
        assert rep.ok and not rep.unsupported, (lays, rep.failures()[:3])
        assert all(sum(l.counted_bytes for l in rep.layers[i].levels) > 0 for i in rms)
