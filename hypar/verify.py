"""Check a plan both ways: it computes the one-device training step, and it moves exactly the bytes
the cost model (and the plan file) says.

- :func:`verify_assignment` runs :func:`hypar.sim.step.simulate` and compares, per layer and level,
  the bytes counted on the virtual PEs with :meth:`hypar.cost.CostModel.evaluate`'s prediction
  (exactly: same integers up to float rounding), and the reassembled outputs, output errors and
  weight gradients with the reference (within ``tol x max(1, max |reference|)``). Under the
  ``reference`` convention on several levels the step executed is still the one real execution
  (SPEC §3's hierarchical order) and the papers' prices are compared with what it sent as
  *information*, not failure (the papers' convention prices some conversions below what any
  execution must send): such a report passes or fails on numerics and unsupported ops alone.
- :func:`check_plan_costs` compares what a full plan file records for every layer and level
  (``layers[i].costs.levels[h].comm_bytes``) with the cost model on the plan's own types, batch
  and array, so a hand-edited plan whose costs no longer match its types is rejected by name.
- :func:`verify_plan` does both for a model file and a plan (what ``hypar verify`` runs), priced
  under the plan's convention unless the caller names one (``convention``).

Nothing here prints; :func:`report_table` / :meth:`VerifyReport.to_json` format the result.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hypar import api
from hypar.array import default_array
from hypar.cost import CostModel
from hypar.errors import PlanError
from hypar.onnx.binding import with_batch
from hypar.plan import Plan
from hypar.sim import simulate
from hypar.vocab import Convention

REL_BYTES = 1e-9    # counted vs predicted: float rounding only (plans keep 12 significant digits)


@dataclass
class LevelCheck:
    """One layer at one level: the bytes the simulator counted and the cost model predicted."""

    level: int
    counted_bytes: float
    predicted_bytes: float

    @property
    def ok(self) -> bool:
        """True when counted and predicted bytes agree (up to float rounding)."""
        return _same(self.counted_bytes, self.predicted_bytes)


@dataclass
class Information:
    """A level of a layer where the ``reference`` convention's price differs from what the
    execution sent (several levels only; not a failure): bytes sent, the reference price, the
    ``hierarchical`` price of the same types, and why they may differ (or "")."""

    level: int
    counted_bytes: float
    predicted_bytes: float
    hierarchical_bytes: float
    why: str = ""

    def text(self) -> str:
        """One line for people, e.g. "level 1: sent 768 bytes, the reference convention prices
        512 (256 below what was sent); hierarchical prices 768"."""
        diff = self.predicted_bytes - self.counted_bytes
        side = "below" if diff < 0 else "above"
        out = (f"level {self.level}: sent {self.counted_bytes:,.0f} bytes, the reference convention prices "
               f"{self.predicted_bytes:,.0f} ({abs(diff):,.0f} {side} what was sent); hierarchical prices "
               f"{self.hierarchical_bytes:,.0f}")
        return out + (f" ({self.why})" if self.why else "")


@dataclass
class LayerCheck:
    """One layer's check: its types, the largest difference from the reference (``max_err``)
    against the reference's scale, the bytes per level, why it fails (``reasons``) and, under
    ``reference`` on several levels, where its price differs from what was sent (``information``)."""

    name: str
    op: str
    types: tuple
    max_err: float
    scale: float
    levels: list[LevelCheck]
    reasons: list[str] = field(default_factory=list)
    information: list[Information] = field(default_factory=list)

    @property
    def status(self) -> str:
        """"PASS" without reasons, else "FAIL"."""
        return "PASS" if not self.reasons else "FAIL"


