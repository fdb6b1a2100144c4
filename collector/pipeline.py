"""The run: where every task and queue lives.

    lines ─(thread)─> Feed/Intake ─Target─> N workers ─┐
                        └─Rejected─────────────────────┴─> [results] ─> writer ─> ParquetSink

Workers never touch files; the writer task is the only one that does. Memory is bounded by the
feed's read-ahead, the results queue and one chunk, whatever the input's size. SIGINT/SIGTERM
stop the intake, give in-flight images ``GRACE`` seconds, commit what is done and end the run as
``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from collector.auth import Auth
from collector.client import AiohttpClient, Timeouts, tls_context
from collector.config import Settings
from collector.errors import DEFINITIVE, CollectorError, ExitCode, FatalRunError, Status, UsageError
from collector.feed import Feed, in_daemon_thread
from collector.fetch import Fetcher, ImageResult
from collector.inputs import Line, detect_format, read_input, survey
from collector.intake import Intake, Rejected
from collector.limiter import RateLimiter
from collector.manifest import RunRecord, mark_crashed, record_published, write_manifest
from collector.outdir import OutputLock, check_no_links, check_writable
from collector.progress import Snapshot, report
from collector.retry import Backoff, RetryBudget
from collector.sink import (
    Chunk,
    ParquetSink,
    clean_stale_staging,
    finish_interrupted,
    read_published,
)

log = logging.getLogger("collector")
GRACE = 5.0  # seconds in-flight images get after SIGINT/SIGTERM
WRITER_NAP = 0.02  # the writer takes results in batches: one wake-up per batch, not per image


@dataclass(slots=True)
class Tally:
    """Running totals the writer keeps, for progress, the manifest and the exit code."""

    done: int = 0
    members: int = 0
    failed: int = 0  # live, for progress; ``by_status`` counts what is committed
    by_status: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})

    def add(self, chunk_counts: dict[str, int]) -> None:
        for status, n in chunk_counts.items():
            self.by_status[status] += n


def new_run_id(started: dt.datetime) -> str:
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def open_input(path: str, input_format: str,
               default_project: str | None) -> Generator[Line, None, None]:
    """The input's lines, after checking it is readable and not empty (UsageError if it is).

    Close the generator when done with it: that closes the file, however the run ended.
    """
    lines = read_input(path, input_format)
    first = next(lines, None)
    if first is None:
        raise UsageError(f"input {path}: no image IDs (empty, or only blank lines and comments)")
    if first.project_id is None and default_project is None and first.problem is None:
        lines.close()
        raise UsageError(f"input {path}: rows have no project_id; give --project-id "
                         "(or a project_id column)")

    def all_lines() -> Generator[Line, None, None]:
        try:
            yield first
            yield from lines
        finally:
            lines.close()

    return all_lines()


def fingerprint(input_digest: str | None, settings: Settings) -> str | None:
    """What must match for a re-run to resume: the input's bytes and what shapes the rows."""
    if input_digest is None:
        return None  # stdin cannot be read twice
    shape = f"{input_digest}|{settings.cph_endpoint}|{settings.project_id}|{settings.input_format}"
    return hashlib.sha256(shape.encode()).hexdigest()


