"""Batch and feature axis tracking: which axis of each activation holds the batch and which the
features (channels, hidden size or heads), from the graph inputs through every layer, across
reshapes and transposes.

Through a reshape the axes are followed as atoms: each axis of a tensor is a list of factors
``(label, size)``, outermost first, with label "B" (batch), "F" (feature/head), "f" (an inner
part of a feature dim split by a reshape: the head size of 64 -> 4 x 16, the heads of a packed
q/k/v projection 3 x heads x head size) or None. A reshape regroups the factors, so a head axis
merged into the batch ((B, H) -> (B*H)) is recovered when it is split out again; a Gather that
picks one part of a packed feature axis (q out of q/k/v) hands the feature label to the next
part of that dim (the heads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

from hypar import graph as G
from hypar.onnx.protos import INT_TYPES
from hypar.onnx.shapes import ShapeTable

Axes = tuple[int | None, int | None]  # (batch axis, feature axis); None when absent
Atoms = list[list[tuple[str | None, int]]]

_REGROUPED = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")  # reshapes followed as atoms


def input_axes(shape: tuple[int, ...], elem_type: int) -> Axes:
    """Axes of a graph input: batch at 0; features at 1 for rank >= 4 (NCHW), else last;
    none for integer inputs (token ids, masks) and rank 1."""
    r = len(shape)
    if r == 0:
        return None, None
    if elem_type in INT_TYPES:
        return 0, None
    if r >= 4:
        return 0, 1
    if r >= 2:
        return 0, r - 1
    return 0, None


def map_axis_reshape(ax: int | None, src: tuple[int, ...], dst: tuple[int, ...]) -> int | None:
    """Map an axis through a reshape by prefix products (the axis is the outer part).

    The output axis starting at the same prefix product with the same size, else the first
    one whose size divides or is divided by it; None when there is none."""
    if ax is None or ax >= len(src):
        return None
    pre = prod(src[:ax])
    size = src[ax]
    cands = []
    p = 1
    for j, d in enumerate(dst):
        if p == pre:
            cands.append(j)
        p *= d
        if p > pre:
            break
    best = None
    for j in cands:
        d = dst[j]
        if d == size:
            return j
        if best is None and size > 1 and d > 1 and (d % size == 0 or size % d == 0):
            best = j
    return best


def default_atoms(shape: tuple[int, ...], ba: int | None, fa: int | None) -> Atoms:
    """One factor per axis, labelled B at ``ba``, F at ``fa``."""
    return [[("B" if i == ba else "F" if i == fa else None, d)] for i, d in enumerate(shape)]


def atoms_axes(atoms: Atoms) -> Axes:
    """(batch_axis, feature_axis): the first axis whose outermost non-trivial factor is B / F."""
    ba = fa = None
    for i, ax in enumerate(atoms):
        big = [lab for lab, s in ax if s > 1]
        lab = big[0] if big else (ax[0][0] if ax else None)
        if lab == "B" and ba is None:
            ba = i
        elif lab == "F" and fa is None:
            fa = i
    return ba, fa


def regroup(atoms: Atoms, out_shape: tuple[int, ...]) -> Atoms | None:
    """Distribute the factors of ``atoms`` over ``out_shape`` (None if they do not tile it).

    A factor split across output axes keeps its label on the outer part only."""
    flat = [a for ax in atoms for a in ax]
    if prod(s for _, s in flat) != prod(out_shape):
        return None
    res: Atoms = []
    i = 0
    for d in out_shape:
        cur: list[tuple[str | None, int]] = []
        if d == 1:
            if i < len(flat) and flat[i][1] == 1:
                cur.append(flat[i])
                i += 1
            res.append(cur)
            continue
        p = 1
        while p < d:
            if i >= len(flat):
                return None
            lab, s = flat[i]
            if s == 1:
                cur.append(flat[i])
                i += 1
            elif d % (p * s) == 0:
                cur.append((lab, s))
                p *= s
                i += 1
            else:
                need = d // p
                if need * p != d or s % need != 0:
                    return None
                cur.append((lab, need))
                p *= need
                flat[i] = ("f" if lab in ("F", "f") else None, s // need)
        res.append(cur)
    return res


# -- axis rules per layer kind -------------------------------------------------------------------


@dataclass(frozen=True)
class AxisCase:
    """One output of one layer as the axis rules see it: the op, its layer attributes, the
    source operand's axes and shape, and the output's shape."""

    op: str
    attrs: dict[str, object]
    src_axes: Axes
    src_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def r_in(self) -> int:
        """Rank of the source operand."""
        return len(self.src_shape)

    @property
    def r_out(self) -> int:
        """Rank of the output."""
        return len(self.out_shape)


def _shifted(c: AxisCase) -> Axes:
    """Default: axes keep their place counted from the end (broadcast adds leading axes)."""
    sba, sfa = c.src_axes
    shift = c.r_out - c.r_in
    if shift >= 0:
        return tuple(None if v is None or v + shift < 0 or v + shift >= c.r_out else v + shift
                     for v in (sba, sfa))
    return (sba, sfa) if all(v is None or v < c.r_out for v in (sba, sfa)) else (None, None)


def _gemm_axes(c: AxisCase) -> Axes:
    """Gemm: (0, 1); MatMul keeps the batch among the leading axes, features last."""
    if c.op == "Gemm":
        return 0, 1
    sba, r_out = c.src_axes[0], c.r_out
    return (sba if sba is not None and sba < r_out - 1 else (0 if r_out > 1 else None), r_out - 1)


def _matmul_act_axes(c: AxisCase) -> Axes:
    """Activation x activation MatMul: batch kept; heads kept when among the leading axes."""
    sba, sfa = c.src_axes
    fa = sfa if sfa is not None and sfa < c.r_in - 2 else None
    return (sba if sba is not None and sba < c.r_out else None, fa)


def _reshape_axes(c: AxisCase) -> Axes:
    """Transpose permutes the axes; Depth/SpaceToDepth keep them; reshapes map by prefix."""
    if c.op == "Transpose":
        perm = list(c.attrs["perm"])
        return tuple(perm.index(v) if v is not None and v in perm else None for v in c.src_axes)
    if c.op in ("DepthToSpace", "SpaceToDepth"):
        return c.src_axes
    return tuple(map_axis_reshape(v, c.src_shape, c.out_shape) for v in c.src_axes)


def _reduce_axes(c: AxisCase) -> Axes:
    """Without keepdims the reduced axes vanish (an axis reduced away is None)."""
    if c.attrs.get("keepdims", 1):
        return _shifted(c)
    red = set(c.attrs.get("axes", ()))

    def drop(v: int | None) -> int | None:
        if v is None or v in red:
            return None
        return v - sum(1 for x in red if x < v)

    return tuple(drop(v) for v in c.src_axes)


def _split_axes(c: AxisCase) -> Axes:
    """Gather that changes rank: the gathered axis becomes the indices' axes."""
    if c.op != "Gather" or c.r_out == c.r_in:
        return _shifted(c)
    gax = c.attrs.get("axis", 0)
    extra = c.r_out - c.r_in  # indices rank - 1

    def move(v: int | None) -> int | None:
        if v is None or v == gax:
            return None
        return v if v < gax else v + extra

    return tuple(move(v) for v in c.src_axes)


