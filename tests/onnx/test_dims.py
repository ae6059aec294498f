"""Issue 11, part 1 (hypar.onnx.binding, the shape folding of hypar.onnx.inference, Gathers of
trainable tables): binding every input dim (--batch, --dim, --input-shape) with its errors,
folding the shape subgraphs onnx's inference leaves, and the exporter-pattern fixtures of
scripts/make_pattern_fixtures.py with exact layer counts and parameter totals."""

from __future__ import annotations

import importlib.util
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, parser

from hypar import api
from hypar import graph as G
from hypar.array import array_from_pes
from hypar.cost import CostModel
from hypar.errors import ShapeError
from hypar.onnx import load_layer_graph, model_input_dims

from onnx_runs import graph_shapes, run_shapes
from paths import FIXTURES, ROOT

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
WINDOWED = FIXTURES / "windowed_attention_dynamic.onnx"
SEQUENCE = FIXTURES / "sequence_pattern_dynamic.onnx"


def make(text: str, **weights: tuple[int, ...]) -> onnx.ModelProto:
    """Parse a model; each keyword becomes a float initializer of that shape (seeded values)."""
    m = parser.parse_model(HEADER + text)
    rng = np.random.RandomState(0)
    for name, shape in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(rng.rand(*shape).astype(np.float32), name))
    return m


def lay(g, name: str) -> G.Layer:
    return G.layer(g, name)


def by_output(g, tensor: str) -> str:
    """The layer that produces ``tensor``."""
    (name,) = [n for n in g.nodes if tensor in lay(g, n).outputs]
    return name


def params(g) -> int:
    return sum(lay(g, n).params for n in g.nodes)


def kinds(g) -> Counter:
    return Counter(lay(g, n).kind for n in g.nodes if lay(g, n).decision)


# ------------------------------------------------------------------------------------------------
# Binding: --dim, --input-shape, --batch


TWO_INPUTS = """g (float[batch, 3, height, width] x, float[batch, ?] z) => (float[batch, 4, height, width] y) {
    y = Conv<kernel_shape=[1, 1]>(x, w)
    zz = Gemm<transB=1>(z, v) }"""


def two_inputs() -> onnx.ModelProto:
    m = make(TWO_INPUTS, w=(4, 3, 1, 1), v=(6, 5))
    m.graph.output.append(onnx.helper.make_tensor_value_info("zz", onnx.TensorProto.FLOAT, None))
    return m


def test_unbound_dims_are_one_error_naming_every_dim_and_the_flags():
    with pytest.raises(ShapeError) as exc:
        load_layer_graph(two_inputs())
    assert str(exc.value) == (
        "input 'x' has symbolic dim 'batch' at axis 0, symbolic dim 'height' at axis 2 and symbolic dim 'width' "
        "at axis 3; input 'z' has symbolic dim 'batch' at axis 0 and an unnamed dim at axis 1; pass --batch N "
        "--dim height=HEIGHT --dim width=WIDTH --input-shape z=N,D1 (or --input-shape x=N,3,HEIGHT,WIDTH "
        "--input-shape z=N,D1)")


def test_the_flags_the_error_names_bind_the_model():
    g = load_layer_graph(two_inputs(), batch=2, dims={"height": 8, "width": 6}, input_shapes={"z": (2, 5)})
    assert [t.shape for t in g.graph["inputs"]] == [(2, 3, 8, 6), (2, 5)]
    assert lay(g, "Conv_0").out_spatial == (8, 6) and lay(g, "Gemm_1").d_in == 5
    assert g.graph["binding"] == {"dims": {"height": 8, "width": 6}, "input_shapes": {"z": [2, 5]}}
    same = load_layer_graph(two_inputs(), input_shapes={"x": (2, 3, 8, 6), "z": (2, 5)})
    assert [t.shape for t in same.graph["inputs"]] == [(2, 3, 8, 6), (2, 5)]


