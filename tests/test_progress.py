"""What the user sees while a run goes."""

from __future__ import annotations

import asyncio
import io

from collector.clock import FakeClock
from collector.progress import Snapshot, render, report


def test_a_terminal_gets_a_bar_and_a_log_gets_a_plain_line() -> None:
    snap = Snapshot(done=500, members=900, failed=3, elapsed=2.0, total=1000)
    assert render(snap, bar_width=10) == \
        "[#####.....]  50% 500 images | 900 member rows | 250 images/s | 3 failed"
    assert render(snap) == "50% 500 images | 900 member rows | 250 images/s | 3 failed"
    assert render(Snapshot(5, 0, 0, 1.0, None)).startswith("5 images |")


async def test_a_log_gets_a_progress_line_every_interval() -> None:
    """On a fake clock: 10 s of a run with a 2 s interval is five lines, in no time."""
    stream, clock = io.StringIO(), FakeClock()
    start = clock.time
    task = asyncio.create_task(report(lambda: Snapshot(1, 2, 0, clock.time - start, None), 2.0,
                                      stream, clock.clock))
    while clock.time < start + 10.5:  # noqa: ASYNC110 - the fake clock moves as the task sleeps
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert stream.getvalue().splitlines() == [
        f"progress: 1 images | 2 member rows | {1 / t:,.0f} images/s | 0 failed"
        for t in (2.0, 4.0, 6.0, 8.0, 10.0)]
