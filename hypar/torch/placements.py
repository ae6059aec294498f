"""A hypar plan as PyTorch DTensor placements, per module path (pure: no torch import).

A hypar level is a mesh dimension (level 0 = mesh dim 0, top first). Per weighted layer and
level, the plan's types become placements of ``torch.nn.Linear`` / ``torch.nn.Embedding``
tensors (SPEC.md §2 in DTensor words):

=========  =====================  ==========================  ==========================
type       input                  Linear weight (out, in)     output
=========  =====================  ==========================  ==========================
I          Shard(batch = 0)       Replicate                   Shard(0)
II         Shard(features = -1)   Shard(1) (in features)      Partial(sum)
III        Replicate              Shard(0) (out features)     Shard(-1)
=========  =====================  ==========================  ==========================

An Embedding's weight is (rows, features): II shards the rows (``Shard(0)``, output partial sums),
III the features (``Shard(1)``). A Linear bias follows its output features (``Shard(0)`` under
III, else Replicate). A convolution maps only as type I (weight Replicate, input Shard(0)):
DTensor has no rule for a convolution split by channels, so II / III there is an error naming the
layer. Feature dims are written ``-1`` (the last dim, whatever the activation's rank);
:func:`hypar.torch.parallelize` resolves them on the real tensors.

Placements are written as DTensor writes them (``repr``): ``Shard(dim=0)``, ``Replicate()``,
``Partial(sum)``.

**Nesting.** When one tensor dim is sharded at several levels, DTensor nests left to right: the
dim is cut into contiguous chunks by the first such mesh dim, each chunk by the next (PE (a, b)
of a (2, 2) mesh holds block 2a + b under ``[Shard(0), Shard(0)]``). hypar's weight slices
(:mod:`hypar.plan.slices`) walk the levels top down the same way, so a weight's local shard is
exactly the plan's ``weight_slices`` row (tests/torch check this on every PE). hypar's
activations use *digit* nesting (:mod:`hypar.shards`): the dim is cut into one block per PE in PE
order and a PE holds every block whose digits at the sharding levels match its coordinates. The
two agree when the levels sharding a dim are the top ones (level 0 .. m); when a level shards a
dim that a level above it does not, hypar's share is strided where DTensor's is contiguous
(``[Replicate, Shard(0)]`` over 8 rows: DTensor gives PE (0, 0) rows 0-3, hypar rows 0, 1, 4, 5;
tests/torch/test_dtensor_nesting.py asks DTensor, and the experiment was first run on gloo). Numerics do not depend on it (DTensor tracks its
own layout), but the collectives do: hypar's levels convert independently, while DTensor's
redistribution (torch 2.13 ``DTensorRedistributePlanner.generate_greedy_transform_infos``) must
first replicate a mesh dim whose target shards a tensor dim that the mesh dims before it shard
differently in source and target. :func:`nesting_steps` names those steps (checked against
DTensor's own collectives on all 151 layout pairs of a 2-D tensor on a (2, 2) mesh and 300 on
(2, 2, 2): tests/torch/test_dtensor_nesting.py); parallelize warns once per layer whose
conversions take one, either way. The same nesting makes DTensor gather several levels of one
dim bottom level first where hypar's order gathers top first, so such a gather moves its bytes
at other levels (the collectives report shows where).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypar.errors import PlanError
from hypar.vocab import Layout

__all__ = ["LayerPlacements", "TorchPlanError", "layer_placements", "module_layouts", "nesting_steps", "placements"]

SHARD_BATCH, SHARD_FEATURES = "Shard(dim=0)", "Shard(dim=-1)"
REPLICATE, PARTIAL = "Replicate()", "Partial(sum)"

# An activation's layout at one level as a placement (features: the last dim).
_ACTIVATION = {Layout.ROWS.value: SHARD_BATCH, Layout.COLS.value: SHARD_FEATURES, Layout.FULL.value: REPLICATE,
               Layout.PARTIAL.value: PARTIAL}
# A weight's placement per (layer kind, hypar's weight split); a missing key has no DTensor rule.
_WEIGHT = {("gemm", "R"): REPLICATE, ("gemm", "S(out)"): "Shard(dim=0)", ("gemm", "S(in)"): "Shard(dim=1)",
           ("embedding", "R"): REPLICATE, ("embedding", "S(out)"): "Shard(dim=1)",
           ("embedding", "S(in)"): "Shard(dim=0)", ("conv", "R"): REPLICATE}
# The torch module each layer kind is applied to.
TORCH_MODULE = {"gemm": "torch.nn.Linear", "embedding": "torch.nn.Embedding", "conv": "torch.nn.ConvNd"}
LOCAL_MAP_HINT = ("or run that module under torch.distributed.tensor.experimental.local_map "
                  "with the collectives written by hand")


class TorchPlanError(PlanError):
    """A plan cannot be applied to a torch module as planned (a layer DTensor has no rule for,
    an uneven split, a module the plan names that the model lacks, a mesh of another shape)."""


@dataclass(frozen=True)
class LayerPlacements:
    """One weighted layer's placements, one entry per mesh dim (top level first).

    ``module``: the module path (``named_modules()``); ``layer``: the plan's layer name; ``kind``:
    gemm / embedding / conv; ``types``: the plan's types; ``input`` / ``output`` / ``weight`` /
    ``bias``: placement reprs (``bias`` None for an embedding)."""

    module: str
    layer: str
    kind: str
    types: tuple[str, ...]
    input: tuple[str, ...]
    output: tuple[str, ...]
    weight: tuple[str, ...]
    bias: tuple[str, ...] | None

    def to_json(self) -> dict:
        """The JSON form :func:`placements` writes per module."""
        row = {"layer": self.layer, "kind": self.kind, "torch_module": TORCH_MODULE[self.kind],
               "types": list(self.types), "input": list(self.input), "weight": list(self.weight)}
        if self.bias is not None:
            row["bias"] = list(self.bias)
        row["output"] = list(self.output)
        return row


def _fanouts(plan: Mapping) -> tuple[int, ...]:
    """The plan array's fanouts; TorchPlanError for a heterogeneous array (uneven splits)."""
    array = plan.get("array") or {}
    kinds = {p.get("kind") for p in array.get("pes", [])}
    flops = {round(k.get("tflops", 0), 9) for n, k in (array.get("pe_kinds") or {}).items() if n in kinds}
    if len(flops) > 1:
        raise TorchPlanError(f"the plan's array {array.get('name')!r} mixes PEs of different throughput, so its "
                             "splits are uneven (in proportion to throughput); DTensor shards evenly: partition "
                             "for a homogeneous array (--levels / --pes) to apply the plan with DTensor")
    return tuple(int(level["fanout"]) for level in array.get("levels", []))


