"""Time as a dependency: one clock and one sleep, so tests move time instead of waiting for it.

``SYSTEM`` is the real one. A test gives ``FakeClock()``: ``sleep`` advances ``now`` at once and
lets other tasks run, so a minute of backoff or a 100 ms window is checked in microseconds,
exactly. (asyncio-throttle, inside the limiter, reads ``time.monotonic`` itself; its tests put
that module on a fake clock too, see ``tests/test_limiter.py``.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Clock:
    """``now()``: monotonic seconds; ``sleep(s)``: wait that long."""

    now: Callable[[], float]
    sleep: Sleep


SYSTEM = Clock(time.monotonic, asyncio.sleep)


class FakeClock:
    """A clock that moves only when something sleeps on it (tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def now(self) -> float:
        """The fake time, moved only by ``sleep``."""
        return self.time

    async def sleep(self, seconds: float) -> None:
        """Moves the time at once, then yields once so other tasks run."""
        self.time += max(seconds, 0.0)
        await asyncio.sleep(0)

    @property
    def clock(self) -> Clock:
        """The ``Clock`` the code under test takes."""
        return Clock(self.now, self.sleep)
