"""A plan written into its ONNX model as the format's own multi-device sharding annotations
(IR version 11); :mod:`hypar.export.onnx_reading` reads them back as the plan.

**What is written** (:func:`annotate`). ``ModelProto.configuration`` gets one
``DeviceConfigurationProto`` for the PE array, named ``hypar:<array name>``, with
``num_devices`` = the PE count and devices ``pe0 .. pe<P-1>`` (PE p's level coordinates are the
mixed-radix digits of p, top level first, as everywhere in hypar). Every plan node gets a
``NodeDeviceConfigurationProto`` for that configuration on the ONNX node it came from, with one
``ShardingSpecProto`` per tensor the node's types place (:mod:`hypar.export.node_tensors`: its
activation inputs and outputs, its weight and the constants broadcast with it) -- also where
the tensor is replicated, written as one shard held by a group of every device, because the
format reads a missing input spec as "as its producer left it", which is wrong for an input a
node needs whole. How each level of the array becomes a sharded dim (one factor per level, digit
nesting, uneven splits as repeated devices) is :mod:`hypar.export.layouts`.

Nodes hypar reads as several layers (an ONNX ``Attention``, com.microsoft
``GroupQueryAttention`` / ``MultiHeadAttention``, :mod:`hypar.onnx.expand`) carry the specs of
their own inputs and outputs (where the inner layers agree on them), and their inner layers'
types in the node's ``metadata_props`` under ``hypar.layers`` (JSON: layer name -> types per
level): the format has no place for a layer inside a node. A plan node whose specs are also
those of other types (a split that leaves some PEs nothing can put the same indices on every PE
under two choices: batch 2 and 4 heads on 2x2x2) records its types there too, so the reader
returns the written ones.

The model's ``metadata_props`` record what costing the plan needs besides its types:
``hypar.format`` (``hypar-onnx-sharding/1``), ``hypar.configuration`` (the configuration's
name), ``hypar.array`` (the array as a plan records it: levels with bandwidths, PE kinds),
``hypar.batch``, ``hypar.binding`` (input dims bound beyond the batch, when any),
``hypar.space``, ``hypar.objective``, ``hypar.convention`` and, for a full plan,
``hypar.source`` (the model name and sha256 the plan was made for).

**IR version.** The model's IR version is raised to 11 when below (never lowered): IR 11
introduced ``configuration`` and ``device_configurations`` (docs/IR.md); the opsets are
untouched, and ``onnx.checker.check_model(full_check=True)`` passes on every exported fixture
whose model passes it (the checker does not look inside the annotations;
:func:`hypar.onnx.sharding.read_sharding` does when they are read).

**Read back** (:mod:`hypar.export.onnx_reading`): every node's types are the ones whose specs
(:meth:`SpecWriter.specs`) are exactly what the node carries (:func:`decode`), so a plan read
back costs exactly as the JSON plan it came from.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import dataclass

from hypar import api
from hypar import graph as G
from hypar.cost import CostModel
from hypar.errors import HyparWarning, ModelLoadError, PlanError
from hypar.export.layouts import Placement, encode, split_levels
from hypar.export.node_tensors import GraphTensors, node_placements
from hypar.onnx.binding import model_input_dims
from hypar.onnx.load import load_model
from hypar.onnx.sharding import (Configuration, OnnxNode, TensorSharding, constant_shapes, full_check_error,
                                 graph_nodes, has_external_data, save_model, write_sharding)
from hypar.plan import Plan
from hypar.search import SolverSettings
from hypar.vocab import Objective

FORMAT = "hypar-onnx-sharding/1"
PREFIX = "hypar."
KEY_FORMAT, KEY_CONFIGURATION, KEY_ARRAY = "hypar.format", "hypar.configuration", "hypar.array"
KEY_BATCH, KEY_BINDING, KEY_SPACE = "hypar.batch", "hypar.binding", "hypar.space"
KEY_OBJECTIVE, KEY_CONVENTION, KEY_SOURCE = "hypar.objective", "hypar.convention", "hypar.source"
KEY_LAYERS = "hypar.layers"          # on a node read as several layers: their types
MAX_CANDIDATES = 4096                # type tuples tried for one node before giving up

WRITE_THEM = "write them with `hypar export PLAN.json --onnx MODEL.onnx -o OUT.onnx`"


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_onnx` wrote: the configuration, devices, annotated ONNX nodes (of
    them, nodes read as several layers), sharding specs (of them, tensors split at some level),
    the IR version before and after, and the output path."""

    configuration: str
    devices: int
    nodes: int
    composite_nodes: int
    specs: int
    split_specs: int
    ir_before: int
    ir_after: int
    path: str
    checked: bool = True

    def text(self) -> str:
        """One line for people."""
        composite = f", {self.composite_nodes} read as several layers" if self.composite_nodes else ""
        checked = "passes" if self.checked else "not checked: the model itself fails"
        return (f"annotated {self.nodes} nodes{composite} with {self.specs} sharding specs ({self.split_specs} "
                f"split) for configuration {self.configuration!r} ({self.devices} devices); IR version "
                f"{self.ir_before} -> {self.ir_after}; onnx.checker full check {checked}; written to {self.path}")


