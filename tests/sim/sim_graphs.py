"""Small graphs and random plans for the simulator's tests: Gemm DAGs with Relus and residual Adds,
Conv/BatchNorm/Relu/MaxPool nets, and a random full assignment of a cost model."""

from __future__ import annotations

import random

from hypar import graph as G
from hypar.cost import CostModel
from hypar.synthetic import gemm_layer


def relu_dag(n_layers: int, seed: int, batch: int, widths: tuple[int, ...]):
    """random_dag's shape with a Relu after every Gemm and residual Adds of Relu outputs."""
    rng = random.Random(seed)
    g = G.new_graph("rdag", batch)
    x = G.Tensor("x", (batch, rng.choice(widths)), 0, 1)
    g.graph["inputs"] = (x,)
    outs: list = []
    prev: tuple = (None, x)
    for l in range(n_layers):
        d_out = rng.choice(widths)
        src_name, src_t = prev
        h = G.Tensor(f"h{l}", (batch, d_out), 0, 1)
        G.add_layer(g, gemm_layer(f"fc{l}", batch, src_t.shape[1], d_out, (src_t.name,), h.name))
        if src_name is None:
            g.graph["input_consumers"] = {"x": (f"fc{l}",)}
        else:
            G.add_edge(g, src_name, f"fc{l}", src_t, 0)
        r = G.Tensor(f"r{l}", (batch, d_out), 0, 1)
        G.add_layer(g, G.Layer(name=f"relu{l}", op="Relu", kind=G.ELEMENTWISE, inputs=(h.name,), outputs=(r.name,)))
        G.add_edge(g, f"fc{l}", f"relu{l}", h, 0)
        prev = (f"relu{l}", r)
        same = [o for o in outs if o[1].shape[1] == d_out]
        if same and rng.random() < 0.5:
            sn, stt = rng.choice(same)
            a = G.Tensor(f"s{l}", (batch, d_out), 0, 1)
            G.add_layer(g, G.Layer(name=f"add{l}", op="Add", kind=G.BINARY, inputs=(r.name, stt.name),
                                   outputs=(a.name,)))
            G.add_edge(g, f"relu{l}", f"add{l}", r, 0)
            G.add_edge(g, sn, f"add{l}", stt, 1)
            prev = (f"add{l}", a)
        outs.append(prev)
    g.graph["outputs"] = (prev[1],)
    return g


def conv_layer(name, B, ci, co, hw, inp, out, k=3, pad=1, stride=1, groups=1):
    ho = (hw + 2 * pad - k) // stride + 1
    cin = ci // groups
    return G.Layer(name=name, op="Conv", kind=G.CONV, inputs=(inp,), outputs=(out,), batch=B, d_in=ci, d_out=co,
                   in_spatial=(hw, hw), out_spatial=(ho, ho), kernel=(k, k), in_elements=B * ci * hw * hw,
                   out_elements=B * co * ho * ho, weight_elements=cin * co * k * k,
                   macs=B * co * ho * ho * cin * k * k, groups=groups,
                   attrs=(("group", groups), ("pads", (pad,) * 4), ("strides", (stride, stride)))), ho