@dataclass
class VerifyReport:
    """Everything ``hypar verify`` found: the setting (model, array, space, batch, seed,
    tolerance, the cost model's pricing convention), one :class:`LayerCheck` per node, the ops it
    could not simulate, the plan's cost mismatches and every counted transfer.
    ``bytes_must_match``: counted and predicted bytes decide PASS (False under ``reference`` on
    several levels: their differences are the layers' ``information``)."""

    model: str
    array: str
    fanouts: tuple
    space: str
    batch: int | None
    seed: int
    tol: float
    dtype_bytes: int
    convention: str = ""
    float_type: str = "float64"          # what both steps computed in (the text report says it)
    layers: list[LayerCheck] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    plan_errors: list[str] = field(default_factory=list)
    plan_batch: int | None = None
    plan_checked: bool = False
    # every counted exchange: (layer charged, kind, what, level, bytes); kind: intra / fwd / bwd / fold
    transfers: list[tuple] = field(default_factory=list)
    bytes_must_match: bool = True

    @property
    def ok(self) -> bool:
        """True when every layer passes, nothing is unsupported and the plan's costs match."""
        return not self.unsupported and not self.plan_errors and all(l.status == "PASS" for l in self.layers)

    def failures(self) -> list[str]:
        """One line per failure, each naming the layer (and level)."""
        out = [f"cannot simulate {u}" for u in self.unsupported]
        out += self.plan_errors
        for l in self.layers:
            out += [f"{l.name}: {r}" for r in l.reasons]
        return out

    def to_json(self) -> dict:
        """The report as ``hypar verify --json`` prints it."""
        return {
            "ok": self.ok,
            "model": self.model,
            "array": {"name": self.array, "fanouts": list(self.fanouts), "dtype_bytes": self.dtype_bytes},
            "space": self.space,
            "convention": self.convention,
            "batch": self.batch,
            "plan_batch": self.plan_batch,
            "seed": self.seed,
            "tolerance": self.tol,
            "unsupported": list(self.unsupported),
            "plan_costs_checked": self.plan_checked,
            "plan_cost_errors": list(self.plan_errors),
            "layers": [{
                "name": l.name, "op": l.op, "types": list(l.types), "status": l.status,
                "max_err": None if math.isinf(l.max_err) else l.max_err, "ref_scale": l.scale,
                "levels": [{"level": c.level, "counted_bytes": c.counted_bytes,
                            "predicted_bytes": c.predicted_bytes} for c in l.levels],
                "reasons": list(l.reasons),
            } for l in self.layers],
            "transfers": [{"layer": layer, "kind": kind, "what": what, "level": h, "bytes": b}
                          for layer, kind, what, h, b in self.transfers],
            "bytes_must_match": self.bytes_must_match,
            "information": [{"layer": l.name, "level": i.level, "counted_bytes": i.counted_bytes,
                             "reference_bytes": i.predicted_bytes, "hierarchical_bytes": i.hierarchical_bytes,
                             "text": i.text()} for l in self.layers for i in l.information],
        }


def _same(a: float, b: float) -> bool:
    """a and b equal up to float rounding (``REL_BYTES``)."""
    return abs(a - b) <= REL_BYTES * max(1.0, abs(a), abs(b))


def executed_model(model: CostModel) -> CostModel:
    """The model whose convention the simulated step executes: ``model`` itself, except under
    ``reference`` on several levels, where the one real execution is the hierarchical order
    (SPEC §3): a twin of ``model`` (same graph, array and space) priced under ``hierarchical``.
    On one level both conventions are the same, so ``model`` runs as it is."""
    if model.convention == Convention.REFERENCE and model.n_levels > 1:
        return CostModel(model.g, model.array, model.space, convention=Convention.HIERARCHICAL.value)
    return model


def verify_assignment(model: CostModel, assignment: list[tuple], *, seed: int = 0, tol: float | None = None,
                      name: str | None = None, dtype: str = "float64") -> VerifyReport:
    """Simulate ``assignment`` (the step :func:`executed_model` runs) in ``dtype`` (float64 /
    float32; ``tol`` defaults to :func:`hypar.sim.default_tol` of it) and compare numerics and
    bytes per layer and level with ``model``'s prices. Under ``reference`` on several levels the
    byte differences are information (:class:`Information`), not reasons to fail."""
    arr = model.array
    run = executed_model(model)
    res = simulate(run, assignment, seed=seed, tol=tol, dtype=dtype)
    rep = VerifyReport(name or str(model.g.graph.get("name", "model")), arr.name, arr.fanouts, model.space,
                       model.g.graph.get("batch"), seed, res.tol, arr.dtype_bytes, str(model.convention),
                       str(np.dtype(dtype)))
    rep.bytes_must_match = run is model
    if res.unsupported:
        rep.unsupported = list(res.unsupported)
        return rep
    ev, ev_run = model.evaluate(assignment), run.evaluate(assignment)
    rep.transfers = [(model.names[t.node], t.kind, t.what, t.level, float(t.bytes))
                     for t in sorted(res.transfers, key=lambda t: (t.node, t.level, t.kind, t.what))]
    for i, n in enumerate(model.names):
        node = model.nodes[i]
        levels = [LevelCheck(h, float(res.counted_bytes[i][h]), float(ev.comm[i][h].bytes))
                  for h in range(model.n_levels)]
        lc = LayerCheck(n, node.layer.op, tuple(assignment[i]), res.max_err[i], res.scale[i], levels)
        if not res.ok_numerics[i]:
            lc.reasons.append(f"numerics: max |distributed - reference| = {res.max_err[i]:.3g} exceeds "
                              f"{res.tol:g} x max(1, {res.scale[i]:.3g})")
        for c in levels:
            if c.ok:
                continue
            why = res.explained(i, c.level) or ""
            if not rep.bytes_must_match:
                lc.information.append(Information(c.level, c.counted_bytes, c.predicted_bytes,
                                                  float(ev_run.comm[i][c.level].bytes), why))
                continue
            msg = f"level {c.level}: counted {c.counted_bytes:,.0f} bytes, cost model predicts {c.predicted_bytes:,.0f}"
            lc.reasons.append(msg + (f" (cost-model limitation: {why})" if why else ""))
        rep.layers.append(lc)
    return rep


