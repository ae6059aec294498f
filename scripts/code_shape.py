"""Print hypar's files over MAX_FILE_LINES lines and functions over MAX_FUNCTION_LINES lines
(issue 9's limits), longest first; exit 1 when any is over.

    python scripts/code_shape.py             # the whole package
    python scripts/code_shape.py hypar/sim   # one room
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def functions(path: Path) -> list[tuple[int, str, int]]:
    """(lines, qualified name, first line) of every function and method in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out.append((child.end_lineno - child.lineno + 1, name, child.lineno))
                walk(child, name + ".")

    walk(tree, "")
    return out


def over_limits(paths: list[Path]) -> list[str]:
    """One line per file or function over the limits, longest first."""
    rows = []
    for p in paths:
        n = len(p.read_text().splitlines())
        if n > MAX_FILE_LINES:
            rows.append((n, f"{p.relative_to(ROOT)}: {n} lines (file)"))
        for lines, name, first in functions(p):
            if lines > MAX_FUNCTION_LINES:
                rows.append((lines, f"{p.relative_to(ROOT)}:{first} {name}: {lines} lines"))
    return [text for _, text in sorted(rows, reverse=True)]


def main(args: list[str]) -> int:
    roots = [Path(a).resolve() for a in args] or [ROOT / "hypar"]
    paths = sorted(q for r in roots for q in ([r] if r.is_file() else r.rglob("*.py")))
    rows = over_limits(paths)
    print("\n".join(rows) if rows else f"every file <= {MAX_FILE_LINES} lines, every function <= {MAX_FUNCTION_LINES}")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
