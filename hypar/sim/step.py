"""A functional simulator: run one training step on virtual PEs exactly as a plan says, count every
element sent (numpy only).

:func:`simulate` takes a :class:`hypar.cost.CostModel` and a full assignment (types per level for
every kept node) and

1. runs the *reference* step on one device, straight from the layer graph
   (:mod:`hypar.sim.reference`), on a thread of its own beside the distributed step, with the
   numerics checks queued behind it (:mod:`hypar.sim.background`);
2. runs the *distributed* step (:class:`TrainingStep`): every virtual PE holds only its shards
   (:class:`hypar.sim.mesh.Dist`: its region's block, or an array of the tensor's full shape that
   is NaN wherever the PE holds nothing; either way a missing element is NaN and poisons the
   result instead of being read silently); every exchange is explicit point-to-point sends
   between PEs of one group at one named level (:mod:`hypar.sim.comm`), and every element
   received is counted per layer, per edge (or intra-layer quantity) and per level
   (:mod:`hypar.sim.ledger`). Replicas holding equal values share one array and compute once
   (:func:`hypar.sim.mesh.share_replicas`): what is sent is counted per PE all the same.

Both steps compute in one float type (``dtype``: float64, or float32 with a looser tolerance).

Amounts are elements received, summed over every PE of every group (SPEC.md §3 "Units"). Edge
conversions follow the cost model's ``convention`` (:mod:`hypar.sim.edges`):

- ``hierarchical``: the SPEC's fixed order, executed step by step with point-to-point sends
  (:mod:`hypar.sim.hierorder`); a producer's tensor converted once per distinct target layouts,
  consumers' errors with equal layouts summed locally and converted once (HIER_SEMANTICS.md §3);
- ``reference``: level by level (messages at level h only between PEs that differ in their level-h
  coordinate) in an order that realises the model's per-level amounts on the consumer's view
  (:func:`hypar.sim.schedule.schedule`); when no order does, the conversion is flagged and the
  difference reported as a cost-model limitation. One producer tensor converted by the same step
  for several consumers (the model's de-duplication key) moves once; errors of several consumers
  in the same state are summed locally and converted once (:mod:`hypar.sim.convert`).

Either way a conversion is charged to its first consumer, and partial sums inside a layer (dW,
F_out, normalisation statistics) are all-reduced hierarchically (:meth:`Comm.allreduce_levels`).
What runs and what is reported instead: :mod:`hypar.sim.support`.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from hypar import graph as G
from hypar.sim.comm import Comm
from hypar.sim.convert import Conversion, ErrorItem
from hypar.sim.edges import edges_for
from hypar.sim.errors import SimulationError, UnevenSplit, Unsupported
from hypar.sim.graphwalk import folded_between, folded_error_to_sources, pre_chain, producers, tensor_meta
from hypar.sim.ledger import Ledger
from hypar.sim.mesh import (Dist, Mesh, TensorAxes, add, mask_to_layout, max_abs, max_abs_error, region_key, same_regions,
                             scatter)
from hypar.sim.background import Background
from hypar.sim.blas import blas_threads
from hypar.sim.broadcast import broadcasting
from hypar.sim.lookup import lookup_backward, lookup_forward
from hypar.sim.ops import WEIGHTED_KINDS, is_lookup, is_reduce, is_split, several_outputs
from hypar.sim.reference import Reference, seeded_data
from hypar.sim.result import DEFAULT_TOL, SimResult, default_tol
from hypar.sim.sharded import Charge, ShardContext, local_backward, local_forward, several_backward, several_forward
from hypar.sim.support import unsupported
from hypar.sim.weighted import weighted_backward, weighted_forward
from hypar.sim.widths import StepWidths
from hypar.vocab import Convention

__all__ = ["DEFAULT_TOL", "SimResult", "SimulationError", "TrainingStep", "simulate"]


class EdgePre(NamedTuple):
    """How an in-edge was converted: the folded ops run on the producer's side first ((node,
    output) in order), the tensor converted, and the conversion's base key (producer, tensor key)."""

    pre: list[tuple[str, str]]
    conv_t: str
    base: tuple


@dataclass
class KeptInputs:
    """What a kept node keeps from its forward pass for its backward: its activation inputs per slot
    (after folded ops), the consumer-side tensors by name, and the folded ops its producers ran."""

    slots: list[Dist] = field(default_factory=list)
    vals: dict[str, Dist] = field(default_factory=dict)
    pre_nodes: set[str] = field(default_factory=set)