def _full_layers(plan: Mapping) -> list[dict]:
    """The plan's layer rows; TorchPlanError for a minimal plan (no modules, no placements)."""
    if not isinstance(plan, Mapping) or "layers" not in plan:
        raise TorchPlanError("DTensor placements need a full plan (one `hypar partition MODEL -o PLAN.json` "
                             "writes, with each layer's module path); a minimal {\"assignment\": ...} plan has none")
    return list(plan["layers"])


def _check_mappable(row: Mapping) -> None:
    """TorchPlanError naming the layer when DTensor has no rule for its types."""
    name, kind, module = row["name"], row["kind"], row.get("module")
    types = list(row["types"])
    where = f"layer {name!r} (module {module!r})" if module else f"layer {name!r}"
    if kind == "conv" and any(t != "I" for t in types):
        level = next(h for h, t in enumerate(types) if t != "I")
        raise TorchPlanError(f"{where} is a convolution of type {types[level]} at level {level} ({'/'.join(types)}): "
                             "DTensor has no sharding rule for a convolution split by channels; give it type I at "
                             f"every level (e.g. a minimal plan {json.dumps({'assignment': {name: ['I'] * len(types)}})}) "
                             f"{LOCAL_MAP_HINT}")
    for h, p in enumerate(row["placements"]):
        if (kind, p["weight"]) not in _WEIGHT:
            raise TorchPlanError(f"{where}: weight placement {p['weight']} at level {h} has no DTensor rule for a "
                                 f"{kind} layer; give it type I, II or III there {LOCAL_MAP_HINT}")
    slices = row.get("weight_slices")
    if slices and len({(s["in"][1] - s["in"][0], s["out"][1] - s["out"][0]) for s in slices}) > 1:
        raise TorchPlanError(f"{where}: its weight splits unevenly over the PEs ({_slice_sizes(slices)}); DTensor "
                             "shards evenly: give it type I where its dims do not divide, choose widths divisible "
                             f"by the PEs splitting them, {LOCAL_MAP_HINT}")


