"""The one-device reference: the step's seeded data (weights scaled so activations stay O(1),
graph inputs, a fixed random error at every graph output) and the training step on the full layer
graph (forward ``F_{l+1} = F_l W``, backward ``E_l = E_{l+1} W^T``, ``dW = F_l^T E_{l+1}``,
residual Adds passing activations and errors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hypar import graph as G
from hypar.sim.graphwalk import tensor_meta, topo_order
from hypar.sim.ops import WEIGHTED_KINDS, backward_op, forward_op, is_const_op, is_layernorm, is_split, \
    split_slice, weight_grad


@dataclass
class StepData:
    """The seeded inputs of a training step: parameters by layer name (arrays; (gamma, beta) for
    normalisations; a float for an elementwise op with a constant), whole graph inputs and output
    errors by tensor name."""

    weights: dict
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


def _dense_weights(g, rng: np.random.Generator, dtype) -> dict:
    """GEMM (d_in, d_out) and Conv (d_in / groups, d_out, kh, kw) weights, scaled by 1/sqrt(fan-in)."""
    weights = {}
    for n in topo_order(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            weights[n] = draw(rng, (lay.d_in, lay.d_out), dtype, 1.0 / np.sqrt(lay.d_in))
        elif lay.kind == G.CONV:
            k = tuple(lay.kernel)
            cin = lay.d_in // max(lay.groups, 1)                  # grouped: each group's input channels
            weights[n] = draw(rng, (cin, lay.d_out) + k, dtype, 1.0 / np.sqrt(cin * int(np.prod(k))))
    return weights


def _affine(rng: np.random.Generator, channels: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation parameters (gamma ~ 1, beta ~ 0)."""
    return 1.0 + draw(rng, channels, dtype, 0.1), draw(rng, channels, dtype, 0.1)


def _other_weights(g, rng: np.random.Generator, weights: dict, vocab: dict[str, int], dtype) -> None:
    """Normalisation, embedding and constant-operand parameters (into ``weights``); the smallest
    vocabulary reading each id tensor (into ``vocab``)."""
    meta = tensor_meta(g)
    for n in topo_order(g):
        lay = G.layer(g, n)
        if lay.kind == G.BATCHNORM:
            weights[n] = _affine(rng, meta[lay.inputs[0]].shape[1], dtype)
        elif is_layernorm(lay):
            weights[n] = _affine(rng, meta[lay.inputs[0]].shape[-1], dtype)
        elif lay.kind == G.EMBEDDING:
            weights[n] = draw(rng, (lay.d_in, lay.d_out), dtype)
            vocab[lay.inputs[0]] = min(vocab.get(lay.inputs[0], lay.d_in), lay.d_in)
        elif is_const_op(lay):
            c = float(rng.uniform(0.5, 1.5))
            weights[n] = float(lay.attr("exponent")) if lay.op == "Pow" else c


def seeded_data(g, rng: np.random.Generator, dtype=np.float64) -> StepData:
    """Weights, inputs (token ids below the vocabulary for embeddings) and output errors drawn
    from ``rng`` in a fixed order, as arrays of ``dtype`` (the simulation's float type; scalar
    constants stay Python floats)."""
    weights = _dense_weights(g, rng, dtype)
    vocab: dict[str, int] = {}
    _other_weights(g, rng, weights, vocab, dtype)
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
    if lay.kind in WEIGHTED_KINDS:
        dW[lay.name] = weight_grad(lay, xs[0], e_out, lay.d_in)
    return list(zip(lay.inputs, backward_op(lay, xs, e_out, w)))