def test_a_dim_name_binds_every_input_that_has_it():
    m = make("""g (float[2, seq, 8] a, float[2, seq, 8] b) => (float[2, seq, 8] y) {
        s = Add(a, b)
        y = MatMul(s, w) }""", w=(8, 8))
    g = load_layer_graph(m, dims={"seq": 5})
    assert [t.shape for t in g.graph["inputs"]] == [(2, 5, 8), (2, 5, 8)]
    assert g.graph["outputs"][0].shape == (2, 5, 8)


def test_binding_leaves_the_callers_model_untouched():
    m = two_inputs()
    load_layer_graph(m, batch=2, dims={"height": 8, "width": 6}, input_shapes={"z": (2, 5)})
    assert m.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "height"


def test_remaining_dims_after_a_partial_binding():
    with pytest.raises(ShapeError, match=r"^input 'x' has symbolic dim 'width' at axis 3; input 'z' has an unnamed dim "
                       r"at axis 1; pass --dim width=WIDTH --input-shape z=2,D1 \(or --input-shape x=2,3,8,WIDTH "
                       r"--input-shape z=2,D1\)$"):
        load_layer_graph(two_inputs(), batch=2, dims={"height": 8})


def test_input_without_shape_is_named_and_bound_by_input_shape():
    m = make("""g (float[2, 3] x) => (float y) { y = Gemm<transB=1>(x, w) }""", w=(4, 3))
    m.graph.input[0].type.tensor_type.ClearField("shape")      # an input without shape (rank unknown)
    with pytest.raises(ShapeError, match=r"^input 'x' has no shape; pass --input-shape x=D0,D1,...$"):
        load_layer_graph(m, batch=2)
    g = load_layer_graph(m, input_shapes={"x": [2, 3]})
    assert lay(g, "Gemm_0").batch == 2 and lay(g, "Gemm_0").d_in == 3


@pytest.mark.parametrize("kwargs,message", [
    ({"dims": {"heigt": 8}}, "dims heigt=8: no input has a dim named 'heigt' (inputs: x [batch, 3, height, width], "
                             "z [batch, ?]; their symbolic dims are batch, height, width); bind a dim by its name, "
                             "or a whole input with input_shapes INPUT=D0,D1,..."),
    ({"input_shapes": {"q": [1]}}, "input_shapes q=1: the model has no activation input 'q'; its inputs: "
                                   "x [batch, 3, height, width], z [batch, ?]"),
    ({"input_shapes": {"w": [4, 3, 1, 1]}}, "input_shapes w=4,3,1,1: the model has no activation input 'w'; its "
                                            "inputs: x [batch, 3, height, width], z [batch, ?]"),
    ({"input_shapes": {"x": [1, 3, 8]}}, "input_shapes x=1,3,8 gives 3 dims but input 'x' has 4: "
                                         "[batch, 3, height, width]; give 4"),
    ({"input_shapes": {"x": [1, 4, 8, 8]}}, "input_shapes x=1,4,8,8 sets axis 1 to 4 but the model fixes it at 3; "
                                            "give 3 there"),
    ({"batch": 2, "input_shapes": {"x": [1, 3, 8, 8]}},
     "axis 0 of input 'x': input_shapes x=1,3,8,8 gives 1 but batch 2 gives 2; give one value for it (in batch, "
     "dims or input_shapes)"),
    ({"dims": {"height": 8}, "input_shapes": {"x": [1, 3, 9, 8]}},
     "axis 2 of input 'x': input_shapes x=1,3,9,8 gives 9 but dims height=8 gives 8; give one value for it (in "
     "batch, dims or input_shapes)"),
    ({"dims": {"height": 0}}, "dims height=0: give a dim name and a positive integer, e.g. dims height=128"),
    ({"dims": {"height": True}}, "dims height=True: give a dim name and a positive integer, e.g. dims height=128"),
    ({"input_shapes": {"x": [1, 3, -8, 8]}}, "input_shapes x=[1, 3, -8, 8]: give an input name and positive "
                                             "integers, one per axis, e.g. input_shapes x=1,3,224,224"),
])
def test_bad_bindings_name_the_fix(kwargs, message):
    with pytest.raises(ShapeError) as exc:
        load_layer_graph(two_inputs(), **kwargs)
    assert str(exc.value) == message


