"""The op tables: which ONNX op types the importer knows and what it knows about each.

Ops are matched on ``op_type`` whatever their domain. Every set is a frozenset of op types; the
layer-kind sets (UNARY ... SPLIT) are disjoint.
"""

from __future__ import annotations

import onnx

UNARY = frozenset({
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Erf", "Exp", "Log",
    "Sqrt", "Reciprocal", "Neg", "Abs", "Sign", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan",
    "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Clip", "Dropout",
    "Identity", "Cast", "CastLike", "Not", "IsNaN", "IsInf", "Mish", "Swish", "ThresholdedRelu",
    "Shrink", "Pad", "Resize", "Upsample", "Expand", "Tile", "Trilu", "CumSum", "Bernoulli",
    "BitwiseNot", "QuantizeLinear", "DequantizeLinear", "RotaryEmbedding",
})
BINARY = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Mod", "BitShift", "PRelu",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor",
})
FEATURENORM = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LRN",
    "MeanVarianceNormalization", "LpNormalization", "SkipLayerNormalization",
    "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RMSNormalization",
})
SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
REDUCE = frozenset({
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
})
POOL = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
})
RESHAPE = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth",
})
SPLIT = frozenset({"Split", "Slice", "Gather", "GatherElements", "GatherND"})
# Ops whose output describes a shape, not data: their outputs are 'meta' tensors.
SHAPE_OPS = frozenset({"Shape", "Size"})
CONV = frozenset({"Conv", "ConvTranspose"})
MATMUL = frozenset({"MatMul", "Gemm"})
# Unary ops whose output shape differs from their input's.
RESHAPING_UNARY = frozenset({"Pad", "Resize", "Upsample", "Expand", "Tile"})

# Ops a weight passes through unchanged in content (weight-only paths fold into the layer).
WEIGHT_PASS = frozenset({
    "Transpose", "Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
    "DequantizeLinear",
})
# Input position from which an op's inputs are parameters (tells parameter graph inputs from
# activations); ops not listed take activations at every position.
PARAM_SLOTS = {
    "Conv": 1, "ConvTranspose": 1, "BatchNormalization": 1, "InstanceNormalization": 1,
    "LayerNormalization": 1, "GroupNormalization": 1, "PRelu": 1, "Gemm": 1,
}

# Inputs that are indices read whole beside the data, not data a layout splits, by (op, domain):
# the position ids of the rotary embeddings (ONNX opset 23 and com.microsoft order them apart).
INDEX_INPUTS = {("RotaryEmbedding", ""): (3,), ("RotaryEmbedding", "com.microsoft"): (1,)}
# Ops whose constant operands are not trained (a rotary embedding's cos / sin caches).
UNTRAINED_OPERANDS = frozenset({"RotaryEmbedding"})
# Output positions that have the first input's shape, for ops with several outputs (the skip
# norms' normalised output and their input + skip sum); other SAME_SHAPE ops: output 0.
SAME_SHAPE_OUTPUTS = {"SkipLayerNormalization": (0, 3), "SkipSimplifiedLayerNormalization": (0, 3)}

KNOWN_OPS = (
    UNARY | BINARY | FEATURENORM | SOFTMAX | REDUCE | POOL | RESHAPE | SPLIT | SHAPE_OPS | CONV
    | MATMUL | {"BatchNormalization", "Concat", "Constant", "ConstantOfShape", "Range"}
)
# Known ops whose output has the shape of their (first) input.
SAME_SHAPE = (UNARY - RESHAPING_UNARY) | FEATURENORM | SOFTMAX


def index_inputs(n: onnx.NodeProto) -> tuple[int, ...]:
    """Input positions of node ``n`` that are indices read beside its data (:data:`INDEX_INPUTS`)."""
    return INDEX_INPUTS.get((n.op_type, "" if n.domain == "ai.onnx" else n.domain), ())


def same_shape_outputs(n: onnx.NodeProto) -> tuple[int, ...]:
    """Output positions of a SAME_SHAPE node ``n`` that have its first input's shape."""
    return SAME_SHAPE_OUTPUTS.get(n.op_type, (0,))


def is_unknown_op(n: onnx.NodeProto) -> bool:
    """True when the importer has no rule for ``n``'s op type (custom or unsupported op)."""
    return n.op_type not in KNOWN_OPS
