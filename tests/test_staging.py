"""The staging states have one home: no module but ``collector.staging`` spells a staging
folder, file or marker name (issue 24); a module that glued one itself would let two writers
disagree on where a date's state lives."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

from collector import staging

PACKAGE = Path(__file__).resolve().parents[1] / "collector"
# Any string holding one of these is a staging name (the partitions' own ``snapshot_date=``
# folders, and ``files``' ``.tmp`` suffix, are not).
CONTAINS = ("resume.json", "listed.json", "shard.json", "to-do", "later-changes", "replaced-",
            "_staging", "shard-", "packed/", "/packed", "plan/", "/plan")
EXACT = ("publishing", "packed", "plan", ".lock")
COMMANDS = {("cli.py", "plan")}  # ``cph-collector plan``: a command's name, not a folder


def staging_names(path: Path) -> list[str]:
    """Each string (docstrings aside) of ``path`` that spells a staging name, with its line."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    name = str(path.relative_to(PACKAGE))
    return [f"{name}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and (name, node.value) not in COMMANDS
            and (any(m in node.value for m in CONTAINS) or node.value in EXACT)]


def test_no_module_but_staging_spells_a_staging_name() -> None:
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "staging.py"
             for hit in staging_names(path)]
    assert found == []


def test_the_staging_names_are_those_the_outputs_already_hold() -> None:
    """Where a date's state lives on disk and in a bucket is a contract with the outputs of
    earlier versions: a resumed or interrupted run is found by these names."""
    day = dt.date(2026, 12, 1)
    folder = staging.date_staging(day)
    assert folder == "_staging/snapshot_date=2026-12-01"
    assert staging.date_of("snapshot_date=2026-12-01") == day
    assert staging.date_of("2026-12-01") is None and staging.named_date("2026-12-01") == day
    assert [staging.resume_marker(folder), staging.listed_marker(folder),
            staging.publishing_marker(folder), staging.shard_mark(staging.plan_folder(folder)),
            staging.todo(staging.packed(folder, "members")), staging.later(folder, day),
            staging.replaced(folder, "later-changes/snapshot_date=2026-12-01"),
            staging.shard_folder(day, 2, 3), staging.shard_lock(day, "shard-2-of-3"),
            staging.tmp_of("r")] == [
        f"{folder}/resume.json", f"{folder}/listed.json", f"{folder}/publishing",
        f"{folder}/plan/shard.json", f"{folder}/packed/members/to-do",
        f"{folder}/later-changes/snapshot_date=2026-12-01",
        f"{folder}/replaced-later-changes-snapshot_date=2026-12-01",
        f"{folder}/shard-2-of-3", f"{folder}/shard-2-of-3.lock", "_staging/.tmp/r"]
    assert staging.shard_label("shard-2-of-3") == "2/3"
    assert staging.packed_later(folder) == f"{folder}/packed/later-changes"