def test_an_input_shape_may_not_change_a_fixed_batch_but_batch_may():
    m = make("""g (float[2, 8] x) => (float[2, 4] y) { y = Gemm<transB=1>(x, w) }""", w=(4, 8))
    with pytest.raises(ShapeError, match=r"sets axis 0 to 5 but the model fixes it at 2; pass batch N to change "
                                         r"a fixed batch$"):
        load_layer_graph(m, input_shapes={"x": [5, 8]})
    g = load_layer_graph(m, batch=5, input_shapes={"x": [5, 8]})
    assert lay(g, "Gemm_0").batch == 5


def test_model_input_dims_lists_the_activation_inputs():
    m = two_inputs()
    assert model_input_dims(m) == {"x": ["batch", 3, "height", "width"], "z": ["batch", None]}


# ------------------------------------------------------------------------------------------------
# Folding the shape subgraphs onnx's inference leaves


def test_pad_and_reshape_by_amounts_computed_from_the_shape():
    """TorchScript's pad-to-a-multiple: onnx's inference (even with data propagation) does not
    evaluate Mod, so the padded shape stays unknown until hypar folds the amounts."""
    m = make("""g (float[N, C, L] x) => (float[N, C2, L2] y) {
        shp = Shape(x)
        i2 = Constant<value = int64 {2}>()
        len = Gather<axis=0>(shp, i2)
        four = Constant<value = int64 {4}>()
        rem = Mod(len, four)
        gap = Sub(four, rem)
        pad = Mod(gap, four)
        z = Constant<value = int64[1] {0}>()
        pu = Unsqueeze(pad, z)
        pads = Concat<axis=0>(z, z, z, z, z, pu)
        xp = Pad(x, pads)
        lp = Add(len, pad)
        q = Div(lp, four)
        qu = Unsqueeze(q, z)
        m1 = Constant<value = int64[1] {-1}>()
        c4 = Constant<value = int64[1] {4}>()
        tgt = Concat<axis=0>(m1, qu, c4)
        r = Reshape(xp, tgt)
        y = MatMul(r, w) }""", w=(4, 6))
    raw = onnx.shape_inference.infer_shapes(m, data_prop=True)
    assert not any(vi.name == "xp" and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
                   for vi in raw.graph.value_info)
    g = load_layer_graph(m, input_shapes={"x": [2, 3, 10]})
    assert lay(g, by_output(g, "xp")).out_elements == 2 * 3 * 12
    mm = lay(g, by_output(g, "y"))
    assert mm.batch * prod_spatial(mm) == 6 * 3 and g.graph["outputs"][0].shape == (6, 3, 6)


def prod_spatial(layer: G.Layer) -> int:
    return int(np.prod(layer.in_spatial)) if layer.in_spatial else 1


def test_an_op_without_a_kernel_folds_through_onnx_reference():
    """Tile has no numpy kernel in hypar.onnx.constants: its value comes from onnx's reference
    implementation, so the Reshape target it builds is known."""
    m = make("""g (float[N, 12] x) => (float[N, 3, 4] y) {
        two = Constant<value = int64[1] {2}>()
        tiled = Tile(two, two)
        shp = Shape(x)
        one = Constant<value = int64[1] {1}>()
        z = Constant<value = int64[1] {0}>()
        n = Slice(shp, z, one)
        three = Constant<value = int64[1] {3}>()
        four = ReduceSum<keepdims=1>(tiled)
        tgt = Concat<axis=0>(n, three, four)
        r = Reshape(x, tgt)
        y = MatMul(r, w) }""", w=(4, 4))
    g = load_layer_graph(m, batch=2)
    (reshape,) = [n for n in g.nodes if lay(g, n).op == "Reshape"]
    assert lay(g, reshape).attr("shape") == (2, 3, 4)


