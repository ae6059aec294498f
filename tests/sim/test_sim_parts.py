"""The simulator's parts on their own: op dispatch tables, the ledger's counting by step, the
normalisations on shards against the one-device kernels, the order search's limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hypar import graph as G
from hypar.cost.strategies import COLS, FULL, PARTIAL, ROWS
from hypar.sim.comm import Comm
from hypar.sim.kernels import BINARY_OPS, CONST_OPS, LOCAL, batchnorm, batchnorm_bwd, layernorm, layernorm_bwd
from hypar.sim.ledger import ConversionKey, IntraKey, Ledger
from hypar.sim.mesh import Dist, Mesh, gather, scatter
from hypar.sim.ops import BACKWARD, CLASSES, FORWARD, op_class
from hypar.sim.result import SimResult
from hypar.sim.schedule import MAX_ORDERS, schedule
from hypar.sim.sharded import BATCHNORM, LAYERNORM, Charge, ShardContext
from hypar.sim.support import KIND_CHECKS


def test_dispatch_tables_cover_every_class():
    classes = {name for name, _ in CLASSES} | {"local"}
    assert set(FORWARD) == classes
    assert set(BACKWARD) == classes


def test_elementwise_tables_have_both_directions():
    for table in (LOCAL, CONST_OPS, BINARY_OPS):
        for op, entry in table.items():
            assert all(callable(f) for f in entry[:2]), op


def test_op_class_falls_back_to_local():
    relu = G.Layer(name="r", op="Relu", kind=G.ELEMENTWISE, inputs=("x",), outputs=("y",))
    assert op_class(relu) == "local"
    gemm = G.Layer(name="fc", op="Gemm", kind=G.GEMM, inputs=("x",), outputs=("y",))
    assert op_class(gemm) == "gemm"


def test_support_checks_the_weighted_kinds():
    assert {G.GEMM, G.CONV, G.EMBEDDING, G.MATMUL_ACT} == set(KIND_CHECKS)


def test_ledger_counts_a_key_once_and_charges_the_first_node():
    mesh = Mesh((2,))
    comm = Comm(mesh)
    ledger = Ledger(comm, 1)
    parts = [np.ones((2, 2)), np.ones((2, 2))]

    def reduce():
        return comm.allreduce(Dist(mesh, (2, 2), (PARTIAL,), parts), 0)

    key = ConversionKey("fwd", 0, "t", 0, (PARTIAL,), (FULL,), PARTIAL, FULL, (0, 0))
    ledger.run(key, "fwd", "a -> b", 3, reduce)
    ledger.run(key, "fwd", "a -> b", 1, reduce)          # the same step again: counts nothing
    ledger.run(IntraKey(2, "dW"), "intra", "dW", 2, reduce)
    assert comm.sink is None
    res = SimResult(["a", "b", "c", "d"], 1, 2)
    ledger.attribute(res, 4)
    assert res.counted == [[0], [8], [8], [0]]          # 2 PEs x 4 elements, to the first node (1)
    assert [(t.kind, t.node, t.elements) for t in res.transfers] == [("fwd", 1, 8), ("intra", 2, 8)]


def test_counting_restores_the_sink():
    comm = Comm(Mesh((2,)))
    outer = [0]
    comm.sink = outer
    with comm.counting(None):
        comm.send(0, 0, 1, 5)
    assert comm.sink is outer and outer == [0]


def _context(mesh: Mesh, params: dict) -> ShardContext:
    return ShardContext(Ledger(Comm(mesh), mesh.H), params, SimResult([], mesh.H, 2), {})


_BN = G.Layer(name="bn", op="BatchNormalization", kind=G.BATCHNORM, inputs=("x",), outputs=("y",))
_LN = G.Layer(name="ln", op="LayerNormalization", kind=G.FEATURENORM, inputs=("x",), outputs=("y",))
# (shards, layer, one-device forward, one-device backward, tensor shape, channels, axes, layouts)
_NORMS = [(BATCHNORM, _BN, batchnorm, batchnorm_bwd, (8, 4, 3, 3), 4, (0, 1), lays)
          for lays in [(ROWS, FULL), (FULL, ROWS), (ROWS, ROWS), (COLS, ROWS)]] + \
         [(LAYERNORM, _LN, layernorm, layernorm_bwd, (4, 8), 8, (0, 1), lays)
          for lays in [(COLS, FULL), (ROWS, COLS), (COLS, COLS)]]


@pytest.mark.parametrize("norm, lay, fwd, bwd, shape, channels, axes, layouts", _NORMS,
                         ids=[f"{n[1].op}-{'/'.join(n[-1])}" for n in _NORMS])
def test_normalisation_on_shards_equals_one_device(norm, lay, fwd, bwd, shape, channels, axes, layouts):
    """Statistics summed per PE and all-reduced give the one-device BatchNorm / LayerNorm."""
    rng = np.random.default_rng(1)
    mesh = Mesh((2, 2))
    w = (1.0 + 0.1 * rng.standard_normal(channels), 0.1 * rng.standard_normal(channels))
    ctx = _context(mesh, {lay.name: w})
    x, e = rng.standard_normal(shape), rng.standard_normal(shape)
    xd, ed = scatter(mesh, x, layouts, axes), scatter(mesh, e, layouts, axes)
    charge = Charge("intra", 0, "node")
    np.testing.assert_allclose(gather(norm.forward(ctx, lay, xd, charge)), fwd(x, w, lay), atol=1e-12)
    np.testing.assert_allclose(gather(norm.backward(ctx, lay, xd, ed, charge)), bwd(x, e, w, lay), atol=1e-12)


def test_schedule_lists_at_most_max_orders():
    for s, t in itertools.product(itertools.product((ROWS, COLS, FULL, PARTIAL), repeat=3), repeat=2):
        orders, _bad = schedule(s, t, t, False, all_orders=True)
        assert 1 <= len(orders) <= MAX_ORDERS