AXIS_RULES: dict[str, Callable[[AxisCase], Axes]] = {
    G.CONV: lambda c: (0, 1),
    G.GEMM: _gemm_axes,
    G.EMBEDDING: lambda c: (c.src_axes[0], c.r_out - 1),
    G.MATMUL_ACT: _matmul_act_axes,
    G.RESHAPE: _reshape_axes,
    G.REDUCE: _reduce_axes,
    G.SPLIT: _split_axes,
}
# Kinds whose output follows the operand with the most axis information.
_MULTI_OPERAND = (G.BINARY, G.ELEMENTWISE, G.CONCAT, G.OPAQUE)


class AxisTracker:
    """Batch / feature axes and atoms of every activation seen so far (layers in topological
    order), reading ranks and shapes from ``shapes``."""

    def __init__(self, shapes: ShapeTable) -> None:
        self.shapes = shapes
        self.axes: dict[str, Axes] = {}
        self.atoms: dict[str, Atoms] = {}

    def get(self, t: str, default: Axes) -> Axes:
        """Axes of tensor ``t``, ``default`` when not tracked."""
        return self.axes.get(t, default)

    def set_input(self, t: str, axes: Axes) -> None:
        """Record the axes of graph input ``t``."""
        self.axes[t] = axes

    def propagate(
        self, op: str, kind: str, act_in: Sequence[str], outs: Sequence[str], attrs: dict[str, object]
    ) -> None:
        """Derive the axes and atoms of each output in ``outs`` of a layer of ``kind`` and
        ``op`` with activation inputs ``act_in`` and layer attributes ``attrs``."""
        for o in outs:
            oshape = self.shapes.dims(o)
            osh = tuple(oshape) if oshape is not None else ()
            src = self._source_operand(kind, act_in, len(oshape) if oshape is not None else 0)
            sba, sfa = self.axes.get(src, (None, None)) if src else (None, None)
            sshape = tuple(self.shapes.dims(src) or ()) if src else ()
            case = AxisCase(op, attrs, (sba, sfa), sshape, osh)
            ax = AXIS_RULES.get(kind, _shifted)(case)
            src_atoms = self.atoms.get(src) if src else None
            if src and src_atoms is None:
                src_atoms = default_atoms(sshape, sba, sfa)
            atoms, ax = _output_atoms(case, kind, src_atoms, ax)
            self.atoms[o] = atoms if atoms is not None else default_atoms(osh, ax[0], ax[1])
            self.axes[o] = (ax[0], ax[1])

    def _source_operand(self, kind: str, act_in: Sequence[str], r_out: int) -> str | None:
        """The input whose axes the output follows: the first, or for elementwise-like kinds
        the operand with the output's rank that carries the most axis information (e.g.
        Where(cond, x, y): x, not the boolean condition)."""
        src = act_in[0] if act_in else None
        if kind in _MULTI_OPERAND and len(act_in) > 1:
            same = [t for t in act_in
                    if self.shapes.dims(t) is not None and len(self.shapes.dims(t)) == r_out]
            best = sorted(same, key=lambda t: -sum(v is not None for v in self.axes.get(t, (None, None))))
            if best:
                src = best[0]
        return src


