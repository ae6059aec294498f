"""Apply a hypar plan to a torch module with DTensor: :func:`parallelize` (needs torch).

Per weighted layer of the plan (:func:`hypar.torch.placements.layer_placements`) the module at its
path gets its weight and bias distributed per mesh dim, a forward pre-hook that redistributes its
input to the plan's input layout (so the conversion into the layer happens where the plan puts
it, before the layer runs), and a forward hook that all-reduces partial sums in its output (type
II: hypar charges that all-reduce to the layer). Every other parameter is replicated. Every
parameter's gradient is redistributed to the parameter's own placements as soon as it is
computed (the type-I weight-gradient all-reduce happens in the layer's backward, as the plan
counts it). Between planned layers, DTensor's own sharding propagation decides the layouts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

from hypar.errors import HyparWarning
from hypar.torch.consumers import output_layouts, plan_model_path
from hypar.torch.placements import (LOCAL_MAP_HINT, REPLICATE, LayerPlacements, TorchPlanError, layer_placements,
                                    module_layouts, nesting_steps)
from hypar.torch.local import run_with_local_matmul
from hypar.torch.reduce import reduce_grad, reduce_partial_grads, reduce_partials

__all__ = ["parallelize"]

_MODULES = {"gemm": (nn.Linear,), "embedding": (nn.Embedding,), "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d)}


# A plan layout (S(b) / S(f) / R) as a placement repr.
_LAYOUT = {"S(b)": "Shard(dim=0)", "S(f)": "Shard(dim=-1)", "R": REPLICATE}


def placement_of(text: str, ndim: int):
    """The DTensor placement a plan placement repr stands for on a tensor of rank ``ndim`` (a
    negative shard dim counts from the end)."""
    if text == REPLICATE:
        return Replicate()
    if text.startswith("Partial"):
        return Partial()
    dim = int(text[len("Shard(dim="):-1])
    return Shard(dim % ndim)


def _place(p) -> tuple:
    """A DTensor placement as :func:`hypar.torch.placements.nesting_steps` reads it."""
    if p.is_shard():
        return ("S", p.dim)
    return ("P",) if p.is_partial() else ("R",)


def _check_mesh(mesh: DeviceMesh, plan: Mapping) -> None:
    """TorchPlanError unless ``mesh`` has the plan array's shape (one mesh dim per level)."""
    fanouts = tuple(int(level["fanout"]) for level in plan["array"]["levels"])
    if tuple(mesh.shape) != fanouts:
        raise TorchPlanError(f"the mesh has shape {tuple(mesh.shape)} but the plan's array has fanouts {fanouts} "
                             f"(one mesh dim per level, top first); build the mesh with "
                             f"init_device_mesh(device_type, {fanouts})")


def _even(layer: LayerPlacements, what: str, shape: torch.Size, placements: tuple, mesh: DeviceMesh) -> None:
    """TorchPlanError naming the layer when ``placements`` split a dim of ``shape`` unevenly."""
    for dim in range(len(shape)):
        parts = 1
        for h, p in enumerate(placements):
            if p.is_shard(dim):
                parts *= mesh.size(h)
        if shape[dim] % parts:
            raise TorchPlanError(f"layer {layer.layer!r} (module {layer.module!r}): its {what} of shape {tuple(shape)} "
                                 f"splits dim {dim} ({shape[dim]}) over {parts} PEs unevenly; DTensor and hypar cut "
                                 f"uneven dims differently: give it type I where the dim does not divide, use a "
                                 f"size divisible by {parts}, {LOCAL_MAP_HINT}")


class _Conversions:
    """Conversions of activations into planned modules, shared per forward pass: a tensor read by
    several planned modules in one layout is converted once, and the partial errors they send
    back are added before one reduction (SPEC.md §4); DTensor's nesting is noted per layer."""

    def __init__(self, mesh: DeviceMesh):
        self.mesh = mesh
        self.done: dict[int, tuple[torch.Tensor, dict[tuple, torch.Tensor]]] = {}
        self.warned: set[str] = set()

    def clear(self, *_args) -> None:
        """Forget the last forward pass's conversions (a root forward pre-hook)."""
        self.done.clear()

    def convert(self, x: torch.Tensor, tgt: tuple, layer: LayerPlacements) -> torch.Tensor:
        """``x`` in placements ``tgt`` for ``layer``; a plain tensor (the model's input, whole on
        every process) is split locally, nothing sent."""
        if not isinstance(x, DTensor):
            return distribute_tensor(x, self.mesh, tgt, src_data_rank=None)
        seen = self.done.get(id(x))
        if seen is None or seen[0] is not x:
            seen = self.done[id(x)] = (x, {})
        hit = seen[1].get(tgt)
        if hit is None:
            hit = x
            if tuple(x.placements) != tgt:
                self.note_nesting(layer, x.placements, tgt)
                hit = x.redistribute(self.mesh, tgt)
            if hit.requires_grad:
                hit = reduce_partial_grads(hit)
            seen[1][tgt] = hit
        return hit

    def note_nesting(self, layer: LayerPlacements, src: tuple, tgt: tuple) -> None:
        """Warn once per layer when DTensor's nesting makes a conversion, or its gradient's
        conversion back (``tgt`` -> ``src``), send more than hypar's."""
        s, t = [_place(p) for p in src], [_place(p) for p in tgt]
        said = [f"mesh dim {g}: {d} where hypar's digit nesting does {h}" for g, d, h in nesting_steps(s, t)]
        said += [f"backward, mesh dim {g}: {d} where hypar's digit nesting does {h}"
                 for g, d, h in nesting_steps(t, s)]
        if said and layer.layer not in self.warned:
            self.warned.add(layer.layer)
            warnings.warn(f"layer {layer.layer!r} (module {layer.module!r}): a conversion {_text(src)} -> "
                          f"{_text(tgt)} costs more under DTensor's left-to-right nesting ({'; '.join(said)}); see "
                          "hypar.torch.placements (Nesting)", HyparWarning, stacklevel=3)


