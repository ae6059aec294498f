"""A real transformer export in the Megatron pattern (SPEC.md §4), hand-derived.

Fixtures (tests/fixtures/README.md): one post-norm encoder block, batch B = 2, sequence T = 16,
hidden H = 64, 4 heads of 16, FFN 64 -> 128 -> 64, token embedding 100 x 64, head 64 -> 100.
The block activation has A = B * T * H = 2 * 16 * 64 = 2048 elements.

Megatron pattern at one 2-way level ("full" space): III on q/k/v and ffn1, II (heads) on the two
attention MatMuls, II on the output projection and ffn2. Per SPEC §4 the block then costs exactly
one all-reduce of the activation per sublayer forward and one backward:
  attention forward : out-proj (II) all-reduces its partial F_out            A = 2048
  attention backward: q, k, v (III) partial errors of the block input, added
                      locally and all-reduced once                            A = 2048
  FFN forward       : ffn2 (II) all-reduces its partial F_out                 A = 2048
  FFN backward      : ffn1 (III) partial error of the LN1 output              A = 2048
A 2-way all-reduce moves A per subgroup, so 4 x 2048 = 8192 elements per subgroup. Everything
between stays in the layout it is produced in: q/k/v's column split (32 of 64 hidden features =
2 of 4 heads) IS the head split, so the split-heads reshapes, transposes, scores, softmax (over
keys, not heads) and merge-heads reshape carry it for free; bias Adds / GELU take cols; the
residual stream, residual Adds and LayerNorms are replicated (R) and free.

Embedding and head, derived separately:
  embedding II (vocab-parallel: each subgroup holds 50 table rows; the gathered rows are partial
  sums, all-reduced): A(F_out) = 2 * 16 * 64 = 2048; its R output feeds the R residual stream
  (the positional Add takes R) at no cost.
  head III (column-parallel logits, 50 classes each): its input LN2 output is R (free); its
  partial input error is all-reduced: A = 2048; the loss is not charged.
Total per subgroup: 8192 + 2048 + 2048 = 12288 -> comm_bytes = 12288 x 2 subgroups x 2 bytes
= 49152.
"""

import pytest

from hypar import graph as G
from hypar.array import array_from_levels
from hypar.cost import CostModel
from hypar.onnx import load_layer_graph
from hypar.search import SolverSettings, complete
from hypar.cost.strategies import COLS

FIXTURES = ["transformer_dynamo.onnx", "transformer_torchscript.onnx"]
A = 2 * 16 * 64


def amount(total_bytes: float) -> float:
    return total_bytes / 2 / 2


def build(fname):
    g = load_layer_graph(f"tests/fixtures/{fname}")
    m = CostModel(g, array_from_levels([2]), "full")
    gemms = [n for n in m.names if G.layer(g, n).kind == G.GEMM]
    assert [(G.layer(g, n).d_in, G.layer(g, n).d_out) for n in gemms] == \
        [(64, 64)] * 4 + [(64, 128), (128, 64), (64, 100)]
    q, k, v, out, ffn1, ffn2, head = gemms
    emb = [n for n in m.names if G.layer(g, n).kind == G.EMBEDDING]
    att = [n for n in m.names if G.layer(g, n).kind == G.MATMUL_ACT]
    assert len(emb) == 1 and len(att) == 2
    fixed = {q: "III", k: "III", v: "III", out: "II", ffn1: "III", ffn2: "II", head: "III",
             emb[0]: "II", att[0]: "II", att[1]: "II"}
    names = dict(q=q, k=k, v=v, out=out, ffn1=ffn1, ffn2=ffn2, head=head, emb=emb[0])
    return g, m, fixed, names


def hand_complete(m, fixed):
    """Non-weighted nodes keep the layout their inputs arrive in when they offer it, else R."""
    out_layout = {}
    asg = []
    for i, n in enumerate(m.names):
        if n in fixed:
            t = fixed[n]
            out_layout[n] = m.nodes[i].strategy(t).out_layout
        else:
            ins = {out_layout[m.names[m.edges[e].p]] for e in m.in_edges[i]}
            t = ins.pop() if len(ins) == 1 else "R"
            if t not in m.labels(i):
                t = "R"
            out_layout[n] = t
        asg.append((t,))
    return asg