def _slice_sizes(slices: Sequence[Mapping]) -> str:
    """The distinct (in x out) slice sizes of a weight, for a message."""
    sizes = dict.fromkeys(f"{s['in'][1] - s['in'][0]}x{s['out'][1] - s['out'][0]}" for s in slices)
    return ", ".join(sizes)


def _layer(row: Mapping) -> LayerPlacements:
    """One checked plan row as placements."""
    kind = row["kind"]
    per_level = row["placements"]
    weight = tuple(_WEIGHT[(kind, p["weight"])] for p in per_level)
    bias = None if kind == "embedding" else tuple("Shard(dim=0)" if p["weight"] == "S(out)" else REPLICATE
                                                  for p in per_level)
    return LayerPlacements(row["module"], row["name"], kind, tuple(row["types"]),
                           tuple(_ACTIVATION[p["input"]] for p in per_level),
                           tuple(_ACTIVATION[p["output"]] for p in per_level), weight, bias)


def layer_placements(plan: Mapping) -> dict[str, LayerPlacements]:
    """Module path -> :class:`LayerPlacements` of every weighted layer of a full plan that has a
    module path, in plan order.

    A weighted layer without a module path (an export that records none) is left out when it is
    type I at every level (its parameters are replicated like any other) and is an error
    otherwise. TorchPlanError (naming the layer and what would work) for a minimal plan, a
    heterogeneous array, a convolution of type II / III, an uneven weight split, or two layers of
    one module with different types."""
    fanouts = _fanouts(plan)
    out: dict[str, LayerPlacements] = {}
    for row in _full_layers(plan):
        if not row.get("weighted"):
            continue
        if len(row["types"]) != len(fanouts):
            raise TorchPlanError(f"layer {row['name']!r} has {len(row['types'])} types but the plan's array has "
                                 f"{len(fanouts)} levels; regenerate the plan with `hypar partition`")
        if not row.get("module"):
            if any(t != "I" for t in row["types"]):
                raise TorchPlanError(f"layer {row['name']!r} ({'/'.join(row['types'])}) has no module path in the "
                                     "plan, so no torch module to apply it to; export the model with the dynamo "
                                     "exporter (torch.onnx.export(..., dynamo=True)) and partition that")
            continue
        _check_mappable(row)
        layer = _layer(row)
        seen = out.get(layer.module)
        if seen is not None and seen != layer:
            raise TorchPlanError(f"layers {seen.layer!r} and {layer.layer!r} of module {layer.module!r} have "
                                 f"different placements ({'/'.join(seen.types)} vs {'/'.join(layer.types)}); one "
                                 "module's weight takes one placement: give both the same types")
        out.setdefault(layer.module, layer)
    return out


