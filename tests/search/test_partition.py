"""The reference setting (SPEC.md §2-3) and api.partition's guarantees (issue 4).

Reference setting: a chain of Gemm layers, 2-way levels, ``comm`` objective, ``greedy`` search,
``accpar`` space. Its per-level costs are SPEC's tables, recomputed here by hand:

  layer l: B x Di -> B x Do.  Intra (per subgroup, one 2-way split):
      I -> A(dW) = Di*Do;  II -> A(F_out) = B*Do;  III -> A(E_in) = B*Di (0 for the first layer)
  between layers l-1 and l (tensor F = E = the consumer's input, B*Di):
      prev\\this   I          II         III
      I           0          (F+E)/4    F/2
      II          E/2        E/2        0
      III         (F+E)/4    0          F/2
  At level 1 every size is the consumer's own view after its level-0 split: I halves B, II
  halves Di, III halves Do (SPEC §3, "At deeper levels ...").
  Bytes of a level = amount x k x G x dtype (2): 2*2*amount at level 0, 2*2*2*amount at level 1.
"""

import itertools

import pytest

from hypar import api
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.search import BASELINES, SearchLog, SolverSettings, greedy
from hypar.synthetic import gemm_chain

TYPES = ("I", "II", "III")
S = SolverSettings()


def spec_table(prev: str, this: str, F: float, E: float) -> float:
    return {("I", "I"): 0, ("I", "II"): (F + E) / 4, ("I", "III"): F / 2,
            ("II", "I"): E / 2, ("II", "II"): E / 2, ("II", "III"): 0,
            ("III", "I"): (F + E) / 4, ("III", "II"): 0, ("III", "III"): F / 2}[(prev, this)]


def spec_intra(t: str, B: float, Di: float, Do: float, first: bool) -> float:
    return {"I": Di * Do, "II": B * Do, "III": 0 if first else B * Di}[t]


def view(B, Di, Do, t):
    """A layer's (B, Di, Do) after its own split of type t."""
    return {"I": (B / 2, Di, Do), "II": (B, Di / 2, Do), "III": (B, Di, Do / 2)}[t]


def hand_level_amount(dims, batch, types, above=None):
    """Per-subgroup amount of one 2-way level for a chain; ``above``: each layer's type at the
    level above (None at level 0)."""
    L = len(dims) - 1
    sizes = [(batch, dims[l], dims[l + 1]) for l in range(L)]
    if above is not None:
        sizes = [view(*sizes[l], above[l]) for l in range(L)]
    total = 0.0
    for l in range(L):
        B, Di, Do = sizes[l]
        total += spec_intra(types[l], B, Di, Do, first=(l == 0))
        if l > 0:
            F = E = B * Di            # the tensor between l-1 and l, as layer l sees it
            total += spec_table(types[l - 1], types[l], F, E)
    return total


CHAINS = [
    ([4, 12, 20, 8], 8),
    ([1024, 4096, 4096, 1000], 32),      # AlexNet's FC tail
    ([64, 16, 256, 8, 128], 64),
    ([256, 256, 256, 256, 256], 16),
    ([8, 1024, 8, 1024, 8, 1024], 128),
    ([3072, 512, 512, 10], 4),
]


@pytest.mark.parametrize("dims,batch", CHAINS)
def test_reference_setting_level0_is_the_brute_force_optimum_of_the_spec_table(dims, batch):
    L = len(dims) - 1
    model = CostModel(gemm_chain(dims, batch), array_from_levels([2, 2]), "accpar")
    asg = greedy(model, "comm", S)
    level0 = tuple(a[0] for a in asg)
    best = min(hand_level_amount(dims, batch, ts) for ts in itertools.product(TYPES, repeat=L))
    assert hand_level_amount(dims, batch, level0) == best
    # and the evaluated level-0 bytes are exactly the table's, x 2 subgroups x 2 bytes
    ev = model.evaluate(asg)
    assert ev.level_comm(0).bytes == 2 * 2 * best


@pytest.mark.parametrize("dims,batch", CHAINS)
def test_reference_setting_level1_is_the_brute_force_optimum_given_level0(dims, batch):
    L = len(dims) - 1
    model = CostModel(gemm_chain(dims, batch), array_from_levels([2, 2]), "accpar")
    asg = greedy(model, "comm", S)
    level0 = tuple(a[0] for a in asg)
    level1 = tuple(a[1] for a in asg)
    best = min(hand_level_amount(dims, batch, ts, above=level0) for ts in itertools.product(TYPES, repeat=L))
    assert hand_level_amount(dims, batch, level1, above=level0) == best
    # two groups of two subgroups at level 1: bytes = amount x 2 x 2 x 2
    assert model.evaluate(asg).level_comm(1).bytes == 2 * 2 * 2 * best


