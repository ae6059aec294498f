"""The one-device reference: the step's seeded data (weights scaled so activations stay O(1),
graph inputs, a fixed random error at every graph output) and the training step on the full layer
graph (forward ``F_{l+1} = F_l W``, backward ``E_l = E_{l+1} W^T``, ``dW = F_l^T E_{l+1}``,
residual Adds passing activations and errors)."""

from __future__ import annotations

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


def _dense_weights(g, rng: np.random.Generator) -> dict:
    """GEMM (d_in, d_out) and Conv (d_in / groups, d_out, kh, kw) weights, scaled by 1/sqrt(fan-in)."""
    weights = {}
    for n in topo_order(g):
        lay = G.layer(g, n)
        if lay.kind == G.GEMM:
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out)) / np.sqrt(lay.d_in)
        elif lay.kind == G.CONV:
            k = tuple(lay.kernel)
            cin = lay.d_in // max(lay.groups, 1)                  # grouped: each group's input channels
            weights[n] = rng.standard_normal((cin, lay.d_out) + k) / np.sqrt(cin * int(np.prod(k)))
    return weights


def _affine(rng: np.random.Generator, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation parameters (gamma ~ 1, beta ~ 0)."""
    return 1.0 + 0.1 * rng.standard_normal(channels), 0.1 * rng.standard_normal(channels)


def _other_weights(g, rng: np.random.Generator, weights: dict, vocab: dict[str, int]) -> None:
    """Normalisation, embedding and constant-operand parameters (into ``weights``); the smallest
    vocabulary reading each id tensor (into ``vocab``)."""
    meta = tensor_meta(g)
    for n in topo_order(g):
        lay = G.layer(g, n)
        if lay.kind == G.BATCHNORM:
            weights[n] = _affine(rng, meta[lay.inputs[0]].shape[1])
        elif is_layernorm(lay):
            weights[n] = _affine(rng, meta[lay.inputs[0]].shape[-1])
        elif lay.kind == G.EMBEDDING:
            weights[n] = rng.standard_normal((lay.d_in, lay.d_out))
            vocab[lay.inputs[0]] = min(vocab.get(lay.inputs[0], lay.d_in), lay.d_in)
        elif is_const_op(lay):
            c = float(rng.uniform(0.5, 1.5))
            weights[n] = float(lay.attr("exponent")) if lay.op == "Pow" else c


def seeded_data(g, rng: np.random.Generator) -> StepData:
    """Weights, inputs (token ids below the vocabulary for embeddings) and output errors drawn
    from ``rng`` in a fixed order."""
    weights = _dense_weights(g, rng)
    vocab: dict[str, int] = {}
    _other_weights(g, rng, weights, vocab)
    inputs = {t.name: (rng.integers(0, vocab[t.name], t.shape).astype(float) if t.name in vocab
                       else rng.standard_normal(t.shape)) for t in g.graph.get("inputs", ())}
    out_err = {t.name: rng.standard_normal(t.shape) for t in g.graph.get("outputs", ())}
    return StepData(weights, inputs, out_err)


def reference_step(g, data: StepData) -> Reference:
    """One-device training step on the full layer graph: values, errors, weight gradients."""
    order = topo_order(g)
    val: dict[str, np.ndarray] = dict(data.inputs)
    for n in order:
        lay = G.layer(g, n)
        if is_split(lay):
            x = val[lay.inputs[0]]
            for o in lay.outputs:
                val[o] = x[split_slice(lay, x.ndim, o)]
            continue
        val[lay.outputs[0]] = forward_op(lay, [val[t] for t in lay.inputs], data.weights.get(n))
    err: dict[str, np.ndarray] = dict(data.out_err)
    dW = {}
    for n in reversed(order):
        lay = G.layer(g, n)
        for o in lay.outputs:
            if o not in err:
                err[o] = np.zeros_like(val[o])
        for t, e in _backward_layer(lay, val, err, data.weights.get(n), dW):
            err[t] = err[t] + e if t in err else e
    for t, v in val.items():
        if t not in err:
            err[t] = np.zeros_like(v)
    return Reference(val, err, dW)


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