def module_layouts(plan: Mapping) -> dict[str, tuple[str, ...]]:
    """Module path -> the input placements (one per mesh dim) of a module whose plan nodes are all
    non-weighted and share one layout per level (a norm computed replicated, say): what its
    input is redistributed to before it runs. Modules with weighted layers, or whose nodes take
    different layouts, are left out (DTensor's propagation decides inside them)."""
    layouts: dict[str, set] = {}
    weighted: set[str] = set()
    for row in _full_layers(plan):
        module = row.get("module")
        if not module:
            continue
        if row.get("weighted") or row["kind"] == "matmul_act":
            weighted.add(module)
        else:
            layouts.setdefault(module, set()).add(tuple(row["types"]))
    return {m: tuple(_ACTIVATION[t] for t in next(iter(seen))) for m, seen in layouts.items()
            if m not in weighted and len(seen) == 1}


def placements(plan: Mapping) -> dict[str, dict]:
    """Module path -> the JSON-able placements of that module's tensors, one per mesh dim (top
    level = mesh dim 0): ``layer``, ``kind``, ``torch_module``, ``types``, ``input``, ``weight``,
    ``bias`` (Linear / Conv), ``output``, as DTensor reprs. What ``hypar export PLAN.json --torch``
    writes. Raises as :func:`layer_placements` does.

    >>> plan = {"array": {"levels": [{"fanout": 2}, {"fanout": 2}]}, "layers": [
    ...     {"name": "n0", "module": "fc1", "kind": "gemm", "weighted": True, "types": ["I", "III"],
    ...      "placements": [{"input": "S(b)", "output": "S(b)", "weight": "R"},
    ...                     {"input": "R", "output": "S(f)", "weight": "S(out)"}]}]}
    >>> placements(plan)["fc1"]["weight"]
    ['Replicate()', 'Shard(dim=0)']
    >>> placements(plan)["fc1"]["input"]
    ['Shard(dim=0)', 'Replicate()']
    """
    return {module: layer.to_json() for module, layer in layer_placements(plan).items()}


# One mesh dim of a layout, as the nesting rule reads it: ("S", tensor dim), ("R",) or ("P",).
Place = tuple


def nesting_steps(src: Sequence[Place], tgt: Sequence[Place]) -> list[tuple[int, str, str]]:
    """The mesh dims where DTensor's redistribution of ``src`` into ``tgt`` (one ``("S", dim)``,
    ``("R",)`` or ``("P",)`` per mesh dim) goes through Replicate where hypar's digit nesting
    converts that level directly: ``(mesh dim, DTensor's step, hypar's step)`` with steps named
    by their collective ("all_gather", "all_reduce", "reduce_scatter", "all_to_all", "slice",
    "none").

    DTensor's rule (torch 2.13, default greedy planner): when ``src`` shards anything, a mesh dim
    g whose target is Shard(d) is first replicated when the mesh dims before g shard d
    differently in ``src`` and ``tgt`` (its data then sits in other chunks). hypar converts each
    level on its own. Mesh dims of size 1 are not expected.

    >>> nesting_steps([("R",), ("S", 0)], [("S", 0), ("S", 0)])
    [(1, 'all_gather', 'none')]
    >>> nesting_steps([("S", 1), ("S", 0)], [("R",), ("S", 0)])
    []
    """
    out: list[tuple[int, str, str]] = []
    if not any(p[0] == "S" for p in src):
        return out
    for g in range(len(tgt)):
        if tgt[g][0] != "S":
            continue
        d = tgt[g][1]
        before_src = [i for i in range(g) if src[i] == ("S", d)]
        before_tgt = [i for i in range(g) if tgt[i] == ("S", d)]
        if before_src != before_tgt:
            dtensor = {"S": "all_gather", "P": "all_reduce", "R": "slice"}[src[g][0]]
            if dtensor != "slice":
                out.append((g, dtensor, _direct_step(src[g], tgt[g])))
    return out


def _direct_step(s: Place, t: Place) -> str:
    """The collective converting one level from ``s`` to ``t`` on its own (digit nesting)."""
    if s == t:
        return "none"
    if s[0] == "R":
        return "slice"
    if s[0] == "P":
        return "all_reduce" if t[0] == "R" else "reduce_scatter"
    return "all_gather" if t[0] == "R" else "all_to_all"
