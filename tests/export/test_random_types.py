"""Plans no search would choose -- every node's types drawn at random from its own types, per
level -- written and read back to the same types and the same costs, on arrays that make the
placement hard to say: three levels at a batch smaller than the PE count (PEs holding no rows),
a 3-way level (sizes 3 does not divide), and two PE kinds (shares by throughput). Where two
type choices put the same data on every PE the node records its types in ``hypar.layers``, and
the reader still returns the written ones."""

from __future__ import annotations

import random

import pytest

from hypar import api
from hypar.array import array_from_dict, array_from_levels
from hypar.cost import CostModel
from hypar.export import annotate, plan_from_annotations
from hypar.plan import Plan

from paths import FIXTURES

HETEROGENEOUS = array_from_dict({"levels": [{"fanout": 2}, {"fanout": 2}],
                                 "pe_kinds": {"slow": {"tflops": 100}, "fast": {"tflops": 300}},
                                 "pes": [{"kind": "slow", "count": 2}, {"kind": "fast", "count": 2}]}, "het")
ARRAYS = {"2x2x2 batch 2": (array_from_levels([2, 2, 2]), 2), "3x2 batch 4": (array_from_levels([3, 2]), 4),
          "heterogeneous 2x2 batch 6": (HETEROGENEOUS, 6)}
FIXTURE_DIMS = {"cnn_dynamo": None, "transformer_dynamo": None, "windowed_attention_dynamic": {"height": 16, "width": 16},
                "decoder_ort_fused": {"sequence": 16}}


@pytest.mark.filterwarnings("ignore:input .* in the model and .* in the plan")     # batches the fixtures do not fix
@pytest.mark.parametrize("where", sorted(ARRAYS))
@pytest.mark.parametrize("stem", sorted(FIXTURE_DIMS))
def test_random_types_round_trip(stem, where):
    array, batch = ARRAYS[where]
    path, dims = str(FIXTURES / f"{stem}.onnx"), FIXTURE_DIMS[stem]
    model = CostModel(api.load_graph(path, batch, array, dims=dims), array, "full", "hierarchical")
    rng = random.Random(f"{stem} {where}")
    for _trial in range(2):
        types = {name: [rng.choice(model.labels(i)) for _ in range(array.n_levels)] for i, name in enumerate(model.names)}
        plan = Plan(types, array, batch, dims=dims)
        back = plan_from_annotations(annotate(path, plan))
        assert back.types == types
        _m, ev = api.evaluate(path, plan=plan)
        _m, ev_back = api.evaluate(path, plan=back)
        assert ev_back.totals() == ev.totals()


def test_types_the_sharding_cannot_tell_apart_are_recorded_on_the_node():
    """Batch 2 and 4 heads on 2x2x2: the context MatMul's (I, II, II) and (I, II, I) put the same
    indices on every PE (level 2 finds at most one head and one row per group), so the specs alone
    would read back as (I, II, I); the node records its types and the reader keeps them."""
    path, array = str(FIXTURES / "transformer_dynamo.onnx"), array_from_levels([2, 2, 2])

    def node_of(types):
        out = annotate(path, Plan({"node_matmul_1": types}, array, batch=2))
        return out, next(n for n in out.graph.node if n.name == "node_matmul_1")

    out, recorded = node_of(["I", "II", "II"])
    _out, plain = node_of(["I", "II", "I"])
    assert recorded.device_configurations[0] == plain.device_configurations[0]
    assert {m.key: m.value for m in recorded.metadata_props}["hypar.layers"] == '{"node_matmul_1": ["I", "II", "II"]}'
    assert "hypar.layers" not in {m.key for m in plain.metadata_props}
    assert plan_from_annotations(out).types["node_matmul_1"] == ["I", "II", "II"]