def test_reference_setting_per_layer_costs_match_the_tables():
    """Per layer and level, the evaluation charges the layer's intra cost plus its input edge."""
    dims, batch = [4, 12, 20, 8], 8
    model = CostModel(gemm_chain(dims, batch), array_from_levels([2, 2]), "accpar")
    for types in [("I", "II", "III"), ("III", "II", "I"), ("II", "II", "II"), ("III", "III", "I")]:
        for lower in [("I", "I", "I"), ("II", "III", "I")]:
            asg = [(types[l], lower[l]) for l in range(3)]
            rows = model.evaluate(asg).layers()
            for l in range(3):
                B, Di, Do = batch, dims[l], dims[l + 1]
                a0 = spec_intra(types[l], B, Di, Do, l == 0)
                if l:
                    a0 += spec_table(types[l - 1], types[l], B * Di, B * Di)
                assert rows[l]["levels"][0]["comm_bytes"] == 4 * a0, (types, l)
                vB, vDi, vDo = view(B, Di, Do, types[l])
                a1 = spec_intra(lower[l], vB, vDi, vDo, l == 0)
                if l:
                    a1 += spec_table(lower[l - 1], lower[l], vB * vDi, vB * vDi)
                assert rows[l]["levels"][1]["comm_bytes"] == 8 * a1, (types, lower, l)


def test_reference_setting_hypar_space_is_the_top_left_block():
    """Space hypar (types I, II): greedy's level 0 is the optimum of the 2x2 block."""
    dims, batch = [1024, 4096, 4096, 1000], 32
    model = CostModel(gemm_chain(dims, batch), array_from_levels([2, 2]), "hypar")
    asg = greedy(model, "comm", S)
    level0 = tuple(a[0] for a in asg)
    assert set(level0) <= {"I", "II"}
    best = min(hand_level_amount(dims, batch, ts) for ts in itertools.product(("I", "II"), repeat=3))
    assert hand_level_amount(dims, batch, level0) == best


# --------------------------------------------------------------------------------------------
# api.partition: objective no worse than every baseline, refine <= greedy, on several inputs

KEY = {"comm": "comm_bytes", "time": "time_s", "energy": "energy_j"}


@pytest.mark.parametrize("model_path,how", [
    ("models/lenet.onnx", dict(pes=4)),
    ("models/lenet.onnx", dict(levels="2,2")),
    ("models/alexnet.onnx", dict(pes=16)),
    ("tests/fixtures/cnn_dynamo.onnx", dict(levels="2,2")),
    ("tests/fixtures/transformer_dynamo.onnx", dict(pes=4)),
])
@pytest.mark.parametrize("objective", ["comm", "time", "energy"])
def test_partition_no_worse_than_any_baseline_or_greedy(model_path, how, objective):
    plan = api.partition(model_path, api.resolve_array(**how), objective=objective)
    key = KEY[objective]
    mine = plan["totals"][key]
    assert set(plan["baselines"]) == set(BASELINES) | {"hypar", "accpar"}
    for name, tot in plan["baselines"].items():
        assert mine <= tot[key] * (1 + 1e-9), (name, mine, tot[key])
        assert plan["improvement"][name]["speedup" if objective == "time" else
                                         "comm_reduction" if objective == "comm" else "energy_gain"] >= 1 - 1e-9
    assert mine <= plan["greedy_totals"][key] * (1 + 1e-9)
    assert plan["solver"]["status"] == "optimal"


@pytest.mark.parametrize("space", ["accpar", "full"])
@pytest.mark.parametrize("search_how", ["greedy", "refine", "joint"])
def test_partition_spaces_and_searches(space, search_how):
    plan = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"), objective="comm",
                         space=space, search_how=search_how)
    assert plan["space"] == space and plan["search"] == search_how
    allowed = {"hypar": {"I", "II"}, "accpar": {"I", "II", "III"}}.get(space)
    for lay in plan["layers"]:
        if allowed is not None:
            assert set(lay["types"]) <= allowed
    if search_how == "greedy":
        assert plan["totals"] == plan["greedy_totals"]
    else:
        assert plan["totals"]["comm_bytes"] <= plan["greedy_totals"]["comm_bytes"]


def test_partition_search_order_joint_le_refine_le_greedy():
    arr = api.resolve_array(levels="2,2")
    vals = {how: api.partition("models/lenet.onnx", arr, objective="comm", space="accpar",
                               search_how=how)["totals"]["comm_bytes"] for how in ("greedy", "refine", "joint")}
    assert vals["joint"] <= vals["refine"] <= vals["greedy"]


def test_partition_progress_callback_reports_solves():
    msgs = []
    api.partition("models/lenet.onnx", api.resolve_array(pes=4), progress=msgs.append)
    assert msgs and msgs[0].startswith("imported")
    assert any("greedy level 0" in m for m in msgs)


def test_partition_rejects_unknown_objective_and_space():
    arr = api.resolve_array(pes=4)
    with pytest.raises(ValueError, match="objective"):
        api.partition("models/lenet.onnx", arr, objective="latency")
    with pytest.raises(ValueError, match="space"):
        api.partition("models/lenet.onnx", arr, space="megatron")


