"""The cost model: bytes, seconds and joules of one training step under a plan (SPEC.md §1-4).

A :class:`CostModel` binds a layer graph, a PE array and a partition space. An *assignment* maps
every problem node to a tuple of labels, one per level, top first (``None`` for a level not decided
yet). :meth:`CostModel.evaluate` costs a full assignment exactly; :meth:`CostModel.level_problem`
turns one level (others fixed) into a :class:`hypar.ilp.problem.LevelProblem` for the solvers.

Conventions (SPEC.md "Units and totals"):
- amounts are elements received per subgroup; a level's volume sums them over every subgroup of
  every group; ``comm_bytes`` = volume x dtype bytes summed over levels;
- the time of one collective = the slowest subgroup's per-PE bytes / bandwidth (+ latency per
  message); a layer's time = its slowest PE's compute + its collectives; step time = the sum;
- tensors between layers are costed in the *consumer's* view (its own splits above);
- a tensor fanned out to several consumers is converted once per distinct (view, layout); partial
  errors from several consumers are reduced once per distinct view.

Spaces: ``hypar`` / ``accpar`` keep only decision layers (and opaque ops, which need the full
tensor): the ops between are folded into edges, as in the papers. ``full`` keeps every node and
lets non-weighted nodes choose a layout too.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from hypar import graph as G
from hypar.array import GroupClass, PEArray, split_counts
from hypar.errors import PlanError
from hypar.vocab import Objective, Space
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.cost.strategies import (FULL, PARTIAL, ROWS, COLS, NodeModel, macs_view, node_model, quantity,
                              tensor_view, weight_view)

SPACES = Space.values()
FACTOR_MAX_ENTRIES = 729   # a fanned-out tensor becomes one exact factor term up to this table size
OBJECTIVES = Objective.values()


@dataclass(frozen=True, slots=True)
class Cost:
    """Bytes over links, seconds, joules. Adding costs adds all three (times are sequential)."""

    bytes: float = 0.0
    seconds: float = 0.0
    joules: float = 0.0

    def __add__(self, o: "Cost") -> "Cost":
        return Cost(self.bytes + o.bytes, self.seconds + o.seconds, self.joules + o.joules)

    def value(self, objective: str) -> float:
        return {"comm": self.bytes, "time": self.seconds, "energy": self.joules}[objective]


ZERO = Cost()


@dataclass(frozen=True, slots=True)
class EdgeModel:
    """Tensor ``tensor`` flows from problem node ``p`` into input ``slot`` of problem node ``c``.

    ``source`` names the tensor as it leaves ``p`` (the same as ``tensor.name`` unless folded
    ops lie between): conversions are de-duplicated per source, so a skip tensor reaching a
    consumer directly and another through a folded residual Add is converted once.
    """

    p: int
    c: int
    slot: int
    tensor: G.Tensor
    needs_error: bool
    source: str = ""


# ----------------------------------------------------------------------------- collectives

def allreduce(a: int, fr: tuple[float, ...]) -> list[float]:
    """Per-subgroup elements received by a ring all-reduce of ``a`` elements chunked by ``fr``."""
    k = len(fr)
    return [(k - 1) * c + (a - c) for c in split_counts(a, fr)]


def convert(src: str, dst: str, a: int, bs: int, fs: int, fr: tuple[float, ...]) -> list[float]:
    """Per-subgroup elements received to turn layout ``src`` into ``dst`` (SPEC.md §3-4).

    ``a``: tensor elements in view; ``bs`` / ``fs``: its batch / feature sizes in view; shards
    follow the throughput fractions ``fr``. Partial sums are all-reduced whatever ``dst`` is.
    """
    k = len(fr)
    if src == PARTIAL:
        return allreduce(a, fr)
    if src == dst or src == FULL or a == 0:
        return [0.0] * k
    pb = split_counts(bs, fr)
    pf = split_counts(fs, fr)
    if dst == FULL:
        if src == ROWS:
            return [a * (1 - pb[j] / bs) for j in range(k)]
        return [a * (1 - pf[j] / fs) for j in range(k)]
    if src == ROWS and dst == COLS:
        return [a * (pf[j] / fs) * (1 - pb[j] / bs) for j in range(k)]
    if src == COLS and dst == ROWS:
        return [a * (pb[j] / bs) * (1 - pf[j] / fs) for j in range(k)]
    raise ValueError(f"no conversion {src} -> {dst}")


def messages(src: str, dst: str, k: int) -> int:
    if src == PARTIAL:
        return 2 * (k - 1)
    if src == dst or src == FULL:
        return 0
    return k - 1


# ----------------------------------------------------------------------------- the model

class CostModel:
    """Costs of assignments of a layer graph on a PE array in one partition space."""

    def __init__(self, g, array: PEArray, space: str = "accpar"):
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; choose one of {SPACES}")
        self.g = g
        self.array = array
        self.space = space
        self.n_levels = array.n_levels
        order = G.topo_layers(g)
        if space == "full":
            keep = order
        else:
            keep = [n for n in order if G.layer(g, n).decision or G.layer(g, n).kind == G.OPAQUE]
        self.names: list[str] = keep
        self.index = {n: i for i, n in enumerate(keep)}
        self.nodes: list[NodeModel] = [node_model(g, n, space) for n in keep]
        self.needs_error = self._needs_error(order)
        self.edges: list[EdgeModel] = self._edges(order)
        self.in_edges: list[list[int]] = [[] for _ in keep]
        self.by_source: dict[tuple[int, str], list[EdgeModel]] = defaultdict(list)
        for e, em in enumerate(self.edges):
            self.in_edges[em.c].append(e)
            self.by_source[(em.p, em.source)].append(em)   # one tensor leaving p, all its consumers
        self.use_factors = True       # fanned-out tensors as factor terms (else group terms)
        self._views: dict = {}
        self._leaf_cache: dict = {}
        self._convert_cache: dict = {}
        self._eval_cache: dict = {}
        self._intra_cache: dict = {}
        self._sig_cache: dict = {}

    # -- structure
    def _needs_error(self, order: list[str]) -> dict[str, bool]:
        """A node's output error is needed when it or any ancestor holds weights."""
        need: dict[str, bool] = {}
        for n in order:
            need[n] = G.layer(self.g, n).weighted or any(need[p] for p in self.g.predecessors(n))
        return need

    def _edges(self, order: list[str]) -> list[EdgeModel]:
        g = self.g
        out: list[EdgeModel] = []
        if self.space == "full":
            for c in order:
                for p in sorted(g.predecessors(c), key=self.index.__getitem__):
                    data = g.edges[p, c]
                    for s in data["slots"]:
                        t = data["tensor"]
                        out.append(EdgeModel(self.index[p], self.index[c], s, t, self.needs_error[p], t.name))
            return out
        for c in self.names:
            node = self.nodes[self.index[c]]
            for p_direct, _, data in sorted(g.in_edges(c, data=True), key=lambda e: order.index(e[0])):
                for s in data["slots"]:
                    tensor = node.in_tensors[s] if s < len(node.in_tensors) and node.in_tensors[s] else data["tensor"]
                    for p in self.kept_sources(p_direct):
                        outs = G.layer(g, p).outputs
                        source = outs[0] if outs else tensor.name
                        out.append(EdgeModel(self.index[p], self.index[c], s, tensor, self.needs_error[p], source))
        return out

    def kept_sources(self, start: str) -> list[str]:
        """Kept nodes reached walking backwards from ``start`` through folded nodes."""
        found, seen, stack = [], set(), [start]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.index:
                found.append(n)
                continue
            stack.extend(self.g.predecessors(n))
        return sorted(found, key=self.index.__getitem__)

    def labels(self, i: int) -> tuple[str, ...]:
        return self.nodes[i].labels()

    # -- views
    def views(self, i: int, prefix: tuple) -> dict[tuple, int]:
        """Distribution of node ``i``'s view at level len(prefix): {(class key, dims): group count}."""
        key = (i, prefix)
        hit = self._views.get(key)
        if hit is not None:
            return hit
        node = self.nodes[i]
        if not prefix:
            out = {(self.array.root_key, node.sizes): 1}
        else:
            h = len(prefix) - 1
            parent = self.views(i, prefix[:-1])
            axis = node.strategy(prefix[-1]).split_axis
            ai = node.axes.index(axis) if axis else None
            out: dict[tuple, int] = defaultdict(int)
            for (ck, dims), m in parent.items():
                gc = self.array.classes[h][ck]
                parts = split_counts(dims[ai], [c[1] for c in gc.children]) if ai is not None else None
                for j, (child, _f, _n) in enumerate(gc.children):
                    nd = dims if ai is None else dims[:ai] + (parts[j],) + dims[ai + 1:]
                    out[(child, nd)] += m
            out = dict(out)
        self._views[key] = out
        return out

    # -- pricing one collective at one level
    def _price(self, h: int, entries: list[tuple[GroupClass, int, list[float], int]]) -> Cost:
        """Cost of one collective at level h: entries of (group class, count, received per subgroup, messages)."""
        lv = self.array.levels[h]
        dt = self.array.dtype_bytes
        total_bytes, worst = 0.0, 0.0
        for gc, m, recv, msgs in entries:
            total_bytes += m * sum(recv) * dt
            for j, r in enumerate(recv):
                if r > 0:
                    t = r * dt / gc.children[j][2] / (lv.bandwidth_gbps * 1e9) + msgs * lv.latency_us * 1e-6
                    worst = max(worst, t)
        return Cost(total_bytes, worst, total_bytes * 8 * lv.energy_pj_per_bit * 1e-12)

    def intra_cost(self, i: int, types: tuple, h: int) -> Cost:
        """Collectives inside node i at level h (all-reduce of dW, of F_out, norm statistics)."""
        key = (i, tuple(types[:h + 1]))
        hit = self._intra_cache.get(key)
        if hit is None:
            hit = self._intra_cache[key] = self._intra_cost_uncached(i, types, h)
        return hit

    def _intra_cost_uncached(self, i: int, types: tuple, h: int) -> Cost:
        node = self.nodes[i]
        strat = node.strategy(types[h])
        if not strat.intra:
            return ZERO
        total = ZERO
        classes = self.array.classes[h]
        for q in strat.intra:
            entries = []
            for (ck, dims), m in self.views(i, tuple(types[:h])).items():
                gc = classes[ck]
                fr = tuple(c[1] for c in gc.children)
                a = quantity(node, dims, q)
                entries.append((gc, m, allreduce(a, fr), 2 * (len(fr) - 1)))
            total = total + self._price(h, entries)
        return total

    def _edge_view(self, e: EdgeModel, ctypes: tuple, h: int) -> tuple:
        """Consumer-view signature of edge e's tensor at level h: ((class, elements, bs, fs, count), ...)."""
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

    def _convert_cost(self, h: int, sig: tuple, src: str, dst: str) -> Cost:
        if src == dst or src == FULL:
            return ZERO
        key = (h, sig, src, dst)
        hit = self._convert_cache.get(key)
        if hit is None:
            hit = self._convert_cache[key] = self._convert_cost_uncached(h, sig, src, dst)
        return hit

    def _convert_cost_uncached(self, h: int, sig: tuple, src: str, dst: str) -> Cost:
        classes = self.array.classes[h]
        entries = []
        for ck, a, bs, fs, m in sig:
            gc = classes[ck]
            fr = tuple(c[1] for c in gc.children)
            entries.append((gc, m, convert(src, dst, a, bs, fs, fr), messages(src, dst, len(fr))))
        return self._price(h, entries)

    # -- compute and memory
    def _products(self, i: int) -> int:
        """Matrix products per MAC count: forward, one backward per input needing an error, gradient."""
        node = self.nodes[i]
        lay = node.layer
        if not lay.macs:
            return 0
        n = 1 + (1 if lay.weighted else 0)
        ins = [e for e in self.in_edges[i] if self.edges[e].needs_error]
        slots = {self.edges[e].slot for e in ins}
        n += len(slots) if lay.kind != G.EMBEDDING else 0
        return n

    def compute_cost(self, i: int, types: tuple) -> Cost:
        """Slowest PE's compute time and total compute energy of node i (levels set to None: ideal split)."""
        decided = 0
        while decided < len(types) and types[decided] is not None:
            decided += 1
        key = (i, tuple(types[:decided]))
        hit = self._leaf_cache.get(key)
        if hit is not None:
            return hit
        node = self.nodes[i]
        products = self._products(i)
        if not products:
            out = ZERO
        else:
            worst, joules = 0.0, 0.0
            for (ck, dims), m in self.views(i, key[1]).items():
                flops = 2.0 * macs_view(node, dims) * products
                worst = max(worst, flops / (self.array.class_tflops(ck) * 1e12))
                joules += m * flops * self.array.class_energy_pj_per_flop(ck) * 1e-12
            out = Cost(0.0, worst, joules)
        self._leaf_cache[key] = out
        return out

    def memory_bytes(self, i: int, types: tuple) -> float:
        """Largest per-PE bytes node i keeps: weight + gradient shards and its input activations.

        Levels left None are assumed to divide the group's share evenly over its PEs (a lower
        bound, exact once every level is decided)."""
        node = self.nodes[i]
        if not node.layer.decision:
            return 0.0
        decided = 0
        while decided < len(types) and types[decided] is not None:
            decided += 1
        worst = 0.0
        for (ck, dims), _m in self.views(i, tuple(types[:decided])).items():
            el = 2 * weight_view(node, dims)
            for s, t in enumerate(node.in_tensors):
                if t is not None:
                    el += tensor_view(node, dims, t, node.in_maps[s])[0]
            n_pes = sum(n for _k, n in ck)
            worst = max(worst, el * self.array.dtype_bytes / n_pes)
        return worst

    # -- exact evaluation
    def check_assignment(self, assignment: list[tuple]) -> None:
        if len(assignment) != len(self.nodes):
            raise PlanError(f"assignment has {len(assignment)} nodes, model has {len(self.nodes)}")
        for i, types in enumerate(assignment):
            if len(types) != self.n_levels:
                raise PlanError(f"layer {self.names[i]!r}: {len(types)} types for {self.n_levels} levels")
            for t in types:
                if t is not None and t not in self.labels(i):
                    raise PlanError(f"layer {self.names[i]!r}: type {t!r} is not one of {self.labels(i)} in space {self.space!r}")

    def level_edge_costs(self, assignment: list[tuple], h: int) -> dict[int, Cost]:
        """Level-h edge costs (forward conversions, backward conversions, partial-error reductions),
        de-duplicated per tensor as the module docstring says, attributed to the first consumer."""
        per_node: dict[int, Cost] = defaultdict(lambda: ZERO)
        for (p, _source), es in self.by_source.items():
            ps = self.nodes[p].strategy(assignment[p][h])
            seen_fwd, seen_bwd = set(), set()
            for e in es:
                ctypes = assignment[e.c]
                cs = self.nodes[e.c].strategy(ctypes[h])
                sig = self._edge_view(e, ctypes, h)
                dst = cs.in_layouts[e.slot]
                if (sig, dst) not in seen_fwd:
                    seen_fwd.add((sig, dst))
                    per_node[e.c] = per_node[e.c] + self._convert_cost(h, sig, ps.out_layout, dst)
                if e.needs_error:
                    src = cs.in_err_layouts[e.slot]
                    if (sig, src) not in seen_bwd:
                        seen_bwd.add((sig, src))
                        per_node[e.c] = per_node[e.c] + self._convert_cost(h, sig, src, ps.out_err_layout)
        return per_node

    def evaluate(self, assignment: list[tuple]) -> "Evaluation":
        """Exact costs of a full assignment (every level decided); memoised per assignment."""
        key = tuple(tuple(a) for a in assignment)
        hit = self._eval_cache.get(key)
        if hit is None:
            hit = self._eval_cache[key] = self._evaluate(assignment)
        return hit

    def _evaluate(self, assignment: list[tuple]) -> "Evaluation":
        self.check_assignment(assignment)
        H = self.n_levels
        comm = [[ZERO] * H for _ in self.nodes]
        for h in range(H):
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
                      memory_cap_bytes: float | None = None) -> LevelProblem:
        """Level h as a LevelProblem with levels above fixed from ``assignment``.

        ``lower="ideal"``: levels below are undecided (greedy; compute spread ideally below).
        ``lower="fixed"``: levels below keep ``assignment``'s types; their costs enter the node costs
        per consumer view (not de-duplicated across consumers there, so the caller re-evaluates).
        ``allowed[i]``: the labels node i may take (None: all); the problem's choices are those labels.
        ``memory_cap_bytes``: per-PE capacity, a memory row over :meth:`memory_bytes` (levels below
        ideal or fixed as above).
        """
        H = self.n_levels

        def with_t(i: int, t: str) -> tuple:
            a = list(assignment[i])
            a[h] = t
            if lower == "ideal":
                a[h + 1:] = [None] * (H - h - 1)
            return tuple(a)

        def node_cost(i: int, types: tuple) -> Cost:
            c = self.intra_cost(i, types, h)
            if objective != "comm":
                c = c + self.compute_cost(i, types)
            if lower == "fixed":
                for g in range(h + 1, H):
                    c = c + self.intra_cost(i, types, g) + self._lower_edges_as_consumer(assignment, i, types, g)
            return c

        labels = [self.labels(i) if allowed is None or allowed[i] is None else tuple(allowed[i])
                  for i in range(len(self.nodes))]
        choices = [[with_t(i, t) for t in labels[i]] for i in range(len(self.nodes))]
        return self._build_problem(choices, labels, [h], objective, node_cost, memory_cap_bytes)

    def joint_choices(self) -> list[list[tuple]]:
        """Every node's full type tuples (one label per level), for the joint problem."""
        return [list(itertools.product(self.labels(i), repeat=self.n_levels)) for i in range(len(self.nodes))]

    def joint_problem(self, objective: str = "comm", memory_cap_bytes: float | None = None) -> LevelProblem:
        """All levels at once: each node chooses a whole tuple of types (exact, but 3^H choices)."""
        H = self.n_levels
        choices = self.joint_choices()

        def node_cost(i: int, types: tuple) -> Cost:
            c = ZERO
            for h in range(H):
                c = c + self.intra_cost(i, types, h)
            if objective != "comm":
                c = c + self.compute_cost(i, types)
            return c

        labels = [tuple("/".join(t) for t in ch) for ch in choices]
        return self._build_problem(choices, labels, list(range(H)), objective, node_cost, memory_cap_bytes)

    def _build_problem(self, choices: list[list[tuple]], labels: list[tuple[str, ...]], levels: list[int],
                       objective: str, node_cost_fn, memory_cap_bytes: float | None = None) -> LevelProblem:
        """A LevelProblem over per-node candidate type tuples, with the edge costs of ``levels``."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
        n = len(self.nodes)
        node_cost = [np.array([node_cost_fn(i, ct).value(objective) for ct in choices[i]], dtype=float)
                     for i in range(n)]
        edge_index: dict[tuple[int, int], int] = {}
        edges: list[tuple[int, int]] = []
        edge_cost: list[np.ndarray] = []
        groups: list[GroupTerm] = []
        factors: list[FactorTerm] = []

        def add_pair(p: int, c: int, s: int, t: int, v: float) -> None:
            k = edge_index.get((p, c))
            if k is None:
                k = edge_index[(p, c)] = len(edges)
                edges.append((p, c))
                edge_cost.append(np.zeros((len(choices[p]), len(choices[c]))))
            edge_cost[k][s, t] += v

        def add_matrix(p: int, c: int, mat: np.ndarray) -> None:
            k = edge_index.get((p, c))
            if k is None:
                edge_index[(p, c)] = len(edges)
                edges.append((p, c))
                edge_cost.append(mat.copy())
            else:
                edge_cost[k] += mat

        def charge(p: int, members: list[tuple[int, int]], cost_of_s) -> None:
            """Charge cost_of_s(s) once per producer choice s if any member is chosen."""
            members = sorted(set(members))
            single = len({c for c, _ in members}) == 1
            for s in range(len(choices[p])):
                v = cost_of_s(s)
                if v == 0:
                    continue
                if single:
                    for c, t in members:
                        add_pair(p, c, s, t, v)
                else:
                    groups.append(GroupTerm(v, tuple(members), (p, s)))

        for h in levels:
            for (p, _source), es in self.by_source.items():
                pstrat = [self.nodes[p].strategy(ps[h]) for ps in choices[p]]
                consumers = sorted({e.c for e in es})
                if len(consumers) == 1:
                    c = consumers[0]
                    mat, own = self._pair_costs(h, es, choices[c], pstrat, objective)
                    node_cost[c] += own
                    if mat.any():
                        add_matrix(p, c, mat)
                    continue
                fwd: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
                bwd: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
                for e in es:
                    cnode = self.nodes[e.c]
                    sigs: dict[tuple, tuple] = {}
                    for t, ct in enumerate(choices[e.c]):
                        key = tuple(ct[:h])
                        if key not in sigs:
                            sigs[key] = self._edge_view(e, ct, h)
                        cs = cnode.strategy(ct[h])
                        fwd[(sigs[key], cs.in_layouts[e.slot])].append((e.c, t))
                        if e.needs_error:
                            bwd[(sigs[key], cs.in_err_layouts[e.slot])].append((e.c, t))
                size = len(choices[p]) * math.prod(len(choices[c]) for c in consumers)
                if self.use_factors and len(consumers) > 1 and size <= FACTOR_MAX_ENTRIES:
                    factors.append(self._tensor_factor(h, p, consumers, es, choices, pstrat, objective))
                    continue
                for (sig, dst), members in fwd.items():
                    charge(p, members, lambda s, sig=sig, dst=dst:
                           self._convert_cost(h, sig, pstrat[s].out_layout, dst).value(objective))
                for (sig, src), members in bwd.items():
                    if src == PARTIAL:
                        v = self._convert_cost(h, sig, PARTIAL, FULL).value(objective)
                        if v == 0:
                            continue
                        members = sorted(set(members))
                        if len({c for c, _ in members}) == 1:
                            for c, t in members:
                                node_cost[c][t] += v
                        else:
                            groups.append(GroupTerm(v, tuple(members), None))
                        continue
                    charge(p, members, lambda s, sig=sig, src=src:
                           self._convert_cost(h, sig, src, pstrat[s].out_err_layout).value(objective))
        memory = []
        if memory_cap_bytes is not None:
            coef = [np.array([self.memory_bytes(i, ct) for ct in choices[i]], dtype=float) for i in range(n)]
            memory.append((coef, float(memory_cap_bytes)))
        return LevelProblem(list(self.names), [tuple(l) for l in labels], node_cost, edges, edge_cost, groups,
                            memory, factors)

    def _pair_costs(self, h: int, es: list[EdgeModel], choices_c: list[tuple], pstrat: list,
                    objective: str) -> tuple[np.ndarray, np.ndarray]:
        """Level-h cost of a tensor with one consumer: (producer x consumer matrix, consumer-only
        costs). Per consumer choice, each distinct (view, layout) is converted once (a tensor read
        through two slots of the consumer is converted once); partial errors depend only on the
        consumer."""
        n_p = len(pstrat)
        mat = np.zeros((n_p, len(choices_c)))
        own = np.zeros(len(choices_c))
        for t, ct in enumerate(choices_c):
            fkeys, bkeys = set(), set()
            for e in es:
                sig = self._edge_view(e, ct, h)
                cs = self.nodes[e.c].strategy(ct[h])
                fkeys.add((sig, cs.in_layouts[e.slot]))
                if e.needs_error:
                    bkeys.add((sig, cs.in_err_layouts[e.slot]))
            for sig, dst in fkeys:
                mat[:, t] += [self._convert_cost(h, sig, ps.out_layout, dst).value(objective) for ps in pstrat]
            for sig, src in bkeys:
                if src == PARTIAL:
                    own[t] += self._convert_cost(h, sig, PARTIAL, FULL).value(objective)
                else:
                    mat[:, t] += [self._convert_cost(h, sig, src, ps.out_err_layout).value(objective)
                                  for ps in pstrat]
        return mat, own

    def _tensor_factor(self, h: int, p: int, consumers: list[int], es: list[EdgeModel], choices: list[list[tuple]],
                       pstrat: list, objective: str) -> FactorTerm:
        """The level-h cost of one fanned-out tensor as a table over (producer, consumers...) choices:
        forward conversions once per distinct (view, layout), backward ones once per distinct
        (view, error layout), partial errors reduced once per view -- exactly as evaluate does."""
        fkeys: dict[int, list] = {}
        bkeys: dict[int, list] = {}
        for k, e in enumerate(es):
            cnode = self.nodes[e.c]
            fk, bk = [], []
            for ct in choices[e.c]:
                sig = self._edge_view(e, ct, h)
                cs = cnode.strategy(ct[h])
                fk.append((sig, cs.in_layouts[e.slot]))
                bk.append((sig, cs.in_err_layouts[e.slot]) if e.needs_error else None)
            fkeys[k], bkeys[k] = fk, bk
        pos = {c: j for j, c in enumerate(consumers)}
        grid = tuple(len(choices[c]) for c in consumers)
        n_p = len(choices[p])
        # For every distinct (view, layout) key: where on the consumers' joint grid some edge needs it.
        fmask: dict[tuple, np.ndarray] = {}
        bmask: dict[tuple, np.ndarray] = {}
        for k, e in enumerate(es):
            for t in range(len(choices[e.c])):
                where = [slice(None)] * len(consumers)
                where[pos[e.c]] = t
                fmask.setdefault(fkeys[k][t], np.zeros(grid, bool))[tuple(where)] = True
                if bkeys[k][t] is not None:
                    bmask.setdefault(bkeys[k][t], np.zeros(grid, bool))[tuple(where)] = True
        table = np.zeros((n_p,) + grid)
        lift = (n_p,) + (1,) * len(consumers)
        for (sig, dst), mask in fmask.items():
            cost = [self._convert_cost(h, sig, pstrat[s].out_layout, dst).value(objective) for s in range(n_p)]
            table += np.reshape(cost, lift) * mask[None]
        for (sig, src), mask in bmask.items():
            cost = [self._convert_cost(h, sig, src, pstrat[s].out_err_layout if src != PARTIAL else FULL).value(objective)
                    for s in range(n_p)]
            table += np.reshape(cost, lift) * mask[None]
        return FactorTerm((p,) + tuple(consumers), table)

    def _lower_edges_as_consumer(self, assignment: list[tuple], i: int, types: tuple, g: int) -> Cost:
        """Level-g conversions on node i's input edges with i's types ``types`` (others from assignment)."""
        total = ZERO
        cs = self.nodes[i].strategy(types[g])
        for e_idx in self.in_edges[i]:
            e = self.edges[e_idx]
            ps = self.nodes[e.p].strategy(assignment[e.p][g])
            sig = self._edge_view(e, types, g)
            total = total + self._convert_cost(g, sig, ps.out_layout, cs.in_layouts[e.slot])
            if e.needs_error:
                total = total + self._convert_cost(g, sig, cs.in_err_layouts[e.slot], ps.out_err_layout)
        return total


@dataclass
class Evaluation:
    """Exact costs of one assignment: per node, per level communication; per node compute and memory."""

    model: CostModel
    assignment: list[tuple]
    comm: list[list[Cost]]          # [node][level]
    compute: list[Cost]             # [node]
    memory_bytes: list[float]       # [node], per PE
    _totals: dict = field(default_factory=dict, repr=False)

    def totals(self) -> dict:
        """The `totals` object of plans and `hypar evaluate --json` (SPEC.md "Units and totals");
        a fresh dict each call (computed once)."""
        if not self._totals:
            self._totals.update(self._sum_totals())
        return dict(self._totals)

    def _sum_totals(self) -> dict:
        comm = sum((c for row in self.comm for c in row), ZERO)
        compute = sum(self.compute, ZERO)
        return {
            "comm_bytes": comm.bytes,
            "time_s": comm.seconds + compute.seconds,
            "compute_s": compute.seconds,
            "comm_s": comm.seconds,
            "energy_j": comm.joules + compute.joules,
            "peak_mem_bytes_per_pe": sum(self.memory_bytes),
        }

    def objective(self, objective: str) -> float:
        t = self.totals()
        return {"comm": t["comm_bytes"], "time": t["time_s"], "energy": t["energy_j"]}[objective]

    def level_comm(self, h: int) -> Cost:
        return sum((row[h] for row in self.comm), ZERO)

    def layers(self) -> list[dict]:
        """Per-layer rows with per-level communication (JSON-ready)."""
        rows = []
        for i, name in enumerate(self.model.names):
            node = self.model.nodes[i]
            rows.append({
                "name": name,
                "op": node.layer.op,
                "types": list(self.assignment[i]),
                "levels": [{"level": h, "comm_bytes": c.bytes, "comm_s": c.seconds, "energy_j": c.joules}
                           for h, c in enumerate(self.comm[i])],
                "comm_bytes": sum(c.bytes for c in self.comm[i]),
                "compute_s": self.compute[i].seconds,
                "time_s": self.compute[i].seconds + sum(c.seconds for c in self.comm[i]),
                "energy_j": self.compute[i].joules + sum(c.joules for c in self.comm[i]),
                "mem_bytes_per_pe": self.memory_bytes[i],
            })
        return rows
