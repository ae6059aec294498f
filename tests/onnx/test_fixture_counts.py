"""Every ONNX fixture imports with no op kept opaque, its exact decision-layer kinds and its exact
trainable parameter total (issue 11: parameters in the plan = parameters of the model). A fixture
added to tests/fixtures without an entry here fails :func:`test_every_fixture_has_an_entry`.

The totals are derived from the models' definitions (scripts/export_fixtures.py,
scripts/fixture_llm.py, scripts/make_pattern_fixtures.py):

- cnn: stem conv 3x8x3x3, conv1 and conv2 8x8x3x3, fc 512->10 (+10). The eval exports fold each
  BatchNorm into its conv (a bias of 8 each): 216+8 + 2 x (576+8) + 5130 = 6,522; the training
  export keeps the three BatchNorms (8 scales + 8 shifts each) and no conv biases: 6,546.
- transformer: token table 100x64, the learned position table 16x64 (added, counted since issue
  11), q/k/v/out 4 x (64x64+64), two LayerNorms 2 x 128, ffn 64x128+128 and 128x64+64, head
  64x100+100: 47,396.
- decoder (tests/onnx/test_llm_fixtures.py derives it; the same model as onnxruntime's optimizer
  writes it: decoder_ort_fused): 90,432; windowed ViT: 10,540.
- the exporter patterns record theirs in their doc_string: 2,140 and 12,704.
- the precision fixtures (scripts/make_precision_fixtures.py): conv 3x8x3x3 + 8, conv 8x8x3x3 + 8,
  fc 512->10 + 10: 224 + 584 + 5,130 = 5,938, whether stored int8 (QDQ) or fp16.
"""

from __future__ import annotations

import warnings
from collections import Counter

import pytest

from hypar import graph as G
from hypar.errors import HyparWarning
from hypar.onnx import load_layer_graph

from paths import FIXTURES

CNN = {G.CONV: 3, G.GEMM: 1}
TRANSFORMER = {G.EMBEDDING: 1, G.GEMM: 7, G.MATMUL_ACT: 2}
DECODER = {G.EMBEDDING: 1, G.GEMM: 15, G.MATMUL_ACT: 4}
SMALL_CNN = {G.CONV: 2, G.GEMM: 1}
DIMS = {"batch": 2}
# stem: (decision-layer kinds, parameters, binding)
EXPECTED = {
    "cnn_dynamo": (CNN, 6_522, DIMS),
    "cnn_dynamo_dynbatch": (CNN, 6_522, DIMS),
    "cnn_torchscript": (CNN, 6_522, DIMS),
    "cnn_torchscript_train": (CNN, 6_546, DIMS),
    "transformer_dynamo": (TRANSFORMER, 47_396, DIMS),
    "transformer_dynamo_dynbatch": (TRANSFORMER, 47_396, DIMS),
    "transformer_sdpa_dynamo": (TRANSFORMER, 47_396, DIMS),
    "transformer_sdpa_dynamo_opset23": (TRANSFORMER, 47_396, DIMS),
    "transformer_sdpa_torchscript": (TRANSFORMER, 47_396, DIMS),
    "transformer_torchscript": (TRANSFORMER, 47_396, DIMS),
    "transformer_torchscript_dynbatch": (TRANSFORMER, 47_396, DIMS),
    "transformer_torchscript_opset14": (TRANSFORMER, 47_396, DIMS),
    "decoder_dynamo": (DECODER, 90_432, {"batch": 2, "dims": {"sequence": 16}}),
    "decoder_dynamo_opset23": (DECODER, 90_432, {"batch": 2, "dims": {"sequence": 16}}),
    "decoder_ort_fused": (DECODER, 90_432, {"batch": 2, "dims": {"sequence": 16}}),
    "windowed_vit_torchscript": ({G.CONV: 1, G.GEMM: 5, G.MATMUL_ACT: 2, G.EMBEDDING: 1}, 10_540,
                                 {"batch": 2, "dims": {"height": 16, "width": 16}}),
    "windowed_attention_dynamic": ({G.CONV: 1, G.GEMM: 3, G.MATMUL_ACT: 2, G.EMBEDDING: 1}, 2_140,
                                   {"batch": 2, "dims": {"height": 16, "width": 16}}),
    "cnn_qdq": (SMALL_CNN, 5_938, DIMS),
    "cnn_fp16": (SMALL_CNN, 5_938, DIMS),
    "sequence_pattern_dynamic": ({G.EMBEDDING: 3, G.GEMM: 3}, 12_704, {"input_shapes": {"ids": [2, 8]}}),
}


def test_every_fixture_has_an_entry():
    assert sorted(p.stem for p in FIXTURES.glob("*.onnx")) == sorted(EXPECTED)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_fixture_layers_and_parameters(stem):
    kinds, params, binding = EXPECTED[stem]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HyparWarning)
        g = load_layer_graph(FIXTURES / f"{stem}.onnx", **binding)
    assert Counter(G.layer(g, n).kind for n in G.decision_layers(g)) == kinds
    assert G.parameter_count(g) == params
    assert not [n for n in g.nodes if G.layer(g, n).kind == G.OPAQUE]
