"""Units of the split axes: the pass that tells the placement rule (:mod:`hypar.shards` "Units")
which consecutive indices of each activation's batch and feature axis must stay together, so that
the shards of a tensor map through every reshape that regroups the axis (pure: a layer graph in,
the same graph with units on its tensors out).

Every tensor's batch axis and feature axis (:class:`hypar.graph.Tensor`, found by
:mod:`hypar.onnx.axes`) gets a unit u, a divisor of its size n: the axis is placed as n / u units.
Two axes *of one index space* share one unit (a class):

- a layer's output axis and each input's axis of the same size and kind (batch or feature):
  elementwise and broadcasting ops, residual adds, norms, pools, softmax, concat / split along
  another axis, a transpose (the axis moved), the batch through a weighted layer, the heads
  through an attention MatMul. A weighted layer's output features are a new index space; its
  weight's rows and columns read the units of its input's and output's features, and the errors
  of the backward pass are those of the tensors they belong to.

A reshape (Reshape / Flatten / Squeeze / Unsqueeze) that regroups an axis relates two classes:
where the input's axis and the output's axis end at the same stride (one is the outer part of
the other: 64 features -> 4 heads x 16, or 256 channels x 6 x 6 -> 9216 features), the *merged*
axis M of n = a * s holds the *outer* axis O of a in its top factor, s the inner factor; its index
r lies in outer index r // s, so they split alike exactly when ``unit(M) = s * unit(O)``. The pass
raises units to the least fixed point: ``unit(M) = lcm(unit(M), s * unit(O))``, then
``unit(O) = unit(M) / s``, repeated until nothing changes (units only grow, and stay divisors of
their sizes: a relation that would break that is dropped, and the simulator's refusal to map
shards through the reshape stays the independent check).

So q = x W_q (64 features) reshaped into 4 heads of 16 gets unit 16 on q's features (and W_q's
output axis, and the output projection's input features after the heads are merged back), the
residual stream keeps unit 1; alexnet's flattened 9216 = 256 x 36 features get unit 36 on the
classifier's input features while the conv's channels keep 1.
"""

from __future__ import annotations

from dataclasses import replace
from math import lcm, prod

import networkx as nx

from hypar import graph as G

_REGROUPED = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")   # reshapes relating axes by stride
AxisKey = tuple[str, str]                                      # (tensor name, "b" or "f")


def assign_units(g: nx.DiGraph) -> None:
    """Give every tensor of layer graph ``g`` (edges, graph inputs and outputs) its batch and
    feature units (module docstring); tensors keep unit 1 where nothing regroups them."""
    tensors = _tensors(g)
    classes = _Classes()
    regroups: list[tuple[AxisKey, AxisKey, int]] = []
    for name in G.topo_layers(g):
        lay = G.layer(g, name)
        ins = [tensors[t] for t in lay.inputs if t in tensors]
        outs = [tensors[t] for t in lay.outputs if t in tensors]
        for o in outs:
            for x in ins:
                regroups += _relate(lay, x, o, classes)
    units = _fixed_point(classes, regroups, tensors)
    placed = {n: replace(t, batch_unit=units.get((n, "b"), 1), feature_unit=units.get((n, "f"), 1))
              for n, t in tensors.items()}
    for _p, _c, data in g.edges(data=True):
        data["tensor"] = placed[data["tensor"].name]
    g.graph["inputs"] = tuple(placed[t.name] for t in g.graph.get("inputs", ()))
    g.graph["outputs"] = tuple(placed[t.name] for t in g.graph.get("outputs", ()))


def _tensors(g: nx.DiGraph) -> dict[str, G.Tensor]:
    """Every tensor of ``g`` by name: on its edges, its inputs and its outputs."""
    out = {t.name: t for t in g.graph.get("inputs", ())}
    out.update((t.name, t) for t in g.graph.get("outputs", ()))
    out.update((d["tensor"].name, d["tensor"]) for _p, _c, d in g.edges(data=True))
    return out


def _axis(t: G.Tensor, which: str) -> int | None:
    """Tensor ``t``'s batch ("b") or feature ("f") axis."""
    return t.batch_axis if which == "b" else t.feature_axis


def _relate(lay: G.Layer, x: G.Tensor, o: G.Tensor, classes: "_Classes") -> list[tuple[AxisKey, AxisKey, int]]:
    """Record what layer ``lay`` ties between its input ``x`` and output ``o``: equal classes
    (joined in ``classes``) and the regroupings it returns as (merged, outer, inner factor s)."""
    out = []
    for which in ("b", "f"):
        ax, ay = _axis(x, which), _axis(o, which)
        if ax is None or ay is None:
            continue
        if lay.weighted and which == "f":
            continue                                   # a new index space: the weight's columns
        if lay.kind == G.RESHAPE and lay.op in _REGROUPED:
            rel = _regrouping(x, ax, o, ay)
            if rel is not None:
                merged, outer, s = rel
                if s == 1:
                    classes.join((merged.name, which), (outer.name, which))
                else:
                    out.append(((merged.name, which), (outer.name, which), s))
        elif x.shape[ax] == o.shape[ay]:
            classes.join((x.name, which), (o.name, which))
    return out


def _regrouping(x: G.Tensor, ax: int, o: G.Tensor, ay: int) -> tuple[G.Tensor, G.Tensor, int] | None:
    """(merged tensor, outer tensor, inner factor s) when axis ``ax`` of ``x`` and axis ``ay`` of
    ``o`` (a reshape's input and output) end at the same stride of the row-major order, one the
    outer part of the other; None otherwise (no relation)."""
    lo_x, lo_o = prod(x.shape[ax + 1:]), prod(o.shape[ay + 1:])
    if lo_x * x.shape[ax] != lo_o * o.shape[ay] or not lo_x or not lo_o:
        return None
    if lo_o % lo_x == 0:
        return x, o, lo_o // lo_x
    if lo_x % lo_o == 0:
        return o, x, lo_x // lo_o
    return None


class _Classes:
    """Union-find over axes (tensor name, "b" / "f"): the index spaces sharing one unit."""

    def __init__(self) -> None:
        self.parent: dict[AxisKey, AxisKey] = {}

    def find(self, k: AxisKey) -> AxisKey:
        """The representative of ``k``'s class."""
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def join(self, a: AxisKey, b: AxisKey) -> None:
        """Put ``a`` and ``b`` in one class."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _fixed_point(classes: _Classes, regroups: list[tuple[AxisKey, AxisKey, int]],
                 tensors: dict[str, G.Tensor]) -> dict[AxisKey, int]:
    """Every axis' unit: the least units with ``unit(M) = s * unit(O)`` for every regrouping,
    equal within a class, each dividing its axis' size (module docstring)."""
    size: dict[AxisKey, int] = {}
    for k in list(classes.parent) + [k for r in regroups for k in r[:2]]:
        t = tensors[k[0]]
        n = t.shape[_axis(t, k[1])]
        root = classes.find(k)
        size[root] = n if root not in size else min(size[root], n)
    unit = {root: 1 for root in size}
    changed = True
    while changed:
        changed = False
        for m, o, s in regroups:
            rm, ro = classes.find(m), classes.find(o)
            if rm == ro:
                continue
            um = lcm(unit[rm], s * unit[ro])
            if size[rm] % um or size[ro] % (um // s):
                continue                                # would not divide: left to the simulator's check
            if (um, um // s) != (unit[rm], unit[ro]):
                unit[rm], unit[ro] = um, um // s
                changed = True
    return {k: unit[classes.find(k)] for k in classes.parent}
