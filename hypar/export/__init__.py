"""Plans written where runtimes read them: ONNX's own multi-device sharding annotations
(:mod:`~hypar.export.onnx_sharding` writes them: the tensors a node places,
:mod:`~hypar.export.node_tensors`, each tensor's per-level layout as a sharding spec,
:mod:`~hypar.export.layouts`), and the plan read back from them
(:mod:`~hypar.export.onnx_reading`)."""

from hypar.export.onnx_reading import annotated_plan, plan_from_annotations
from hypar.export.onnx_sharding import ExportSummary, annotate, export_onnx

__all__ = ["ExportSummary", "annotate", "annotated_plan", "export_onnx", "plan_from_annotations"]
