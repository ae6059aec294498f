"""A tensor's tables built a tensor at a time (hypar.cost.tables, CostModel.conversion_values)
equal the cell-by-cell rule to the last bit, and the cost model's fast paths (one object per
conversion, memoised sharings, collective-free labels, nodes without compute) change no number.

The cell-by-cell rule is written out here as the problem builder applied it before: one
``conversion_costs(...).value(objective)`` per (conversion, producer choice), a pair matrix
added charge by charge into the needed columns from 0.0. Exact equality (``==``), never a
tolerance: the tables must be the same floats.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from hypar import api
from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.cost.price import ZERO
from hypar.cost.sharing import Conversion, Conversions, share_by
from hypar.cost.structure import EdgeModel
from hypar.cost.statistics import quiet_labels, replicated_out_level_cost, replicates_out
from hypar.cost.tables import Charge, TensorCharges, consumer_costs, pair_costs, tensor_charges
from hypar.synthetic import random_dag

from paths import FIXTURES

OBJECTIVES = ("comm", "time", "energy")
CONVENTIONS = ("hierarchical", "reference")


def dag_model(convention: str, levels=(2, 2), seed: int = 3) -> CostModel:
    """A random DAG with skips, fan-out and norms, every node kept (space full)."""
    g = random_dag(7, seed, batch=6, width_choices=(4, 6), norm_prob=0.5)
    return CostModel(g, array_from_levels(list(levels)), "full", convention=convention)


def lookup_model(convention: str) -> CostModel:
    """A sequence model whose constant-index position lookup leaves F_out replicated under type I."""
    g = api.load_layer_graph(str(FIXTURES / "sequence_pattern_dynamic.onnx"), input_shapes={"ids": [4, 8]})
    return CostModel(g, array_from_levels([2, 2]), "full", convention=convention)


def level_choices(model: CostModel, h: int, seed: int) -> list[list[tuple]]:
    """Every node's candidates at level h over a random assignment of the other levels."""
    rng = random.Random(seed)
    base = [tuple(rng.choice(model.labels(i)) for _ in range(model.n_levels)) for i in range(len(model.nodes))]
    return [[b[:h] + (t,) + b[h + 1:] for t in model.labels(i)] for i, b in enumerate(base)]


def cell_value(model: CostModel, levels, conv, p, ptypes, objective) -> float:
    return model.conversion_costs(levels, conv, p, ptypes).value(objective)


def charges_cell_by_cell(model, levels, p, edges, choices, objective, fixed_producer):
    """The problem builder's former ``_charges``: one price call per cell."""
    shared = model.share(edges, choices, levels[0])
    out = []
    for conv, needers in sorted(shared.items(), key=lambda item: item[0].backward):
        if conv.consumer_only or fixed_producer:
            out.append((needers, cell_value(model, levels, conv, p, choices[p][0], objective), True))
        else:
            values = np.array([cell_value(model, levels, conv, p, pt, objective) for pt in choices[p]])
            out.append((needers, values, False))
    return out


def pair_cell_by_cell(charges, n_producer, n_consumer):
    """The problem builder's former ``_add_pair_costs`` arithmetic."""
    mat, own = None, [0.0] * n_consumer
    for ch in charges:
        if ch.independent:
            for _c, t in ch.needers:
                own[t] += ch.values
            continue
        if mat is None:
            mat = np.zeros((n_producer, n_consumer))
        mat[:, [t for _c, t in ch.needers]] += ch.values[:, None]
    return own, mat


# --------------------------------------------------------------------------------------------
# pair matrices

def random_charges(rng: random.Random, n_producer: int, n_consumer: int, n_charges: int) -> list[Charge]:
    """Charges whose values span 16 orders of magnitude, so adding them in another order would
    round differently."""
    out = []
    for _ in range(n_charges):
        needers = tuple((9, t) for t in sorted(rng.sample(range(n_consumer), rng.randint(1, n_consumer))))
        scale = 10.0 ** rng.choice((0, 8, 16))
        if rng.random() < 0.3:
            out.append(Charge(needers, rng.random() * scale, True))
        else:
            out.append(Charge(needers, np.array([rng.random() * scale for _ in range(n_producer)]), False))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_pair_costs_add_every_cell_in_charge_order(seed):
    rng = random.Random(seed)
    n_p, n_c = rng.choice((1, 3, 9)), rng.choice((1, 3, 9))
    charges = random_charges(rng, n_p, n_c, rng.randint(1, 8))
    own, mat = pair_costs(TensorCharges.of(charges), n_p, n_c)
    want_own, want_mat = pair_cell_by_cell(charges, n_p, n_c)
    assert own == want_own
    assert (mat is None) == (want_mat is None)
    if mat is not None:
        assert mat.shape == (n_p, n_c) and np.array_equal(mat, want_mat)


