"""The house rules of issue 24, measured on the package itself: no module over 400 lines, no
class over 230, no function over 70, and most public definitions say why they exist."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "collector"
MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 400, 230, 70
DOCSTRING_SHARE = 0.8


def trees() -> list[tuple[str, str, ast.Module]]:
    """Each module of the package (the fake server included): its name, source and tree."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        found.append((str(path.relative_to(PACKAGE)), source, ast.parse(source)))
    return found


def units(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def length(node: ast.AST) -> int:
    return int(node.end_lineno or 0) - int(getattr(node, "lineno", 0)) + 1


def test_no_module_is_longer_than_400_lines() -> None:
    assert [(name, len(source.splitlines())) for name, source, _ in trees()
            if len(source.splitlines()) > MODULE_LINES] == []


def test_no_class_over_230_lines_and_no_function_over_70() -> None:
    long = []
    for name, _, tree in trees():
        for node in units(tree):
            limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
            if length(node) > limit:
                long.append(f"{name}:{node.lineno} {node.name} ({length(node)} lines)")
    assert long == []


def test_most_public_definitions_carry_a_docstring() -> None:
    public = documented = 0
    for _, _, tree in trees():
        public += 1
        documented += ast.get_docstring(tree) is not None
        for node in units(tree):
            if not node.name.startswith("_"):
                public += 1
                documented += ast.get_docstring(node) is not None
    assert documented / public >= DOCSTRING_SHARE, f"{documented} of {public}"
