"""Issue 24's one ending, measured on the package: a snapshot's outcome becomes an exit code in
one place. ``conclude`` holds the rule and ``ending`` applies it to a record; no other module
builds a ``Conclusion``, imports ``conclude``, or writes an ``exit_code`` into a record or a
manifest."""

from __future__ import annotations

import ast

from tests.test_house import trees

RULE = {"conclude.py", "ending.py"}


def _offences(name: str, tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module == "collector.conclude":
            found.append(f"{where} imports collector.conclude")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if (isinstance(part, ast.Attribute) and part.attr == "exit_code") or (
                            isinstance(part, ast.Subscript)
                            and isinstance(part.slice, ast.Constant)
                            and part.slice.value == "exit_code"):
                        found.append(f"{where} sets an exit_code")
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else \
                node.func.id if isinstance(node.func, ast.Name) else ""
            if called == "Conclusion":
                found.append(f"{where} builds a Conclusion")
            if called in ("update", "replace") and any(k.arg == "exit_code"
                                                       for k in node.keywords):
                found.append(f"{where} sets an exit_code")
    return found


def test_an_outcome_becomes_an_exit_code_only_in_conclude_and_ending() -> None:
    wrong = [offence for name, _, tree in trees() if name not in RULE
             for offence in _offences(name, tree)]
    assert wrong == []


def test_the_grep_finds_what_it_looks_for() -> None:
    """The measure is live: each form it forbids is found in a sample."""
    sample = ast.parse("from collector.conclude import conclude\nrecord.exit_code = 1\n"
                       "doc.update(exit_code=3)\nx = Conclusion(a, b)\ndoc['exit_code'] = 0\n")
    assert len(_offences("sample.py", sample)) == 5