class _Layer:
    """The hooks of one planned module; ``after``: per level the layout its output is converted
    to (None: kept as produced, partial sums reduced)."""

    def __init__(self, layer: LayerPlacements, conversions: _Conversions, after: tuple = ()):
        self.layer, self.conversions, self.after = layer, conversions, after

    def pre_hook(self, module: nn.Module, args: tuple):
        """Convert the first argument to the plan's input layout before the module runs."""
        x = args[0]
        tgt = tuple(placement_of(p, x.ndim) for p in self.layer.input)
        _even(self.layer, "input", x.shape, tgt, self.conversions.mesh)
        return (self.conversions.convert(x, tgt, self.layer),) + tuple(args[1:])

    def post_hook(self, module: nn.Module, args: tuple, out):
        """All-reduce partial sums in the output (type II) in hypar's order, then convert it to
        the layout its consumers read it in."""
        if not isinstance(out, DTensor):
            return out
        out = reduce_partials(out)
        tgt = tuple(p if a is None else placement_of(_LAYOUT[a], out.ndim)
                    for p, a in zip(out.placements, self.after or (None,) * out.device_mesh.ndim))
        if tgt != tuple(out.placements):
            _even(self.layer, "output", out.shape, tgt, self.conversions.mesh)
            self.conversions.note_nesting(self.layer, out.placements, tgt)
            out = out.redistribute(self.conversions.mesh, tgt)
        return out


def _text(placements) -> str:
    """Placements in DTensor's short form, e.g. [S(0), R]."""
    return "[" + ", ".join(str(p) for p in placements) + "]"


def _modules_of(model: nn.Module, planned: Mapping[str, LayerPlacements]) -> dict[str, nn.Module]:
    """The module at each planned path; TorchPlanError naming a path the model lacks or a module
    of another kind."""
    named = dict(model.named_modules())
    out = {}
    for path, layer in planned.items():
        sub = named.get(path)
        if sub is None:
            near = sorted(p for p in named if p.rsplit(".", 1)[-1] == path.rsplit(".", 1)[-1])[:3]
            raise TorchPlanError(f"the plan's layer {layer.layer!r} names module {path!r}, which the model does not "
                                 f"have{' (similar: ' + ', '.join(near) + ')' if near else ''}; apply the plan to the "
                                 "module the ONNX was exported from (module paths as in named_modules())")
        if not isinstance(sub, _MODULES[layer.kind]):
            raise TorchPlanError(f"the plan's layer {layer.layer!r} is a {layer.kind} but module {path!r} is a "
                                 f"{type(sub).__name__}; only Linear, Embedding and (type I) convolutions are "
                                 f"distributed by the plan: give it type I at every level {LOCAL_MAP_HINT}")
        out[path] = sub
    return out


def _distribute(param: nn.Parameter, placements: tuple, mesh: DeviceMesh, src_data_rank: int | None) -> nn.Parameter:
    """``param`` as a DTensor parameter whose gradient is redistributed to ``placements``."""
    dt = nn.Parameter(distribute_tensor(param.detach(), mesh, placements, src_data_rank=src_data_rank),
                      requires_grad=param.requires_grad)
    if dt.requires_grad:
        dt.register_hook(lambda g: _to_placements(reduce_grad(g), placements))
    return dt


def _to_placements(g: DTensor, placements: tuple) -> DTensor:
    """A gradient redistributed to its parameter's ``placements``."""
    return g if tuple(g.placements) == placements else g.redistribute(g.device_mesh, placements)


def _distribute_params(model: nn.Module, mesh: DeviceMesh, wanted: dict[int, tuple], src_data_rank: int | None,
                       ) -> None:
    """Replace every parameter by a DTensor: ``wanted[id(param)]`` placements, else replicated;
    a parameter shared by several modules is distributed once."""
    done: dict[int, nn.Parameter] = {}
    for sub in model.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if isinstance(param, DTensor):
                continue
            if id(param) not in done:
                placements = wanted.get(id(param), (Replicate(),) * mesh.ndim)
                done[id(param)] = _distribute(param, placements, mesh, src_data_rank)
            sub.register_parameter(name, done[id(param)])


