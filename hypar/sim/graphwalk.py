"""The layer graph around the cost model's kept nodes: tensor shapes, which layer produces each
tensor, the folded ops between kept nodes, which of them run on the producer's side of a
conversion, and an error pushed back through folded ops to the kept producers."""

from __future__ import annotations

import weakref

import numpy as np

from hypar import graph as G
from hypar.sim.errors import Unsupported
from hypar.sim.ops import backward_op, changes_shape, is_chain_op, is_split, split_slice


_ORDERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def topo_order(g) -> list[str]:
    """``hypar.graph.topo_layers(g)``, computed once per graph (recomputed when its nodes or edges
    change in number). Do not modify the list."""
    key = (g.number_of_nodes(), len(g.edges))       # (len(g.edges): ~10x faster than number_of_edges())
    hit = _ORDERS.get(g)
    if hit is None or hit[0] != key:
        hit = _ORDERS[g] = (key, G.topo_layers(g))
    return hit[1]


def tensor_meta(g) -> dict:
    """Tensor name -> graph.Tensor (shape, batch and feature axes) for every activation."""
    meta = {}
    for _, _, data in g.edges(data=True):
        meta[data["tensor"].name] = data["tensor"]
    for t in tuple(g.graph.get("inputs", ())) + tuple(g.graph.get("outputs", ())):
        meta[t.name] = t
    return meta


def producers(g) -> dict[str, str]:
    """Tensor name -> the layer whose output it is."""
    return {o: n for n in g.nodes for o in G.layer(g, n).outputs}


def folded_between(model, c: int) -> list[str]:
    """Folded nodes on the paths from kept sources into kept node c (topological order)."""
    g = model.g
    seen, stack = set(), list(g.predecessors(model.names[c]))
    while stack:
        n = stack.pop()
        if n in seen or n in model.index:
            continue
        seen.add(n)
        stack.extend(g.predecessors(n))
    return [n for n in topo_order(g) if n in seen]


def pre_chain(model, p: int, c: int, slot: int, folded: list[str], producer: dict) -> list[tuple[str, str]]:
    """Folded single-input ops (with the output used) from producer p's output towards input
    ``slot`` of consumer c, up to the last one that changes the shape (pooling, flatten, reshape,
    split): they run on the producer's side before the conversion, so the tensor converted is the
    one the cost model prices (the consumer's input); shape-preserving ops after that run on the
    consumer's side. Returns [(folded node, its output used)] in execution order; raises
    Unsupported when p's output branches through several folded ops."""
    fset = set(folded)
    path = _path_back(model, p, c, slot, fset, producer)
    if path is None:                              # p reaches c through an Add: p's own chain to it
        path = _chain_forward(model, p, fset)
    g = model.g
    last = max((k for k, (n, _t) in enumerate(path)
                if changes_shape(G.layer(g, n)) or is_split(G.layer(g, n))), default=-1)
    return path[:last + 1]


def _path_back(model, p: int, c: int, slot: int, fset: set, producer: dict) -> list[tuple[str, str]] | None:
    """The unique path of folded single-input ops from c's input ``slot`` back to p, if any."""
    g = model.g
    path: list[tuple[str, str]] = []
    t = G.layer(g, model.names[c]).inputs[slot]
    while True:
        n = producer.get(t)
        if n == model.names[p]:
            return path
        lay = G.layer(g, n) if n is not None else None
        if n not in fset or not (is_chain_op(lay) or is_split(lay)):
            return None
        path.insert(0, (n, t))
        t = lay.inputs[0]


def _chain_forward(model, p: int, fset: set) -> list[tuple[str, str]]:
    """The folded chain ops following p's output while it has a single folded successor."""
    g = model.g
    path = []
    cur = model.names[p]
    while True:
        nxt = [n for n in g.successors(cur) if n in fset]
        if len(nxt) != 1 or not is_chain_op(G.layer(g, nxt[0])):
            if len([n for n in nxt if is_chain_op(G.layer(g, n))]) > 1:
                raise Unsupported(f"{model.names[p]}: its output branches through several folded ops")
            return path
        path.append((nxt[0], G.layer(g, nxt[0]).outputs[0]))
        cur = nxt[0]


def folded_error_to_sources(model, tname: str, e: np.ndarray, ref_val: dict, weights: dict) -> dict[int, np.ndarray]:
    """An error at tensor ``tname`` pushed back through folded nodes to the kept producers:
    kept node index -> its output's share of the error (``ref_val``: the reference's values by
    tensor, ``weights``: parameters by layer)."""
    g = model.g
    producer = producers(g)
    err = {tname: e}
    out: dict[int, np.ndarray] = {}
    pos = {n: k for k, n in enumerate(topo_order(g))}
    pending = [tname]
    while pending:
        pending.sort(key=lambda t: -pos.get(producer.get(t), -1))
        t = pending.pop(0)
        n = producer.get(t)
        if n is None:
            continue
        if n in model.index:
            i = model.index[n]
            out[i] = out.get(i, 0) + err.pop(t)
            continue
        lay = G.layer(g, n)
        for u, eu in zip(lay.inputs, _input_errors(lay, t, err.pop(t), ref_val, weights)):
            if u not in err:
                pending.append(u)
                err[u] = 0
            err[u] = err[u] + eu
    return out


def _input_errors(lay: G.Layer, t: str, e_t: np.ndarray, ref_val: dict, weights: dict) -> list:
    """Errors of a folded layer's inputs for the error ``e_t`` of its output ``t``."""
    if is_split(lay):
        x = ref_val[lay.inputs[0]]
        full = np.zeros_like(x)
        full[split_slice(lay, x.ndim, t)] = e_t
        return [full]
    return backward_op(lay, [ref_val[x] for x in lay.inputs], e_t, weights.get(lay.name))