@pytest.fixture(scope="module", params=FIXTURES)
def block(request):
    return build(request.param)


def test_megatron_pieces(block):
    # The per-layer costs that do not depend on the attention reshapes (derivation in the module
    # docstring). Edge costs are charged at the consumer; a shared conversion / reduction at the
    # first consumer.
    g, m, fixed, nm = block
    ev = m.evaluate(hand_complete(m, fixed))
    r = {x["name"]: amount(x["comm_bytes"]) for x in ev.layers()}
    assert r[nm["emb"]] == A              # vocab-parallel all-reduce of F_out
    assert r[nm["q"]] == A                # q/k/v partial errors of the block input, reduced once
    assert r[nm["k"]] == 0 and r[nm["v"]] == 0
    assert r[nm["ffn1"]] == A             # partial error of the LN1 output
    assert r[nm["ffn2"]] == A             # all-reduce of ffn2's partial F_out
    assert r[nm["head"]] == A             # partial error of the LN2 output
    i_out = m.index[nm["out"]]
    assert amount(m.intra_cost(i_out, ("II",), 0).bytes) == A   # out-proj F_out all-reduce
    # Everything from the first residual Add on (residual Adds, LayerNorms, FFN bias / GELU
    # pieces, head bias) is free apart from the rows above.
    order = m.names
    tail = order[order.index(nm["out"]) + 1:]
    assert sum(r[n] for n in tail) == 3 * A     # ffn1 + ffn2 + head


def test_split_and_merge_heads_reshapes_keep_the_head_split(block):
    # DISCREPANCY (hypar/strategies.py _layout_strategies): a Reshape (2,16,64) -> (2,16,4,16)
    # maps the split hidden axis onto the head axis (64 = 4 heads x 16, heads outer: the first
    # 32 features are heads 0-1), so a column split of q/k/v (S(f), 32 | 32) is a head split
    # (2 | 2) and the reshape keeps it for free ("a reshape must map the split axis", SPEC §4);
    # likewise the merge-heads Reshape (2,16,4,16) -> (2,16,64). The code offers only R / S(b)
    # for these reshapes because it maps an input's feature axis only when its size equals the
    # node's (64 != 4), so the Megatron pattern cannot be expressed without extra collectives.
    g, m, fixed, nm = block
    reshapes = [n for n in m.names if G.layer(g, n).op == "Reshape"]
    assert len(reshapes) == 4
    for n in reshapes:
        assert COLS in m.labels(m.index[n]), f"{n} offers {m.labels(m.index[n])}"


def test_megatron_block_costs_one_allreduce_per_sublayer_pass(block):
    # DISCREPANCY (consequence of the reshape rule above). Expected, per subgroup:
    # 4 x A (block: attention fwd + bwd, FFN fwd + bwd) + A (embedding II) + A (head III)
    # = 6 x 2048 = 12288 elements -> 49152 bytes.
    # The code's best completion of the non-weighted nodes costs 20480 per subgroup: for each of
    # q, k, v the split-heads reshape needs R, so cols -> full forward (A/2 = 1024) and the
    # scores/context MatMul's head-split error cols -> full backward (1024): 3 x 2048; and the
    # merge-heads reshape needs R: 1024 forward + 1024 backward (out-proj's cols error -> R).
    # 12288 + 8192 = 20480.
    g, m, fixed, nm = block
    partial = [(fixed[n],) if n in fixed else None for n in m.names]
    asg = complete(m, partial, "comm", SolverSettings())
    assert [a for a, n in zip(asg, m.names) if n in fixed] == [(fixed[n],) for n in m.names if n in fixed]
    assert amount(m.evaluate(asg).totals()["comm_bytes"]) == 6 * A
