"""ONNX -> layer graph (:mod:`hypar.graph`). The only package that imports ``onnx``."""

from hypar.onnx.importer import load_layer_graph, model_sha256

__all__ = ["load_layer_graph", "model_sha256"]
