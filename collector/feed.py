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

from collector.errors import FatalRunError, UsageError
from collector.inputs import Line
from collector.intake import Intake, Rejected, Target

READ_BATCH = 2048


def _take(lines: Iterator[Line], n: int) -> list[Line]:
    return list(itertools.islice(lines, n))


class Feed:
    def __init__(self, lines: Iterator[Line], intake: Intake,
                 reject: Callable[[Rejected], Awaitable[None]], batch: int = READ_BATCH) -> None:
        self._lines = lines
        self._intake = intake
        self._reject = reject  # invalid IDs go straight to the output as rows
        self._batch = batch
        self._ready: deque[Target] = deque()
        self._reading: asyncio.Task[None] | None = None
        self._exhausted = False
        self._stopped = False
        self._failure: BaseException | None = None

    async def next(self) -> Target | None:
        """The next target; None when the input is done or the run is stopping."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._stopped:
                return None
            if self._reading is None and not self._exhausted \
                    and len(self._ready) <= self._batch // 2:
                self._reading = asyncio.create_task(self._read())
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

    async def close(self) -> None:
        self.stop()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read(self) -> None:
        try:
            batch = await asyncio.to_thread(_take, self._lines, self._batch)
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
