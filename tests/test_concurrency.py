"""Concurrency in one place: no module but ``concurrency`` makes a task, a queue or a thread,
and its task groups raise a failure as itself."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from collector.concurrency import alongside, group

PACKAGE = Path(__file__).resolve().parents[1] / "collector"
MAKERS = {"create_task", "ensure_future", "gather", "to_thread", "run_in_executor", "TaskGroup",
          "Queue", "LifoQueue", "PriorityQueue", "SimpleQueue", "Thread", "Timer",
          "ThreadPoolExecutor", "ProcessPoolExecutor", "Process", "Pool"}
SOURCES = {"asyncio", "threading", "queue", "concurrent.futures", "multiprocessing"}
OURS = {"concurrency.py"}
NOT_YET: set[str] = set()


def makers(package: Path) -> dict[str, list[str]]:
    """Where a module of ``package`` (the fake server aside) calls a maker of tasks, queues
    or threads (``x.create_task(...)``, or a bare name imported from where they live; not a
    function of its own that shares a name, as ``merge.gather``): {path: ["line: name"]}."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("fake/"):
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module in SOURCES
                    for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else \
                    func.id if isinstance(func, ast.Name) and func.id in imported else None
                if name in MAKERS:
                    found.setdefault(relative, []).append(f"{node.lineno}: {name}")
    return found


def test_no_module_but_concurrency_makes_a_task_a_queue_or_a_thread() -> None:
    found = makers(PACKAGE)
    assert {path: calls for path, calls in found.items()
            if path not in OURS | NOT_YET} == {}
    assert "concurrency.py" in found


async def test_a_group_raises_the_first_failure_as_itself_and_cancels_the_rest() -> None:
    class Broken(Exception):
        pass

    cancelled = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails() -> None:
        raise Broken("one task's defect")

    async def both() -> None:
        async with group() as tasks:
            tasks.create_task(waits())
            tasks.create_task(fails())

    with pytest.raises(Broken, match="one task's defect"):
        await both()
    assert cancelled.is_set()


async def test_work_alongside_a_block_ends_with_it() -> None:
    began, cancelled = asyncio.Event(), asyncio.Event()

    async def ticker() -> None:
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with alongside(ticker()):
        await began.wait()
        assert not cancelled.is_set()
    assert cancelled.is_set()
