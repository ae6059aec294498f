"""The plan an ONNX model annotated by :func:`hypar.export.annotate` carries, read back
(:func:`plan_from_annotations`): the recorded array, batch, binding, space, objective and
convention (model ``metadata_props``, :mod:`hypar.export.onnx_sharding`) rebuild the cost model;
each plan node's types are decoded from its sharding specs (per level, the types whose
placements show in them) or taken from its node's ``hypar.layers``, then confirmed by writing
the specs of those types again and comparing exactly, so an annotation hypar would not have
written for any types is refused by node. The plan read back costs exactly as the JSON plan it
came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from hypar import api
from hypar.cost import CostModel
from hypar.errors import HyparError, PlanError
from hypar.export.onnx_sharding import (FORMAT, KEY_ARRAY, KEY_BATCH, KEY_BINDING, KEY_CONFIGURATION, KEY_CONVENTION,
                                        KEY_FORMAT, KEY_LAYERS, KEY_OBJECTIVE, KEY_SPACE, PREFIX, WRITE_THEM,
                                        SpecWriter, decode)
from hypar.onnx.binding import with_batch
from hypar.onnx.load import load_model
from hypar.onnx.sharding import OnnxNode, TensorSharding, constant_shapes, graph_nodes, model_metadata, read_sharding
from hypar.plan import Plan, plan_array
from hypar.vocab import Convention, Objective, Space, parse

# How each recorded setting is read from its metadata_props value (all but the binding required).
_SETTINGS = ((KEY_ARRAY, lambda v: plan_array({"array": json.loads(v)})), (KEY_BATCH, int),
             (KEY_BINDING, json.loads), (KEY_SPACE, lambda v: parse(Space, v, "space")),
             (KEY_OBJECTIVE, lambda v: parse(Objective, v, "objective")),
             (KEY_CONVENTION, lambda v: parse(Convention, v, "convention")))


def _recorded_plan(meta: dict[str, str], label: str) -> Plan:
    """The settings the metadata records, as a Plan without types (module docstring). PlanError
    naming the key when one is missing or unreadable, or the format is another."""
    if meta[KEY_FORMAT] != FORMAT:
        raise PlanError(f"{label} holds hypar annotations in format {meta[KEY_FORMAT]!r}; this hypar reads "
                        f"{FORMAT!r}: {WRITE_THEM} again")
    got = {}
    for key, read in _SETTINGS:
        if key not in meta and key != KEY_BINDING:
            raise PlanError(f"{label}: metadata_props {key!r} is missing; {WRITE_THEM} again")
        try:
            got[key] = read(meta.get(key, "{}"))
        except (ValueError, TypeError, AttributeError, HyparError) as exc:
            raise PlanError(f"{label}: metadata_props {key!r} cannot be read ({exc}); {WRITE_THEM} again") from None
    binding = got[KEY_BINDING] if isinstance(got[KEY_BINDING], dict) else {}
    return Plan({}, got[KEY_ARRAY], got[KEY_BATCH], got[KEY_SPACE], got[KEY_OBJECTIVE], None, got[KEY_CONVENTION],
                binding.get("dims") or None, binding.get("input_shapes") or None)


class _Reader:
    """Every plan node's types read from the annotations (module docstring)."""

    def __init__(self, writer: SpecWriter, annotations, label: str):
        self.writer, self.ann, self.label = writer, annotations, label
        self.model = writer.model
        self.configuration = annotations.configuration.name

    def types(self) -> dict[str, list]:
        """Every plan node's types; PlanError naming the node when they cannot be read."""
        out: dict[str, list] = {}
        composites: dict[int, dict[str, tuple]] = {}
        for name in self.model.names:
            node, direct = self.writer.map.owner[name]
            recorded = self.recorded(name, node, required=not direct)
            if direct:
                out[name] = self.confirmed(name, node, recorded)
            else:
                out[name] = recorded
                composites.setdefault(node.position, {})[name] = tuple(recorded)
        for pos, inner in composites.items():
            node = self.writer.nodes[pos]
            if self.writer.composite_specs(node, inner) != self.read(node):
                raise PlanError(f"{self.where(node)}: its sharding is not what its layers' types "
                                f"{json.dumps({k: list(v) for k, v in inner.items()})} give; {WRITE_THEM} again")
        return out

    def where(self, node: OnnxNode) -> str:
        """How messages name ``node``."""
        return f"{self.label}: node {node.name or node.outputs[0]!r}"

    def read(self, node: OnnxNode) -> dict[str, TensorSharding]:
        """The specs ``node`` carries for the configuration, by tensor; PlanError when none."""
        specs = self.ann.specs.get(node.position)
        if specs is None:
            raise PlanError(f"{self.where(node)} carries no sharding for configuration {self.configuration!r}; "
                            f"{WRITE_THEM} again")
        return {s.tensor: s for s in specs}

    def recorded(self, name: str, node: OnnxNode, required: bool) -> list | None:
        """Types of layer ``name`` from ``node``'s ``hypar.layers`` metadata (None when it gives
        none and they are not ``required``); PlanError when they are missing or not the layer's."""
        try:
            types = json.loads(self.ann.node_metadata.get(node.position, {})[KEY_LAYERS])[name]
        except (KeyError, ValueError, TypeError):
            if not required:
                return None
            raise PlanError(f"{self.where(node)} is read as several layers, and its metadata_props {KEY_LAYERS!r} "
                            f"gives no types for layer {name!r}; {WRITE_THEM} again") from None
        labels = self.model.labels(self.model.index[name])
        if not isinstance(types, list) or len(types) != self.model.n_levels or any(t not in labels for t in types):
            raise PlanError(f"{self.where(node)}: {KEY_LAYERS!r} gives layer {name!r} the types {types!r}; give one of "
                            f"{list(labels)} per level ({self.model.n_levels})")
        return list(types)

    def confirmed(self, name: str, node: OnnxNode, recorded: list | None) -> list:
        """The types of direct plan node ``name``: ``recorded`` ones when its specs are theirs,
        else decoded from the specs; PlanError when the specs are no types' hypar would write."""
        read = self.read(node)
        if recorded is not None:
            if self.writer.specs(name, tuple(recorded)) == read:
                return recorded
            raise PlanError(f"{self.where(node)} (layer {name!r}): its sharding is not what its recorded types "
                            f"{recorded} give; {WRITE_THEM} again")
        types = decode(self.writer, name, read)
        if types is None:
            labels = self.model.labels(self.model.index[name])
            raise PlanError(f"{self.where(node)} (layer {name!r}): its sharding for configuration "
                            f"{self.configuration!r} is not what hypar writes for any types ({', '.join(labels)} "
                            f"per level); {WRITE_THEM} again")
        return types


