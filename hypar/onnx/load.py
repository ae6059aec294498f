"""Reading a model: a path or a ``ModelProto`` in, a sane ``ModelProto`` out.

Weights may be inline, in external data files, or absent: external data is never loaded (only
weight shapes are read later). Every failure is a :class:`ModelLoadError` whose message says
what to do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx

from hypar.errors import ModelLoadError


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a model file (streamed; external data files not included)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model and its default name (file stem, else the ONNX graph name, else 'model').

    A ``ModelProto`` is used as is (not copied). A path is read without its external data.

    Raises
    ------
    ModelLoadError
        ``source`` is neither a path nor a ModelProto; the file is missing, a directory,
        unreadable, or not a (whole) ONNX model.
    """
    if isinstance(source, onnx.ModelProto):
        check_model_sane(source, "the ModelProto")
        return source, source.graph.name or "model"
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(
            f"cannot load a model from {type(source).__name__}; pass a path or an onnx.ModelProto"
        )
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"no such file '{path}'; check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a directory, not an ONNX file; pass the .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except PermissionError as exc:
        raise ModelLoadError(f"cannot read '{path}' ({exc.strerror}); check its permissions") from None
    except Exception:  # protobuf DecodeError, RuntimeWarning turned error, ...
        raise ModelLoadError(
            f"'{path}' is not a valid ONNX model (truncated or wrong format); re-export it"
        ) from None
    check_model_sane(model, f"'{path}'")
    return model, path.stem


def check_model_sane(model: onnx.ModelProto, what: str) -> None:
    """Reject protobufs that parsed but are not (whole) ONNX models.

    ``what`` names the model in the error ("'path'" or "the ModelProto"). Raises
    :class:`ModelLoadError` when the IR version, opset, nodes or outputs are missing, or a node
    input or graph output names a tensor that nothing defines."""
    bad = ModelLoadError(f"{what} is not a valid ONNX model (truncated or wrong format); re-export it")
    g = model.graph
    if model.ir_version <= 0 or not model.opset_import or not g.node or not g.output:
        raise bad
    known = {i.name for i in g.input} | {i.name for i in g.initializer}
    known.update(o for n in g.node for o in n.output if o)  # node order may not be topological
    for n in g.node:
        if not n.op_type or any(t and t not in known for t in n.input):
            raise bad
    if any(o.name not in known for o in g.output):
        raise bad