# ------------------------------------------------------------------------------------------------
# A Gather reading a trainable table is a layer whatever its indices are


POSITIONS = """g (int64[B, 16] ids) => (float[B, 16, 8] y) {
    tok = Gather<axis=0>(emb, ids)
    start = Constant<value = int64 {0}>()
    stop = Constant<value = int64 {16}>()
    step = Constant<value = int64 {1}>()
    pos_ids = Range(start, stop, step)
    pos = Gather<axis=0>(pos_table, pos_ids)
    s = Add(tok, pos)
    y = MatMul(s, w) }"""


def test_position_table_gathered_by_a_constant_range_is_a_trainable_layer():
    g = load_layer_graph(make(POSITIONS, emb=(50, 8), pos_table=(32, 8), w=(8, 8)), batch=4)
    pos = lay(g, by_output(g, "pos"))
    assert (pos.kind, pos.inputs, pos.weight_elements, pos.batch, pos.in_spatial) == (G.EMBEDDING, (), 256, 1, (16,))
    add = by_output(g, "s")
    assert lay(g, add).kind == G.BINARY and set(g.predecessors(add)) == {by_output(g, "tok"), pos.name}
    assert params(g) == 50 * 8 + 32 * 8 + 8 * 8


def test_position_table_parameters_are_in_the_plan():
    m = make(POSITIONS, emb=(50, 8), pos_table=(32, 8), w=(8, 8))
    g = load_layer_graph(m, batch=4)
    plan = api.partition("pos.onnx", array_from_pes(4), graph=g)
    weighted = [row["name"] for row in plan["layers"] if row["weighted"]]
    assert by_output(g, "pos") in weighted
    assert sum(lay(g, n).params for n in weighted) == 50 * 8 + 32 * 8 + 8 * 8
    pos = next(row for row in plan["layers"] if row["name"] == by_output(g, "pos"))
    rows = {(s["in"][0], s["in"][1]) for s in pos["weight_slices"]}
    cols = {(s["out"][0], s["out"][1]) for s in pos["weight_slices"]}
    assert min(a for a, _ in rows) == 0 and max(b for _, b in rows) == 32
    assert min(a for a, _ in cols) == 0 and max(b for _, b in cols) == 8


def test_data_parallel_constant_lookup_is_replicated_and_its_error_reduced_once():
    """Type I of a lookup with constant indices: every PE computes it (no gather of its output
    for the Add); the Add, which broadcasts the rows over the split batch, all-reduces their
    error once (16 x 8 elements), so the table's gradient needs no second all-reduce. (Before
    broadcasting ops were priced, the table's gradient was all-reduced here instead.)"""
    g = load_layer_graph(make(POSITIONS, emb=(50, 8), pos_table=(32, 8), w=(8, 8)), batch=4)
    model = CostModel(g, array_from_pes(2), "full", convention="hierarchical")
    types = [("I",) if model.nodes[i].layer.decision else ("S(b)",) for i in range(len(model.names))]
    rows = {r["name"]: r for r in model.evaluate(types).layers()}
    pos, add = by_output(g, "pos"), by_output(g, "s")
    assert rows[pos]["comm_bytes"] == 0                      # its error arrives whole
    assert rows[add]["comm_bytes"] == 2 * 16 * 8 * 2        # all-reduce of the rows' error over 2 PEs, 2-byte


def test_small_integer_or_one_dim_tables_stay_constants():
    m = make("""g (float[B, 4] x) => (float[B, 4] y) {
        i = Constant<value = int64[4] {0, 1, 5, 7}>()
        sel = Gather<axis=0>(vec, i)
        ints = Constant<value = int64[3, 4] {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}>()
        j = Constant<value = int64 {1}>()
        row = Gather<axis=0>(ints, j)
        rowf = Cast<to=1>(row)
        s1 = Add(x, sel)
        s = Add(s1, rowf)
        y = MatMul(s, w) }""", vec=(8,), w=(4, 4))
    g = load_layer_graph(m, batch=2)
    assert [lay(g, n).kind for n in G.decision_layers(g)] == [G.GEMM]


