"""Collection: N workers and the one writer of the image chunks, in task groups made by
``concurrency`` (a worker that fails cancels the others; the writer still commits what is done).

    lines ─(thread)─> Feed/Intake ─Target─> N workers ─┐
                        └─Rejected─────────────────────┴─> [results] ─> writer ─> ParquetSink

Workers never touch files; the writer task is the only one that does. Memory is bounded by the
feed's read-ahead, the results queue and one chunk, whatever the input's size. A stop (the
``stop`` event, set on SIGINT/SIGTERM) ends the intake and gives in-flight images ``GRACE``
seconds; whatever ended the collection, what is done is committed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from collector.chunks import Chunk
from collector.clock import Clock
from collector.concurrency import Queue, Spawn, in_thread, queue, workers_and_writer
from collector.errors import FatalRunError, Status
from collector.feed import Feed
from collector.inputs import Line
from collector.intake import Intake, Rejected, Target
from collector.progress import Snapshot, report
from collector.results import ImageResult
from collector.sink import ParquetSink
from collector.store import reason

log = logging.getLogger("collector")
GRACE = 5.0  # seconds in-flight images get after SIGINT/SIGTERM
WRITER_NAP = 0.02  # the writer takes results in batches: one wake-up per batch, not per image
Result = ImageResult | Rejected | None  # None: no more results


@dataclass(slots=True)
class Tally:
    """Running totals, for progress, the manifest and the exit code."""

    done: int = 0  # status rows handed to the writer
    members: int = 0
    failed: int = 0  # live, for progress; ``by_status`` counts what is committed
    by_status: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})

    def add(self, chunk_counts: dict[str, int]) -> None:
        """Count a committed chunk's rows by status (only committed rows are the run's)."""
        for status, n in chunk_counts.items():
            self.by_status[status] += n

    @classmethod
    def resumed(cls, counts: dict[str, int], member_rows: int) -> Tally:
        """The totals of chunks earlier runs committed."""
        tally = cls(done=sum(counts.values()), members=member_rows,
                    failed=counts.get(Status.FAILED.value, 0))
        tally.add(counts)
        return tally


class Collection:
    """Feeds the workers, writes their results, and stops on ``stop`` or the first failure."""

    def __init__(self, collect: Callable[[Target], Awaitable[ImageResult]], intake: Intake,
                 sink: ParquetSink, tally: Tally, *,
                 concurrency: int, chunk_images: int, clock: Clock,
                 stop: asyncio.Event) -> None:
        self.collect = collect  # one image, start to finish (``Fetcher.collect``)
        self.intake = intake
        self.sink = sink
        self.tally = tally
        self.concurrency = concurrency
        self.chunk_images = chunk_images
        self.clock = clock
        self.stop = stop
        self.feed: Feed | None = None

    @property
    def input_still_reading(self) -> bool:
        """A reader thread is blocked in the input (a pipe that has not ended)."""
        return self.feed is not None and self.feed.busy

    async def run(self, lines: Iterator[Line], total: int | None, progress_interval: float,
                  stderr: TextIO, *, line: Callable[[Snapshot], str] | None = None,
                  on_interval: Callable[[], None] | None = None) -> Tally:
        """Collect every line; returns the tally. Raises what stopped it early (the writer's
        failure included), after committing what is done."""
        results: Queue[Result] = queue(4096)

        def workers(spawn: Spawn) -> list[Coroutine[Any, Any, None]]:
            feed = self.feed = Feed(lines, self.intake, results.put, spawn)
            return [self._work(feed, results) for _ in range(self.concurrency)]

        progress = report(self._snapshot(total), progress_interval, stderr, self.clock,
                          line=line, on_interval=on_interval)
        await workers_and_writer(workers, functools.partial(self._write, results),
                                 functools.partial(results.put, None), progress, self.stop,
                                 self._stop_feed, GRACE)
        return self.tally

    def _stop_feed(self) -> None:
        """IDs not yet started stay unrequested."""
        if self.feed is not None:
            self.feed.stop()

    async def _work(self, feed: Feed, results: Queue[Result]) -> None:
        while (target := await feed.next()) is not None:
            await results.put(await self.collect(target))

    async def _write(self, results: Queue[Result], spawn: Spawn) -> None:
        """The one task that touches files: fills a chunk, commits it in a thread (``spawn``)
        while it fills the next, repeats (one commit at a time, in order)."""
        chunk, committing = Chunk(), None
        tally = self.tally
        while (item := await results.get()) is not None:
            chunk.add(item, time.time_ns() // 1_000_000)
            tally.done += 1
            if isinstance(item, ImageResult):
                tally.members += len(item.members)
                tally.failed += item.status is Status.FAILED
            if chunk.images >= self.chunk_images:
                if committing is not None:
                    await committing
                committing = spawn(self._commit(chunk))
                chunk = Chunk()
            if results.empty():
                await asyncio.sleep(WRITER_NAP)  # let results gather; workers wake no one
        if committing is not None:
            await committing
        await self._commit(chunk)

    async def _commit(self, chunk: Chunk) -> None:
        try:
            await in_thread(self.sink.commit, chunk)
        except OSError as exc:
            raise FatalRunError(f"output {self.sink.store.url}: write failed "
                                f"({reason(exc)})") from None
        self.tally.add(chunk.counts)

    def _snapshot(self, total: int | None) -> Callable[[], Snapshot]:
        started = self.clock.now()

        def snap() -> Snapshot:
            share, intake = total, self.intake
            if total and intake.owns is not None and intake.lines:
                # a shard's share of the input: as much of it as of the lines read so far
                share = round(total * (intake.lines - intake.other_shards) / intake.lines)
            return Snapshot(self.tally.done, self.tally.members, self.tally.failed,
                            self.clock.now() - started, share)

        return snap
