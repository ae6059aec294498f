"""Plans written where runtimes read them: ONNX's own multi-device sharding annotations
(:mod:`~hypar.export.onnx_sharding`: the node -> tensors of :mod:`~hypar.export.node_tensors`,
each tensor's per-level layout as a sharding spec by :mod:`~hypar.export.layouts`), and read
back as the plan."""

from hypar.export.onnx_sharding import (ExportSummary, annotate, annotated_plan, export_onnx,
                                        plan_from_annotations)

__all__ = ["ExportSummary", "annotate", "annotated_plan", "export_onnx", "plan_from_annotations"]
