"""The cost model: bytes, seconds and joules of one training step under a plan (SPEC.md §1-4).

A :class:`CostModel` binds a layer graph, a PE array and a partition space. An *assignment* maps
every problem node to a tuple of labels, one per level, top first (``None`` for a level not decided
yet). :meth:`CostModel.evaluate` costs a full assignment exactly; :meth:`CostModel.level_problem`
turns one level (others fixed) into a :class:`hypar.ilp.problem.LevelProblem` for the solvers
(built by :mod:`hypar.cost.problems`).

Conventions (SPEC.md "Units and totals"):
- amounts are elements received per subgroup; a level's volume sums them over every subgroup of
  every group; ``comm_bytes`` = volume x the bytes per element of what moves (each tensor's,
  error's or gradient's declared width, else the array's ``dtype_bytes``: docs/precision.md)
  summed over levels;
- the time of one collective = the slowest subgroup's per-PE bytes / bandwidth (+ latency per
  message); a layer's time = its slowest PE's compute + its collectives; step time = the sum;
- tensors between layers, under the ``reference`` convention: costed in the *consumer's* view
  at each level (its own splits above), converted once per distinct (view, layout); under
  ``hierarchical``: each conversion from the producer's full layout tuple to the consumer's, at
  every level, priced by :mod:`hypar.cost.hierarchical` (the SPEC's order), once per distinct
  full tuple (a level's conversion is then one collective per step of the order, each timed
  on its own slowest subgroup). :mod:`hypar.cost.sharing` states both rules.

Which nodes are kept in each space, and the edges between them, is :mod:`hypar.cost.structure`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from hypar import graph as G
from hypar.array import PEArray, split_counts
from hypar.errors import PlanError
from hypar.ilp.problem import LevelProblem
from hypar.cost import problems
from hypar.cost.collectives import allreduce, convert, messages
from hypar.cost.conventions import HierarchicalEdges, ReferenceEdges
from hypar.cost.evaluation import Evaluation
from hypar.cost.hierarchical import HierarchicalPricer
from hypar.cost.price import FIELD_OF, OBJECTIVES, ZERO, Cost, collective_cost
from hypar.cost.repeats import Twins
from hypar.cost.sharing import Conversion
from hypar.cost.statistics import (STATS_QUANTITIES, StatsTerm, quiet_labels, replicated_out_level_cost,
                                   replicates_out, stats_level_cost, stats_term)
from hypar.cost.strategies import FULL, Q_OUT, Q_WEIGHT, NodeModel, macs_view, quantity, tensor_view, weight_view
from hypar.cost.structure import SPACES, EdgeModel, Structure
from hypar.shards import group_shares
from hypar.vocab import Convention, parse

__all__ = ["OBJECTIVES", "SPACES", "Cost", "CostModel", "Evaluation"]


def _decided(types: tuple) -> tuple:
    """The levels of ``types`` decided so far: its labels up to the first ``None``."""
    types = tuple(types)
    return types[:types.index(None)] if None in types else types


class CostModel:
    """Costs of assignments of a layer graph on a PE array in one partition space.

    ``g``: the layer graph; ``array``: the PE array; ``space``: one of :data:`SPACES` (ValueError
    otherwise); ``convention``: how several levels are priced, a :class:`hypar.vocab.Convention`
    value (ValueError otherwise). The kept nodes and their edges are :attr:`structure` (a :class:`Structure`);
    ``names``, ``index``, ``nodes``, ``edges``, ``in_edges`` and :meth:`kept_sources` read it.
    Costs are memoised per model: build a new model after changing the graph or array.
    """

    def __init__(self, g, array: PEArray, space: str = "accpar", convention: str = "reference"):
        self.convention = parse(Convention, convention)
        self.structure = Structure(g, space)
        self.array = array
        # hierarchical only: the pricer of conversions, shared with the norm statistics
        self.pricer = HierarchicalPricer(array) if self.convention == Convention.HIERARCHICAL else None
        self.edge_pricing = (HierarchicalEdges(self.structure.nodes, self.pricer)
                             if self.pricer is not None else ReferenceEdges(self))
        self.n_levels = array.n_levels
        self._labels = [node.labels() for node in self.structure.nodes]
        self.twins = Twins(self.structure)        # twin nodes and tensors, and the repeated blocks a tied problem ties
        self.node_sig = self.twins.node_sig        # twin class per node (the caches' keys)
        self.ties = self.twins.ties
        self.use_factors = True       # fanned-out tensors as factor terms (else group terms)
        self._views: dict = {}
        self._leaf_cache: dict = {}
        self._convert_cache: dict = {}
        self._eval_cache: dict = {}
        self._intra_cache: dict = {}
        self._edge_cost_cache: dict = {}
        self._memory_cache: dict = {}
        self._sig_cache: dict = {}
        self._stats_terms: dict[int, StatsTerm | None] = {}
        self._quiet: dict[int, frozenset[str]] = {}
        self._products_of: dict[int, int] = {}

    # -- structure (read from self.structure)
    @property
    def g(self):
        """The layer graph."""
        return self.structure.g

    @property
    def space(self) -> str:
        """The partition space."""
        return self.structure.space

    @property
    def names(self) -> list[str]:
        """Kept layer names in topological order (problem node i is ``names[i]``)."""
        return self.structure.names

    @property
    def index(self) -> dict[str, int]:
        """Kept layer name -> problem node index."""
        return self.structure.index

    @property
    def nodes(self) -> list[NodeModel]:
        """The :class:`NodeModel` of each problem node."""
        return self.structure.nodes

    @property
    def edges(self) -> list[EdgeModel]:
        """Every edge between problem nodes (see :class:`Structure`)."""
        return self.structure.edges

    @property
    def in_edges(self) -> list[list[int]]:
        """Per problem node, the positions in :attr:`edges` of its input edges."""
        return self.structure.in_edges

    def kept_sources(self, start: str) -> list[str]:
        """Kept nodes reached walking backwards from layer ``start`` through folded nodes."""
        return self.structure.kept_sources(start)

    def labels(self, i: int) -> tuple[str, ...]:
        """The type labels node i may take at any level."""
        return self._labels[i]

    # -- views
    def views(self, i: int, prefix: tuple) -> dict[tuple, int]:
        """Distribution of node ``i``'s view at level len(prefix) under the types ``prefix`` above:
        {(group class key, node dims in view): number of groups}.

        ``hierarchical``: a group's dims are what the simulator places there
        (:mod:`hypar.shards`): per node axis, the indices whose digits at the levels of
        ``prefix`` splitting that axis are the group's coordinates, the axis placed in its unit
        (:attr:`NodeModel.units`). ``reference``: each level's
        view split on its own, top first, by ``split_counts`` with the group class's fractions
        (the same numbers on one level, and on a homogeneous array whose PE count divides every
        split axis)."""
        key = (self.node_sig[i], prefix)          # twins have the same views
        hit = self._views.get(key)
        if hit is not None:
            return hit
        node = self.nodes[i]
        if self.convention == Convention.HIERARCHICAL:
            axes = [node.strategy(label).split_axis for label in prefix]
            queries = tuple((n, tuple(g for g, x in enumerate(axes) if x == a), False, node.unit(a))
                            for a, n in zip(node.axes, node.sizes))
            out = {(ck, dims): m for ck, dims, m in group_shares(self.array, len(prefix), queries)}
        elif not prefix:
            out = {(self.array.root_key, node.sizes): 1}
        else:
            h = len(prefix) - 1
            axis = node.strategy(prefix[-1]).split_axis
            ai = node.axes.index(axis) if axis else None
            split: dict[tuple, int] = defaultdict(int)
            for (ck, dims), m in self.views(i, prefix[:-1]).items():
                gc = self.array.classes[h][ck]
                parts = split_counts(dims[ai], [c[1] for c in gc.children]) if ai is not None else None
                for j, (child, _f, _n) in enumerate(gc.children):
                    nd = dims if ai is None else dims[:ai] + (parts[j],) + dims[ai + 1:]
                    split[(child, nd)] += m
            out = dict(split)
        self._views[key] = out
        return out

    # -- communication
    def intra_cost(self, i: int, types: tuple, h: int) -> Cost:
        """Collectives inside node i at level h (all-reduce of dW, of F_out, norm statistics)
        under its types ``types`` (levels 0..h used).

        Norm statistics (BatchNorm, LayerNorm, softmax over a split axis): ``reference`` prices
        today's all-reduce of the level-h group's statistics at the levels whose strategy splits
        the summed axis; ``hierarchical`` prices what the SPEC's order sends converting the
        statistics tensors from partial to replicated, at every level (also a replicated level
        below a partial one, and with the channels split above), by
        :func:`hypar.cost.statistics.stats_level_cost` (its docstring: why levels 0..h suffice).

        Why ``hierarchical`` needs no other price for dW and F_out (HIER_SEMANTICS.md §4): the
        dW all-reduce of a type-I level h is the conversion of dW from P -> R at h, where dW is P at every type-I
        level above (a partial sum over each batch split) and sharded at every type-II/III level
        (the weight is split there), in both source and target. In the SPEC's closed form both
        the reduce-scatter (K) and the all-gather (T) factors are then the product k_I of the
        fanouts of the type-I levels above, so the elements crossing level-h links are
        ``W (k_h - 1) (K + T) = 2 (k_h - 1) k_I W`` (W = dW's elements). Today's price: every
        level-h group all-reduces its view of dW, ``W / k_sharded`` elements (k_sharded: the
        fanouts of the II/III levels above), each of its k_h subgroups receiving
        ``2 (k_h - 1) / k_h`` of it; over the ``k_I k_sharded`` groups and their k_h subgroups
        that is the same ``2 (k_h - 1) k_I W``, with the same per-PE share (so the same time).
        The F_out all-reduce of a type-II level is the same derivation with F_out for dW (P at
        the type-II levels above, sharded by the I/III levels)."""
        quiet = self._quiet.get(i)
        if quiet is None:
            quiet = self._quiet[i] = quiet_labels(self.nodes[i], self.pricer is not None)
        if types[h] in quiet:
            return ZERO
        key = (self.node_sig[i], tuple(types[:h + 1]))     # twins cost the same
        hit = self._intra_cache.get(key)
        if hit is None:
            hit = self._intra_cache[key] = self._intra_cost_uncached(i, types, h)
        return hit

    def _intra_cost_uncached(self, i: int, types: tuple, h: int) -> Cost:
        """:meth:`intra_cost` computed: one all-reduce per quantity of the level-h strategy
        (under ``hierarchical``, the statistics priced by :func:`stats_level_cost` instead)."""
        node = self.nodes[i]
        quantities = node.strategy(types[h]).intra
        total = ZERO
        if self.pricer is not None:
            quantities = tuple(q for q in quantities if q not in STATS_QUANTITIES)
            term = self._stats_term(i)
            if term is not None:
                layouts = tuple(node.strategy(label).out_layout for label in types[:h + 1])
                total = stats_level_cost(self.pricer, term, layouts, h)
            out_price = replicated_out_level_cost(self.pricer, node, types, h) if replicates_out(node) else None
            if out_price is not None:                  # F_out with a replicated level below a partial one
                quantities = tuple(q for q in quantities if q != Q_OUT)
                total = total + out_price
        classes = self.array.classes[h]
        for q in quantities:
            traffic = []
            for (ck, dims), m in self.views(i, tuple(types[:h])).items():
                gc = classes[ck]
                fr = tuple(c[1] for c in gc.children)
                traffic.append((gc, m, allreduce(quantity(node, dims, q), fr), 2 * (len(fr) - 1)))
            total = total + collective_cost(self.array.levels[h], self.quantity_bytes(i, q), traffic)
        return total

    def quantity_bytes(self, i: int, q: str) -> int:
        """Bytes per element of node i's intra-layer quantity ``q`` (docs/precision.md): the weight
        gradient's declared width for ``dW``, the output's for ``F_out``; statistics, a
        reduction's partial output and a broadcast operand's partial error are in the array's
        training precision."""
        node = self.nodes[i]
        if q == Q_WEIGHT:
            declared = node.layer.weight_grad_bytes
        elif q == Q_OUT and node.out_tensor is not None:
            declared = node.out_tensor.elem_bytes
        else:
            declared = None
        return G.element_bytes(declared, self.array.dtype_bytes)

    def _stats_term(self, i: int) -> StatsTerm | None:
        """Node i's norm statistics (:func:`hypar.cost.statistics.stats_term`), memoised."""
        if i not in self._stats_terms:
            self._stats_terms[i] = stats_term(self.nodes[i])
        return self._stats_terms[i]

    def edge_view(self, e: EdgeModel, ctypes: tuple, h: int) -> tuple:
        """Signature of edge e's tensor in its consumer's view at level h, the consumer taking
        types ``ctypes`` (levels above h used): ((group class key, elements, batch size, feature
        size, number of groups), ...) sorted. Equal signatures convert equally."""
        key = (id(e), tuple(ctypes[:h]))
        hit = self._sig_cache.get(key)
        if hit is not None:
            return hit
        node = self.nodes[e.c]
        amap = node.in_maps[e.slot] if e.slot < len(node.in_maps) else (None, None)
        sig = []
        for (ck, dims), m in sorted(self.views(e.c, tuple(ctypes[:h])).items()):
            a, bs, fs = tensor_view(node, dims, e.tensor, amap)
            sig.append((ck, a, bs, fs, m))
        self._sig_cache[key] = out = tuple(sig)
        return out

    def convert_cost(self, h: int, sig: tuple, src: str, dst: str, width_bytes: int | None = None) -> Cost:
        """Cost at level h of converting a tensor with view signature ``sig`` (:meth:`edge_view`)
        from layout ``src`` into ``dst`` in every group at once, ``width_bytes`` per element
        (None: the array's training precision)."""
        if src == dst or src == FULL:
            return ZERO
        key = (h, sig, src, dst, width_bytes)
        hit = self._convert_cache.get(key)
        if hit is None:
            hit = self._convert_cache[key] = self._convert_cost_uncached(
                h, sig, src, dst, G.element_bytes(width_bytes, self.array.dtype_bytes))
        return hit

    def _convert_cost_uncached(self, h: int, sig: tuple, src: str, dst: str, width_bytes: int) -> Cost:
        """:meth:`convert_cost` computed from the closed forms, group class by group class."""
        classes = self.array.classes[h]
        traffic = []
        for ck, a, bs, fs, m in sig:
            gc = classes[ck]
            fr = tuple(c[1] for c in gc.children)
            traffic.append((gc, m, convert(src, dst, a, bs, fs, fr), messages(src, dst, len(fr))))
        return collective_cost(self.array.levels[h], width_bytes, traffic)

    def share(self, edges: list[EdgeModel], choices, h: int) -> dict[Conversion, list[tuple[int, int]]]:
        """The conversions of the tensor carried by ``edges`` at level h under the model's
        convention, each with who needs it (:mod:`hypar.cost.sharing`); ``choices[c]``: the type
        tuples consumer c may take. Under ``hierarchical`` the answer is the same at every level."""
        return self.edge_pricing.share(edges, choices, h)

    def conversion_cost(self, h: int, conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """Level-h cost of ``conv`` (from :meth:`share`) when producer node ``producer`` takes
        types ``ptypes`` (levels after h may be None). Raises ValueError for a hierarchical pair
        this model does not price (:func:`hypar.cost.hierarchical.check_pair`)."""
        return self.edge_pricing.cost((h,), conv, producer, ptypes)

    def conversion_costs(self, levels: tuple[int, ...], conv: Conversion, producer: int, ptypes: tuple) -> Cost:
        """:meth:`conversion_cost` summed over ``levels`` (a pass of :meth:`pricing_passes`)."""
        return self.edge_pricing.cost(levels, conv, producer, ptypes)

    def conversion_values(self, levels: tuple[int, ...], convs: Sequence[Conversion], producer: int,
                          ptypes_list: Sequence[tuple], objective: str) -> np.ndarray:
        """The objective's value of :meth:`conversion_costs` for each of ``convs`` (rows) with the
        producer taking each of ``ptypes_list`` (columns), as a float array of that shape, priced
        in one pass (the same numbers as cell by cell). KeyError for an unknown objective;
        ValueError as :meth:`conversion_cost`."""
        rows = self.edge_pricing.table(levels, convs, producer, ptypes_list, FIELD_OF[objective])
        return np.array(rows, dtype=float).reshape(len(convs), len(ptypes_list))

    def is_tied(self, assignment: list[tuple]) -> bool:
        """True when every node of a tied run has its tie class's types (:class:`Twins`)."""
        return self.twins.is_tied(assignment)

    def pricing_passes(self, levels: list[int]) -> list[tuple[int, ...]]:
        """The levels whose conversions a problem over ``levels`` must hold, grouped into passes
        sharing one key set (:meth:`share`); see the conventions' ``passes``
        (:mod:`hypar.cost.conventions`)."""
        return self.edge_pricing.passes(levels)

    def producer_levels(self, levels: tuple[int, ...]) -> set[int]:
        """The producer's levels :meth:`conversion_costs` reads pricing a pass over ``levels``."""
        return self.edge_pricing.producer_levels(levels)

    def level_edge_costs(self, assignment: list[tuple], h: int) -> dict[int, Cost]:
        """Level-h edge costs (forward conversions, backward conversions, partial-error reductions)
        of a full assignment, shared per tensor as :meth:`share` says, each charged to the first
        consumer needing it: {node index: cost} (nodes charged nothing are absent). Twin tensors
        (:mod:`hypar.cost.repeats`) under the same types are priced once; under a tied
        assignment (:meth:`is_tied`) one tensor per group of :meth:`Twins.tied_tensor_groups`."""
        per_node: dict[int, Cost] = defaultdict(lambda: ZERO)
        tensor_edges = self.structure.tensor_edges
        groups = (self.twins.tied_tensor_groups() if self.is_tied(assignment)
                  else [(key, (key,)) for key in tensor_edges])
        for first, members in groups:
            costs = self._tensor_level_costs(first, tensor_edges[first], assignment, h)
            for key in members:
                edges = tensor_edges[key]
                for position, cost in costs:
                    c = edges[position].c
                    per_node[c] = per_node[c] + cost
        return per_node

    def _tensor_level_costs(self, key: tuple[int, str], edges: list[EdgeModel], assignment: list[tuple],
                            h: int) -> list[tuple[int, Cost]]:
        """One tensor's level-h conversions under ``assignment``: (position in ``edges`` of the
        first consumer needing it, cost) each, memoised by twin class and types."""
        p = key[0]
        memo_key = (self.twins.tensor_sig[key], h, assignment[p], tuple(assignment[e.c] for e in edges))
        hit = self._edge_cost_cache.get(memo_key)
        if hit is None:
            fixed = {e.c: [assignment[e.c]] for e in edges}
            first = {}
            for k, e in enumerate(edges):
                first.setdefault(e.c, k)
            hit = self._edge_cost_cache[memo_key] = [
                (first[needers[0][0]], self.conversion_cost(h, conv, p, assignment[p]))
                for conv, needers in self.share(edges, fixed, h).items()]
        return hit

    # -- compute and memory
    def _products(self, i: int) -> int:
        """Matrix products per MAC count: forward, one backward per input needing an error,
        gradient; memoised."""
        hit = self._products_of.get(i)
        if hit is not None:
            return hit
        lay = self.nodes[i].layer
        n = 0
        if lay.macs:
            n = 1 + (1 if lay.weighted else 0)
            slots = {self.edges[e].slot for e in self.in_edges[i] if self.edges[e].needs_error}
            n += len(slots) if lay.kind != G.EMBEDDING else 0
        self._products_of[i] = n
        return n

    def compute_cost(self, i: int, types: tuple) -> Cost:
        """Slowest PE's compute time (s) and total compute energy (J) of node i under ``types``
        (levels left None: the group's share split ideally below); bytes are 0."""
        products = self._products(i)
        if not products:
            return ZERO
        key = (self.node_sig[i], _decided(types))          # twins cost the same
        hit = self._leaf_cache.get(key)
        if hit is not None:
            return hit
        node = self.nodes[i]
        worst, joules = 0.0, 0.0
        for (ck, dims), m in self.views(i, key[1]).items():
            flops = 2.0 * macs_view(node, dims) * products
            worst = max(worst, flops / (self.array.class_tflops(ck) * 1e12))
            joules += m * flops * self.array.class_energy_pj_per_flop(ck) * 1e-12
        out = Cost(0.0, worst, joules)
        self._leaf_cache[key] = out
        return out

    def memory_bytes(self, i: int, types: tuple) -> float:
        """Largest per-PE bytes node i keeps: weight + gradient shards and its input activations,
        each in its own width (docs/precision.md).

        Levels left None are assumed to divide the group's share evenly over its PEs (a lower
        bound, exact once every level is decided). Non-decision nodes keep nothing (0.0)."""
        node = self.nodes[i]
        if not node.layer.decision:
            return 0.0
        key = (self.node_sig[i], _decided(types))           # twins keep the same bytes
        hit = self._memory_cache.get(key)
        if hit is None:
            hit = self._memory_cache[key] = self._memory_bytes_uncached(i, key[1])
        return hit

    def _memory_bytes_uncached(self, i: int, decided: tuple) -> float:
        """:meth:`memory_bytes` of node i under its decided types ``decided``, computed."""
        node = self.nodes[i]
        training = self.array.dtype_bytes
        weight_pair_bytes = (G.element_bytes(node.layer.weight_bytes, training)
                             + G.element_bytes(node.layer.weight_grad_bytes, training))
        worst = 0.0
        for (ck, dims), _m in self.views(i, decided).items():
            kept_bytes = weight_pair_bytes * weight_view(node, dims)
            for s, t in enumerate(node.in_tensors):
                if t is not None:
                    kept_bytes += tensor_view(node, dims, t, node.in_maps[s])[0] * G.element_bytes(t.elem_bytes, training)
            n_pes = sum(n for _k, n in ck)
            worst = max(worst, kept_bytes / n_pes)
        return worst

    # -- exact evaluation
    def check_assignment(self, assignment: list[tuple]) -> None:
        """Raise PlanError unless ``assignment`` has one tuple per node, one label per level, each
        label None or one of the node's :meth:`labels`."""
        if len(assignment) != len(self.nodes):
            raise PlanError(f"assignment has {len(assignment)} nodes, model has {len(self.nodes)}")
        for i, types in enumerate(assignment):
            if len(types) != self.n_levels:
                raise PlanError(f"layer {self.names[i]!r}: {len(types)} types for {self.n_levels} levels")
            for t in types:
                if t is not None and t not in self.labels(i):
                    raise PlanError(f"layer {self.names[i]!r}: type '{t}' is not one of {self.labels(i)} in space '{self.space}'")

    def evaluate(self, assignment: list[tuple]) -> "Evaluation":
        """Exact costs of a full assignment (every level decided); memoised per assignment.
        Raises PlanError for a malformed assignment (see :meth:`check_assignment`)."""
        key = tuple(tuple(a) for a in assignment)
        hit = self._eval_cache.get(key)
        if hit is None:
            hit = self._eval_cache[key] = self._evaluate(assignment)
        return hit

    def _evaluate(self, assignment: list[tuple]) -> "Evaluation":
        """:meth:`evaluate` computed: per level intra then edge costs, then compute and memory."""
        self.check_assignment(assignment)
        comm = [[ZERO] * self.n_levels for _ in self.nodes]
        for h in range(self.n_levels):
            for i in range(len(self.nodes)):
                comm[i][h] = self.intra_cost(i, assignment[i], h)
            for i, c in self.level_edge_costs(assignment, h).items():
                comm[i][h] = comm[i][h] + c
        compute = [self.compute_cost(i, assignment[i]) for i in range(len(self.nodes))]
        memory = [self.memory_bytes(i, assignment[i]) for i in range(len(self.nodes))]
        return Evaluation(self, [tuple(a) for a in assignment], comm, compute, memory)

    # -- one level (or all levels jointly) as an optimisation problem
    def level_problem(self, assignment: list[tuple], h: int, objective: str = "comm",
                      lower: str = "ideal", allowed: list[tuple[str, ...] | None] | None = None,
                      memory_cap_bytes: float | None = None, tie: bool = False) -> LevelProblem:
        """Level h as a LevelProblem with levels above fixed from ``assignment``, the repeated
        blocks of :attr:`ties` tied when ``tie`` (:func:`hypar.cost.problems.level_problem`
        states the arguments)."""
        return problems.level_problem(self, assignment, h, objective, lower, allowed, memory_cap_bytes, tie)

    def joint_choices(self) -> list[list[tuple]]:
        """Every node's full type tuples (one label per level), for the joint problem."""
        return problems.joint_choices(self)

    def joint_problem(self, objective: str = "comm", memory_cap_bytes: float | None = None) -> LevelProblem:
        """All levels at once: each node chooses a whole tuple of types (exact, but 3^H choices)."""
        return problems.joint_problem(self, objective, memory_cap_bytes)