def test_pair_costs_order_matters_and_is_kept():
    """1e16 then 1.0 twice: added in order each 1.0 rounds away; in another order they would not."""
    charges = [Charge(((1, 0),), np.array([1e16]), False), Charge(((1, 0),), np.array([1.0]), False),
               Charge(((1, 0),), np.array([1.0]), False)]
    _own, mat = pair_costs(TensorCharges.of(charges), 1, 2)
    assert mat[0, 0] == 1e16 and mat[0, 1] == 0.0
    assert 1.0 + 1.0 + 1e16 != 1e16          # the other order gives another float


def test_pair_costs_of_independent_charges_only_have_no_matrix():
    own, mat = pair_costs(TensorCharges.of([Charge(((4, 0), (4, 2)), 2.5, True), Charge(((4, 2),), 1.0, True)]), 3, 3)
    assert mat is None and own == [2.5, 0.0, 3.5]


def test_mapped_charges_move_needers_to_problem_nodes_and_scale_values():
    """Nodes 2 and 3 tied onto 2: (3, t) becomes (2, t), a repeat dropped; values times 3."""
    charges = TensorCharges.of([Charge(((2, 0), (3, 0), (3, 1)), np.array([1.0, 2.0]), False),
                                Charge(((3, 1),), 0.5, True)])
    mapped = charges.mapped((0, 1, 2, 2), 3)
    assert mapped.needers == (((2, 0), (2, 1)), ((2, 1),)) and mapped.independent == (False, True)
    assert mapped.values[0].tolist() == [3.0, 6.0] and mapped.values[1] == 1.5
    assert charges.mapped((0, 1, 2, 3), 1) == charges


# --------------------------------------------------------------------------------------------
# conversion values and a tensor's charges

@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_conversion_values_equal_each_price(convention, objective):
    """Priced by the batch on one fresh model, cell by cell on another: the same floats."""
    batch, cells = dag_model(convention, (2, 3)), dag_model(convention, (2, 3))
    for h in range(batch.n_levels):
        choices = level_choices(batch, h, seed=h)
        for levels in batch.pricing_passes(list(range(h, batch.n_levels))):
            for (p, _src), edges in batch.structure.tensor_edges.items():
                convs = list(batch.share(edges, choices, levels[0]))
                got = batch.conversion_values(levels, convs, p, choices[p], objective)
                want = [[cell_value(cells, levels, c, p, pt, objective) for pt in choices[p]] for c in convs]
                assert got.shape == (len(convs), len(choices[p])) and got.tolist() == want


def test_conversion_values_of_no_conversion_is_an_empty_table():
    m = dag_model("hierarchical")
    out = m.conversion_values((0, 1), [], 0, [("I", "I"), ("II", "I")], "time")
    assert out.shape == (0, 2)
    with pytest.raises(KeyError):
        m.conversion_values((0, 1), [], 0, [("I", "I")], "latency")


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("make", [dag_model, lookup_model])
def test_tensor_charges_equal_the_cell_by_cell_rule(convention, make):
    """Every tensor at every level, the producer free or fixed: needers, values and flags equal."""
    model = make(convention)
    for h in range(model.n_levels):
        choices = level_choices(model, h, seed=7 + h)
        for levels in model.pricing_passes(list(range(h, model.n_levels))):
            for (p, _src), edges in model.structure.tensor_edges.items():
                for fixed in (False, True):
                    got = list(tensor_charges(model, levels, p, edges, choices, "time", fixed))
                    want = charges_cell_by_cell(model, levels, p, edges, choices, "time", fixed)
                    assert [(c.needers, c.independent) for c in got] == [(tuple(n), i) for n, _v, i in want]
                    for c, (_n, v, independent) in zip(got, want):
                        assert (c.values == v) if independent else np.array_equal(c.values, v)
                        assert isinstance(c.values, float) == independent


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_consumer_costs_sum_each_choice_in_order(convention):
    model = dag_model(convention)
    choices = level_choices(model, 1, seed=11)
    for (p, _src), edges in model.structure.tensor_edges.items():
        for e in edges:
            got = consumer_costs(model, (1,), p, e, choices[p][0], choices[e.c], "energy")
            want = []
            for types in choices[e.c]:
                total = 0.0
                for conv in model.share([e], {e.c: [types]}, 1):
                    total += cell_value(model, (1,), conv, p, choices[p][0], "energy")
                want.append(total)
            assert got == want


# --------------------------------------------------------------------------------------------
# sharing: one object per conversion, memoised sharings

def test_conversions_are_made_once_and_equal_by_value():
    made = Conversions()
    a = made.get(False, (8, 2, 4, 1, 1), ("S(b)", "R"))
    assert made.get(False, (8, 2, 4, 1, 1), ("S(b)", "R")) is a
    assert a == Conversion(False, (8, 2, 4, 1, 1), ("S(b)", "R"))
    assert made.get(True, (8, 2, 4, 1, 1), ("S(b)", "R")) != a