def test_vocabulary_is_checked_before_the_model_is_read(tmp_path):
    """The search, objective, space and baseline are checked where they enter the library, before
    any work (a missing model would be the error otherwise)."""
    from hypar.errors import PlanError

    arr = api.resolve_array(pes=4)
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown search 'bogus'; choose one of auto, greedy, refine, joint"):
        api.partition(missing, arr, search_how="bogus")
    with pytest.raises(ValueError, match="unknown objective 'latency'; choose one of time, comm, energy"):
        api.evaluate(missing, plan={"assignment": {}}, objective="latency")
    with pytest.raises(PlanError, match="unknown baseline 'bogus'; choose one of data, model, owt, hypar, accpar"):
        api.evaluate(missing, baseline_name="bogus", array=arr)


def test_dp_and_brute_methods_agree_with_ilp_on_a_chain_model():
    """lenet in space accpar is a chain of decision layers: --solver dp works and agrees."""
    arr = api.resolve_array(levels="2,2")
    totals = {m: api.partition("models/lenet.onnx", arr, objective="comm", space="accpar", search_how="greedy",
                               settings=SolverSettings(method=m))["totals"]
              for m in ("ilp", "dp", "brute")}
    assert totals["ilp"]["comm_bytes"] == totals["dp"]["comm_bytes"] == totals["brute"]["comm_bytes"]


# --------------------------------------------------------------------------------------------
# Regressions: bugs found while writing these tests (each states what it expects and what it got
# before the fix).

def test_partition_in_space_hypar():
    """Regression (bug fixed in c67bfdd).
    hypar/api.py partition (via paper_baseline): in space "hypar" the AccPar baseline is
    solved in its own accpar CostModel (types I/II/III) and its types are carried into the
    hypar-space model, where layers allow only I and II; CostModel.check_assignment (called by
    refine's evaluate of the starts, and by evaluate of the baselines) raises
    PlanError("layer 'conv1': type 'III' is not one of ('I', 'II') in space 'hypar'").
    So `hypar partition MODEL --space hypar` always fails. Expected: a plan using only I/II."""
    plan = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"), objective="comm",
                         space="hypar", search_how="greedy")
    assert all(set(l["types"]) <= {"I", "II"} for l in plan["layers"])
    assert plan["totals"]["comm_bytes"] <= plan["baselines"]["data"]["comm_bytes"]


def test_partition_of_an_in_memory_graph(tmp_path):
    """Regression (bug fixed in c67bfdd).
    hypar/api.py partition(graph=...) -> model_info -> onnx_import.model_sha256: the
    ``graph`` argument lets callers partition a graph they already have (e.g. hypar.synthetic),
    but model_info still opens ``model_path`` to hash it, so a path that is not a file raises
    FileNotFoundError. Expected: a plan (model.sha256 null, which the schema allows)."""
    g = gemm_chain([64, 128, 32], 16)
    plan = api.partition(str(tmp_path / "chain-not-a-file"), api.resolve_array(pes=4), graph=g)
    assert [l["name"] for l in plan["layers"]] == ["fc1", "fc2"]


def test_time_limit_returns_the_best_plan_found_marked_feasible():
    """Regression (bug fixed in c67bfdd).
    hypar/search.py greedy -> solve_level -> hypar/solver.py solve_ilp: issue 4 says a time
    limit "returns the best plan found, marked feasible", but greedy's first level solve has no
    incumbent, so a short limit raises SolverError("ILP backend 'highs' found no plan within
    0.001 s; raise --time-limit") although a plan is always at hand (every baseline is feasible
    without memory rows; search computes them anyway). Got: SolverError on resnet18 @ 16 PEs with
    --time-limit 0.001 (also resnet50 @ 64 PEs with 0.05). Expected: a plan with status
    "feasible", no worse than the data baseline."""
    from hypar.plan import validate

    plan = api.partition("models/resnet18.onnx", api.resolve_array(pes=16),
                         settings=SolverSettings(time_limit_s=0.001))
    validate(plan)
    assert plan["solver"]["status"] == "feasible"
    assert plan["totals"]["time_s"] <= plan["baselines"]["data"]["time_s"] * (1 + 1e-9)


def test_plan_counts_every_level_solve(monkeypatch):
    """Regression (bug fixed in c67bfdd).
    hypar/api.py partition / hypar/search.py search: plan["solver"]
    ["level_solves"] and ["solve_wall_s"] only count the solves recorded in the SearchLog
    (greedy, refine, joint); the solves that complete the data/model/owt baselines
    (search -> baseline -> complete, no log) and the papers' greedy runs (api.paper_baseline ->
    greedy/complete, no log) are left out: resnet50 @ 64 PEs reports 18 level solves of the 60
    it runs, and a time-limited ("feasible") solve among them would not change the status.
    Expected: level_solves == the number of level solves partition ran."""
    import hypar.search as search_mod

    calls = []
    real = search_mod.solve_level

    def counting(problem, settings, incumbent=None):
        calls.append(1)
        return real(problem, settings, incumbent)

    monkeypatch.setattr(search_mod, "solve_level", counting)
    plan = api.partition("models/lenet.onnx", api.resolve_array(levels="2,2"))
    assert plan["solver"]["level_solves"] == len(calls)