def check_plan_costs(model: CostModel, assignment: list[tuple], plan: Plan | dict) -> list[str]:
    """Errors (one per layer and level) where the plan's recorded comm_bytes differ from the cost
    model on the plan's types; ``model`` must be built at the plan's batch, array and space.
    A minimal plan records no costs: no errors."""
    plan = plan.document if isinstance(plan, Plan) else plan
    if plan is None or "layers" not in plan:
        return []
    ev = model.evaluate(assignment)
    errors = []
    rows = {l["name"]: l for l in plan["layers"]}
    for name in sorted(set(rows) - set(model.names)):
        errors.append(f"plan layer {name!r} is not in the model (space '{model.space}')")
    for i, name in enumerate(model.names):
        row = rows.get(name)
        if row is None:
            errors.append(f"{name}: missing from the plan's layers")
            continue
        recorded = row.get("costs", {}).get("levels", [])
        for h in range(model.n_levels):
            pred = ev.comm[i][h].bytes
            got = next((lv.get("comm_bytes") for lv in recorded if lv.get("level") == h), None)
            if got is None:
                errors.append(f"{name}: level {h}: the plan records no comm_bytes (the cost model gives {pred:,.0f})")
            elif not _same(float(got), pred):
                errors.append(f"{name}: level {h}: the plan records {float(got):,.0f} comm bytes but its types "
                              f"{'/'.join(assignment[i])} cost {pred:,.0f}; the plan was edited or comes from "
                              "another cost model: regenerate it with `hypar partition`")
    return errors


def default_sim_batch(n_pes: int) -> int:
    """The batch the simulator uses unless told: the smallest that splits evenly, twice over."""
    return 2 * n_pes


def verify_plan(model_path: str, plan: Plan | dict, *, batch: int | None = None, seed: int = 0,
                array=None, tol: float | None = None, convention: Convention | str | None = None,
                dims: Mapping[str, int] | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None, dtype: str = "float64") -> VerifyReport:
    """``hypar verify``: the plan's recorded costs at its own batch and convention (a full plan),
    then the simulated step at ``batch`` (default :func:`default_sim_batch`) with seeded random
    weights in ``dtype`` (tolerance ``tol``: see :func:`verify_assignment`), on ``array``
    (default: the plan's, else the default array), its counts compared with the cost model under
    ``convention`` (default: the plan's, else hierarchical). ``dims`` / ``input_shapes`` bind
    input dims (default: the full plan's; an input shape's axis 0 follows the batch of each run).
    PlanError when the plan's types complete differently at the two batches; ValueError for an
    unknown convention."""
    plan = Plan.of(plan)
    array = array or plan.array or default_array()
    plan_errors: list[str] = []
    given = dims is not None or input_shapes is not None
    if not given:
        dims, input_shapes = plan.dims, plan.input_shapes
    if plan.full:
        m_plan, asg_plan = api.plan_assignment(model_path, plan, array=array, batch=plan.batch, dims=dims,
                                               input_shapes=with_batch(input_shapes, plan.batch))
        plan_errors = check_plan_costs(m_plan, asg_plan, plan)
    sim_batch = batch if batch is not None else default_sim_batch(array.n_pes)
    m_sim, asg_sim = api.plan_assignment(model_path, plan, array=array, batch=sim_batch, convention=convention,
                                         dims=dims, input_shapes=with_batch(input_shapes, sim_batch))
    if plan.full and [tuple(a) for a in asg_sim] != [tuple(a) for a in asg_plan]:
        raise PlanError.naming("the plan's types complete differently at the simulated batch; pass {batch} "
                               f"{plan.batch} or give every node's types in the plan")
    rep = verify_assignment(m_sim, asg_sim, seed=seed, tol=tol, dtype=dtype,
                            name=os.path.basename(os.fspath(model_path)))
    rep.plan_errors = plan_errors
    rep.plan_batch = plan.batch if plan.full else None
    rep.plan_checked = plan.full
    return rep


