"""What the user sees while a run goes."""

from __future__ import annotations

import asyncio
import io

from collector.progress import Snapshot, render, report


def test_a_terminal_gets_a_bar_and_a_log_gets_a_plain_line() -> None:
    snap = Snapshot(done=500, members=900, failed=3, elapsed=2.0, total=1000)
    assert render(snap, bar_width=10) == \
        "[#####.....]  50% 500 images | 900 member rows | 250 images/s | 3 failed"
    assert render(snap) == "50% 500 images | 900 member rows | 250 images/s | 3 failed"
    assert render(Snapshot(5, 0, 0, 1.0, None)).startswith("5 images |")


async def test_a_log_gets_a_progress_line_every_interval() -> None:
    stream = io.StringIO()
    task = asyncio.create_task(report(lambda: Snapshot(1, 2, 0, 1.0, None), 0.05, stream))
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("progress: 1 images |") for line in lines)
