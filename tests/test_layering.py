"""The package's shape, checked on the source: imports flow one way, down the rooms, and each
third-party library with a room of its own is imported only there (README: Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from paths import ROOT

PACKAGE = ROOT / "hypar"

# Rank of each room (a top-level module or sub-package of hypar); a module may import only rooms
# of a lower rank, or its own room. Top first in README's layout: cli -> present -> ... -> errors.
RANK = {
    "hypar": 0, "errors": 0, "vocab": 0,
    "graph": 1, "array": 1,
    "synthetic": 2, "onnx": 2, "ilp": 2, "config": 2, "shards": 2,
    "cost": 3,
    "sim": 4, "search": 4,
    "plan": 5,
    "api": 6,
    "verify": 7, "sweep": 7, "export": 7, "torch": 7,
    "present": 8,
    "cli": 9,
    "__main__": 10,
}

# Third-party packages that only one room may import.
OWNER = {"onnx": "onnx", "pulp": "ilp", "highspy": "ilp", "click": "cli", "torch": "torch"}


def _room(module: str) -> str:
    """'hypar.cost.model' -> 'cost'; 'hypar' -> 'hypar'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hypar"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, lazy ones inside functions too."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "hypar":  # from hypar import api, graph as G, __version__
                out += [(node.lineno, f"hypar.{a.name}" if a.name in RANK else "hypar") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_rank():
    rooms = {_room(_module_name(p)) for p in SOURCES}
    assert rooms <= set(RANK), f"give these rooms a rank in tests/test_layering.py: {rooms - set(RANK)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_down(path):
    here = _room(_module_name(path))
    wrong = []
    for line, mod in _imports(path):
        top = mod.split(".")[0]
        if top == "hypar":
            there = _room(mod)
            if there != here and RANK[there] >= RANK[here]:
                wrong.append(f"line {line}: {here} (rank {RANK[here]}) imports {mod} (rank {RANK[there]})")
        elif top in OWNER and OWNER[top] != here:
            wrong.append(f"line {line}: {mod} is imported only in hypar/{OWNER[top]}")
    assert not wrong, "\n".join(wrong)


def test_files_and_functions_are_short():
    """Issue 9's limits: no file in hypar/ over 500 lines, no function over 80
    (scripts/code_shape.py lists what is over)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shape)
    assert shape.over_limits(SOURCES) == []
