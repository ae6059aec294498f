"""What `hypar inspect` prints: a layer graph as a table or as JSON (no onnx import here).

Both views list layers in the graph's deterministic topological order. Parameter totals count a
weight shared by several layers (e.g. GPT-2's LM head tied to the token embedding, recognised by
the same ``weight`` attribute) once.
"""

from __future__ import annotations

from collections import Counter

import networkx as nx

from hypar import graph as G

__all__ = ["inspect_dict", "inspect_table", "sparsity_summary", "sparsity_table", "totals", "fmt_count"]


def fmt_count(n: int) -> str:
    """Compact count: 1234 -> '1.23K', 25557032 -> '25.6M' (exact below 10,000)."""
    if n < 10_000:
        return str(n)
    for div, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.3g}{suffix}" if v < 1000 else f"{v:.0f}{suffix}"
    return str(n)  # pragma: no cover


def _dims(lay: G.Layer) -> dict[str, object]:
    """A decision layer's dims for the JSON view ({} for other nodes)."""
    if not lay.decision:
        return {}
    d: dict[str, object] = {
        "batch": lay.batch, "d_in": lay.d_in, "d_out": lay.d_out,
        "in_spatial": list(lay.in_spatial), "out_spatial": list(lay.out_spatial),
    }
    if lay.kind == G.CONV:
        d["kernel"] = list(lay.kernel)
        d["groups"] = lay.groups
    if lay.kind == G.MATMUL_ACT:
        d["heads"] = lay.heads
    return d


def _jsonable(v: object) -> object:
    """An attribute value as JSON (tuples as lists, NaN as null)."""
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


def totals(g: nx.DiGraph) -> dict[str, int]:
    """Totals over all layers: counts by role, parameters (shared weights once), MACs, and the
    op types kept opaque with how many layers each (``opaque_ops``)."""
    layers = [G.layer(g, n) for n in G.topo_layers(g)]
    return {
        "layers": len(layers),
        "decision_layers": sum(1 for lay in layers if lay.decision),
        "weighted_layers": sum(1 for lay in layers if lay.weighted),
        "conv": sum(1 for lay in layers if lay.kind == G.CONV),
        "gemm": sum(1 for lay in layers if lay.kind == G.GEMM),
        "embedding": sum(1 for lay in layers if lay.kind == G.EMBEDDING),
        "matmul_act": sum(1 for lay in layers if lay.kind == G.MATMUL_ACT),
        "opaque": sum(1 for lay in layers if lay.kind == G.OPAQUE),
        "opaque_ops": dict(sorted(Counter(lay.op for lay in layers if lay.kind == G.OPAQUE).items())),
        "params": G.parameter_count(g),
        "weight_elements": G.weight_count(g),
        "macs": sum(lay.macs for lay in layers),
    }


def inspect_dict(g: nx.DiGraph) -> dict[str, object]:
    """The `hypar inspect --json` document (every node, deterministic order)."""
    layers = []
    for n in G.topo_layers(g):
        lay = G.layer(g, n)
        layers.append({
            "name": lay.name,
            "module": lay.module,
            "op": lay.op,
            "kind": lay.kind,
            "weighted": lay.weighted,
            "decision": lay.decision,
            "dims": _dims(lay),
            "elements": {"in": lay.in_elements, "out": lay.out_elements, "weight": lay.weight_elements},
            "macs": lay.macs,
            "params": lay.params,
            "inputs": list(lay.inputs),
            "outputs": list(lay.outputs),
            "attrs": {k: _jsonable(v) for k, v in lay.attrs},
        })
    order = {n: i for i, n in enumerate(G.topo_layers(g))}
    edges = []
    for u, v in sorted(g.edges, key=lambda e: (order[e[0]], order[e[1]])):
        t: G.Tensor = g.edges[u, v]["tensor"]
        edges.append({
            "from": u, "to": v, "tensor": t.name, "shape": list(t.shape), "elements": t.elements,
            "batch_axis": t.batch_axis, "feature_axis": t.feature_axis,
            "slots": list(g.edges[u, v]["slots"]),
        })
    consumers = g.graph.get("input_consumers", {})
    return {
        "model": g.graph.get("name"),
        "batch": g.graph.get("batch"),
        "inputs": [_tensor(t) | {"consumers": list(consumers.get(t.name, ()))} for t in g.graph.get("inputs", ())],
        "outputs": [_tensor(t) for t in g.graph.get("outputs", ())],
        "layers": layers,
        "edges": edges,
        "totals": totals(g),
    }


def _tensor(t: G.Tensor) -> dict[str, object]:
    """A graph input or output for the JSON view."""
    return {"name": t.name, "shape": list(t.shape), "elements": t.elements,
            "batch_axis": t.batch_axis, "feature_axis": t.feature_axis}


def _dims_text(lay: G.Layer) -> str:
    """A decision layer's dims for the table, e.g. ``B32 3->64 224x224->112x112 k7x7`` ("" otherwise)."""
    if not lay.decision:
        return ""
    sp_in = "x".join(map(str, lay.in_spatial))
    sp_out = "x".join(map(str, lay.out_spatial))
    if lay.kind == G.CONV:
        k = "x".join(map(str, lay.kernel))
        g = f" g{lay.groups}" if lay.groups != 1 else ""
        return f"B{lay.batch} {lay.d_in}->{lay.d_out} {sp_in}->{sp_out} k{k}{g}"
    rows = f" T{sp_in}" if sp_in else ""
    if lay.kind == G.MATMUL_ACT:
        h = f" h{lay.heads}" if lay.heads != 1 else ""
        return f"B{lay.batch}{h}{rows} {lay.d_in}->{lay.d_out}"
    return f"B{lay.batch}{rows} {lay.d_in}->{lay.d_out}"


