"""Reading a model: a path or a ``ModelProto`` in, a sane ``ModelProto`` out.

Weights may be inline, in external data files, or absent; only their shapes are read. A file is
memory-mapped and parsed without the data of its large tensors (:mod:`~hypar.onnx.wire`), so the
weight bytes are never read or copied; external data is never loaded. Every failure is a
:class:`ModelLoadError` whose message says what to do.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import onnx

from hypar.errors import ModelLoadError
from hypar.onnx.wire import WireError, light_model_bytes


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a model file (streamed; external data files not included)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(source: str | os.PathLike | onnx.ModelProto, *,
               with_weights: bool = False) -> tuple[onnx.ModelProto, str]:
    """The model and its default name (file stem, else the ONNX graph name, else 'model').

    A ``ModelProto`` is used as is (not copied). A path is read without its external data and,
    unless ``with_weights`` (for a model to be written back, e.g. annotated), without the data of
    tensors of more than ``SMALL_ELEMENTS`` elements (:func:`read_light`).

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
        model = onnx.load(str(path), load_external_data=False) if with_weights else read_light(path)
    except PermissionError as exc:
        raise ModelLoadError(f"cannot read '{path}' ({exc.strerror}); check its permissions") from None
    except Exception:  # protobuf DecodeError, RuntimeWarning turned error, ...
        raise ModelLoadError(
            f"'{path}' is not a valid ONNX model (truncated or wrong format); re-export it"
        ) from None
    check_model_sane(model, f"'{path}'")
    return model, path.stem


def read_light(path: Path) -> onnx.ModelProto:
    """The model in file ``path``, its large tensors reduced to name, type and dims (every other
    field as stored); text and JSON formats (by extension, as ``onnx.load`` decides) are read whole
    by ``onnx.load`` without external data.

    Raises OSError when the file cannot be read and protobuf's DecodeError when it is not a
    protobuf message."""
    fmt = onnx.serialization.registry.get_format_from_file_extension(path.suffix)
    if fmt not in (None, "protobuf"):
        return onnx.load(str(path), load_external_data=False)
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, a pipe, a file system without mmap
            return _parse_light(f.read())
    with mapped:
        return _parse_light(mapped)


def _parse_light(buf) -> onnx.ModelProto:
    """The ModelProto serialized in ``buf`` (bytes or an mmap) without its large tensors' data;
    bytes that are not well-formed protobuf go whole to protobuf's parser, which rejects them."""
    try:
        light = light_model_bytes(buf)
    except WireError:
        light = None
    model = onnx.ModelProto()
    model.ParseFromString(light if light is not None else bytes(buf))
    return model


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
