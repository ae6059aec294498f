"""Shapes an ONNX model runs with (onnx's reference implementation) and the shapes a layer graph
imported from it records, for tests that compare the two."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator


def run_shapes(path, feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Every node output's shape when onnx's reference implementation runs the model."""
    m = onnx.load(path)
    names = [o for n in m.graph.node for o in n.output if o]
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in names)
    outs = ReferenceEvaluator(m).run(None, feeds)
    return {n: tuple(np.shape(v)) for n, v in [*zip(names, outs), *feeds.items()]}


def graph_shapes(g) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the imported layer graph ``g`` (edges, inputs and outputs)."""
    out = {t.name: t.shape for t in g.graph["inputs"] + g.graph["outputs"]}
    for _, _, d in g.edges(data=True):
        out[d["tensor"].name] = d["tensor"].shape
    return out