def _label(model) -> str:
    """How messages name a model given as a path or a ModelProto."""
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else "the ModelProto"


def annotated_plan(model) -> Plan | None:
    """The plan a model annotated by :func:`annotate` carries (a path or an ``onnx.ModelProto``),
    as a :class:`hypar.plan.Plan` with every plan node's types and the recorded array, batch,
    binding, space, objective and convention; None when the model has no hypar annotations.
    PlanError naming the node or metadata key when they are broken or were edited into
    something hypar would not write; the importer's errors for the model."""
    label = _label(model)
    proto, _name = load_model(model)
    meta = model_metadata(proto)
    if KEY_FORMAT not in meta:
        return None
    skeleton = _recorded_plan(meta, label)
    annotations = read_sharding(proto, meta.get(KEY_CONFIGURATION, ""), PREFIX)
    if annotations.configuration is None:
        raise PlanError(f"{label} lists no device configuration {meta.get(KEY_CONFIGURATION)!r}; {WRITE_THEM} again")
    if annotations.configuration.num_devices != skeleton.array.n_pes:
        raise PlanError(f"{label}: configuration {annotations.configuration.name!r} has "
                        f"{annotations.configuration.num_devices} devices but the recorded array "
                        f"{skeleton.array.n_pes} PEs; {WRITE_THEM} again")
    g = api.load_graph(proto, skeleton.batch, skeleton.array, dims=skeleton.dims,
                       input_shapes=with_batch(skeleton.input_shapes, skeleton.batch))
    model_ = CostModel(g, skeleton.array, skeleton.space, convention=skeleton.convention)
    reader = _Reader(SpecWriter(model_, graph_nodes(proto), constant_shapes(proto)), annotations, label)
    return replace(skeleton, types=reader.types())


def plan_from_annotations(model) -> Plan:
    """:func:`annotated_plan`, with PlanError (naming how to write them) when the model carries
    no hypar annotations."""
    plan = annotated_plan(model)
    if plan is None:
        raise PlanError(f"{_label(model)} carries no hypar sharding annotations (no {KEY_FORMAT!r} in its "
                        f"metadata_props); {WRITE_THEM}")
    return plan
