"""The evidence behind hypar.torch.placements' "Nesting" paragraph, from DTensor itself (torch 2.13):
which rows each PE holds under DTensor's placements next to hypar's weight slices and hypar's
digit nesting, and the collectives DTensor's redistribution runs next to nesting_steps' rule.
One process: a fake process group stands for the mesh (collectives are issued, not run)."""

from __future__ import annotations

import itertools
import random

import pytest

from torch_runtime import needs_torch

needs_torch()

import torch  # noqa: E402
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor  # noqa: E402
from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset  # noqa: E402

from hypar.array import array_from_levels  # noqa: E402
from hypar.shards import axis_digits  # noqa: E402
from hypar.torch.comms import LayerComms  # noqa: E402
from hypar.torch.placements import _direct_step, nesting_steps  # noqa: E402

PLACE = {"R": ("R",), "S0": ("S", 0), "S1": ("S", 1), "P": ("P",)}
DTENSOR = {"R": Replicate(), "S0": Shard(0), "S1": Shard(1), "P": Partial()}


def _rows(placements, coord, shape=(2, 2), n=8) -> list[int]:
    """The rows of an n-row tensor DTensor gives the PE at ``coord``."""
    size, offset = _compute_local_shape_and_global_offset((n, 1), shape, list(coord), placements)
    return list(range(offset[0], offset[0] + size[0]))


def _hypar_rows(levels, coord, fanouts=(2, 2), n=8) -> list[int]:
    """The rows hypar's digit nesting gives the PE at ``coord`` when ``levels`` split the axis."""
    digits = axis_digits(array_from_levels(list(fanouts)), n)
    return [r for r in range(n) if all(digits[h][r] == coord[h] for h in levels)]


@pytest.mark.parametrize("coord", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_nesting_agrees_when_the_top_levels_split(coord):
    assert _rows([Shard(0), Replicate()], coord) == _hypar_rows([0], coord)
    assert _rows([Shard(0), Shard(0)], coord) == _hypar_rows([0, 1], coord)      # block 2a + b


def test_nesting_differs_when_a_lower_level_splits_alone():
    # DTensor: contiguous halves by the level-1 coordinate; hypar: every other pair of rows
    assert _rows([Replicate(), Shard(0)], (0, 0)) == [0, 1, 2, 3]
    assert _hypar_rows([1], (0, 0)) == [0, 1, 4, 5]
    assert _rows([Replicate(), Shard(0)], (1, 1)) == [4, 5, 6, 7]
    assert _hypar_rows([1], (1, 1)) == [2, 3, 6, 7]


def _collectives(mesh, src: tuple, tgt: tuple) -> list[tuple[str, int]]:
    """(op, mesh dim) of every collective DTensor runs redistributing an 8 x 8 tensor from ``src`` to ``tgt``."""
    x = torch.arange(64.0).reshape(8, 8)
    d = distribute_tensor(x, mesh, [DTENSOR["R"]] * mesh.ndim, src_data_rank=None)
    if "P" in src:
        d = DTensor.from_local(d.to_local(), mesh, [DTENSOR[p] for p in src], run_check=False)
    else:
        d = d.redistribute(mesh, [DTENSOR[p] for p in src])
    with LayerComms(mesh, "none") as comms:
        d.redistribute(mesh, [DTENSOR[p] for p in tgt])
    return sorted((c.op, c.mesh_dims[0]) for c in comms.collectives)


def _rule(src: tuple, tgt: tuple) -> list[tuple[str, int]]:
    """The same from hypar's side: each level's own step, unless nesting_steps says DTensor goes
    through Replicate there."""
    s, t = [PLACE[p] for p in src], [PLACE[p] for p in tgt]
    extra = {g: dtensor for g, dtensor, _hypar in nesting_steps(s, t)}
    out = []
    for g in range(len(src)):
        step = extra.get(g, _direct_step(s[g], t[g]))
        if step not in ("none", "slice"):
            out.append((step, g))
    return sorted(out)


def _pairs(levels: int):
    """Every (source, target) layout pair on ``levels`` mesh dims; a Partial target only as itself."""
    layouts = list(itertools.product(PLACE, repeat=levels))
    return [(s, t) for s in layouts for t in layouts if "P" not in t or s == t]


def test_nesting_rule_matches_dtensor_on_every_2x2_pair(fake_mesh):
    mesh = fake_mesh((2, 2))
    pairs = _pairs(2)
    assert len(pairs) == 151
    seen = {(s, t): (_collectives(mesh, s, t), _rule(s, t)) for s, t in pairs}
    wrong = {k: v for k, v in seen.items() if v[0] != v[1]}
    assert not wrong, list(wrong.items())[:5]
    # the rule's extra steps do occur: DTensor all-gathers where hypar's levels slice
    assert seen[(("R", "S0"), ("S0", "S0"))][0] == [("all_gather", 1)]


def test_nesting_rule_matches_dtensor_on_2x2x2_pairs(fake_mesh):
    mesh = fake_mesh((2, 2, 2))
    pairs = random.Random(13).sample(_pairs(3), 300)
    wrong = [(s, t) for s, t in pairs if _collectives(mesh, s, t) != _rule(s, t)]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("types", [("III", "I"), ("I", "III"), ("II", "III"), ("III", "II"), ("II", "II")])
def test_weight_shards_are_the_plans_weight_slices(types):
    """hypar's weight slices walk the levels top down as DTensor nests left to right: every PE's
    DTensor shard of fc2's (out, in) weight is the row the plan would record for it."""
    from hypar import api
    from hypar.plan.slices import weight_slices
    from hypar.torch.apply import placement_of
    from hypar.torch.placements import layer_placements

    from paths import ROOT

    model, _asg = api.plan_assignment(str(ROOT / "tests" / "torch" / "mlp_dynamo.onnx"), {"assignment": {}},
                                      array=array_from_levels([2, 2]), batch=8)
    i = model.names.index("node_linear_1")
    slices = weight_slices(model, i, types)
    split = {"I": "R", "II": "S(in)", "III": "S(out)"}
    row = {"name": "node_linear_1", "module": "fc2", "kind": "gemm", "weighted": True, "types": list(types),
           "placements": [{"input": "R", "output": "R", "weight": split[t]} for t in types]}
    plan = {"array": {"levels": [{"fanout": 2}, {"fanout": 2}]}, "layers": [row]}
    weight = [placement_of(p, 2) for p in layer_placements(plan)["fc2"].weight]
    for pe, coord in enumerate(itertools.product(range(2), range(2))):
        size, offset = _compute_local_shape_and_global_offset((32, 32), (2, 2), list(coord), weight)
        want = next(s for s in slices if s["pes"][0] <= pe < s["pes"][1])
        assert {"out": [offset[0], offset[0] + size[0]], "in": [offset[1], offset[1] + size[1]]} == \
            {"out": want["out"], "in": want["in"]}, pe
