"""The one-device reference: the step's seeded data (weights scaled so activations stay O(1),
graph inputs, a fixed random error at every graph output) and the training step on the full layer
graph (forward ``F_{l+1} = F_l W``, backward ``E_l = E_{l+1} W^T``, ``dW = F_l^T E_{l+1}``,
residual Adds passing activations and errors)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from hypar import graph as G
from hypar.cost.strategies import RMS_NORM_OPS
from hypar.sim.graphwalk import tensor_meta, topo_order
from hypar.sim.fused import draw_rotary, is_rotary, is_skip_norm, skip_norm_error, skip_norm_values
from hypar.sim.lookup import draw_lookup, lookup_grad
from hypar.sim.ops import WEIGHTED_KINDS, backward_op, forward_op, is_const_op, is_layernorm, is_lookup, is_rmsnorm, \
    is_split, split_slice, weight_grad


@dataclass
class StepData:
    """The seeded inputs of a training step: parameters by layer name (arrays; (gamma, beta) for
    normalisations; a float for an elementwise op with a constant), whole graph inputs and output
    errors by tensor name."""

    weights: Mapping
    inputs: dict[str, np.ndarray]
    out_err: dict[str, np.ndarray]


@dataclass
class Reference:
    """The reference step's values and errors by tensor name, weight gradients by layer name."""

    val: dict[str, np.ndarray]
    err: dict[str, np.ndarray]
    dW: dict[str, np.ndarray]


def draw(rng: np.random.Generator, shape: tuple, dtype, scale: float = 1.0) -> np.ndarray:
    """Values of mean 0 and standard deviation ``scale``, uniform on [-sqrt(3), sqrt(3)) x scale,
    drawn in ``dtype`` (a uniform draw is ~10x cheaper than a normal one; the check only needs
    distinct random values of a known size)."""
    a = rng.random(shape, dtype=np.dtype(dtype))
    a -= 0.5
    a *= np.sqrt(12.0) * scale
    return a