class NodeMap:
    """Which ONNX node carries each plan node: ``owner[layer] = (node, direct)``; direct when the
    layer is the node itself (same op, same outputs), else the layer is part of a node hypar
    reads as several layers (named ``<node>`` or ``<node>/<part>``)."""

    def __init__(self, nodes: tuple[OnnxNode, ...], model: CostModel):
        by_output = {o: n for n in nodes for o in n.outputs if o}
        self.owner: dict[str, tuple[OnnxNode, bool]] = {}
        open_layers = []
        for name in model.names:
            lay = G.layer(model.g, name)
            n = by_output.get(lay.outputs[0]) if lay.outputs else None
            same = n is not None and {by_output[o].position for o in lay.outputs if o in by_output} == {n.position}
            if same and n.op == lay.op and set(lay.outputs) <= set(n.outputs):
                self.owner[name] = (n, True)
            else:
                open_layers.append(name)
        self.direct = {n.position for n, _ in self.owner.values()}
        composites = {n.name or n.outputs[0]: n for n in nodes
                      if n.position not in self.direct and (n.name or n.outputs)}
        for name in open_layers:
            base = name
            while base and base not in composites:
                base = base.rpartition("/")[0]
            if not base:
                raise PlanError(f"layer {name!r} has no ONNX node of its own or of a fused op to carry its sharding; "
                                "export the plan with the model it was made for")
            self.owner[name] = (composites[base], False)


class SpecWriter:
    """The specs and node metadata of one assignment of a cost model."""

    def __init__(self, model: CostModel, nodes: tuple[OnnxNode, ...], constants: dict):
        self.model, self.nodes = model, nodes
        self.tensors = GraphTensors.of(model.g, constants)
        self.map = NodeMap(nodes, model)
        self._encoded: dict[Placement, TensorSharding] = {}

    def placements(self, name: str, types: tuple) -> list[Placement]:
        """Placements of plan node ``name`` under ``types`` on its own ONNX node."""
        node, direct = self.map.owner[name]
        return node_placements(self.model, self.model.index[name], tuple(types), node if direct else None, self.tensors)

    def encode(self, placement: Placement) -> TensorSharding:
        """:func:`hypar.export.layouts.encode` on the model's array, each placement once."""
        hit = self._encoded.get(placement)
        if hit is None:
            hit = self._encoded[placement] = encode(self.model.array, placement)
        return hit

    def specs(self, name: str, types: tuple) -> dict[str, TensorSharding]:
        """The specs of plan node ``name`` (a direct one) under ``types``, by tensor."""
        return {p.tensor: self.encode(p) for p in self.placements(name, types)}

    def direct(self, position: int) -> bool:
        """True when the ONNX node at ``position`` is a plan node itself (not read as several)."""
        return position in self.map.direct

    def composite_specs(self, node: OnnxNode, inner: dict[str, tuple]) -> dict[str, TensorSharding]:
        """Specs of a node read as several layers (``inner``: layer -> types): its own inputs and
        outputs, each where the inner layers that touch it agree on its placement."""
        own = set(node.inputs) | set(node.outputs)
        found: dict[str, Placement | None] = {}
        for name, types in inner.items():
            for p in self.placements(name, types):
                if p.tensor in own:
                    found[p.tensor] = p if found.get(p.tensor, p) == p else None
        return {t: self.encode(p) for t, p in found.items() if p is not None}

    def write(self, assignment: list[tuple]) -> tuple[dict[int, list[TensorSharding]], dict[int, dict[str, str]]]:
        """Per ONNX node position its specs, and the ``hypar.layers`` metadata of the nodes read as
        several layers and of the nodes whose specs alone read back as other types."""
        specs: dict[int, list[TensorSharding]] = {}
        inner: dict[int, dict[str, tuple]] = {}
        for name, types in zip(self.model.names, assignment):
            node, direct = self.map.owner[name]
            if direct:
                written = self.specs(name, types)
                specs[node.position] = list(written.values())
                if decode(self, name, written) != list(types):
                    inner.setdefault(node.position, {})[name] = tuple(types)      # the specs alone are ambiguous
            else:
                inner.setdefault(node.position, {})[name] = tuple(types)
        for pos, layers in inner.items():
            if not self.direct(pos):
                specs[pos] = list(self.composite_specs(self.nodes[pos], layers).values())
        meta = {pos: {KEY_LAYERS: json.dumps({k: list(v) for k, v in layers.items()})} for pos, layers in inner.items()}
        return specs, meta