class TrainingStep:
    """The distributed training step of one assignment on a cost model's graph and array.

    ``run()`` executes ``forward()``, ``backward()`` and ``attribute()`` and returns the filled
    :class:`SimResult`. The step's state lives in named attributes: the forward outputs and
    inputs each kept node keeps until its backward is done, the errors on their way to the
    producers, and the ledger of counted steps.
    """

    def __init__(self, model, assignment: list[tuple], seed: int, res: SimResult, dtype=np.float64):
        """``assignment``: a full one (every level of every kept node decided); ``res``: the result
        to fill (its ``flags`` and ``notes`` grow while the step runs); ``dtype``: the float type
        of every value (data, reference and distributed step)."""
        self.model, self.res, self.g = model, res, model.g
        self.names = list(model.names)
        self.H = model.n_levels
        arr = model.array
        self.mesh = Mesh(arr.fanouts, arr, strict=model.convention != Convention.HIERARCHICAL)
        self.comm = Comm(self.mesh)
        self.ledger = Ledger(self.comm, self.H)
        self.widths = StepWidths(model)                        # bytes per element of each counted step
        self.dtype = np.dtype(dtype)
        self.data = seeded_data(self.g, np.random.default_rng(seed), dtype)
        self.bg = Background(self.g, self.data,               # the reference and the checks, meanwhile
                             {G.layer(self.g, n).outputs[0] for n in self.names})
        self.checks: dict[int, list[Future]] = defaultdict(list)   # node -> (max error, scale) futures
        self.strat = [[model.nodes[i].strategy(t) for t in assignment[i]] for i in range(len(self.names))]
        meta = tensor_meta(self.g)
        self.axes_of = {name: TensorAxes.of(t) for name, t in meta.items()}
        self.shape_of = {name: tuple(t.shape) for name, t in meta.items()}
        self.ctx = ShardContext(self.ledger, self.data.weights, res, self.axes_of,
                                model.convention == Convention.HIERARCHICAL)
        self.producer = producers(self.g)
        self.input_names = {t.name for t in self.g.graph.get("inputs", ())}
        self.node_name: str | None = None                    # the node in progress (named in errors)
        # forward state
        self.edges = edges_for(model.convention, self.ledger, res.flags)   # edge conversions
        self.pre_memo: dict[tuple, Dist] = {}                 # (producer, folded node, output) -> value
        self.kept: dict[int, KeptInputs] = {}
        self.edge_pre: dict[int, EdgePre] = {}                # edge index -> how it was converted
        self.out: dict[int, Dist] = {}                        # kept node -> its (first) output
        self.split_outs: dict[int, dict] = defaultdict(dict)  # a kept Split: output tensor -> Dist
        # backward state
        self.e_outs: dict[int, dict] = defaultdict(dict)      # node -> output tensor -> error Dist
        self.pending: dict[int, list] = defaultdict(list)     # producer -> [ErrorItem]
        self.max_err = [0.0] * len(self.names)
        self.scale = [0.0] * len(self.names)

    # -- small accessors
    def layer(self, i: int) -> G.Layer:
        """Kept node i's layer."""
        return G.layer(self.g, self.names[i])

    def layouts(self, i: int, field_name: str, slot: int | None = None) -> tuple:
        """Node i's strategy attribute ``field_name`` per level (``slot``: an entry of it)."""
        if slot is None:
            return tuple(getattr(self.strat[i][h], field_name) for h in range(self.H))
        return tuple(getattr(self.strat[i][h], field_name)[slot] for h in range(self.H))

    def output_of(self, p: int, tensor: str) -> Dist:
        """Kept node p's output ``tensor`` (its first output unless p is a kept Split)."""
        return self.split_outs[p].get(tensor, self.out[p])

    @property
    def ref(self) -> Reference:
        """The one-device reference step (waits for its thread)."""
        return self.bg.reference()

    def run(self) -> SimResult:
        """Forward, backward, then charge the counts: the filled result. The reference and the
        numerics checks run on a thread of their own meanwhile; stopped when the step raises."""
        try:
            self.forward()
            self.backward()
            self.collect_checks()
        except BaseException:
            self.bg.cancel()
            raise
        self.bg.close()
        self.attribute()
        return self.res

    def check(self, i: int, fn) -> None:
        """Queue ``fn(reference) -> (max |distributed - reference|, max |reference|)`` for node i."""
        self.checks[i].append(self.bg.check(fn))

    def collect_checks(self) -> None:
        """Every node's largest difference from the reference and the reference's scale."""
        for i, futures in self.checks.items():
            for f in futures:
                err, scale = f.result()
                self.max_err[i] = max(self.max_err[i], err)
                self.scale[i] = max(self.scale[i], scale)

    # -- forward
    def forward(self) -> None:
        """Every kept node's forward pass in order: inputs converted (and folded ops run), output.
        A producer's output is dropped after its last consumer converted it, unless the backward
        pass reads it (folded ops run on its side of an edge); its check holds it until done."""
        last: dict[int, list[int]] = defaultdict(list)       # consumer -> producers it is the last of
        users = {self.model.edges[e].p: i for i in range(len(self.names)) for e in self.model.in_edges[i]}
        for p, i in users.items():
            last[i].append(p)
        for i, n in enumerate(self.names):
            self.node_name = n
            self._forward_node(i)
            for p in last.get(i, ()):
                if not any(ep.pre for e, ep in self.edge_pre.items() if self.model.edges[e].p == p):
                    self.out.pop(p, None)
        self.edges.end_forward()             # (memory: the converted states live on in self.kept)

    def _forward_node(self, i: int) -> None:
        """Node i's inputs (kept in ``self.kept[i]``) and output (``self.out[i]``)."""
        lay = self.layer(i)
        weighted = lay.kind in WEIGHTED_KINDS
        dsts = [self.layouts(i, "in_layouts", s) for s in range(min(1, len(lay.inputs)) if weighted
                                                                 else len(lay.inputs))]
        kept = self.kept[i] = KeptInputs()
        folded = folded_between(self.model, i)
        for s, dst in enumerate(dsts):
            kept.slots.append(self._input_slot(i, s, dst, folded, kept))
        out_t = lay.outputs[0]
        if is_lookup(lay):
            self.out[i] = lookup_forward(self.ledger, i, lay, self.data.weights[self.names[i]], self.strat[i],
                                         self.axes_of[out_t], self.ctx.hierarchical)
        elif weighted:
            self.out[i] = weighted_forward(self.ledger, i, lay, self.data.weights[self.names[i]], kept.slots[0],
                                           self.strat[i], self.shape_of[out_t], self.axes_of[out_t])
        else:
            self._unweighted_output(i, kept.slots)
        out = self.out[i]
        self.check(i, lambda ref: (max_abs_error(out, ref.val[out_t]), max_abs(ref.val[out_t])))

    def _input_slot(self, i: int, s: int, dst: tuple, folded: list[str], kept: KeptInputs) -> Dist:
        """Input ``s`` of node i in layouts ``dst``: loaded (a graph input), or converted from the
        producers and passed through the consumer-side folded ops."""
        tname = self.layer(i).inputs[s]
        if tname in self.input_names:
            return scatter(self.mesh, self.data.inputs[tname], dst, self.axes_of[tname])
        for e_idx in self.model.in_edges[i]:
            if self.model.edges[e_idx].slot == s:
                self._convert_in_edge(i, e_idx, dst, folded, kept)
        self._run_folded_post(i, folded, kept)
        if tname not in kept.vals:
            raise SimulationError(f"{self.names[i]}: input {tname} not reached from kept producers")
        return kept.vals[tname]

    def _convert_in_edge(self, i: int, e_idx: int, dst: tuple, folded: list[str], kept: KeptInputs) -> None:
        """Run the producer-side folded ops of an in-edge, then convert the result to ``dst``."""
        e = self.model.edges[e_idx]
        pre = pre_chain(self.model, e.p, i, e.slot, folded, self.producer)
        kept.pre_nodes.update(fn_ for fn_, _t in pre)
        x = self._run_pre_chain(i, e.p, e.source, pre)
        conv_t = pre[-1][1] if pre else e.source
        if tuple(x.shape) != tuple(e.tensor.shape):
            raise Unsupported(f"{self.names[i]}: the cost model converts {e.tensor.name} {e.tensor.shape} from "
                              f"{self.names[e.p]}, but the folded ops between need {conv_t} {x.shape} "
                              "converted (a size-changing op after a folded Add or Concat)")
        base = (e.p, e.source if conv_t == e.source else f"{e.source}|{conv_t}")
        self.edge_pre[e_idx] = EdgePre(pre, conv_t, base)
        self.widths.note(base, e.tensor)
        conv = Conversion("fwd", base, f"{self.names[e.p]}:{conv_t} -> {self.names[i]}", i, dst)
        kept.vals[conv_t] = self.edges.forward(conv, x, dst).compact()

    def _run_pre_chain(self, i: int, p: int, source: str, pre: list[tuple[str, str]]) -> Dist:
        """Producer p's ``source`` through the folded ops ``pre`` (each run once per producer)."""
        x = self.output_of(p, source)
        for fn_, out_t in pre:
            hit = self.pre_memo.get((p, fn_, out_t))
            x = hit if hit is not None else local_forward(G.layer(self.g, fn_), [x], self.ctx,
                                                          Charge("fold", i, f"pre:{p}"), out=out_t)
            self.pre_memo[(p, fn_, out_t)] = x
        return x

    def _run_folded_post(self, i: int, folded: list[str], kept: KeptInputs) -> None:
        """The consumer-side folded ops whose inputs are all there, per PE."""
        for fn_ in folded:
            fl = G.layer(self.g, fn_)
            if fn_ in kept.pre_nodes or fl.outputs[0] in kept.vals or not all(t in kept.vals for t in fl.inputs):
                continue
            xs = [kept.vals[t] for t in fl.inputs]
            if any(x.layouts != xs[0].layouts for x in xs):
                raise SimulationError(f"{self.names[i]}: folded {fn_} inputs in different layouts")
            for o in (fl.outputs if is_split(fl) else fl.outputs[:1]):
                kept.vals[o] = local_forward(fl, xs, self.ctx, Charge("fold", i, "post"), out=o)

    def _unweighted_output(self, i: int, slots: list[Dist]) -> None:
        """An unweighted kept node's output from its inputs (in its output layouts)."""
        lay = self.layer(i)
        out_l = self.layouts(i, "out_layout")
        own = lay.kind == G.MATMUL_ACT or is_reduce(lay) or broadcasting(lay, [x.shape for x in slots])
        for s, x in enumerate(slots):
            if x.layouts != out_l and not own:
                raise SimulationError(f"{self.names[i]}: slot {s} in {x.layouts}, output {out_l}")
        charge = Charge("intra", i, "node")
        if lay.kind == G.MATMUL_ACT:
            self.out[i] = self._activation_product(slots, out_l, self.axes_of[lay.outputs[0]])
        elif several_outputs(lay):
            self.split_outs[i] = several_forward(lay, slots, self.ctx, charge)
            self.out[i] = self.split_outs[i][lay.outputs[0]]
        else:
            self.out[i] = local_forward(lay, slots, self.ctx, charge)
        if self.out[i].layouts != out_l:
            raise SimulationError(f"{self.names[i]}: output in {self.out[i].layouts}, the plan says {out_l}")

    def _activation_product(self, slots: list[Dist], out_l: tuple, axes: tuple) -> Dist:
        """slot 0 @ slot 1 on every PE: on the blocks when both and the output hold the same
        (batch, head) indices, else on full-shape arrays (a replicated operand), cut to the output."""
        a, b = slots
        shape = a.shape[:-1] + (b.shape[-1],)
        if same_regions(a, b) and region_key(a.layouts) == region_key(out_l):
            return Dist(self.mesh, shape, out_l, axes=axes, blocks=[x @ y for x, y in zip(a.blocks, b.blocks)])
        vals = [a.vals[p] @ b.vals[p] for p in range(self.mesh.P)]
        return mask_to_layout(Dist(self.mesh, shape, out_l, vals, axes))

    # -- backward
    def backward(self) -> None:
        """Every kept node's backward pass in reverse order; errors of a node's output accumulate in
        its needed layouts, then go back through its folded ops to its producers."""
        self._seed_output_errors()
        for i in reversed(range(len(self.names))):
            self.node_name = self.names[i]
            self._backward_node(i)

    def _seed_output_errors(self) -> None:
        """The fixed errors at the graph outputs, pushed back to the kept producers and loaded."""
        for t in self.g.graph.get("outputs", ()):
            errs = folded_error_to_sources(self.model, t.name, self.data.out_err[t.name], _RefValues(self),
                                           self.data.weights)
            for i, e in errs.items():
                o = self.layer(i).outputs[0]
                loaded = scatter(self.mesh, e, self.layouts(i, "out_err_layout"), self.axes_of[o])
                self.e_outs[i][o] = add(self.e_outs[i].get(o), loaded)

    def _backward_node(self, i: int) -> None:
        """Node i's output error in, numerics checked, input errors queued for its producers."""
        self.bg.advance(self.names[i])                       # the reference's errors down to here
        lay = self.layer(i)
        out_t = lay.outputs[0]
        lays = self.layouts(i, "out_err_layout")
        self._receive_errors(i, lays)
        for o in (lay.outputs if several_outputs(lay) else lay.outputs[:1]):
            if o not in self.e_outs[i]:
                self.e_outs[i][o] = scatter(self.mesh, np.zeros(self.shape_of[o], self.dtype), lays, self.axes_of[o])
        eo = self.e_outs[i][out_t]
        checked = self.model.structure.needs_error[self.names[i]]      # else no error is sent to it (a mask's path)

        def error_check(ref: Reference) -> tuple[float, float]:
            e_ref = ref.err.pop(out_t)
            return (max_abs_error(eo, e_ref) if checked else 0.0), 0.0

        self.check(i, error_check)
        needs = [e for e in self.model.in_edges[i] if self.model.edges[e].needs_error]
        e_slots = self._input_errors(i, eo)
        if needs:
            self._send_errors(i, needs, self._through_folded(i, e_slots))
        self.release(i)

    def _receive_errors(self, i: int, lays: tuple) -> None:
        """The errors of node i's output from its consumers, converted to ``lays`` (and back through
        the producer-side folded ops), summed per output tensor."""
        out_t = self.layer(i).outputs[0]
        for c, e_idx, d in self.edges.backward(self.pending.pop(i, []), lays, self._describe_error):
            ep = self.edge_pre[e_idx]
            source = self.model.edges[e_idx].source
            d = self._back_through_pre(i, c, ep, source, d.compact())
            key_t = source if source in self.split_outs[i] else out_t
            self.e_outs[i][key_t] = add(self.e_outs[i].get(key_t), d)

    def _describe_error(self, c: int, e_idx: int) -> tuple[tuple, str]:
        """(conversion base, label) of consumer c's error along edge ``e_idx``."""
        ep = self.edge_pre[e_idx]
        return ep.base, f"{self.names[c]} -> {self.names[self.model.edges[e_idx].p]}:{ep.conv_t}"

    def _back_through_pre(self, i: int, c: int, ep: EdgePre, source: str, d: Dist) -> Dist:
        """An error converted for producer i, back through the folded ops i ran for consumer c."""
        pre = ep.pre
        for k in reversed(range(len(pre))):
            x_in = self.output_of(i, source) if k == 0 else self.pre_memo[(i,) + pre[k - 1]]
            d = local_backward(G.layer(self.g, pre[k][0]), [x_in], d, 0, d.layouts, self.ctx,
                               Charge("fold", c, f"pre:{i}"), out=pre[k][1])
        return d

    def _input_errors(self, i: int, eo: Dist) -> list[Dist | None]:
        """The errors of node i's input slots for its output error ``eo`` (a weighted node also
        checks its weight gradient)."""
        lay, n = self.layer(i), self.names[i]
        kept = self.kept[i]
        charge = Charge("intra", i, "node")
        if is_lookup(lay):
            dw = lookup_backward(self.ledger, i, lay, self.data.weights[n], eo, self.strat[i])
            self.check(i, lambda ref: (dw.max_abs_error(ref.dW[n]), max_abs(ref.dW.pop(n))))
            return []
        if lay.kind in WEIGHTED_KINDS:
            dw, ein = weighted_backward(self.ledger, i, lay, self.data.weights[n], kept.slots[0], eo, self.strat[i])
            self.check(i, lambda ref: (dw.max_abs_error(ref.dW[n]), max_abs(ref.dW.pop(n))))
            return [ein]
        if several_outputs(lay):
            return several_backward(lay, kept.slots, self.e_outs[i], [self.layouts(i, "in_err_layouts", s)
                                                                      for s in range(len(lay.inputs))], self.ctx, charge)
        return [local_backward(lay, kept.slots, eo, s, self.layouts(i, "in_err_layouts", s), self.ctx, charge)
                if self.error_needed(lay.inputs[s]) else None for s in range(len(lay.inputs))]

    def error_needed(self, tensor: str) -> bool:
        """Does the backward pass need the error of ``tensor`` (its producer or an ancestor holds
        weights; a graph input's never): unneeded errors are not computed, so nothing is sent
        for them (e.g. a broadcast attention mask's)."""
        p = self.producer.get(tensor)
        return p is not None and self.model.structure.needs_error[p]

    def _through_folded(self, i: int, e_slots: list[Dist]) -> dict[str, Dist]:
        """Each slot's error pushed back through node i's consumer-side folded ops (locally):
        tensor name -> error."""
        lay, kept = self.layer(i), self.kept[i]
        err_t: dict[str, Dist] = {}
        for s, d in enumerate(e_slots):
            if d is not None:
                err_t[lay.inputs[s]] = add(err_t.get(lay.inputs[s]), d)
        charge = Charge("fold", i, "post")
        for fn_ in reversed(folded_between(self.model, i)):
            fl = G.layer(self.g, fn_)
            if fn_ in kept.pre_nodes:
                continue
            xs = [kept.vals[t] for t in fl.inputs]
            if is_split(fl):
                for o in fl.outputs:
                    eo_f = err_t.pop(o, None)
                    if eo_f is not None:
                        back = local_backward(fl, xs, eo_f, 0, eo_f.layouts, self.ctx, charge, out=o)
                        err_t[fl.inputs[0]] = add(err_t.get(fl.inputs[0]), back)
                continue
            eo_f = err_t.pop(fl.outputs[0], None)
            if eo_f is None:
                continue
            for k, t in enumerate(fl.inputs):
                if self.error_needed(t):
                    err_t[t] = add(err_t.get(t), local_backward(fl, xs, eo_f, k, eo_f.layouts, self.ctx, charge))
        return err_t

    def _send_errors(self, i: int, needs: list[int], err_t: dict[str, Dist]) -> None:
        """Queue the error of each needed in-edge's converted tensor for its producer."""
        for e_idx in needs:
            e = self.model.edges[e_idx]
            conv_t = self.edge_pre[e_idx].conv_t if e_idx in self.edge_pre else e.source
            src = err_t.get(conv_t)
            if src is None:
                raise SimulationError(f"{self.names[i]}: no error reached {conv_t}")
            self.pending[e.p].append(ErrorItem(i, e_idx, src))

    def release(self, i: int) -> None:
        """Node i's backward is done (its consumers came before it): drop what it kept."""
        for d in (self.kept, self.out, self.split_outs, self.e_outs):
            d.pop(i, None)
        for k in [k for k in self.pre_memo if k[0] == i]:
            del self.pre_memo[k]

    # -- counts to layers
    def attribute(self) -> None:
        """Charge the counted steps to layers (intra to the node, edge conversions to their first
        consumer), note conversions the model de-duplicates but the simulator cannot, and store
        the numeric errors in the result."""
        self.ledger.note_split_dedup(self.res)
        self.ledger.attribute(self.res, len(self.names), self.widths)
        self.res.max_err = self.max_err
        self.res.scale = self.scale