def _recipes(g, dtype) -> tuple[dict[str, Callable], dict[str, int]]:
    """How to draw each layer's parameters (layer name -> function of a generator, in topological
    order): GEMM (d_in, d_out) and Conv (d_in / groups, d_out, kh, kw) weights scaled by
    1/sqrt(fan-in), normalisation (gamma ~ 1, beta ~ 0; an RMS norm's scale ~ 1), embedding (with constant indices: a
    :class:`hypar.sim.lookup.Lookup`), rotary angles (:class:`hypar.sim.fused.Rotary`) and constant-operand
    parameters; and the smallest vocabulary reading each id tensor (a skip norm's parameters are its norm's)."""
    meta = tensor_meta(g)
    recipes: dict[str, Callable] = {}
    vocab: dict[str, int] = {}
    for n in topo_order(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            recipes[n] = lambda r, lay=lay: draw(r, (lay.d_in, lay.d_out), dtype, 1.0 / np.sqrt(lay.d_in))
        elif lay.kind == G.CONV:
            k = tuple(lay.kernel)
            cin = lay.d_in // max(lay.groups, 1)                  # grouped: each group's input channels
            recipes[n] = lambda r, shape=(cin, lay.d_out) + k: draw(r, shape, dtype, 1.0 / np.sqrt(np.prod(shape) / shape[1]))
        elif lay.kind == G.BATCHNORM or is_layernorm(lay) or (is_skip_norm(lay) and lay.op not in RMS_NORM_OPS):
            c = meta[lay.inputs[0]].shape[1 if lay.kind == G.BATCHNORM else -1]
            recipes[n] = lambda r, c=c: (1.0 + draw(r, c, dtype, 0.1), draw(r, c, dtype, 0.1))
        elif is_rmsnorm(lay) or is_skip_norm(lay):
            c = meta[lay.inputs[0]].shape[-1]
            recipes[n] = lambda r, c=c: 1.0 + draw(r, c, dtype, 0.1)
        elif is_lookup(lay):
            recipes[n] = lambda r, lay=lay: draw_lookup(r, lay, dtype, draw)
        elif is_rotary(lay):
            recipes[n] = lambda r, lay=lay, s=meta[lay.inputs[0]].shape[-2]: draw_rotary(r, lay, s, dtype)
        elif lay.kind == G.EMBEDDING:
            recipes[n] = lambda r, lay=lay: draw(r, (lay.d_in, lay.d_out), dtype)
            vocab[lay.inputs[0]] = min(vocab.get(lay.inputs[0], lay.d_in), lay.d_in)
        elif is_const_op(lay):
            recipes[n] = lambda r, lay=lay: float(lay.attr("exponent")) if lay.op == "Pow" else float(r.uniform(0.5, 1.5))
    return recipes, vocab


class Weights(Mapping):
    """The step's parameters by layer name, each drawn when first read -- by the reference's thread
    or the distributed step, whichever comes first (one lock per layer) -- from a generator seeded
    by (``base``, the layer's position), so the values do not depend on who draws them or when."""

    def __init__(self, recipes: dict[str, Callable], base: int):
        self._recipes, self._base = recipes, base
        self._at = {n: k for k, n in enumerate(recipes)}
        self._locks = {n: threading.Lock() for n in recipes}
        self._drawn: dict[str, object] = {}

    def __getitem__(self, name: str):
        hit = self._drawn.get(name)
        if hit is None:
            with self._locks[name]:                   # KeyError for a layer without parameters
                hit = self._drawn.get(name)
                if hit is None:
                    hit = self._drawn[name] = self._recipes[name](np.random.default_rng([self._base, self._at[name]]))
        return hit

    def __iter__(self):
        return iter(self._recipes)

    def __len__(self) -> int:
        return len(self._recipes)


def seeded_data(g, rng: np.random.Generator, dtype=np.float64) -> StepData:
    """Weights (drawn when first read, :class:`Weights`), inputs (token ids below the vocabulary for
    embeddings) and output errors drawn from ``rng`` in a fixed order, as arrays of ``dtype`` (the
    simulation's float type; scalar constants stay Python floats)."""
    recipes, vocab = _recipes(g, dtype)
    weights = Weights(recipes, int(rng.integers(2 ** 62)))
    inputs = {t.name: (rng.integers(0, vocab[t.name], t.shape).astype(dtype) if t.name in vocab
                       else draw(rng, tuple(t.shape), dtype)) for t in g.graph.get("inputs", ())}
    out_err = {t.name: draw(rng, tuple(t.shape), dtype) for t in g.graph.get("outputs", ())}
    return StepData(weights, inputs, out_err)


class Cancelled(Exception):
    """The reference step was told to stop (its caller gave up)."""


def reference_forward(g, data: StepData, cancelled: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
    """The one-device forward pass: every tensor's value by name. ``cancelled`` is asked before
    every layer; when it says True, :class:`Cancelled` is raised."""
    val: dict[str, np.ndarray] = dict(data.inputs)
    for n in topo_order(g):
        if cancelled is not None and cancelled():
            raise Cancelled
        lay = G.layer(g, n)
        if is_split(lay):
            x = val[lay.inputs[0]]
            for o in lay.outputs:
                val[o] = x[split_slice(lay, x.ndim, o)]
            continue
        if is_skip_norm(lay):
            val.update(skip_norm_values(lay, [val[t] for t in lay.inputs], data.weights.get(n), forward_op))
            continue
        val[lay.outputs[0]] = forward_op(lay, [val[t] for t in lay.inputs], data.weights.get(n))
    return val


class ReferenceBackward:
    """The one-device backward pass, run on request down the reversed topological order
    (:meth:`through`) into ``ref`` (a :class:`Reference` whose ``val`` the forward pass filled).

    With ``frugal``, a value is dropped once every layer reading it and its producer are done,
    and an error once its producer is done, unless it is in ``keep`` (tensors whose errors someone
    will still read and then drop: the distributed step's checks)."""

    def __init__(self, g, data: StepData, val: dict[str, np.ndarray], keep: set[str] = frozenset(),
                 frugal: bool = False):
        self.g, self.weights, self.keep, self.frugal = g, data.weights, set(keep), frugal
        self.order = topo_order(g)
        self.at = {n: k for k, n in enumerate(self.order)}
        self.pos = len(self.order)                   # layers [pos:] are done
        self.ref = Reference(val, dict(data.out_err), {})
        self.users: dict[str, int] = {}             # tensor -> layers still to run that read or produce it
        for n in self.order:
            lay = G.layer(g, n)
            for t in set(lay.inputs) | set(lay.outputs):
                self.users[t] = self.users.get(t, 0) + 1

    def through(self, layer: str | None = None, cancelled: Callable[[], bool] | None = None) -> Reference:
        """Run the backward pass down to ``layer`` (included; None: every layer); the reference."""
        stop = 0 if layer is None else self.at[layer]
        while self.pos > stop:
            if cancelled is not None and cancelled():
                raise Cancelled
            self.pos -= 1
            self._layer(self.order[self.pos])
        return self.ref

    def _layer(self, n: str) -> None:
        """One layer's backward: its inputs' errors (and dW); then what it no longer needs dropped."""
        lay = G.layer(self.g, n)
        val, err = self.ref.val, self.ref.err
        for o in lay.outputs:
            if o not in err:
                err[o] = np.zeros_like(val[o])
        for t, e in _backward_layer(lay, val, err, self.weights.get(n), self.ref.dW):
            err[t] = err[t] + e if t in err else e
        if not self.frugal:
            return
        for t in set(lay.inputs) | set(lay.outputs):
            self.users[t] -= 1
            if self.users[t] == 0:
                val.pop(t, None)
        for o in lay.outputs:
            if o not in self.keep:
                err.pop(o, None)


def reference_step(g, data: StepData, cancelled: Callable[[], bool] | None = None) -> Reference:
    """One-device training step on the full layer graph: values, errors (zero where none flows)
    and weight gradients of every tensor and weighted layer. ``cancelled`` is asked before every
    layer; when it says True, :class:`Cancelled` is raised."""
    val = reference_forward(g, data, cancelled)
    ref = ReferenceBackward(g, data, val).through(None, cancelled)
    for t, v in ref.val.items():
        if t not in ref.err:
            ref.err[t] = np.zeros_like(v)
    return ref


def _backward_layer(lay: G.Layer, val: dict, err: dict, w, dW: dict) -> list[tuple[str, np.ndarray]]:
    """(input tensor, error) of one layer in the reference backward pass (dW of a weighted layer
    into ``dW``)."""
    if is_split(lay):
        x = val[lay.inputs[0]]
        e_in = np.zeros_like(x)
        for o in lay.outputs:
            e_in[split_slice(lay, x.ndim, o)] += err[o]
        return [(lay.inputs[0], e_in)]
    e_out = err[lay.outputs[0]]
    xs = [val[t] for t in lay.inputs]
    if is_skip_norm(lay):
        d = skip_norm_error(lay, xs, err, w, backward_op)
        return [(t, d) for t in lay.inputs]
    if is_lookup(lay):
        dW[lay.name] = lookup_grad(w, e_out)
    elif lay.kind in WEIGHTED_KINDS:
        dW[lay.name] = weight_grad(lay, xs[0], e_out, lay.d_in)
    return list(zip(lay.inputs, backward_op(lay, xs, e_out, w)))