def inspect_table(g: nx.DiGraph, all_nodes: bool = False) -> str:
    """A plain-text table of the decision layers (every node with ``all_nodes``) and totals; a
    ``module`` column beside the layer (ONNX node) name when some layer has a module path."""
    layers = [G.layer(g, n) for n in (G.topo_layers(g) if all_nodes else G.decision_layers(g))]
    head = ("layer", "op", "kind", "dims", "A(F_in)", "A(F_out)", "A(W)", "MACs", "params")
    rows = [(lay.name, lay.op, lay.kind, _dims_text(lay), fmt_count(lay.in_elements),
             fmt_count(lay.out_elements), fmt_count(lay.weight_elements), fmt_count(lay.macs),
             fmt_count(lay.params)) for lay in layers]
    tot = totals(g)
    foot = ("total", "", "", "", "", "", fmt_count(tot["weight_elements"]), fmt_count(tot["macs"]),
            fmt_count(tot["params"]))
    right, names = {4, 5, 6, 7, 8}, {0}          # right-aligned columns; name columns (<= 60 wide)
    if any(lay.module for lay in layers):
        head, foot = (head[0], "module", *head[1:]), (foot[0], "", *foot[1:])
        rows = [(r[0], lay.module or "-", *r[1:]) for r, lay in zip(rows, layers)]
        right, names = {i + 1 for i in right}, {0, 1}
    widths = [max(len(r[i]) for r in [head, foot, *rows]) for i in range(len(head))]
    widths = [min(w, 60) if i in names else w for i, w in enumerate(widths)]

    def line(r: tuple[str, ...]) -> str:
        cells = []
        for i, c in enumerate(r):
            c = c if len(c) <= widths[i] else c[: widths[i] - 1] + "~"
            cells.append(c.rjust(widths[i]) if i in right else c.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    inputs = ", ".join(f"{t.name}{list(t.shape)}" for t in g.graph.get("inputs", ()))
    shown = "all nodes" if all_nodes else "decision layers (--all for every node)"
    out = [f"model {g.graph.get('name')}  batch {g.graph.get('batch')}  inputs {inputs}",
           f"{len(rows)} {shown}", "", line(head), rule, *(line(r) for r in rows), rule, line(foot)]
    parts = [f"{tot[k]} {k}" for k in ("conv", "gemm", "embedding", "matmul_act") if tot[k]]
    out.append(f"{tot['weighted_layers']} weighted layers ({', '.join(parts)}), {tot['layers']} nodes, "
               f"{tot['params']:,} parameters, {tot['macs']:,} forward MACs")
    if tot["opaque_ops"]:
        ops = ", ".join(f"{op} x{n}" for op, n in tot["opaque_ops"].items())
        out.append(f"not understood, kept as opaque layers (whole tensors, no split): {ops}")
    return "\n".join(out)



def sparsity_summary(records: list[dict]) -> dict[str, object]:
    """Totals over weight records (``WeightSparsity.to_json`` dicts, :mod:`hypar.onnx.sparsity`):
    how many weights are stored, and over the stored ones the fractions of all-zero output
    channels, input channels and elements (None when no weight is stored)."""
    stored = [r for r in records if r["stored"]]

    def frac(zero: str, total: str) -> float | None:
        den = sum(r[total] for r in stored)
        return round(sum(r[zero] for r in stored) / den, 6) if den else None
    return {"weights": len(records), "stored": len(stored),
            "zero_out_fraction": frac("zero_out_channels", "out_channels"),
            "zero_in_fraction": frac("zero_in_channels", "in_channels"),
            "zero_element_fraction": frac("zero_elements", "elements")}


def _percent(zero: int, total: int) -> str:
    """``zero`` of ``total`` as ``"3/64 (4.7%)"``."""
    return f"{zero}/{total} ({100.0 * zero / total:.1f}%)" if total else "-"


def sparsity_table(records: list[dict]) -> str:
    """A plain-text table of every weight's all-zero output channels, input channels and
    elements (``"weights not stored"`` for a weight without values), then the totals; a model
    with no stored weight at all says so in one line."""
    summary = sparsity_summary(records)
    if not summary["stored"]:
        return (f"structured sparsity: weights not stored ({summary['weights']} weights, none with values: "
                "a shapes-only model); nothing to scan")
    rows = [("layer", "op", "weight shape", "zero out-channels", "zero in-channels", "zero elements")]
    for r in records:
        shape = "x".join(map(str, r["shape"])) or "?"
        if not r["stored"]:
            rows.append((r["node"], r["op"], shape, "weights not stored", "", ""))
            continue
        rows.append((r["node"], r["op"], shape, _percent(r["zero_out_channels"], r["out_channels"]),
                     _percent(r["zero_in_channels"], r["in_channels"]),
                     _percent(r["zero_elements"], r["elements"])))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100.0 * v:.1f}%"
    lines.append("")
    lines.append(f"stored weights {summary['stored']}/{summary['weights']}: all-zero output channels "
                 f"{pct(summary['zero_out_fraction'])}, input channels {pct(summary['zero_in_fraction'])}, "
                 f"elements {pct(summary['zero_element_fraction'])}")
    return "\n".join(lines)
