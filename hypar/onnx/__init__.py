"""ONNX -> layer graph (:mod:`hypar.graph`). The only package that imports ``onnx``."""

from hypar.onnx.binding import model_input_dims
from hypar.onnx.importer import load_layer_graph, model_sha256

__all__ = ["load_layer_graph", "model_input_dims", "model_sha256"]