def summarize_unsupported(items: list[str], show: int = 3) -> list[str]:
    """Group the unsupported list for people: one line per op type, one for odd tensor layouts."""
    ops: dict[str, list[str]] = {}
    tensors: list[str] = []
    other: list[str] = []
    for u in items:
        m = re.match(r"^(\S+) \((\w+)(?:, kind (\w+))?\)(?:: (.*))?$", u)
        if m:
            what = m.group(2) + (f" (kind {m.group(3)})" if m.group(3) else "")
            what += f": {m.group(4)}" if m.group(4) else ""
            ops.setdefault(what, []).append(m.group(1))
        elif u.startswith(("tensor ", "graph tensor ")):
            tensors.append(u.split(":")[0].replace("graph tensor ", "").replace("tensor ", ""))
        else:
            other.append(u)
    out = []
    for op, names in sorted(ops.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        more = f", ... ({len(names)} nodes)" if len(names) > show else ""
        out.append(f"op {op}: {', '.join(names[:show])}{more}")
    if tensors:
        more = f", ... ({len(tensors)} tensors)" if len(tensors) > show else ""
        out.append(f"tensors whose batch is not axis 0 or features not axis 1: {', '.join(tensors[:show])}{more}")
    return out + other


def report_table(rep: VerifyReport) -> str:
    """The human-readable report: one row per layer with max error and bytes per level."""
    lines = [f"verify {rep.model}: array {rep.array} (fanouts {'x'.join(map(str, rep.fanouts))}, top first), "
             f"space {rep.space}, convention {rep.convention}, batch {rep.batch}, seed {rep.seed}",
             f"tolerance: max |distributed - reference| <= {rep.tol:g} x max(1, max |reference|) "
             f"({rep.float_type}, seeded random weights)"]
    if not rep.bytes_must_match:
        lines.append("bytes: the step runs the hierarchical order (the one real execution, SPEC §3); where the "
                     "reference convention prices a level otherwise it is reported as information, not failure")
    if rep.plan_checked:
        if rep.plan_errors:
            lines.append(f"plan costs at batch {rep.plan_batch}: {len(rep.plan_errors)} mismatch(es)")
            lines += [f"  FAIL {e}" for e in rep.plan_errors]
        else:
            lines.append(f"plan costs at batch {rep.plan_batch}: every layer and level matches the cost model")
    if rep.unsupported:
        lines.append("cannot simulate (unsupported, nothing skipped silently; --json lists every item):")
        lines += [f"  {u}" for u in summarize_unsupported(rep.unsupported)]
    if rep.layers:
        w = max([5] + [len(l.name) for l in rep.layers])
        tw = max([5] + [len("/".join(l.types)) for l in rep.layers])
        lines.append(f"{'layer':<{w}}  {'types':<{tw}}  {'max err':>9}  bytes per level counted/predicted")
        for l in rep.layers:
            err = "inf" if math.isinf(l.max_err) else f"{l.max_err:.2e}"
            per = "  ".join(f"L{c.level} {c.counted_bytes:,.0f}{'=' if c.ok else '!='}{c.predicted_bytes:,.0f}"
                            for c in l.levels)
            lines.append(f"{l.name:<{w}}  {'/'.join(l.types):<{tw}}  {err:>9}  {per}  {l.status}")
            lines += [f"    {r}" for r in l.reasons]
            lines += [f"    info: {i.text()}" for i in l.information]
    n_fail = sum(l.status == "FAIL" for l in rep.layers)
    lines.append(("PASS" if rep.ok else "FAIL") + f": {len(rep.layers) - n_fail}/{len(rep.layers)} layers pass"
                 + (f", {len(rep.unsupported)} unsupported" if rep.unsupported else "")
                 + (f", {len(rep.plan_errors)} plan cost mismatch(es)" if rep.plan_errors else "")
                 + _information_summary(rep))
    return "\n".join(lines)


def _information_summary(rep: VerifyReport) -> str:
    """"; information: ..." counting the (layer, level)s the reference convention prices below and
    above what was sent, with the bytes of each side ("" when there are none)."""
    info = [i for l in rep.layers for i in l.information]
    if not info:
        return ""
    below = [i.counted_bytes - i.predicted_bytes for i in info if i.predicted_bytes < i.counted_bytes]
    above = [i.predicted_bytes - i.counted_bytes for i in info if i.predicted_bytes > i.counted_bytes]
    sides = [f"{len(diffs)} layer level(s) {side} what was sent ({sum(diffs):,.0f} bytes in all)"
             for diffs, side in ((below, "below"), (above, "above")) if diffs]
    return "; information: the reference convention prices " + " and ".join(sides)
