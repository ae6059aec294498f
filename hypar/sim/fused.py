"""onnxruntime's fused ops the importer keeps as one layer, on one device and on shards: the rotary
embedding (RotaryEmbedding, ONNX opset 23 and com.microsoft) and the skip norms
(SkipSimplifiedLayerNormalization, SkipLayerNormalization).

RotaryEmbedding rotates pairs of elements inside each head of its input's last axis by an angle
per (sequence position, pair): with ``interleaved`` the pairs are neighbours (2k, 2k+1), else the
two halves of the head's rotated part (k, k + rotary_dim / 2); elements past ``rotary_dim`` pass
through. The cos / sin caches are constants read at the position ids, so the simulator draws the
angles it reads directly, one table of (sequence, rotary_dim / 2) per layer (seeded, as every
weight; the reference reads the same): the layout question -- does every PE hold whole heads --
does not depend on which positions the ids name. The sequence is the second-to-last axis (3-D
(batch, sequence, hidden) and 4-D (batch, heads, sequence, head) inputs alike); the backward
pass is the transpose rotation (the angle negated).

A skip norm normalises ``x + skip`` over the last axis (an RMS norm or a LayerNorm) and may also
output that sum (the residual stream onward): on shards the sum is local (both inputs in the
node's layouts) and the norm is :mod:`hypar.sim.norms`' on the sum, its statistics all-reduced as
the plain norm's; the error of both inputs is the norm's input error plus the error of the sum.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import RMS_NORM_OPS
from hypar.sim.errors import SimulationError, Unsupported
from hypar.sim.mesh import Dist, add, same_regions

SKIP_NORMS = ("SkipSimplifiedLayerNormalization", "SkipLayerNormalization")


class Rotary(NamedTuple):
    """A rotary layer's angles as read: cos and sin, each (sequence, rotary_dim / 2)."""

    cos: np.ndarray
    sin: np.ndarray


def is_rotary(lay: G.Layer) -> bool:
    """A RotaryEmbedding of one activation whose head size and rotated part the importer read."""
    return lay.op == "RotaryEmbedding" and lay.kind == G.ELEMENTWISE and len(lay.inputs) == 1 \
        and bool(lay.attr("rotary_head")) and bool(lay.attr("rotary_dim"))


def draw_rotary(rng: np.random.Generator, lay: G.Layer, seq: int, dtype) -> Rotary:
    """Seeded angles of ``lay`` for a sequence of ``seq`` positions, uniform on [0, 2 pi)."""
    theta = rng.uniform(0.0, 2 * np.pi, (seq, int(lay.attr("rotary_dim")) // 2))
    return Rotary(np.cos(theta).astype(dtype), np.sin(theta).astype(dtype))


def rotary(x: np.ndarray, w: Rotary, lay: G.Layer, inverse: bool = False) -> np.ndarray:
    """``x`` (..., sequence, n x rotary_head) with each head's pairs rotated by ``w``'s angles
    (``inverse``: by minus them, the backward pass). Raises SimulationError when the last axis is
    not whole heads or the sequence is not the angles'."""
    head, rot = int(lay.attr("rotary_head")), int(lay.attr("rotary_dim"))
    if x.shape[-1] % head or x.shape[-2] != w.cos.shape[0] or rot > head:
        raise SimulationError(f"{lay.name} (RotaryEmbedding): input {x.shape} is not whole heads of {head} "
                              f"over {w.cos.shape[0]} positions")
    xh = x.reshape(x.shape[:-1] + (x.shape[-1] // head, head))
    cos, sin = w.cos[:, None, :], (-w.sin if inverse else w.sin)[:, None, :]
    first, second = (slice(0, rot, 2), slice(1, rot, 2)) if lay.attr("interleaved") else \
        (slice(0, rot // 2), slice(rot // 2, rot))
    a, b = xh[..., first], xh[..., second]
    out = xh.copy()
    out[..., first] = a * cos - b * sin
    out[..., second] = b * cos + a * sin
    return out.reshape(x.shape)


def check_whole_heads(lay: G.Layer, x: Dist) -> None:
    """Unsupported when a PE holds part of a head of a rotary's input (its last axis split inside
    a head: the rotation would need a neighbour's values; the cost model refuses such a split)."""
    if x.axes[1] != len(x.shape) - 1:
        return
    head = int(lay.attr("rotary_head"))
    for p in range(x.mesh.P):
        idx = x.index(p)[1]
        if idx is None:
            continue
        idx = np.asarray(idx)
        starts = idx[::head] if len(idx) % head == 0 else None
        if starts is None or np.any(starts % head) or \
                not np.array_equal(idx, (starts[:, None] + np.arange(head)).ravel()):
            raise Unsupported(f"{lay.name} (RotaryEmbedding): a PE holds part of a head of {head} "
                              "(the rotation needs its neighbour's values)")


def is_skip_norm(lay: G.Layer) -> bool:
    """A skip norm of two activations."""
    return lay.kind == G.FEATURENORM and lay.op in SKIP_NORMS and len(lay.inputs) == 2


def skip_norm_problem(n: str, lay: G.Layer, kept: set, meta: dict) -> list[str]:
    """Why the skip norm ``n`` cannot be simulated (empty: it can): it must be a node of the plan,
    its inputs and outputs of one shape (the normalised output and the sum; not the mean or
    inverse standard deviation) and its parameters the scale (and a LayerNorm's shift) alone."""
    if n not in kept:
        return [f"{n} ({lay.op}): a skip norm folded into an edge (simulated as a node of the plan: space full)"]
    shapes = {tuple(meta[t].shape) for t in lay.inputs + lay.outputs if t in meta}
    if len(shapes) > 1 or len(lay.outputs) > 2:
        return [f"{n} ({lay.op}): only inputs of one shape and outputs y and x + skip are simulated"]
    width = next(iter(shapes))[-1] if shapes else 0
    if lay.bias_elements > (width if lay.op == "SkipLayerNormalization" else 0):
        return [f"{n} ({lay.op}): a bias added before normalising is not simulated"]
    return []


def norm_view(lay: G.Layer) -> G.Layer:
    """The plain norm a skip norm applies to the sum (same name: its parameters and statistics)."""
    op = "RMSNormalization" if lay.op in RMS_NORM_OPS else "LayerNormalization"
    return replace(lay, op=op, inputs=lay.inputs[:1], outputs=lay.outputs[:1])


def skip_norm_values(lay: G.Layer, xs: list[np.ndarray], w, norm) -> dict[str, np.ndarray]:
    """Every output of a skip norm on one device (or one PE's blocks): ``norm(view, [sum], w)``
    under the first output's name, the sum under the second's (when it has one)."""
    s = xs[0] + xs[1]
    return dict(zip(lay.outputs, (norm(norm_view(lay), [s], w), s)))


def skip_norm_error(lay: G.Layer, xs: list[np.ndarray], errs: dict, w, norm_bwd) -> np.ndarray:
    """The error of both inputs on one device: the norm's input error for the first output's
    error plus the error of the sum (``errs`` by output name; a missing one is zero)."""
    s = xs[0] + xs[1]
    d = norm_bwd(norm_view(lay), [s], errs[lay.outputs[0]], w)[0]
    return d + errs[lay.outputs[1]] if len(lay.outputs) > 1 and lay.outputs[1] in errs else d


def skip_norm_sum(lay: G.Layer, slots: list[Dist]) -> Dist:
    """x + skip on every PE (both slots in the node's layouts and regions)."""
    if not same_regions(slots[0], slots[1]):
        raise SimulationError(f"{lay.name} ({lay.op}): x and skip held in different regions")
    return add(slots[0], slots[1])