def _output_atoms(case: AxisCase, kind: str, src_atoms: Atoms | None, ax: Axes) -> tuple[Atoms | None, Axes]:
    """Atoms of the output (None: default atoms from the axes) and the axes, which a regrouping
    reshape re-derives from its atoms."""
    if src_atoms is None:
        return None, ax
    if kind == G.RESHAPE and case.op == "Transpose":
        perm = list(case.attrs["perm"])
        return ([src_atoms[p] for p in perm] if len(perm) == len(src_atoms) else None), ax
    if kind == G.RESHAPE and case.op in _REGROUPED:
        atoms = regroup(src_atoms, case.out_shape)
        return atoms, (atoms_axes(atoms) if atoms is not None else ax)
    if kind == G.SPLIT and case.op == "Gather" and ax[1] is None:
        return _packed_pick(case, src_atoms, ax)
    if case.out_shape == case.src_shape and ax == case.src_axes:
        return src_atoms, ax
    return None, ax


def _packed_pick(case: AxisCase, src_atoms: Atoms, ax: Axes) -> tuple[Atoms | None, Axes]:
    """A Gather of one index (a scalar) along the feature axis of a packed dim (q, k, v stacked
    before the heads): the output's feature axis is the next part of that dim, the first axis
    whose outer factor is "f" (module docstring); the axes as they were when there is none."""
    gax = case.attrs.get("axis", 0)
    if case.src_axes[1] != gax or case.r_out != case.r_in - 1:
        return None, ax
    atoms = [list(a) for i, a in enumerate(src_atoms) if i != gax]
    for a in atoms:
        big = [k for k, (_lab, s) in enumerate(a) if s > 1]
        if big and a[big[0]][0] == "f":
            a[big[0]] = ("F", a[big[0]][1])
            return atoms, atoms_axes(atoms)
    return None, ax