# ------------------------------------------------------------------------------------------------
# The exporter-pattern fixtures


@pytest.mark.parametrize("hw", [(64, 48), (20, 24), (16, 36)])
def test_windowed_attention_imports_with_the_shapes_it_runs_with(hw):
    h, w = hw
    g = load_layer_graph(WINDOWED, batch=2, dims={"height": h, "width": w})
    ran = run_shapes(WINDOWED, {"x": np.zeros((2, 3, h, w), np.float32)})
    got = graph_shapes(g)
    assert got and all(ran[t] == s for t, s in got.items()), {t: (s, ran[t]) for t, s in got.items() if ran[t] != s}
    assert len(g.nodes) == 34 and kinds(g) == {G.CONV: 1, G.GEMM: 3, G.EMBEDDING: 1, G.MATMUL_ACT: 2}
    bias = lay(g, "attn_bias_gather")
    assert (bias.kind, bias.d_in, bias.d_out, bias.weight_elements) == (G.EMBEDDING, 49, 2, 98)


def test_windowed_attention_parameters_are_the_models():
    g = load_layer_graph(WINDOWED, input_shapes={"x": [1, 3, 32, 32]})
    m = onnx.load(WINDOWED)
    trainable = sum(int(np.prod(t.dims)) for t in m.graph.initializer
                    if t.data_type == onnx.TensorProto.FLOAT and t.dims)
    assert params(g) == trainable == 2140 and m.doc_string == "trainable parameters: 2140"


def test_sequence_pattern_imports_with_the_shapes_it_runs_with():
    g = load_layer_graph(SEQUENCE, input_shapes={"ids": [3, 7]})
    ran = run_shapes(SEQUENCE, {"ids": np.zeros((3, 7), np.int64)})
    got = graph_shapes(g)
    assert all(ran[t] == s for t, s in got.items()), {t: (s, ran[t]) for t, s in got.items() if ran[t] != s}
    assert len(g.nodes) == 13 and kinds(g) == {G.EMBEDDING: 3, G.GEMM: 3}
    assert (lay(g, "pos_gather").in_spatial, lay(g, "type_gather").inputs) == ((1, 7), ())
    assert params(g) == 12_704 and onnx.load(SEQUENCE).doc_string == "trainable parameters: 12704"


def test_sequence_pattern_length_has_no_name_so_the_error_offers_input_shape():
    with pytest.raises(ShapeError, match=r"^input 'ids' has symbolic dim 'batch' at axis 0 and an unnamed dim at "
                                         r"axis 1; pass --input-shape ids=N,D1$"):
        load_layer_graph(SEQUENCE)


@pytest.mark.parametrize("path,kwargs,other", [
    (WINDOWED, {"batch": 4, "dims": {"height": 20, "width": 24}}, {"dims": {"height": 32, "width": 24}}),
    (SEQUENCE, {"input_shapes": {"ids": [4, 12]}}, {"input_shapes": {"ids": [4, 16]}}),
])
def test_fixtures_partition_and_record_their_binding(path, kwargs, other):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = api.partition(str(path), array_from_pes(4), **kwargs)
    g = load_layer_graph(path, **kwargs)
    assert plan["batch"] == 4 and plan["binding"] == g.graph["binding"]
    weighted = [row["name"] for row in plan["layers"] if row["weighted"]]
    assert sum(lay(g, n).params for n in weighted) == params(g)
    model, asg = api.plan_assignment(str(path), plan)           # the plan brings its binding back
    assert model.g.graph["binding"] == plan["binding"]
    assert [list(a) for a in asg] == [row["types"] for row in plan["layers"]]
    model, _ = api.plan_assignment(str(path), plan, **other)    # the caller's binding replaces it
    assert model.g.graph["binding"] == {"dims": {}, "input_shapes": {}} | other


def test_fixture_script_reproduces_the_files():
    spec = importlib.util.spec_from_file_location("make_pattern_fixtures", ROOT / "scripts" / "make_pattern_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0
