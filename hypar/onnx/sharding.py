"""ONNX's multi-device annotations (IR version 11) as plain data, written into and read out of a
``ModelProto``: the protobuf half of :mod:`hypar.export.onnx_sharding` (which decides what they
say). Nothing here knows about plans or costs.

The protos (onnx.proto, docs/IR.md "Multi-Device Configuration"): a model lists its device
configurations (``ModelProto.configuration``: ``DeviceConfigurationProto`` name, num_devices,
device names); a node carries, per configuration, a ``NodeDeviceConfigurationProto`` holding
one ``ShardingSpecProto`` per input or output tensor it annotates. A spec splits the tensor along
its ``sharded_dim`` entries (``ShardedDimProto``: an axis, and one ``SimpleShardedDimProto`` per
factor of that axis -- several when the axis is read as a fusion of sub-axes, outer first --
each cutting ``dim_value`` indices into ``num_shards`` equal shards). The shards are numbered
row-major over the entries (and over the factors inside one), and ``device[k]`` holds shard
``k``: a device id, or a key of ``index_to_device_group_map`` naming a group of devices that
each hold a copy (the proposal's convention: negative keys).

Here a spec is a :class:`TensorSharding`: its :class:`AxisSplit` entries and, per shard in that
order, the tuple of devices holding it (``holders``; groups are written under keys -1, -2, ...
in order of first use, a one-device holder as the device itself). ``onnx.checker`` validates
none of these fields, so :func:`read_sharding` checks what it reads (configuration ids, tensor
names, device ids, one holder per shard) and raises :class:`hypar.errors.PlanError` naming the
node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from math import prod

import onnx
from onnx import TensorProto

from hypar.errors import PlanError

# The IR version that added ModelProto.configuration and NodeProto.device_configurations.
IR_MULTI_DEVICE = 11


@dataclass(frozen=True)
class AxisSplit:
    """One ``ShardedDimProto``: tensor ``axis`` (negative counts from the back) read as the
    fusion of ``factors`` (outer first), each a (dim_value, num_shards) pair."""

    axis: int
    factors: tuple[tuple[int, int], ...]

    @property
    def shards(self) -> int:
        """How many shards this entry cuts the axis into (the product of its factors' shards)."""
        return prod(s for _v, s in self.factors)


@dataclass(frozen=True)
class TensorSharding:
    """One ``ShardingSpecProto``: ``tensor`` cut by ``splits`` (row-major shard order), and the
    devices holding each shard (``holders``, one sorted tuple per shard; a fully replicated
    tensor has no split and one shard held by every device)."""

    tensor: str
    splits: tuple[AxisSplit, ...]
    holders: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class OnnxNode:
    """What the exporter reads of one graph node: its position in ``graph.node``, name, op type,
    and input and output tensor names."""

    position: int
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Configuration:
    """A ``DeviceConfigurationProto``: its name, device count and device names."""

    name: str
    num_devices: int
    devices: tuple[str, ...] = ()


@dataclass
class Annotations:
    """What :func:`read_sharding` found for one configuration: the configuration (None when the
    model has none of that name), per node position its specs, every node's
    ``metadata_props`` entries under the caller's prefix, and the model's ``metadata_props``."""

    configuration: Configuration | None
    specs: dict[int, list[TensorSharding]]
    node_metadata: dict[int, dict[str, str]]
    metadata: dict[str, str]


def graph_nodes(model: onnx.ModelProto) -> tuple[OnnxNode, ...]:
    """Every node of the main graph as an :class:`OnnxNode`, in graph order."""
    return tuple(OnnxNode(i, n.name, n.op_type, tuple(n.input), tuple(n.output)) for i, n in enumerate(model.graph.node))


def model_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's ``metadata_props`` as a dictionary."""
    return {p.key: p.value for p in model.metadata_props}


def constant_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Known dims by tensor name: what onnx's shape inference (with data propagation) finds at
    the model's own input dims (a weight built by ``ConstantOfShape`` too), then every
    initializer's and every ``Constant`` node's ``value`` as stored (no tensor data decoded).
    The caller reads it for weights and constants only."""
    out: dict[str, tuple[int, ...]] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        inferred = model    # a best effort: the stored dims below remain (a > 2 GB proto is a ValueError)
    for vi in inferred.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.HasField("tensor_type") and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    out.update({t.name: tuple(t.dims) for t in model.graph.initializer})
    for n in model.graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
            if value is not None and n.output:
                out[n.output[0]] = tuple(value.dims)
    return out


def write_sharding(model: onnx.ModelProto, configuration: Configuration, specs: dict[int, list[TensorSharding]],
                   node_metadata: dict[int, dict[str, str]], metadata: dict[str, str],
                   prefix: str) -> onnx.ModelProto:
    """A copy of ``model`` carrying ``configuration`` and, per node position, its ``specs`` (one
    ``NodeDeviceConfigurationProto`` per annotated node), ``node_metadata`` and the model's
    ``metadata``; the IR version raised to :data:`IR_MULTI_DEVICE` when below it. What an earlier
    export left (the configuration of that name, node entries for it, metadata keys starting
    with ``prefix``) is replaced, anything else kept."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = max(out.ir_version, IR_MULTI_DEVICE)
    _drop_previous(out, configuration.name, prefix)
    conf = out.configuration.add()
    conf.name, conf.num_devices = configuration.name, configuration.num_devices
    conf.device.extend(configuration.devices)
    nodes = out.graph.node
    for pos, node_specs in sorted(specs.items()):
        entry = nodes[pos].device_configurations.add()
        entry.configuration_id = configuration.name
        for spec in node_specs:
            _write_spec(entry.sharding_spec.add(), spec)
    for pos, props in sorted(node_metadata.items()):
        for key, value in props.items():
            nodes[pos].metadata_props.add(key=key, value=value)
    for key, value in metadata.items():
        out.metadata_props.add(key=key, value=value)
    return out


def _drop_previous(model: onnx.ModelProto, name: str, prefix: str) -> None:
    """Remove configuration ``name``, node entries for it and ``prefix`` metadata from ``model``."""
    keep = [c for c in model.configuration if c.name != name]
    del model.configuration[:]
    model.configuration.extend(keep)
    for n in model.graph.node:
        entries = [d for d in n.device_configurations if d.configuration_id != name]
        del n.device_configurations[:]
        n.device_configurations.extend(entries)
        _drop_keys(n.metadata_props, prefix)
    _drop_keys(model.metadata_props, prefix)


def _drop_keys(props, prefix: str) -> None:
    """Remove the ``StringStringEntryProto`` entries whose key starts with ``prefix``."""
    keep = [(p.key, p.value) for p in props if not p.key.startswith(prefix)]
    del props[:]
    for key, value in keep:
        props.add(key=key, value=value)


def _write_spec(proto: onnx.ShardingSpecProto, spec: TensorSharding) -> None:
    """Fill ``proto`` from ``spec`` (groups under keys -1, -2, ... in order of first use)."""
    proto.tensor_name = spec.tensor
    keys: dict[tuple[int, ...], int] = {}
    for holders in spec.holders:
        if len(holders) == 1:
            proto.device.append(holders[0])
            continue
        if holders not in keys:
            keys[holders] = -(len(keys) + 1)
            entry = proto.index_to_device_group_map.add()
            entry.key = keys[holders]
            entry.value.extend(holders)
        proto.device.append(keys[holders])
    for split in spec.splits:
        dim = proto.sharded_dim.add()
        dim.axis = split.axis
        for value, shards in split.factors:
            dim.simple_sharding.add(dim_value=value, num_shards=shards)


def read_sharding(model: onnx.ModelProto, name: str, prefix: str) -> Annotations:
    """The annotations ``model`` carries for configuration ``name`` (see :class:`Annotations`;
    ``prefix`` selects the node metadata returned). PlanError naming the node when a spec breaks
    the format: an unknown tensor, a device outside the configuration, a group key missing from
    the map, or a device count that is not the spec's shard count."""
    conf = next((c for c in model.configuration if c.name == name), None)
    configuration = None if conf is None else Configuration(conf.name, conf.num_devices, tuple(conf.device))
    specs: dict[int, list[TensorSharding]] = {}
    node_metadata: dict[int, dict[str, str]] = {}
    for pos, n in enumerate(model.graph.node):
        props = {p.key: p.value for p in n.metadata_props if p.key.startswith(prefix)}
        if props:
            node_metadata[pos] = props
        for entry in n.device_configurations:
            if entry.configuration_id != name:
                continue
            if configuration is None:
                raise PlanError(f"node {_label(n)!r} is annotated for configuration {name!r}, which the model "
                                "does not list; re-export the model with `hypar export`")
            names = set(n.input) | set(n.output)
            specs[pos] = [_read_spec(s, n, names, configuration.num_devices) for s in entry.sharding_spec]
    return Annotations(configuration, specs, node_metadata, model_metadata(model))


def _label(n: onnx.NodeProto) -> str:
    """A node's name, else its first output's."""
    return n.name or (n.output[0] if n.output else n.op_type)


def _read_spec(proto: onnx.ShardingSpecProto, n: onnx.NodeProto, names: set[str], num_devices: int) -> TensorSharding:
    """``proto`` as a :class:`TensorSharding`, checked (see :func:`read_sharding`)."""
    where = f"node {_label(n)!r}, tensor {proto.tensor_name!r}"
    if proto.tensor_name not in names:
        raise PlanError(f"{where}: the sharding names a tensor that is not an input or output of the node; "
                        "re-export the model with `hypar export`")
    groups = {e.key: tuple(sorted(e.value)) for e in proto.index_to_device_group_map}
    holders = []
    for d in proto.device:
        held = groups.get(d, (d,))
        if d not in groups and d < 0:
            raise PlanError(f"{where}: device {d} is neither a device nor a key of index_to_device_group_map")
        if any(not 0 <= x < num_devices for x in held):
            raise PlanError(f"{where}: device {d} is outside the configuration's {num_devices} devices")
        holders.append(held)
    splits = []
    for dim in proto.sharded_dim:
        factors = tuple((s.dim_value, s.num_shards) for s in dim.simple_sharding)
        if not factors or any(v < 1 or s < 1 or v % s for v, s in factors):
            raise PlanError(f"{where}: axis {dim.axis} needs dim_value and num_shards with num_shards dividing "
                            "dim_value in every simple_sharding")
        splits.append(AxisSplit(dim.axis, factors))
    shards = prod(s.shards for s in splits)
    if len(holders) != shards:
        raise PlanError(f"{where}: {len(holders)} devices listed for {shards} shards; list one device (or group) "
                        "per shard")
    return TensorSharding(proto.tensor_name, tuple(splits), tuple(holders))


def has_external_data(model: onnx.ModelProto) -> bool:
    """True when some initializer keeps its data in an external file."""
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def full_check_error(model: onnx.ModelProto | str | os.PathLike) -> str | None:
    """What ``onnx.checker.check_model(model, full_check=True)`` rejects (its message's first
    line), None when it passes. Give a path for a model whose weights are external: the checker
    then finds them beside it."""
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    try:
        onnx.checker.check_model(source, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` (weights stay where they are: inline, or external files named
    relative to the model, so the caller keeps such a model beside its data)."""
    onnx.save_model(model, os.fspath(path))
