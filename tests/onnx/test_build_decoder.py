"""scripts/build_decoder.py writes the dynamo exporter's decoder pattern at any size: at the
fixture's dims it imports to the same layers as tests/fixtures/decoder_dynamo.onnx."""

import importlib.util
import sys

import networkx as nx

from hypar import graph as G
from hypar.onnx import load_layer_graph
from paths import FIXTURES, ROOT


def _script():
    spec = importlib.util.spec_from_file_location("build_decoder", ROOT / "scripts" / "build_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_decoder", mod)       # its dataclasses look their module up
    spec.loader.exec_module(sys.modules["build_decoder"])
    mod = sys.modules["build_decoder"]
    return mod


def _rows(g: nx.DiGraph) -> list[tuple]:
    """Per node in import order: op, kind, module, dims, weight and output sizes, parameters."""
    rows = []
    for n in g.nodes:
        lay = g.nodes[n]["layer"]
        rows.append((lay.op, lay.kind, lay.module, lay.batch, lay.d_in, lay.d_out, lay.heads,
                     lay.in_elements, lay.out_elements, lay.weight_elements, lay.macs))
    return rows


def test_fixture_dims_import_like_the_dynamo_export(tmp_path):
    mod = _script()
    shape = mod.DecoderShape(layers=2, hidden=64, q_heads=4, kv_heads=2, mlp=128, vocab=128,
                             batch=2, sequence=16)
    path = mod.write_decoder(tmp_path / "decoder.onnx", shape)
    ours = load_layer_graph(path)
    theirs = load_layer_graph(FIXTURES / "decoder_dynamo.onnx", batch=2, dims={"sequence": 16})
    assert _rows(ours) == _rows(theirs)
    assert G.parameter_count(ours) == G.parameter_count(theirs) == shape.parameters()


def test_default_is_llama3_8b_shaped():
    shape = _script().DecoderShape()
    assert (shape.layers, shape.hidden, shape.q_heads, shape.kv_heads, shape.mlp, shape.vocab) \
        == (32, 4096, 32, 8, 14336, 128256)
    assert shape.parameters() == 8_030_261_248          # Llama-3-8B's published count
