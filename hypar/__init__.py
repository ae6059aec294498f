"""hypar: hybrid-parallelism partitioning optimizer for ONNX models on hierarchical PE arrays."""

__version__ = "0.1.0"
