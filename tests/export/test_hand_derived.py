"""Tiny models written in place, their plans exported, and every field of the annotations checked
against values derived by hand from the format (docs/proposals/0006: shard k on device[k], the
first sharded_dim outermost; several simple_sharding = the axis as fused sub-axes) and hypar's
placement rule (hypar.shards: PE p = 2 d0 + d1 on a 2x2 array; blocks split top level first).

On 2x2 the PEs are 0 = (0, 0), 1 = (0, 1), 2 = (1, 0), 3 = (1, 1) (level-0 digit first).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hypar import api
from hypar.array import array_from_dict, array_from_levels
from hypar.export import annotate, plan_from_annotations
from hypar.plan import Plan


def _mlp(w1_cols: int = 8, bias: bool = True) -> onnx.ModelProto:
    """x [8, 4] -> fc1 (MatMul w1 [4, C]) -> relu -> fc2 (MatMul w2 [C, 4]) [-> bias (Add b2 [4])] -> y."""
    c = w1_cols
    inits = [numpy_helper.from_array(np.ones((4, c), np.float32), "w1"),
             numpy_helper.from_array(np.ones((c, 4), np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["m" if bias else "y"], name="fc2")]
    if bias:
        inits.append(numpy_helper.from_array(np.ones(4, np.float32), "b2"))
        nodes.append(helper.make_node("Add", ["m", "b2"], ["y"], name="bias"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _specs(model: onnx.ModelProto, node_name: str) -> dict[str, onnx.ShardingSpecProto]:
    node = next(n for n in model.graph.node if n.name == node_name)
    (entry,) = node.device_configurations
    return {s.tensor_name: s for s in entry.sharding_spec}


def _read(spec) -> tuple:
    """(sharded_dim as [(axis, [(dim_value, num_shards), ...])], device list, group map)."""
    dims = [(d.axis, [(s.dim_value, s.num_shards) for s in d.simple_sharding]) for d in spec.sharded_dim]
    return dims, list(spec.device), {e.key: list(e.value) for e in spec.index_to_device_group_map}


REPLICATED = ([], [-1], {-1: [0, 1, 2, 3]})
BATCH_AT_LEVEL_0 = ([(0, [(8, 2)])], [-1, -2], {-1: [0, 1], -2: [2, 3]})


@pytest.fixture(scope="module")
def mlp_export():
    plan = Plan({"fc1": ["I", "III"], "relu": ["S(b)", "S(f)"], "fc2": ["II", "III"], "bias": ["R", "S(f)"]},
                array_from_levels([2, 2]), batch=8)
    return plan, annotate(_mlp(), plan)


def test_the_model_lists_the_array_as_one_configuration(mlp_export):
    _plan, out = mlp_export
    (conf,) = out.configuration
    assert (conf.name, conf.num_devices, list(conf.device)) == ("hypar:levels-2x2", 4, ["pe0", "pe1", "pe2", "pe3"])
    assert out.ir_version == 11                                  # raised from 8: IR 11 added the fields
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta["hypar.format"] == "hypar-onnx-sharding/1" and meta["hypar.configuration"] == conf.name
    assert (meta["hypar.batch"], meta["hypar.space"], meta["hypar.convention"]) == ("8", "full", "hierarchical")
    assert [lv["fanout"] for lv in json.loads(meta["hypar.array"])["levels"]] == [2, 2]
    onnx.checker.check_model(out, full_check=True)


def test_fc1_type_I_then_III(mlp_export):
    """Level 0 splits the batch (x and h along axis 0), level 1 the output features (w1 and h
    along their last axis, strided: level 1 alone is the second factor of [2, 4])."""
    s = _specs(mlp_export[1], "fc1")
    assert _read(s["x"]) == BATCH_AT_LEVEL_0                     # type III at level 1 needs x whole there
    assert _read(s["w1"]) == ([(-1, [(2, 1), (4, 2)])], [-1, -2], {-1: [0, 2], -2: [1, 3]})
    assert _read(s["h"]) == ([(0, [(8, 2)]), (1, [(2, 1), (4, 2)])], [0, 1, 2, 3], {})


def test_relu_keeps_the_producer_layout(mlp_export):
    s = _specs(mlp_export[1], "relu")
    assert _read(s["h"]) == _read(s["r"]) == ([(0, [(8, 2)]), (1, [(2, 1), (4, 2)])], [0, 1, 2, 3], {})


def test_fc2_type_II_then_III(mlp_export):
    """Level 0 splits the input features (r along axis 1, w2 along its rows), level 1 the output
    features (w2 along its columns, m along axis 1); the type-II sums are reduced (R at level 0)."""
    s = _specs(mlp_export[1], "fc2")
    assert _read(s["r"]) == ([(1, [(8, 2)])], [-1, -2], {-1: [0, 1], -2: [2, 3]})
    assert _read(s["w2"]) == ([(-2, [(8, 2)]), (-1, [(2, 1), (2, 2)])], [0, 1, 2, 3], {})
    assert _read(s["m"]) == ([(1, [(2, 1), (2, 2)])], [-1, -2], {-1: [0, 2], -2: [1, 3]})


def test_the_bias_add_splits_its_constant_with_the_features(mlp_export):
    s = _specs(mlp_export[1], "bias")
    split_at_level_1 = ([(0, [(2, 1), (2, 2)])], [-1, -2], {-1: [0, 2], -2: [1, 3]})
    assert _read(s["b2"]) == split_at_level_1
    assert _read(s["m"]) == _read(s["y"]) == ([(1, [(2, 1), (2, 2)])], [-1, -2], {-1: [0, 2], -2: [1, 3]})


def test_a_replicated_tensor_is_one_shard_on_every_device():
    plan = Plan({"fc1": ["III", "III"], "relu": ["S(f)", "S(f)"], "fc2": ["II", "II"], "bias": ["R", "R"]},
                array_from_levels([2, 2]), batch=8)
    s = _specs(annotate(_mlp(), plan), "fc1")
    assert _read(s["x"]) == REPLICATED


def test_read_back_gives_the_types_and_the_costs(mlp_export):
    plan, out = mlp_export
    back = plan_from_annotations(out)
    assert back.types == plan.types and back.batch == 8 and back.array.fanouts == (2, 2)
    _m, ev = api.evaluate(_mlp(), plan=plan)
    _m, ev_back = api.evaluate(out, plan=back)
    assert ev_back.totals() == ev.totals()


def test_an_uneven_split_lists_a_device_once_per_equal_shard():
    """6 output features on 2x2: leaf blocks [2, 1, 2, 1] (6 -> 3 + 3 -> 2 + 1 each), so level 1
    alone gives its coordinate 0 the features {0, 1, 3, 4} and coordinate 1 {2, 5}: no equal cut
    says that, so the axis is written as 6 shards of 1 with the holders repeated."""
    plan = Plan({"fc1": ["I", "III"], "relu": ["S(b)", "S(f)"], "fc2": ["I", "I"]}, array_from_levels([2, 2]), batch=8)
    out = annotate(_mlp(w1_cols=6, bias=False), plan)
    s = _specs(out, "fc1")
    assert _read(s["w1"]) == ([(-1, [(6, 6)])], [-1, -1, -2, -1, -1, -2], {-1: [0, 2], -2: [1, 3]})
    assert _read(s["h"]) == ([(0, [(8, 2)]), (1, [(6, 6)])], [0, 0, 1, 0, 0, 1, 2, 2, 3, 2, 2, 3], {})
    onnx.checker.check_model(out, full_check=True)
    assert plan_from_annotations(out).types == plan.types


def test_a_heterogeneous_split_gives_the_faster_pe_more_shards():
    """One level over a 100 and a 300 TFLOP/s PE: a batch of 8 splits 2 : 6, written as four
    shards of 2 rows, the fast PE listed three times."""
    array = array_from_dict({"levels": [{"fanout": 2}],
                             "pe_kinds": {"slow": {"tflops": 100}, "fast": {"tflops": 300}},
                             "pes": [{"kind": "slow", "count": 1}, {"kind": "fast", "count": 1}]}, "het")
    plan = Plan({"fc1": ["I"], "relu": ["S(b)"], "fc2": ["I"], "bias": ["S(b)"]}, array, batch=8)
    out = annotate(_mlp(), plan)
    s = _specs(out, "fc1")
    assert _read(s["x"]) == _read(s["h"]) == ([(0, [(8, 4)])], [0, 1, 1, 1], {})
    assert _read(s["w1"]) == ([], [-1], {-1: [0, 1]})
    assert plan_from_annotations(out).types == plan.types
