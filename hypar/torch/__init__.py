"""hypar plans applied to PyTorch modules with DTensor.

- :func:`placements` (no torch needed): a full plan as DTensor placements per module path, one
  per mesh dim -- what ``hypar export PLAN.json --torch`` writes (:mod:`hypar.torch.placements`,
  which also states how hypar's nesting of levels relates to DTensor's).
- :func:`parallelize` (needs torch, ``pip install -e ".[torch]"``): the plan applied to the
  nn.Module the ONNX was exported from (:mod:`hypar.torch.apply`).
- Inside parallelize: :mod:`hypar.torch.consumers` (what the plan's ONNX tells: the layouts a
  layer's consumers read, even splits), :mod:`hypar.torch.reduce` (partial sums reduced in
  hypar's hierarchical order), :mod:`hypar.torch.local` (attention matmuls on local shards).
- Proof: :mod:`hypar.torch.comms` counts the collectives of a step per module (CommDebugMode),
  :mod:`hypar.torch.report` sets them beside the plan's, :mod:`hypar.torch.gloo` runs a function
  on local gloo processes, :mod:`hypar.torch.step` checks one training step against a single
  process, :mod:`hypar.torch.examples` holds the MLP and decoder the plans are proven on.

Only this package imports torch, and only the modules that need it: ``import hypar.torch`` and
:func:`placements` work without torch.
"""

from __future__ import annotations

import importlib.util

from hypar.torch.placements import LayerPlacements, TorchPlanError, layer_placements, nesting_steps, placements

__all__ = ["LayerPlacements", "TORCH_MISSING", "TorchPlanError", "layer_placements", "nesting_steps", "parallelize",
           "placements", "torch_installed"]

TORCH_MISSING = 'torch is not installed: pip install -e ".[torch]" (torch==2.13.0, the CPU wheel is enough)'


def torch_installed() -> bool:
    """Is the real torch importable (a folder named ``torch`` on the path, such as tests/torch,
    does not count)."""
    spec = importlib.util.find_spec("torch")
    return spec is not None and spec.origin is not None


def parallelize(module, plan, mesh, **kwargs):
    """:func:`hypar.torch.apply.parallelize` (imports torch on first use; see there)."""
    from hypar.torch.apply import parallelize as _parallelize

    return _parallelize(module, plan, mesh, **kwargs)