def conv_net(seed: int, B: int, widths: tuple[int, ...], n_blocks: int = 2, bn: bool = True,
             depthwise: bool = False):
    """Conv -> BatchNorm -> Relu (-> MaxPool) blocks, GlobalAveragePool, Flatten, Gemm; 8x8 images
    (``depthwise``: each Conv followed by a depthwise 3x3 Conv, stride 1 or 2)."""
    rng = random.Random(seed)
    g = G.new_graph("cnet", B)
    x = G.Tensor("x", (B, rng.choice(widths), 8, 8), 0, 1)
    g.graph["inputs"] = (x,)
    prev: tuple = (None, x)

    def add(lay, shape):
        nonlocal prev
        G.add_layer(g, lay)
        if prev[0] is None:
            g.graph["input_consumers"] = {"x": (lay.name,)}
        else:
            G.add_edge(g, prev[0], lay.name, prev[1], 0)
        prev = (lay.name, G.Tensor(lay.outputs[0], shape, 0, 1))

    for b in range(n_blocks):
        co = rng.choice(widths)
        hw = prev[1].shape[2]
        lay, ho = conv_layer(f"conv{b}", B, prev[1].shape[1], co, hw, prev[1].name, f"c{b}")
        add(lay, (B, co, ho, ho))
        if depthwise:
            stride = rng.choice((1, 2)) if ho >= 4 else 1
            lay, ho = conv_layer(f"dw{b}", B, co, co, ho, f"c{b}", f"d{b}", stride=stride, groups=co)
            add(lay, (B, co, ho, ho))
        if bn:
            add(G.Layer(name=f"bn{b}", op="BatchNormalization", kind=G.BATCHNORM, inputs=(prev[1].name,),
                        outputs=(f"n{b}",), attrs=(("epsilon", 1e-5),)), (B, co, ho, ho))
        add(G.Layer(name=f"relu{b}", op="Relu", kind=G.ELEMENTWISE, inputs=(prev[1].name,), outputs=(f"r{b}",)),
            (B, co, ho, ho))
        if rng.random() < 0.5 and prev[1].shape[2] >= 2:
            add(G.Layer(name=f"pool{b}", op="MaxPool", kind=G.POOL, inputs=(prev[1].name,), outputs=(f"p{b}",),
                        attrs=(("ceil_mode", 0), ("kernel_shape", (2, 2)), ("pads", (0, 0, 0, 0)),
                               ("strides", (2, 2)))), (B, co, ho // 2, ho // 2))
    C = prev[1].shape[1]
    add(G.Layer(name="gap", op="GlobalAveragePool", kind=G.POOL, inputs=(prev[1].name,), outputs=("gp",)),
        (B, C, 1, 1))
    add(G.Layer(name="flat", op="Flatten", kind=G.RESHAPE, inputs=("gp",), outputs=("fl",), attrs=(("axis", 1),)),
        (B, C))
    add(gemm_layer("fc", B, C, widths[0], ("fl",), "y"), (B, widths[0]))
    g.graph["outputs"] = (prev[1],)
    return g


def random_assignment(model: CostModel, rng: random.Random) -> list[tuple]:
    return [tuple(rng.choice(model.labels(i)) for _ in range(model.n_levels)) for i in range(len(model.names))]


def inception_net(B: int, C: int, lrn: bool = True):
    """x -> Conv (C) -> LRN -> two Conv branches (C each) -> Concat (2C channels) -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm; 6x6 images (GoogLeNet's ops in miniature)."""
    g = G.new_graph("incep", B)
    t = lambda name, shape: G.Tensor(name, shape, 0, 1)  # noqa: E731
    x = t("x", (B, C, 6, 6))
    g.graph.update(inputs=(x,), input_consumers={"x": ("c0",)})
    c0, _ = conv_layer("c0", B, C, C, 6, "x", "a")
    G.add_layer(g, c0)
    prev = ("c0", t("a", (B, C, 6, 6)))
    if lrn:
        G.add_layer(g, G.Layer(name="lrn", op="LRN", kind=G.FEATURENORM, inputs=("a",), outputs=("n",),
                               attrs=(("alpha", 1e-2), ("beta", 0.75), ("bias", 1.0), ("size", 3))))
        G.add_edge(g, "c0", "lrn", prev[1], 0)
        prev = ("lrn", t("n", (B, C, 6, 6)))
    for k, name in enumerate(("b1", "b2")):
        lay, _ = conv_layer(name, B, C, C, 6, prev[1].name, f"o{k}", k=1 + 2 * k, pad=k)
        G.add_layer(g, lay)
        G.add_edge(g, prev[0], name, prev[1], 0)
    G.add_layer(g, G.Layer(name="cat", op="Concat", kind=G.CONCAT, inputs=("o0", "o1"), outputs=("cc",),
                           attrs=(("axis", 1),)))
    G.add_edge(g, "b1", "cat", t("o0", (B, C, 6, 6)), 0)
    G.add_edge(g, "b2", "cat", t("o1", (B, C, 6, 6)), 1)
    chain = [("relu", "Relu", G.ELEMENTWISE, (B, 2 * C, 6, 6), ()),
             ("gap", "GlobalAveragePool", G.POOL, (B, 2 * C, 1, 1), ()),
             ("flat", "Flatten", G.RESHAPE, (B, 2 * C), (("axis", 1),))]
    prev = ("cat", t("cc", (B, 2 * C, 6, 6)))
    for name, op, kind, shape, attrs in chain:
        G.add_layer(g, G.Layer(name=name, op=op, kind=kind, inputs=(prev[1].name,), outputs=(name + "_o",),
                               attrs=attrs))
        G.add_edge(g, prev[0], name, prev[1], 0)
        prev = (name, t(name + "_o", shape))
    G.add_layer(g, gemm_layer("fc", B, 2 * C, C, (prev[1].name,), "y"))
    G.add_edge(g, prev[0], "fc", prev[1], 0)
    g.graph["outputs"] = (t("y", (B, C)),)
    return g