class _RefValues:
    """The reference's values by tensor name, fetched (waiting for the reference) when read."""

    def __init__(self, step: TrainingStep):
        self.step = step

    def __getitem__(self, name: str) -> np.ndarray:
        return self.step.ref.val[name]


def simulate(model, assignment: list[tuple], seed: int = 0, tol: float | None = None,
             dtype=np.float64) -> SimResult:
    """Reference step vs distributed step of ``assignment`` on ``model``'s graph and array.

    ``assignment``: one tuple of types (one per level) per kept node, every level decided (else
    ValueError; an invalid one raises as ``model.check_assignment`` does). ``seed`` draws the
    weights, inputs and output errors; ``dtype`` (float64 or float32) is the float type both
    steps compute in; ``tol`` (default :func:`default_tol` of ``dtype``) is stored for
    ``SimResult.ok_numerics``. What it
    cannot run is listed in ``SimResult.unsupported`` (by layer name) and nothing is counted; a
    lost message raises :class:`SimulationError`."""
    tol = default_tol(dtype) if tol is None else tol
    res = SimResult(list(model.names), model.n_levels, model.array.dtype_bytes, tol=tol)
    model.check_assignment(assignment)
    res.unsupported = unsupported(model, assignment)
    if res.unsupported:
        return res
    if any(t is None for a in assignment for t in a):
        raise ValueError("simulate needs every level of every node decided")
    step = TrainingStep(model, assignment, seed, res, dtype)
    try:
        with blas_threads():          # this thread's share of the cores (the reference's thread has its own)
            return step.run()
    except UnevenSplit as exc:
        # only a strict mesh (the reference convention) raises it
        res.unsupported = [f"{step.node_name}: {exc} (uneven split over several levels; choose a batch / widths "
                           f"divisible by {model.array.n_pes})"]
    except Unsupported as exc:
        res.unsupported = [str(exc)]
    res.clear_counts()
    return res