def _configuration(model: CostModel) -> Configuration:
    """The device configuration of ``model``'s array."""
    n = model.array.n_pes
    return Configuration(f"hypar:{model.array.name}", n, tuple(f"pe{p}" for p in range(n)))


def _metadata(model: CostModel, plan: Plan, objective: str, configuration: str) -> dict[str, str]:
    """The model-level ``metadata_props`` (module docstring)."""
    g = model.g
    meta = {KEY_FORMAT: FORMAT, KEY_CONFIGURATION: configuration,
            KEY_ARRAY: json.dumps(model.array.to_json(), sort_keys=True), KEY_BATCH: str(g.graph.get("batch")),
            KEY_SPACE: str(model.space), KEY_OBJECTIVE: str(objective), KEY_CONVENTION: str(model.convention)}
    if g.graph.get("binding"):
        meta[KEY_BINDING] = json.dumps(g.graph["binding"], sort_keys=True)
    if plan.full:
        source = plan.document.get("model") or {}
        meta[KEY_SOURCE] = json.dumps({k: source.get(k) for k in ("name", "sha256")}, sort_keys=True)
    return meta


def _check_fits(plan: Plan, model: CostModel) -> None:
    """PlanError when a full plan's layers (names and ops, in order) or parameter count differ
    from the model's: the plan was made for another model."""
    if not plan.full:
        return
    theirs = [(l["name"], l["op"]) for l in plan.document["layers"]]
    ours = [(n, G.layer(model.g, n).op) for n in model.names]
    made_for = (plan.document.get("model") or {}).get("name") or "another model"
    if theirs != ours:
        k = next((k for k, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        what = (f"its layer {k} is {theirs[k][0]!r} ({theirs[k][1]})" if k < len(theirs) else "it has fewer layers")
        here = f"{ours[k][0]!r} ({ours[k][1]})" if k < len(ours) else "nothing"
        raise PlanError(f"the plan was made for {made_for}: {what} where this model has {here}; export the plan "
                        "with the model it was made for, or partition this model")
    params = (plan.document.get("model") or {}).get("parameters")
    if params is not None and params != G.parameter_count(model.g):
        raise PlanError(f"the plan was made for {made_for} with {params} parameters; this model has "
                        f"{G.parameter_count(model.g)}; export the plan with the model it was made for")


def _warn_rebound(proto, model: CostModel) -> None:
    """A HyparWarning per model input whose fixed dims the plan binds to other sizes (a model
    exported at batch 1, planned at 64): the specs' ``dim_value`` record the plan's sizes."""
    written = model_input_dims(proto)
    for t in model.g.graph.get("inputs", ()):
        dims = written.get(t.name) or []
        if any(isinstance(d, int) and d != b for d, b in zip(dims, t.shape)):
            warnings.warn(f"input {t.name!r} is {list(dims)} in the model and {list(t.shape)} in the plan; the sharding "
                          "specs record the plan's sizes (export the model at the plan's batch to match)", HyparWarning,
                          stacklevel=3)


def annotate(model, plan: Plan | dict, *, settings: SolverSettings = SolverSettings()):
    """``model`` (an ``onnx.ModelProto`` or a path) with ``plan`` (a :class:`hypar.plan.Plan` or
    a plan dictionary, full or minimal) written as its multi-device annotations (module
    docstring); returns a new ``onnx.ModelProto``, ``model`` is not changed. The plan is costed
    as :func:`hypar.api.plan_assignment` costs it (its array, batch, binding, space and
    convention; nodes it leaves open completed), and every plan node is annotated.

    Raises PlanError when the plan does not fit the model (another model's layers or parameter
    count, unknown layers or types) or a layer's weight split cannot be named in the format;
    ModelLoadError / ShapeError as the importer raises them."""
    return _annotate(model, Plan.of(plan), settings)[0]


def _annotate(model, plan: Plan, settings: SolverSettings) -> tuple:
    """:func:`annotate`, also returning the writer, the specs and the node metadata written (by node
    position)."""
    proto, _name = load_model(model, with_weights=True)     # the result is a whole model, weights kept
    try:
        cost_model, assignment = api.plan_assignment(proto, plan, settings=settings)
    except PlanError as exc:
        if not plan.full:
            raise
        made_for = (plan.document.get("model") or {}).get("name") or "another model"
        raise PlanError(f"the plan was made for {made_for} and does not fit this model: {exc}") from None
    _check_fits(plan, cost_model)
    _warn_rebound(proto, cost_model)
    nodes = graph_nodes(proto)
    writer = SpecWriter(cost_model, nodes, constant_shapes(proto))
    specs, node_meta = writer.write(assignment)
    configuration = _configuration(cost_model)
    objective = plan.objective or Objective.TIME
    out = write_sharding(proto, configuration, specs, node_meta,
                         _metadata(cost_model, plan, objective, configuration.name), PREFIX)
    return out, writer, specs, node_meta


def export_onnx(plan: Plan | dict, model_path: str | os.PathLike, out_path: str | os.PathLike, *,
                settings: SolverSettings = SolverSettings()) -> ExportSummary:
    """``hypar export PLAN --onnx MODEL -o OUT``: :func:`annotate` ``model_path`` with ``plan``,
    check the result with ``onnx.checker.check_model(full_check=True)`` and write it to
    ``out_path``. When the checker rejects the annotated model for exactly what it rejects in
    ``model_path`` itself (e.g. an onnxruntime contrib op in the default domain), the model is
    written anyway with a HyparWarning (``checked`` False in the summary). Errors as
    :func:`annotate`; ModelLoadError when the model keeps its weights in external files and
    ``out_path`` is in another folder (the references would break), or when the checker rejects
    the annotated model for anything else (nothing is left at ``out_path`` then)."""
    proto, _name = load_model(model_path, with_weights=True)
    external = has_external_data(proto)
    here, there = (os.path.dirname(os.path.abspath(p)) for p in (model_path, out_path))
    if external and here != there:
        raise ModelLoadError(f"{model_path} keeps its weights in external files beside it; write the annotated "
                             f"model into the same folder ({here})")
    out, writer, specs, node_meta = _annotate(proto, Plan.of(plan), settings)
    if external:
        save_model(out, out_path)
    problem = full_check_error(out_path if external else out)
    if problem is not None:
        if problem != full_check_error(model_path):
            if external:
                os.remove(out_path)
            raise ModelLoadError(f"{model_path} with its sharding annotations fails onnx.checker.check_model"
                                 f"(full_check=True): {problem}")
        warnings.warn(f"{model_path} itself fails onnx.checker.check_model(full_check=True) ({problem}); the "
                      "annotations add nothing it rejects, and the model is written unchecked", HyparWarning,
                      stacklevel=2)
    if not external:
        save_model(out, out_path)
    conf = out.configuration[-1]
    written = [s for node_specs in specs.values() for s in node_specs]
    composite = sum(1 for pos in node_meta if not writer.direct(pos))
    return ExportSummary(conf.name, conf.num_devices, len(specs), composite, len(written),
                         sum(1 for s in written if s.splits), proto.ir_version, out.ir_version, os.fspath(out_path),
                         problem is None)


def decode(writer: SpecWriter, name: str, read: dict[str, TensorSharding]) -> list | None:
    """The first types of direct plan node ``name`` (per level in the node's label order, the
    labels whose placements show exactly in ``read`` tried first) whose specs are exactly
    ``read``; None when no types give them."""
    model = writer.model
    seen = {t: split_levels(s, model.array.fanouts) for t, s in read.items()}
    fits: list[list[tuple[bool, str]]] = [[] for _ in range(model.n_levels)]
    for label in model.labels(model.index[name]):
        try:
            places = writer.placements(name, (label,) * model.n_levels)
        except PlanError:
            continue
        for h, level_fits in enumerate(fits):
            shown = [seen[p.tensor][h] if p.tensor in seen else None for p in places]
            if all(s is not None and (p.levels[h] is None or p.levels[h].axis in s) for p, s in zip(places, shown)):
                exact = all(s == ({p.levels[h].axis} if p.levels[h] else set()) for p, s in zip(places, shown))
                level_fits.append((not exact, label))
    ordered = [[label for _, label in sorted(f, key=lambda x: x[0])] for f in fits]
    for types in itertools.islice(itertools.product(*ordered), MAX_CANDIDATES):
        if writer.specs(name, types) == read:
            return list(types)
    return None
