"""Hands targets to the workers, reading the input ahead in batches off the event loop.

Why not an ``asyncio.Queue`` between one reader task and the workers: once such a queue is full,
every ``get`` wakes the reader for one ``put`` -- two task switches per image, a tenth of the
collector's CPU. Here a worker takes the next target without awaiting anything while the
read-ahead holds some, and the next batch is read (in a thread) while half the current one
is still left.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator

from collector.concurrency import Spawn, in_daemon_thread
from collector.errors import FatalRunError, UsageError
from collector.inputs import Line
from collector.intake import Intake, Rejected, Target

READ_BATCH = 2048
__all__ = ["READ_BATCH", "Feed", "in_daemon_thread"]  # in_daemon_thread: ``concurrency``'s


def _take(lines: Iterator[Line], n: int) -> list[Line]:
    return list(itertools.islice(lines, n))


class Feed:
    """Hands the workers their next target, reading the input ahead in a thread; its read
    task is started by ``spawn`` (the collection's task group: ``concurrency``)."""
    def __init__(self, lines: Iterator[Line], intake: Intake,
                 reject: Callable[[Rejected], Awaitable[None]], spawn: Spawn,
                 batch: int = READ_BATCH) -> None:
        self._lines = lines
        self._spawn = spawn
        self._intake = intake
        self._reject = reject  # invalid IDs go straight to the output as rows
        self._batch = batch
        self._ready: deque[Target] = deque()
        self._reading: asyncio.Task[None] | None = None
        self._exhausted = False
        self._stopped = False
        self._failure: BaseException | None = None
        self.busy = False  # a reader thread may still be inside the input's generator

    async def next(self) -> Target | None:
        """The next target; None when the input is done or the run is stopping."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                return None
            if self._reading is None and not self._exhausted \
                    and len(self._ready) <= self._batch // 2:
                self._reading = self._spawn(self._read())
            if self._ready:
                return self._ready.popleft()
            if self._exhausted:
                return None
            assert self._reading is not None
            await asyncio.shield(self._reading)

    def stop(self) -> None:
        """Targets not yet handed out stay unrequested."""
        self._stopped = True
        self._ready.clear()
        if self._reading is not None:
            self._reading.cancel()

    def _take(self) -> list[Line]:
        """In the reader thread; ``busy`` stays True while it is inside the generator, even
        after a stop stopped waiting for it."""
        try:
            return _take(self._lines, self._batch)
        finally:
            self.busy = False

    async def _read(self) -> None:
        try:
            self.busy = True
            batch = await in_daemon_thread(self._take)
            if not batch:
                self._exhausted = True
            for line in batch:
                verdict = self._intake.admit(line)
                if isinstance(verdict, Target):
                    self._ready.append(verdict)
                elif isinstance(verdict, Rejected):
                    await self._reject(verdict)
        except UsageError as exc:  # the input broke after requests began
            self._failure = FatalRunError(str(exc))
        except Exception as exc:  # handed to every worker that asks next
            self._failure = exc
        finally:
            self._reading = None
