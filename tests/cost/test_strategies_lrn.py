"""LRN reads neighbouring channels: its node is never offered a feature (channel) split, which
would need a halo exchange neither priced nor simulated (googlenet's pool1/norm1 took one on
2x2x2 and `verify` could not run the plan)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import parser

from hypar.cost.strategies import COLS, node_model
from hypar.onnx import load_layer_graph


def test_lrn_takes_no_channel_split_but_relu_does():
    m = parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8, 6, 6] x) => (float[4, 8, 6, 6] y) {
            c = Conv<pads = [1, 1, 1, 1]>(x, w)
            r = Relu(c)
            n = LRN<size = 5>(r)
            y = Conv<pads = [1, 1, 1, 1]>(n, w) }""")
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "w"))
    g = load_layer_graph(m)
    layouts = {g.nodes[n]["layer"].op: {s.out_layout for s in node_model(g, n, "full").strategies}
               for n in g.nodes if g.nodes[n]["layer"].op in ("LRN", "Relu")}
    assert COLS in layouts["Relu"] and COLS not in layouts["LRN"]
