"""The module path a node came from, as the user names it in torch (``layers.0.self_attn.o_proj``,
dotted like ``nn.Module.named_modules()``), read from what exporters leave in the ONNX file.

Sources, first found wins (:func:`module_path`):

1. the dynamo exporter's node metadata (``metadata_props``): ``pkg.torch.onnx.name_scopes``, a
   Python list literal ``['', 'q', 'linear']`` (the root module, each module down to the innermost,
   then the aten node), else ``namespace`` (``": pkg.Model/q: torch.nn.Linear/linear: aten.linear"``);
   the entries may be full paths (``layers.0``) or names local to their parent (``0``): both give
   the full path. A node of the root module itself (``['', 'add']``) has no module here;
2. the name of a parameter the node reads whose initializer is named by torch's parameter path
   (``fc1.weight`` -> ``fc1``, ``q.bias`` -> ``q``): the tensor the node reads, else the
   initializer it comes from through weight-only ops;
3. a TorchScript-style node name (``/encoder/layer.0/attention/MatMul`` -> ``encoder.layer.0.attention``).

A node the onnxscript rewriter made by fusing nodes (``pkg.onnxscript.rewriter.rule_name``)
carries the metadata of one of them -- a Conv with its BatchNorm folded in carries the
BatchNorm's (``stem_bn``) -- so for it the parameter names (``stem.weight``: ``stem``) come first.

Nothing else is guessed: a node with none of these (the zoo's, a node at the root) has None.
"""

from __future__ import annotations

import ast
import re

import onnx

from hypar.onnx.index import ModelIndex

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
NAMESPACE_KEY = "namespace"
REWRITER_RULE_KEY = "pkg.onnxscript.rewriter.rule_name"
PARAM_SUFFIXES = (".weight", ".bias")
_CALL_COUNT = re.compile(r"@\d+$")       # torch.export marks the n-th call of a module "layers.0@1"
_INDEX = re.compile(r"\[['\"]?([^\]'\"]+)['\"]?\]")  # L['self'].layers[0] -> L.self.layers.0


def module_path(n: onnx.NodeProto, index: ModelIndex) -> str | None:
    """The dotted module path node ``n`` belongs to, from the sources in the module docstring
    (in that order; parameter names first for a fused node), None when none says."""
    if any(p.key == REWRITER_RULE_KEY for p in n.metadata_props):
        return param_path(n, index) or metadata_path(n) or scoped_name_path(n.name)
    return metadata_path(n) or param_path(n, index) or scoped_name_path(n.name)


def metadata_path(n: onnx.NodeProto) -> str | None:
    """The innermost module path in node ``n``'s dynamo metadata (None when absent, unreadable,
    or the root module)."""
    props = {p.key: p.value for p in n.metadata_props}
    if NAME_SCOPES_KEY in props:
        scopes = _literal_list(props[NAME_SCOPES_KEY])
        if scopes is not None:
            return join_scopes(scopes[:-1])             # the last entry is the aten node
    if NAMESPACE_KEY in props:
        return join_scopes(_namespace_modules(props[NAMESPACE_KEY]))
    return None


def _literal_list(text: str) -> list[str] | None:
    """``text`` read as a Python list of strings, None when it is not one. The exporters' plain
    lists (``['', 'model', 'model.layers.0']``: no quote or backslash inside an item) are split
    directly; anything else goes through ``ast.literal_eval`` (about 50x slower)."""
    if text.startswith("['") and text.endswith("']") and "\\" not in text and '"' not in text:
        items = text[2:-2].split("', '")
        if not any("'" in x for x in items):
            return items
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        return None
    return value


def _namespace_modules(namespace: str) -> list[str]:
    """The module entries of a ``namespace`` value: ``name: class`` segments joined by ``/``, the
    last one the aten node (``linear: aten.linear.default``), which is dropped."""
    segments = [s.partition(": ")[0] if ": " in s else s for s in namespace.split("/")]
    return segments[:-1] if ": " in namespace.rsplit("/", 1)[-1] else segments


def join_scopes(scopes: list[str]) -> str | None:
    """The full dotted path of a module stack, outermost first; each entry a full path
    (``layers.0``) or a name local to the entry before it (``0``). None for the root alone."""
    path = ""
    for entry in scopes:
        part = _normalise(entry)
        if not part:
            continue
        path = part if not path or part == path or part.startswith(path + ".") else f"{path}.{part}"
    return path or None


def _normalise(entry: str) -> str:
    """One module-stack entry as plain dotted names: call counts dropped, ``[0]`` / ``['x']``
    indexing as ``.0`` / ``.x``, a leading ``L.self`` / ``self`` (dynamo's local name of the
    root module) dropped."""
    parts = [_CALL_COUNT.sub("", p) for p in _INDEX.sub(r".\1", entry.strip()).split(".")]
    if parts[:2] == ["L", "self"]:
        parts = parts[2:]
    elif parts[:1] in (["self"], ["L__self__"]):
        parts = parts[1:]
    return ".".join(p for p in parts if p)


def param_path(n: onnx.NodeProto, index: ModelIndex) -> str | None:
    """The module of the first parameter node ``n`` reads that is named ``<module>.weight`` or
    ``<module>.bias`` and is (or comes from) an initializer; None when there is none."""
    for t in n.input:
        if not t or index.is_act(t):
            continue
        src = index.weight_source(t)
        if src not in index.initializers:
            continue
        for name in (t, src):
            stem = param_module(name)
            if stem:
                return stem
    return None


def param_module(name: str) -> str | None:
    """``fc1.weight`` -> ``fc1``; None for a name that is not ``<module>.weight`` / ``.bias``."""
    for suffix in PARAM_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def scoped_name_path(name: str) -> str | None:
    """``/encoder/layer.0/attention/MatMul`` -> ``encoder.layer.0.attention``: the scopes of a
    TorchScript node name (it starts with ``/``; the last part is the op). None for other names
    and for ops of the root module (``/Add``)."""
    if not name.startswith("/"):
        return None
    scopes = [s for s in name.split("/")[1:-1] if s]
    return ".".join(scopes) or None
