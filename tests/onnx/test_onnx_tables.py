"""The importer's dispatch tables: every layer kind has a builder and an axis rule or the default,
the op sets are disjoint, each op lands on its kind, and each constant evaluator computes what
ONNX would (checked on tiny models written in place)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import numpy_helper, parser

from hypar import graph as G
from hypar.onnx import ops
from hypar.onnx.axes import AXIS_RULES
from hypar.onnx.constants import EVALUATED_OPS, ConstantEvaluator
from hypar.onnx.index import ModelIndex
from hypar.onnx.layers import BUILDERS, layer_kind
from hypar.onnx.shapes import ShapeTable

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'

ALL_KINDS = {
    G.CONV, G.GEMM, G.EMBEDDING, G.MATMUL_ACT, G.ELEMENTWISE, G.BINARY, G.BATCHNORM,
    G.FEATURENORM, G.SOFTMAX, G.REDUCE, G.POOL, G.RESHAPE, G.CONCAT, G.SPLIT, G.OPAQUE,
}

KIND_SETS = {
    "UNARY": ops.UNARY, "BINARY": ops.BINARY, "FEATURENORM": ops.FEATURENORM,
    "SOFTMAX": ops.SOFTMAX, "REDUCE": ops.REDUCE, "POOL": ops.POOL, "RESHAPE": ops.RESHAPE,
    "SPLIT": ops.SPLIT, "SHAPE_OPS": ops.SHAPE_OPS, "CONV": ops.CONV, "MATMUL": ops.MATMUL,
}


def test_every_layer_kind_has_a_builder():
    assert set(BUILDERS) == ALL_KINDS
    assert set(AXIS_RULES) <= ALL_KINDS
    assert G.DECISION_KINDS <= set(AXIS_RULES)


@pytest.mark.parametrize("a, b", list(itertools.combinations(KIND_SETS, 2)))
def test_op_sets_are_disjoint(a, b):
    assert not KIND_SETS[a] & KIND_SETS[b]


def _index(text: str, **initializers: list[int] | np.ndarray) -> ModelIndex:
    """The index of a parsed model; each keyword becomes an initializer (lists as int64)."""
    m = parser.parse_model(HEADER + text)
    for name, v in initializers.items():
        arr = v if isinstance(v, np.ndarray) else np.array(v, np.int64)
        m.graph.initializer.append(numpy_helper.from_array(arr, name))
    return ModelIndex(m)


@pytest.mark.parametrize("op_set, kind", [
    (ops.UNARY, G.ELEMENTWISE), (ops.FEATURENORM, G.FEATURENORM), (ops.SOFTMAX, G.SOFTMAX),
    (ops.REDUCE, G.REDUCE), (ops.POOL, G.POOL), (ops.RESHAPE, G.RESHAPE),
    (ops.SPLIT - {"Gather"}, G.SPLIT),
])
def test_one_input_ops_land_on_their_kind(op_set, kind):
    index = _index("g (float[2, 3] x) => (float[2, 3] y) { y = Relu(x) }")
    (_, n), = index.nodes
    for op in sorted(op_set):
        n.op_type = op
        assert layer_kind(n, ("x",), index) == kind, op


@pytest.mark.parametrize("text, act_in, kind", [
    ("y = Conv(x, w)", ("x",), G.CONV),
    ("y = Conv(x, w)", ("x", "w"), G.OPAQUE),  # a computed weight
    ("y = MatMul(x, w)", ("x",), G.GEMM),
    ("y = MatMul(x, w)", ("x", "w"), G.MATMUL_ACT),
    ("y = Gather(w, x)", ("x",), G.EMBEDDING),
    ("y = Gather(x, w)", ("x",), G.SPLIT),
    ("y = Add(x, w)", ("x",), G.ELEMENTWISE),
    ("y = Add(x, w)", ("x", "w"), G.BINARY),
    ("y = Concat<axis=0>(x, w)", ("x", "w"), G.CONCAT),
    ("y = BatchNormalization(x, w, w, w, w)", ("x",), G.BATCHNORM),
    ("y = com.acme.Frobnicate(x)", ("x",), G.OPAQUE),
])
def test_input_dependent_kinds(text, act_in, kind):
    index = _index("g (float[2, 3] x) => (float[2, 3] y) { " + text + " }", w=[1, 2])
    (_, n), = index.nodes
    assert layer_kind(n, act_in, index) == kind


# (graph body computing 'y' from initializers a = [6, -7, 8], b = [2, 3, 4], c = [T, F, T], s0 = [1],
# s1 = s3 = [3]; the value wanted)
EVALUATIONS = [
    ("y = Add(a, b)", [8, -4, 12]),
    ("y = Div(a, b)", [3, -2, 2]),  # integers truncate toward zero
    ("y = Mul(a, b)", [12, -21, 32]),
    ("y = Neg(a)", [-6, 7, -8]),
    ("y = Abs(a)", [6, 7, 8]),
    ("y = Identity(a)", [6, -7, 8]),
    ("y = Slice(a, s0, s1)", [-7, 8]),
    ("y = Gather<axis=0>(a, s0)", [-7]),
    ("y = Concat<axis=0>(a, s0)", [6, -7, 8, 1]),
    ("y = Transpose(a)", [6, -7, 8]),
    ("y = Where(c, a, b)", [6, 3, 8]),
    ("y = ReduceProd<keepdims=0>(b)", 24),
    ("y = Range(s0, s3, s0)", [1, 2]),
    ("z = Unsqueeze(a, s0)\n y = Squeeze(z, s0)", [6, -7, 8]),
    ("z = Shape(a)\n y = Reshape(b, z)", [2, 3, 4]),
    ("y = Size(a)", 3),
    ("y = Constant<value_ints=[5, 6]>()", [5, 6]),
    ("y = ConstantOfShape(z)\n z = Shape(b)", [0.0, 0.0, 0.0]),
    ("y = Expand(s0, z)\n z = Shape(b)", [1, 1, 1]),
    ("y = Cast<to=1>(a)", [6.0, -7.0, 8.0]),
]


@pytest.mark.parametrize("body, want", EVALUATIONS)
def test_constant_evaluators(body, want):
    index = _index("g (float[1] x) => (int64[3] y) { " + body + " }",
                   a=[6, -7, 8], b=[2, 3, 4], c=np.array([1, 0, 1], bool), s0=[1], s1=[3], s3=[3])
    table = ShapeTable()
    table.collect(index.model)
    got = ConstantEvaluator(index, table).value("y")
    assert got is not None and np.array_equal(got, np.array(want))


def test_evaluated_ops_are_known_or_constant():
    assert EVALUATED_OPS - ops.KNOWN_OPS == set()


def test_unknown_or_large_values_are_none():
    index = _index("g (float[2, 3] x) => (float[2] y) { z = Shape(x)\n y = Frobnicate(z) }")
    table = ShapeTable()
    table.collect(index.model)
    ev = ConstantEvaluator(index, table)
    assert ev.value("x") is None and ev.value("y") is None and ev.value("") is None
    assert ev.ints("z") == (2, 3)
