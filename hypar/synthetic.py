"""Synthetic layer graphs (no ONNX): Gemm chains and random DAGs for tests and benchmarks.

Every builder returns a layer graph following :mod:`hypar.graph`'s contract, deterministic for
given arguments (random ones take a seed).
"""

from __future__ import annotations

import random

from hypar import graph as G


def gemm_layer(name: str, batch: int, d_in: int, d_out: int, inputs: tuple[str, ...], output: str) -> G.Layer:
    """A fully connected layer B x Di -> B x Do (SPEC.md §1), weight Di x Do, no bias."""
    return G.Layer(name=name, op="Gemm", kind=G.GEMM, inputs=inputs, outputs=(output,), batch=batch,
                   d_in=d_in, d_out=d_out, in_elements=batch * d_in, out_elements=batch * d_out,
                   weight_elements=d_in * d_out, macs=batch * d_in * d_out)


def gemm_chain(dims: list[int], batch: int, name: str = "chain") -> "G.nx.DiGraph":
    """A chain of Gemm layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` over ``batch`` rows."""
    g = G.new_graph(name, batch)
    x = G.Tensor("x", (batch, dims[0]), 0, 1)
    g.graph["inputs"] = (x,)
    prev_name, prev_t = None, x
    for l in range(len(dims) - 1):
        out = G.Tensor(f"h{l + 1}", (batch, dims[l + 1]), 0, 1)
        lay = gemm_layer(f"fc{l + 1}", batch, dims[l], dims[l + 1], (prev_t.name,), out.name)
        G.add_layer(g, lay)
        if prev_name is None:
            g.graph["input_consumers"] = {x.name: (lay.name,)}
        else:
            G.add_edge(g, prev_name, lay.name, prev_t, 0)
        prev_name, prev_t = lay.name, out
    g.graph["outputs"] = (prev_t,)
    return g


def random_dag(n_layers: int, seed: int, batch: int = 32, width_choices=(64, 128, 256),
               skip_prob: float = 0.3, name: str = "dag", norm_prob: float = 0.0) -> "G.nx.DiGraph":
    """A random DAG of Gemm layers and residual Adds: layer l reads layer l-1, sometimes plus
    (through an Add) an earlier layer of the same width, so graphs have skips and fan-out.
    ``norm_prob``: the chance that a Gemm's output goes through a normalisation (BatchNorm or a
    LayerNorm over the features, drawn evenly) before anything reads it; 0 draws nothing more, so
    the graphs are those of the other arguments alone."""
    rng = random.Random(seed)
    g = G.new_graph(name, batch)
    width = rng.choice(width_choices)
    x = G.Tensor("x", (batch, width), 0, 1)
    g.graph["inputs"] = (x,)
    outs: list[tuple[str, G.Tensor]] = []
    prev: tuple[str | None, G.Tensor] = (None, x)
    for l in range(n_layers):
        d_out = rng.choice(width_choices)
        src_name, src_t = prev
        out = G.Tensor(f"h{l}", (batch, d_out), 0, 1)
        lay = gemm_layer(f"fc{l}", batch, src_t.shape[1], d_out, (src_t.name,), out.name)
        G.add_layer(g, lay)
        if src_name is None:
            g.graph["input_consumers"] = {x.name: (lay.name,)}
        else:
            G.add_edge(g, src_name, lay.name, src_t, 0)
        prev = (lay.name, out)
        if norm_prob and rng.random() < norm_prob:
            prev = _add_norm(g, prev, l, rng.random() < 0.5)
        same = [o for o in outs if o[1].shape[1] == d_out]
        if same and rng.random() < skip_prob:
            skip_name, skip_t = rng.choice(same)
            add_t = G.Tensor(f"s{l}", (batch, d_out), 0, 1)
            add = G.Layer(name=f"add{l}", op="Add", kind=G.BINARY, inputs=(prev[1].name, skip_t.name),
                          outputs=(add_t.name,))
            G.add_layer(g, add)
            G.add_edge(g, prev[0], add.name, prev[1], 0)
            G.add_edge(g, skip_name, add.name, skip_t, 1)
            prev = (add.name, add_t)
        outs.append(prev)  # type: ignore[arg-type]
    g.graph["outputs"] = (prev[1],)
    return g


def _add_norm(g, prev: tuple[str, G.Tensor], l: int, batchnorm: bool) -> tuple[str, G.Tensor]:
    """A BatchNorm (``batchnorm``) or a LayerNorm over the last axis of ``prev``'s tensor, added
    after layer ``prev[0]``; returns (its name, its output)."""
    src_name, src_t = prev
    out = G.Tensor(f"n{l}", src_t.shape, 0, 1)
    if batchnorm:
        lay = G.Layer(name=f"bn{l}", op="BatchNormalization", kind=G.BATCHNORM, inputs=(src_t.name,),
                      outputs=(out.name,), attrs=(("epsilon", 1e-5),))
    else:
        lay = G.Layer(name=f"ln{l}", op="LayerNormalization", kind=G.FEATURENORM, inputs=(src_t.name,),
                      outputs=(out.name,), attrs=(("axis", -1), ("epsilon", 1e-5)))
    G.add_layer(g, lay)
    G.add_edge(g, src_name, lay.name, src_t, 0)
    return lay.name, out