class Run:
    def __init__(self, settings: Settings, input_path: str, auth: Auth, *,
                 stderr: TextIO = sys.stderr, fetcher_options: dict[str, object] | None = None,
                 env: Mapping[str, str] | None = None):
        endpoint = settings.cph_endpoint
        if endpoint is None:
            raise UsageError("endpoint: not set; give --region (e.g. cn-north-4) or --endpoint "
                             "(e.g. https://cph.cn-north-4.myhuaweicloud.com)")
        self.settings = settings
        self.endpoint: str = endpoint
        self.input_path = input_path
        self.auth = auth
        self.stderr = stderr
        self.fetcher_options = fetcher_options or {}
        self.env = os.environ if env is None else env  # for HTTP(S)_PROXY / NO_PROXY
        self.started = dt.datetime.now(dt.UTC)
        self.snapshot_date = settings.snapshot_date or self.started.date()
        self.run_id = new_run_id(self.started)
        self.intake = Intake(settings.project_id)
        self.tally = Tally()
        self.stop_signal: int | None = None
        self._stop = asyncio.Event()
        self._feed: Feed | None = None
        self._fetcher: Fetcher | None = None
        self.record = RunRecord(self.run_id, self.snapshot_date, self.started, input_path,
                                settings.public())

    @property
    def input_still_reading(self) -> bool:
        """A reader thread is blocked in the input (a pipe that has not ended)."""
        return self._feed is not None and self._feed.busy

    # -- the whole run -------------------------------------------------------------------------

    async def execute(self) -> RunRecord:
        """Preflight, collect, publish; returns the final record (exit code included)."""
        fmt = detect_format(self.input_path, self.settings.input_format)
        lines = await in_daemon_thread(
            lambda: open_input(self.input_path, fmt, self.settings.project_id))
        try:
            with self._signals():  # from here on, a signal is a clean stop (130/143)
                return await self._execute(lines, fmt)
        finally:
            if self._feed is None or not self._feed.busy:  # else a reader thread holds it;
                lines.close()  # it ends with the process, which never waits for it

    async def _execute(self, lines: Iterator[Line], fmt: str) -> RunRecord:
        output = self.settings.output
        check_no_links(output, self.snapshot_date)
        check_writable(output)
        tls_context(self.settings.ca_bundle)  # a bad CA bundle is a usage error, found now
        with OutputLock(output):
            sink = ParquetSink(output, self.snapshot_date, self.run_id)
            about = await asyncio.to_thread(survey, self.input_path, fmt)
            try:
                await asyncio.to_thread(self._recover, output)
                removed = clean_stale_staging(output, keep=sink.staging.name)
                resumed = await asyncio.to_thread(sink.resume,
                                                  fingerprint(about.digest, self.settings))
            except OSError as exc:
                raise FatalRunError(f"output {output}: write failed "
                                    f"({exc.strerror or type(exc).__name__})") from None
            if removed:
                log.info("removed leftovers of unfinished runs for other dates: %s",
                         ", ".join(removed))
            if resumed.chunks:
                log.info("resuming: %d chunk(s), %d images already committed for %s",
                         resumed.chunks, len(resumed.keys), self.snapshot_date)
                self.intake.done = resumed.keys
                self.tally.add(resumed.counts)
                self.tally.done = sum(resumed.counts.values())
                self.tally.members = resumed.member_rows
                self.tally.failed = resumed.counts.get(Status.FAILED.value, 0)
            self._save()
            try:
                fetcher = await self._collect(lines, sink, about.lines)
            except Exception as exc:
                if self._fetcher is not None and self._fetcher.endpoint_unproven():
                    await asyncio.to_thread(sink.drop_own_chunks)  # nothing in them is proved
                if isinstance(exc, CollectorError):  # ours: its own words and exit code
                    self._finish("fatal", exc.exit_code, str(exc))
                else:
                    self._finish("fatal", ExitCode.FATAL,
                                 f"internal error: {type(exc).__name__}: {exc}")
                self._save(quiet=True)
                raise
            if self.stop_signal is not None:
                code = ExitCode.INTERRUPTED if self.stop_signal == signal.SIGINT \
                    else ExitCode.TERMINATED
                self._finish("interrupted", code, f"stopped by {signal.Signals(code - 128).name}")
                self._save(quiet=True)
                return self.record
            if fetcher.endpoint_unproven():
                # Nothing this run stored was proved to come from the API: a re-run redoes it.
                await asyncio.to_thread(sink.drop_own_chunks)
                self._finish("fatal", ExitCode.FATAL, fetcher.endpoint.verdict())
                self._save(quiet=True)
                raise FatalRunError(fetcher.endpoint.verdict())
            await self._publish(sink)
        return self.record

    async def _publish(self, sink: ParquetSink) -> None:
        """Publish, then say so in the manifest; a stop between the two is mended by the next
        run (``_recover``), so the manifest never says less than readers can see."""
        try:
            await asyncio.to_thread(sink.publish)
        except OSError as exc:
            error = (f"output {sink.output}: publish failed ({exc.strerror or type(exc).__name__})"
                     "; the next run finishes it")
            self._finish("fatal", ExitCode.FATAL, error)
            self._save(quiet=True)
            raise FatalRunError(error) from None
        ok = all(n == 0 for s, n in self.tally.by_status.items() if s not in DEFINITIVE)
        self._finish("finished", ExitCode.OK if ok else ExitCode.SOME_FAILED, None)
        self.record.files = list(sink.files)
        try:
            write_manifest(sink.output, self.record)
        except OSError as exc:
            error = (f"output {sink.output}: {self.snapshot_date} is published, but its manifest "
                     f"could not be written ({exc.strerror or type(exc).__name__}); the next run "
                     "records it")
            self.record.exit_code, self.record.error = int(ExitCode.FATAL), error
            raise FatalRunError(error) from None
        await asyncio.to_thread(sink.discard)

    def _recover(self, output: Path) -> None:
        """Before anything else: finish the publishes stopped runs began, give those runs the
        manifest their visible data deserves, and mark the other dead runs crashed."""
        for run_id, day in finish_interrupted(output).items():
            published = read_published(output, day)
            if record_published(output, run_id, published.counts, published.files,
                                by=self.run_id):
                log.info("run %s had published %s before it stopped; its manifest now says "
                         "finished", run_id, day)
        for run_id in mark_crashed(output):
            log.info("run %s had stopped without finishing; marked crashed", run_id)

    def _save(self, *, quiet: bool = False) -> None:
        """Write the manifest; a failure is one line (exit 3), or a warning when the run is
        ending anyway and already has its error."""
        try:
            write_manifest(self.settings.output, self.record)
        except OSError as exc:
            error = (f"output {self.settings.output}: cannot write the manifest "
                     f"runs/{self.run_id}.json ({exc.strerror or type(exc).__name__})")
            if quiet:
                log.warning("%s", error)
                return
            self._finish("fatal", ExitCode.FATAL, error)
            raise FatalRunError(error) from None

    def _finish(self, status: str, code: ExitCode, error: str | None) -> None:
        record = self.record
        record.status, record.exit_code, record.error = status, int(code), error
        record.ended_at = dt.datetime.now(dt.UTC)
        record.counts = {
            "input_lines": self.intake.lines,
            "unique_ids": self.intake.unique,
            "duplicates": self.intake.duplicates,
            "resumed": self.intake.resumed,
            "invalid": self.tally.by_status[Status.INVALID_ID.value],
            **{s: n for s, n in self.tally.by_status.items() if s != Status.INVALID_ID.value},
            "member_rows": self.tally.members,
            "status_rows": self.tally.done,
        }

    # -- collection ----------------------------------------------------------------------------

    async def _collect(self, lines: Iterator[Line], sink: ParquetSink,
                       total: int | None) -> Fetcher:
        s = self.settings
        results: asyncio.Queue[ImageResult | Rejected | None] = asyncio.Queue(maxsize=4096)
        timeouts = Timeouts(s.connect_timeout, s.read_timeout, s.request_timeout)
        limiter = RateLimiter(s.rate_limit)
        async with AiohttpClient(self.auth, concurrency=s.concurrency, timeouts=timeouts,
                                 max_body_bytes=s.max_body_bytes, ca_bundle=s.ca_bundle,
                                 proxy=s.proxy, env=self.env) as client:
            fetcher = Fetcher(
                client, limiter, endpoint=self.endpoint,
                max_attempts=s.max_attempts,
                backoff=Backoff(s.backoff_base, s.backoff_cap, s.retry_after_cap),
                budget=RetryBudget(100.0, s.retry_budget), fail_fast_after=s.fail_fast_after,
                max_pages=s.max_pages, max_members=s.max_members,
                **self.fetcher_options)  # type: ignore[arg-type]
            self._fetcher = fetcher
            writer = asyncio.create_task(self._write(results, sink))
            progress = asyncio.create_task(report(self._snapshot(total), s.progress_interval,
                                                  self.stderr))
            try:
                await self._run_workers(lines, results, fetcher, writer)
            finally:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
                if not writer.done():
                    await results.put(None)
                try:
                    await writer  # commits what is done, whatever ended the run
                finally:  # a fatal run's manifest has its real counts too
                    c = fetcher.counters
                    self.record.requests, self.record.retries, self.record.throttled = \
                        c.requests, c.retries, c.throttled
                    self.record.rate = {"configured": s.rate_limit,
                                        "lowest": round(limiter.lowest, 1),
                                        "final": round(limiter.rate, 1)}
                    self.record.auth = {"method": self.auth.name,
                                        "token_requests": getattr(self.auth, "requests", 0)}
        return fetcher

    async def _run_workers(self, lines: Iterator[Line],
                           results: asyncio.Queue[ImageResult | Rejected | None],
                           fetcher: Fetcher, writer: asyncio.Task[None]) -> None:
        """Until the input is done: a signal, or any task failing (the writer included: a
        dead writer would leave workers waiting on a full queue), ends it early."""
        feed = self._feed = Feed(lines, self.intake, results.put)
        workers = [asyncio.create_task(self._work(feed, results, fetcher))
                   for _ in range(self.settings.concurrency)]
        stopper: asyncio.Task[Any] = asyncio.create_task(self._stop.wait())
        pending: set[asyncio.Task[Any]] = set(workers)
        failure: BaseException | None = None
        try:
            while pending and failure is None and not self._stop.is_set():
                done, _ = await asyncio.wait(pending | {stopper, writer},
                                             return_when=asyncio.FIRST_COMPLETED)
                if writer in done:
                    failure = writer.exception() or RuntimeError("the writer stopped early")
                for task in done - {stopper, writer}:
                    pending.discard(task)
                    failure = failure or task.exception()
            if failure is None and self._stop.is_set():
                feed.stop()  # IDs not yet started stay unrequested
                await asyncio.wait(workers, timeout=GRACE)
        finally:
            await feed.close()
            for task in (stopper, *workers):
                task.cancel()
            await asyncio.gather(stopper, *workers, return_exceptions=True)
        if failure is not None:
            raise failure

    async def _work(self, feed: Feed, results: asyncio.Queue[ImageResult | Rejected | None],
                    fetcher: Fetcher) -> None:
        while (target := await feed.next()) is not None:
            await results.put(await fetcher.collect(target))

    async def _write(self, results: asyncio.Queue[ImageResult | Rejected | None],
                     sink: ParquetSink) -> None:
        """The one task that touches files: fills a chunk, commits it in a thread, repeats."""
        chunk, committing = Chunk(), None
        try:
            while (item := await results.get()) is not None:
                chunk.add(item, time.time_ns() // 1_000_000)
                self.tally.done += 1
                if isinstance(item, ImageResult):
                    self.tally.members += len(item.members)
                    self.tally.failed += item.status is Status.FAILED
                if chunk.images >= self.settings.chunk_images:
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(self._commit(sink, chunk))
                    chunk = Chunk()
                if results.empty():
                    await asyncio.sleep(WRITER_NAP)  # let results gather; workers wake no one
            if committing is not None:
                await committing
            await self._commit(sink, chunk)
        except OSError as exc:
            raise FatalRunError(f"output {sink.output}: write failed "
                                f"({exc.strerror or type(exc).__name__})") from None

    async def _commit(self, sink: ParquetSink, chunk: Chunk) -> None:
        await asyncio.to_thread(sink.commit, chunk)
        self.tally.add(chunk.counts)

    def _snapshot(self, total: int | None) -> Callable[[], Snapshot]:
        t0 = time.monotonic()

        def snap() -> Snapshot:
            return Snapshot(self.tally.done, self.tally.members, self.tally.failed,
                            time.monotonic() - t0, total)

        return snap

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []

        def on_signal(signum: int) -> None:
            if self.stop_signal is None:
                log.warning("%s: stopping; in-flight images get %.0f s, then committing",
                            signal.Signals(signum).name, GRACE)
            self.stop_signal = signum
            self._stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (RuntimeError, ValueError):  # not the main thread
                pass
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)


def summary_line(record: RunRecord) -> str:
    c = record.counts
    statuses = ", ".join(f"{c.get(s.value, 0):,} {s.value}" for s in Status
                         if s is not Status.INVALID_ID) + f", {c.get('invalid', 0):,} invalid_id"
    rate = c.get("status_rows", 0) / record.seconds
    return (f"run {record.run_id} {record.status}: {c.get('status_rows', 0):,} images "
            f"({statuses}), {c.get('member_rows', 0):,} member rows, "
            f"{c.get('duplicates', 0):,} duplicates; {record.requests:,} requests, "
            f"{record.retries:,} retries, {record.throttled:,} throttled (429); "
            f"{rate:,.0f} images/s in {record.seconds:.1f} s; exit {record.exit_code}")