def parallelize(module: nn.Module, plan: Mapping, mesh: DeviceMesh, *, model_path: str | None = None,
                src_data_rank: int | None = 0) -> nn.Module:
    """Apply a full hypar ``plan`` (a dict as ``hypar partition -o`` writes it) to ``module`` (the
    nn.Module the plan's ONNX was exported from) on ``mesh`` (one mesh dim per plan level, top
    first: ``init_device_mesh("cpu", (2, 2))`` for ``--levels 2,2``); returns ``module``, changed
    in place. Call it on every process of the mesh with the same module and plan.

    Each weighted layer's module (matched by the plan's ``module`` path) gets its weight (and
    bias) distributed per mesh dim, its input converted to the plan's input layout before it runs,
    partial sums in its output reduced (type II) and the output converted to the layout its
    consumers read it in, and its gradients reduced to the weight's placements in the backward
    pass; a leaf module whose plan nodes share one layout (a norm) gets its input converted to
    it; every other parameter is replicated. Matmuls of two activations split only along their
    batch dims (hypar's attention MatMuls) run on the local shards (:mod:`hypar.torch.local`). Partial sums are reduced in hypar's hierarchical
    order (:mod:`hypar.torch.reduce`); a tensor read by several planned modules in one layout is
    converted once and their partial errors are added before one reduction. Placements and how
    DTensor's nesting of mesh dims relates to hypar's levels: :mod:`hypar.torch.placements`.

    ``model_path``: the ONNX the plan was made from (default: the path the plan records, when the
    file is there); it tells where outputs are converted (:mod:`hypar.torch.consumers`) -- without
    it, with a warning, DTensor's propagation decides the layouts between planned modules.
    ``src_data_rank``: the process whose weights are scattered (DTensor's ``distribute_tensor``;
    None: every process keeps its shard of its own copy, which must then be equal). A plain tensor
    reaching a planned module (the model's input) is split locally: every process must pass the
    same whole input. Run forward and backward under
    ``torch.distributed.tensor.experimental.implicit_replication()`` when the model mixes plain
    tensors with activations (rotary tables, masks).

    Raises TorchPlanError (a PlanError), before changing anything, for a minimal plan, a mesh of
    another shape, a module path the model lacks, a layer DTensor has no rule for (a convolution
    of type II / III) or an uneven split (a weight's, or with the model any node's: batch, heads,
    features); an input that splits unevenly at run time raises it when the module runs.
    """
    planned = layer_placements(plan)
    _check_mesh(mesh, plan)
    modules = _modules_of(module, planned)
    wanted = _weight_placements(planned, modules, mesh)
    after = _output_layouts(plan, model_path)
    _distribute_params(module, mesh, wanted, src_data_rank)
    conversions = _Conversions(mesh)
    module.register_forward_pre_hook(conversions.clear)
    for path, layer in planned.items():
        hooks = _Layer(layer, conversions, after.get(layer.layer, ()))
        modules[path].register_forward_pre_hook(hooks.pre_hook)
        modules[path].register_forward_hook(hooks.post_hook)
    named = dict(module.named_modules())
    for path, layout in module_layouts(plan).items():
        sub = named.get(path)
        if sub is not None and path not in planned and not any(True for _ in sub.children()):
            hooks = _Layer(_carrier(path, layout), conversions)
            sub.register_forward_pre_hook(hooks.pre_hook)
            sub.register_forward_hook(hooks.post_hook)
    run_with_local_matmul(module)
    return module


def _weight_placements(planned: Mapping[str, LayerPlacements], modules: Mapping[str, nn.Module],
                       mesh: DeviceMesh) -> dict[int, tuple]:
    """id(parameter) -> its placements, for every planned weight and bias; TorchPlanError for an
    uneven split or a parameter two planned modules place differently."""
    wanted: dict[int, tuple] = {}
    for path, layer in planned.items():
        for what, texts in (("weight", layer.weight), ("bias", layer.bias)):
            param = getattr(modules[path], what, None)
            if texts is None or not isinstance(param, torch.Tensor):
                continue
            placements = tuple(placement_of(p, param.ndim) for p in texts)
            _even(layer, what, param.shape, placements, mesh)
            if wanted.setdefault(id(param), placements) != placements:
                raise TorchPlanError(f"module {path!r}: its {what} is shared with another planned module that "
                                     "places it differently; give the layers sharing it the same types")
    return wanted


def _output_layouts(plan: Mapping, model_path: str | None) -> dict[str, tuple]:
    """Layer name -> the layouts its consumers read its output in (:mod:`hypar.torch.consumers`),
    from the plan's ONNX; empty, with a warning, when no model file is at hand."""
    path = plan_model_path(plan, model_path)
    if path is None:
        warnings.warn("no ONNX model for the plan (give model_path=, or keep the file at the path the plan "
                      "records): each layer's output stays as produced, and DTensor's propagation, not the plan, "
                      "decides the layouts between layers", HyparWarning, stacklevel=3)
        return {}
    return output_layouts(plan, path)


def _carrier(path: str, layout: tuple[str, ...]) -> LayerPlacements:
    """A non-weighted leaf module's input layout as the placements its pre-hook reads."""
    return LayerPlacements(path, path, "carrier", (), layout, layout, (), None)
