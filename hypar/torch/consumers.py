"""What the plan's ONNX model tells beyond the plan file (pure: no torch): where each weighted
layer's output is converted (:func:`output_layouts`) and whether every split is even
(:func:`check_even`).

A plan file records each node's own layouts but not the graph's edges; the conversion from a
layer's output layout to its consumers' input layouts lies on those edges. When the next op is
not a module (a ``view`` splitting features into heads, a residual add), a module hook can only
run it at the layer's output: :func:`output_layouts` says, per weighted layer and level, the one
layout all its consumers read its output in (the model's edges, the plan's types), so
:func:`hypar.torch.parallelize` converts there and DTensor's propagation sees the plan's layouts
in the ops that follow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypar import api
from hypar.torch.placements import TorchPlanError

__all__ = ["check_even", "output_layouts", "plan_model_path"]


def plan_model_path(plan: Mapping, model_path: str | os.PathLike | None = None) -> str | None:
    """``model_path``, else the model path the plan records when that file exists, else None.
    TorchPlanError when ``model_path`` is given but missing."""
    if model_path is not None:
        if not os.path.isfile(model_path):
            raise TorchPlanError(f"no such model file {os.fspath(model_path)!r}; give the ONNX file the plan was "
                                 "made from")
        return os.fspath(model_path)
    recorded = (plan.get("model") or {}).get("path")
    return recorded if recorded and os.path.isfile(recorded) else None


def output_layouts(plan: Mapping, model_path: str | os.PathLike) -> dict[str, tuple[str | None, ...]]:
    """Weighted layer name -> per level, the layout (``S(b)`` / ``S(f)`` / ``R``) every consumer
    of its output reads it in under ``plan``, or None at a level where they differ (or where it
    has none). ``model_path``: the ONNX the plan was made from (bound as the plan records).
    Checks first that every split is even (:func:`check_even`)."""
    model, assignment = api.plan_assignment(os.fspath(model_path), dict(plan))
    check_even(plan, model, assignment)
    out: dict[str, tuple[str | None, ...]] = {}
    for i, node in enumerate(model.nodes):
        if not node.layer.weighted:
            continue
        edges = [e for e in model.edges if e.p == i]
        per_level = []
        for h in range(model.n_levels):
            seen = {model.nodes[e.c].strategy(assignment[e.c][h]).in_layouts[e.slot] for e in edges}
            per_level.append(next(iter(seen)) if len(seen) == 1 else None)
        out[model.names[i]] = tuple(per_level)
    return out


def check_even(plan: Mapping, model, assignment: list[tuple]) -> None:
    """TorchPlanError naming the first node (in the model's order) whose plan splits one of its
    axes (batch, features, heads, a weight's rows or columns) over PEs that do not divide it:
    DTensor cuts a dim into equal chunks (torch.chunk's sizes otherwise), hypar into its own
    blocks, so only even splits run as planned. ``model`` / ``assignment``: the plan's cost model
    and types (:func:`hypar.api.plan_assignment`)."""
    fanouts = model.array.fanouts
    for i, node in enumerate(model.nodes):
        parts: dict[str, int] = {}
        for h, t in enumerate(assignment[i]):
            axis = node.strategy(t).split_axis
            if axis is not None:
                parts[axis] = parts.get(axis, 1) * fanouts[h]
        for axis, n in parts.items():
            if node.size(axis) % n:
                module = plan_module(plan, model.names[i])
                raise TorchPlanError(f"layer {model.names[i]!r}{f' (module {module!r})' if module else ''} splits its "
                                     f"{_AXIS.get(axis, axis)} axis of {node.size(axis)} over {n} PEs "
                                     f"({'/'.join(assignment[i])}), unevenly; DTensor splits evenly: choose a "
                                     f"batch / sizes divisible by {n}, or a plan with fewer levels splitting it")


_AXIS = {"b": "batch", "i": "input-feature", "o": "output-feature", "h": "head", "f": "feature", "g": "group"}


def plan_module(plan: Mapping, name: str) -> str | None:
    """The module path the plan records for layer ``name`` (None when unknown)."""
    return next((row.get("module") for row in plan["layers"] if row["name"] == name), None)
