"""ONNX model -> layer graph: the import pipeline, start to end.

:func:`load_layer_graph` reads an ONNX file (or an in-memory ``ModelProto``), binds the batch
size and any other input dims, runs shape inference and builds the layer graph described in :mod:`hypar.graph`:
decision layers (Conv, ConvTranspose, Gemm, MatMul with a weight, embeddings, activation x
activation MatMul) with their matrix view, and every other op that touches activations as a
non-weighted node. Weights are read as shapes only: a file's weight bytes are never read (see
:mod:`~hypar.onnx.wire`), an in-memory model's never decoded.

The steps live in their own modules: :mod:`~hypar.onnx.load` (reading),
:mod:`~hypar.onnx.expand` (the opset-23 Attention op as the ops it is made of),
:mod:`~hypar.onnx.index` (graph structure), :mod:`~hypar.onnx.inference` (shapes, with
:mod:`~hypar.onnx.binding`, :mod:`~hypar.onnx.batch` and :mod:`~hypar.onnx.constants`), :mod:`~hypar.onnx.graph_builder`
(layers from :mod:`~hypar.onnx.layers`, axes from :mod:`~hypar.onnx.axes`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import networkx as nx
import onnx

from hypar import graph as G  # noqa: F401  (used by the doctest)
from hypar.errors import HyparWarning, ShapeError
from hypar.onnx.binding import Binding
from hypar.onnx.expand import expand_composites
from hypar.onnx.graph_builder import build_layer_graph, require_weighted_layer
from hypar.onnx.index import ModelIndex
from hypar.onnx.inference import infer_shapes
from hypar.onnx.load import load_model, model_sha256

__all__ = ["load_layer_graph", "model_sha256"]


def load_layer_graph(
    source: str | os.PathLike | onnx.ModelProto,
    batch: int | None = None,
    name: str | None = None,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> nx.DiGraph:
    """Import an ONNX model as a layer graph (see :mod:`hypar.graph` for the contract).

    Parameters
    ----------
    source
        Path of an ``.onnx`` file or a loaded ``onnx.ModelProto``. Weights may be inline, in
        external data files, or absent (only their shapes are read).
    batch
        Batch size bound to dim 0 of every activation graph input; every shape is re-derived.
        ``None`` keeps the model's own batch, which must then be a fixed number.
    dims
        Symbolic dims bound by name (``{"sequence": 128}``): every input axis whose ONNX
        ``dim_param`` is the name takes the value.
    input_shapes
        Whole input shapes by input name (``{"x": (1, 3, 640, 640)}``); they may not change a
        fixed dim (change a fixed batch with ``batch``). Where ``batch``, ``dims`` and
        ``input_shapes`` set one axis they must agree. A graph bound with ``dims`` or
        ``input_shapes`` records them as ``graph["binding"]`` (``{"dims", "input_shapes"}``).
    name
        Model name stored in the graph (default: file stem, else the ONNX graph name).

    Returns
    -------
    networkx.DiGraph
        Nodes are layer names with attribute ``layer`` (:class:`hypar.graph.Layer`); edges
        carry ``tensor`` (:class:`hypar.graph.Tensor`) and ``slots`` (positions in the
        consumer's ``Layer.inputs``, which lists its activation inputs in ONNX order).

    Warns
    -----
    HyparWarning
        An op kept as an opaque layer (unknown op, Conv with a computed weight, or an Attention
        op in a form hypar does not expand).

    Raises
    ------
    ModelLoadError
        Missing, unreadable, non-ONNX or truncated file.
    ShapeError
        A bad binding (a dim name no input has, an unknown input, a wrong rank, a changed fixed
        dim, two values for one axis, a non-positive value), input dims left unbound (one error
        listing them all with the flags that bind them), or a needed shape that stays unknown.
    ModelStructureError
        The model has no weighted layer.

    Examples
    --------
    >>> from onnx import parser
    >>> m = parser.parse_model('''<ir_version: 8, opset_import: ["" : 17]>
    ... g (float[N, 3] x) => (float[N, 2] y) <float[3, 2] w = {1, 2, 3, 4, 5, 6}> {
    ...     y = MatMul(x, w) }''')
    >>> g = load_layer_graph(m, batch=4)
    >>> lay = g.nodes[G.weighted_layers(g)[0]]["layer"]
    >>> (lay.kind, lay.batch, lay.d_in, lay.d_out, lay.weight_elements, lay.macs)
    ('gemm', 4, 3, 2, 6, 24)
    """
    binding = Binding.of(batch, dims, input_shapes)
    model, default_name = load_model(source)
    name = name or default_name
    model, expand_warnings = expand_composites(model, owned=not isinstance(source, onnx.ModelProto))
    index = ModelIndex(model)
    g, opaque_warnings = build_layer_graph(index, infer_shapes(index, binding), batch, name)
    if binding.beyond_batch:
        g.graph["binding"] = binding.record()
    for text in expand_warnings + opaque_warnings:
        warnings.warn(text, HyparWarning, stacklevel=1)
    require_weighted_layer(g, name)
    return g