def test_hierarchical_share_is_alike_at_every_level_and_equals_a_fresh_sharing():
    model, fresh = dag_model("hierarchical"), dag_model("hierarchical")
    choices = level_choices(model, 1, seed=5)
    for (p, src), edges in model.structure.tensor_edges.items():
        first = model.share(edges, choices, 0)
        assert list(model.share(edges, choices, 1).items()) == list(first.items())
        fresh_edges = fresh.structure.tensor_edges[(p, src)]
        assert list(first.items()) == list(fresh.share(fresh_edges, choices, 0).items())
        assert all(a is b for a, b in zip(first, model.share(edges, choices, 1)))   # one object each


def test_share_by_lists_each_needer_once_also_through_two_slots_of_one_consumer():
    """x * x: both slots of one consumer read the same tensor; equal keys share, no repeats."""
    t = G.Tensor("h", (4, 6), 0, 1)
    edges = [EdgeModel(0, 1, 0, t, True, "h"), EdgeModel(0, 1, 1, t, True, "h"), EdgeModel(0, 2, 0, t, False, "h")]
    keys = {"a": ("k1",), "b": ("k1", "k2")}

    def keys_of(e, types):
        return keys[types[0]] if e.slot == 0 else ("k2",)
    shared = share_by(edges, {1: [("a",), ("b",)], 2: [("b",)]}, keys_of)
    assert shared == {"k1": [(1, 0), (1, 1), (2, 0)], "k2": [(1, 1), (1, 0), (2, 0)]}


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_evaluate_charges_each_level_as_shared_alone(convention):
    """The edge costs evaluate adds equal, per level, each tensor shared at that level alone and
    its conversions added in order to their first consumer."""
    model = dag_model(convention, (2, 3))
    rng = random.Random(2)
    for _ in range(5):
        asg = [tuple(rng.choice(model.labels(i)) for _ in range(model.n_levels)) for i in range(len(model.nodes))]
        ev = model.evaluate(asg)
        for h in range(model.n_levels):
            want = {}
            for (p, _src), edges in model.structure.tensor_edges.items():
                for conv, needers in model.share(edges, [[t] for t in asg], h).items():
                    c = needers[0][0]
                    want[c] = want.get(c, ZERO) + model.conversion_cost(h, conv, p, asg[p])
            assert dict(model.level_edge_costs(asg, h)) == want
            assert [ev.comm[i][h] for i in range(len(asg))] == \
                [model.intra_cost(i, asg[i], h) + want[i] if i in want else model.intra_cost(i, asg[i], h)
                 for i in range(len(asg))]


# --------------------------------------------------------------------------------------------
# fast paths of the node costs

@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("make", [dag_model, lookup_model])
def test_intra_and_compute_costs_equal_the_full_computation(convention, make):
    """Every node, every type tuple on 2x2: the memoised fast paths give what a fresh model
    computes from scratch."""
    model, fresh = make(convention), make(convention)
    for i in range(len(model.nodes)):
        for types in itertools.product(model.labels(i), repeat=model.n_levels):
            for h in range(model.n_levels):
                assert model.intra_cost(i, types, h) == fresh._intra_cost_uncached(i, types, h), (i, types, h)
            for k in range(model.n_levels + 1):
                part = types[:k] + (None,) * (model.n_levels - k)
                assert model.compute_cost(i, part) == fresh.compute_cost(i, part)


def test_quiet_labels_of_a_gemm_and_a_norm():
    """A Gemm's type III all-reduces nothing; a norm's statistics are priced at every level under
    hierarchical (even below a replicated level), so none of its labels is quiet there."""
    for convention in CONVENTIONS:
        model = dag_model(convention)
        kinds = {G.layer(model.g, n).kind: i for i, n in enumerate(model.names)}
        hier = convention == "hierarchical"
        assert quiet_labels(model.nodes[kinds[G.GEMM]], hier) == {"III"}
        norm = model.nodes[kinds[G.FEATURENORM if G.FEATURENORM in kinds else G.BATCHNORM]]
        assert (quiet_labels(norm, hier) == frozenset()) == hier
        assert quiet_labels(norm, hier) <= set(model.labels(model.names.index(norm.name)))


def test_replicates_out_says_whether_some_tuple_prices_a_replicated_output():
    """Exact on two levels (a partial level above a replicated one); true for the lookups only."""
    for make in (dag_model, lookup_model):
        model = make("hierarchical")
        flagged = []
        for i, node in enumerate(model.nodes):
            priced = any(replicated_out_level_cost(model.pricer, node, types, h) is not None
                         for types in itertools.product(model.labels(i), repeat=model.n_levels)
                         for h in range(model.n_levels))
            assert priced == replicates_out(node), model.names[i]
            flagged += [model.names[i]] if priced else []
        assert flagged == (["pos_gather", "type_gather"] if make is lookup_model else [])
