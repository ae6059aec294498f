"""The bundled model zoo (models/): counts, dimensions, manifest, and the build script."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from hypar import graph as G
from hypar.present.inspect import totals
from hypar.onnx import load_layer_graph

from paths import ROOT
MODELS = ROOT / "models"
MANIFEST = json.loads((MODELS / "MANIFEST.json").read_text())["models"]

# name: (conv, fc (Gemm), weighted MatMul, embedding, attention MatMul, params, batch)
# params = trainable parameters incl. biases and BN/LayerNorm affine, tied weights once: the
# torchvision / Hugging Face numbers (BERT without its pooler).
EXPECTED = {
    "lenet": (2, 3, 0, 0, 0, 61_706, 32),
    "alexnet": (5, 3, 0, 0, 0, 61_100_840, 32),
    "vgg11": (8, 3, 0, 0, 0, 132_863_336, 32),
    "vgg13": (10, 3, 0, 0, 0, 133_047_848, 32),
    "vgg16": (13, 3, 0, 0, 0, 138_357_544, 32),
    "vgg19": (16, 3, 0, 0, 0, 143_667_240, 32),
    "resnet18": (20, 1, 0, 0, 0, 11_689_512, 32),
    "resnet34": (36, 1, 0, 0, 0, 21_797_672, 32),
    "resnet50": (53, 1, 0, 0, 0, 25_557_032, 32),
    "resnet101": (104, 1, 0, 0, 0, 44_549_160, 32),
    "resnet152": (155, 1, 0, 0, 0, 60_192_808, 32),
    "googlenet": (57, 1, 0, 0, 0, 6_998_552, 32),
    "mobilenetv2": (52, 1, 0, 0, 0, 3_504_872, 32),
    "bert_base": (0, 0, 72, 3, 24, 108_891_648, 8),
    "gpt2_small": (0, 0, 49, 2, 24, 124_439_808, 8),
}

_cache: dict[str, object] = {}


def load(name: str):
    if name not in _cache:
        _cache[name] = load_layer_graph(MODELS / f"{name}.onnx")
    return _cache[name]


def lay(g, n) -> G.Layer:
    return G.layer(g, n)


def weighted(g) -> list[G.Layer]:
    return [lay(g, n) for n in G.weighted_layers(g)]


def test_zoo_is_complete_and_small():
    assert sorted(p.stem for p in MODELS.glob("*.onnx")) == sorted(EXPECTED)
    assert sum(p.stat().st_size for p in MODELS.iterdir() if p.is_file()) < 30 * 2**20
    assert sorted(MANIFEST) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts(name):
    conv, fc, mm, emb, att, params, batch = EXPECTED[name]
    g = load(name)
    ops = Counter((x.kind, x.op) for x in weighted(g))
    assert ops == Counter({k: v for k, v in {
        (G.CONV, "Conv"): conv, (G.GEMM, "Gemm"): fc, (G.GEMM, "MatMul"): mm,
        (G.EMBEDDING, "Gather"): emb}.items() if v})
    assert sum(1 for n in g.nodes if lay(g, n).kind == G.MATMUL_ACT) == att
    assert totals(g)["params"] == params
    assert g.graph["batch"] == batch
    assert not any(lay(g, n).kind == G.OPAQUE for n in g.nodes)
    assert list(g.nodes) == G.topo_layers(g)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_matches_files(name):
    entry = MANIFEST[name]
    conv, fc, mm, emb, att, params, batch = EXPECTED[name]
    assert entry["weighted_layers"] == conv + fc + mm + emb
    assert entry["attention_matmuls"] == att
    assert entry["params"] == params and entry["batch"] == batch
    assert entry["file_bytes"] == (MODELS / entry["file"]).stat().st_size
    assert entry["source"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_files_load_with_plain_onnx_and_pass_checker(name):
    m = onnx.load(str(MODELS / f"{name}.onnx"))  # default: load_external_data=True
    onnx.checker.check_model(m, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def test_vgg16_dims():
    ws = weighted(load("vgg16"))
    assert [w.d_out for w in ws[:13]] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(w.kernel == (3, 3) for w in ws[:13])
    assert [w.out_spatial for w in ws[:13:2]] == [(224, 224), (112, 112), (56, 56), (56, 56), (28, 28),
                                                   (14, 14), (14, 14)]
    assert [(w.d_in, w.d_out) for w in ws[13:]] == [(25088, 4096), (4096, 4096), (4096, 1000)]
    assert sum(w.macs for w in ws) == pytest.approx(32 * 15.47e9, rel=0.01)  # 15.5 GMAC per image


def test_resnet50_dims_and_weights():
    g = load("resnet50")
    ws = weighted(g)
    assert sum(w.weight_elements for w in ws) == pytest.approx(25.5e6, abs=0.1e6)  # conv + fc weights only
    c1 = ws[0]
    assert (c1.batch, c1.d_in, c1.d_out, c1.in_spatial, c1.out_spatial, c1.kernel) == \
        (32, 3, 64, (224, 224), (112, 112), (7, 7))
    fc = ws[-1]
    assert (fc.op, fc.batch, fc.d_in, fc.d_out, fc.weight_elements, fc.bias_elements) == \
        ("Gemm", 32, 2048, 1000, 2_048_000, 1000)
    assert sum(w.macs for w in ws) == pytest.approx(32 * 4.09e9, rel=0.01)  # 4.1 GMAC per image
    assert sum(1 for n in g.nodes if lay(g, n).kind == G.BINARY) == 16  # residual Adds
    assert sum(1 for n in g.nodes if lay(g, n).kind == G.BATCHNORM) == 53


def test_googlenet_concats_and_mobilenet_depthwise():
    g = load("googlenet")
    cats = [lay(g, n) for n in g.nodes if lay(g, n).kind == G.CONCAT]
    assert len(cats) == 9 and all(c.attr("axis") == 1 for c in cats)
    assert all(g.in_degree(c.name) == 4 for c in cats)
    m = load("mobilenetv2")
    dw = [w for w in weighted(m) if w.kind == G.CONV and w.groups > 1]
    assert len(dw) == 17 and all(w.groups == w.d_in == w.d_out and w.kernel == (3, 3) for w in dw)
    assert sum(1 for n in m.nodes if lay(m, n).kind == G.BINARY) == 10  # inverted-residual Adds


def test_bert_base_layers():
    g = load("bert_base")
    mm = [w for w in weighted(g) if w.op == "MatMul"]
    assert len(mm) == 72
    assert Counter((w.d_in, w.d_out) for w in mm) == {(768, 768): 48, (768, 3072): 12, (3072, 768): 12}
    assert all((w.batch, w.in_spatial) == (8, (128,)) and w.bias_elements == w.d_out for w in mm)
    emb = [w for w in weighted(g) if w.kind == G.EMBEDDING]
    assert [(e.d_in, e.d_out) for e in emb] == [(30522, 768), (512, 768), (2, 768)]
    att = [lay(g, n) for n in G.decision_layers(g) if lay(g, n).kind == G.MATMUL_ACT]
    assert len(att) == 24
    assert all((a.batch, a.heads, a.in_spatial) == (8, 12, (128,)) for a in att)
    assert [(a.d_in, a.d_out) for a in att[:2]] == [(64, 128), (128, 64)]
    kinds = Counter(lay(g, n).kind for n in g.nodes)
    assert kinds[G.FEATURENORM] == 25 and kinds[G.SOFTMAX] == 12
    # the attention mask is an activation: broadcast (B, 1, 1, T) added to the scores
    mask_adds = [n for n in g.nodes if n.endswith("scores/Add")]
    assert len(mask_adds) == 12 and all(lay(g, n).kind == G.BINARY for n in mask_adds)


def test_gpt2_small_tied_head_and_split():
    g = load("gpt2_small")
    head = lay(g, "lm_head")
    assert (head.kind, head.d_in, head.d_out, head.weight_elements) == (G.GEMM, 768, 50257, 768 * 50257)
    assert head.attr("weight") == lay(g, "transformer.wte").attr("weight")  # tied
    splits = [lay(g, n) for n in g.nodes if lay(g, n).kind == G.SPLIT]
    assert len(splits) == 12 and all(s.attr("split") == (768, 768, 768) for s in splits)
    t = totals(g)
    assert t["params"] == 124_439_808  # the tied head counted once
    assert sum(lay(g, n).params for n in g.nodes) == 124_439_808 + 768 * 50257


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2", "bert_base", "gpt2_small"])
def test_batch_override(name):
    g = load(name)
    g3 = load_layer_graph(MODELS / f"{name}.onnx", batch=3)
    b = g.graph["batch"]
    assert g3.graph["batch"] == 3
    for n in G.decision_layers(g):
        assert lay(g3, n).batch == 3 and lay(g3, n).macs * b == lay(g, n).macs * 3


def test_build_script_reproduces_models():
    spec = importlib.util.spec_from_file_location("build_zoo", ROOT / "scripts" / "build_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0
