"""The run, as steps: preflight, collect, conclude, publish; the manifest written in one place.

    check output ─> lock ─> preflight ─> images ─> collect ─> conclude ─┬─ finished ─> publish
                            (mend, resume) (sources) (collect.py) (ending)└─ otherwise ─> manifest

Where the images come from is the run's ``Source`` (``sources``); how it ends, its record,
counts and exit code, is ``ending``'s. SIGINT/SIGTERM, from the first step on, stop the intake
and end the run as ``interrupted`` (130/143) with what is done committed; a re-run resumes.
Every object comes built (``build``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO

from collector import ending
from collector.build import Parts
from collector.collect import GRACE, Collection, Tally
from collector.concurrency import alongside, in_thread, on_signals
from collector.config import Settings
from collector.ending import (
    emit_metrics,
    last_success,
    run_counts,
)
from collector.errors import CollectorError, FatalRunError, RunStatus, UsageError
from collector.fetch import Fetcher
from collector.finish import Finish
from collector.inputs import Line
from collector.intake import Intake, Target
from collector.listing import Listing
from collector.logs import RunId
from collector.manifest import RunRecord
from collector.night import Night, begun, publish_night
from collector.observe import progress_json, summary_json, summary_line
from collector.outdir import LOCK_NAME, check_no_links, check_writable, lock
from collector.preflight import prepare
from collector.publish import stage_changes
from collector.results import ImageResult
from collector.sink import ParquetSink
from collector.sources import Context, local_input, open_input, route_of, source_of
from collector.staging import date_staging, plan_name, shard_lock
from collector.store import LocalStore, Store

__all__ = ["emit_metrics", "local_input", "open_input", "run_counts", "summary_json",
           "summary_line"]  # importable where they were

log = logging.getLogger("collector")


def new_run_id(started: dt.datetime) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx``: sortable by start, unique by its random tail."""
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Run:
    """One collection run of one snapshot date: ``await Run(...).execute()`` -> its record."""

    def __init__(self, settings: Settings, input_path: str | None, parts: Parts, *,
                 stderr: TextIO = sys.stderr, plan: bool = False) -> None:
        """``input_path`` None: the images are discovered (``settings.discover``). ``plan``:
        list only, into the date's plan, which shards of a discovery run then collect."""
        if len(settings.source.project_ids) > 1 and not settings.source.discover:
            raise UsageError("project_id: one project for input rows that have none (a list "
                             "is for --discover)")
        self.settings, self.parts, self.stderr = settings, parts, stderr
        self.started = dt.datetime.now(dt.UTC)
        self.snapshot_date = settings.output.snapshot_date or self.started.date()
        self.run_id = new_run_id(self.started)
        RunId.current = self.run_id  # in every log line of the JSON format
        self.shard = settings.shards.shard
        if plan and (not settings.source.discover or self.shard is not None):
            raise UsageError("plan: lists once for the shards of a --discover run; give "
                             "--discover, and no --shard")
        self.source = source_of(settings, input_path, plan)
        self.share = plan_name() if plan else self.shard.name if self.shard else None  # its staging
        self.stages = plan or self.shard is not None  # the night's verdict is the publish's
        self.intake = Intake(None if settings.source.discover else settings.source.project_id,
                             owns=self.shard.owns if self.shard else None)
        self._fingerprint: str | None = None
        self._last_success: float | None = None  # from the metrics file before this run
        self.tally = Tally()
        self.listings: list[Listing] = []
        self.stop_signal: int | None = None
        self._stop = asyncio.Event()
        self._collection: Collection | None = None
        self._route: dict[str, Fetcher] = {}  # project -> its region's fetcher (discovery)
        self.night: Night | None = None  # the night this shard published (publish_when_staged)
        self._night_due = False  # staged with publish_when_staged: see to the night's publish
        self.record = RunRecord(self.run_id, self.snapshot_date, self.started,
                                self.source.label, settings.public())
        self.finish = Finish(settings, parts.store, self.record, self._counts)

    @property
    def input_still_reading(self) -> bool:
        """A reader thread is blocked in the input (a pipe that has not ended)."""
        return self._collection is not None and self._collection.input_still_reading

    async def execute(self) -> RunRecord:
        """Every step; returns the final record (exit code included), or raises the
        ``CollectorError`` that ended the run after recording it. The metrics are written
        (and pushed) at the end, whatever the end."""
        try:
            with tempfile.TemporaryDirectory(prefix="cph-input-") as scratch:
                await self.source.open(Path(scratch), self.parts.stores)
                try:
                    with on_signals(self._on_signal):  # from here on, a clean stop (130/143)
                        await self._steps()
                        return self.record
                finally:
                    self.source.close(self.input_still_reading)  # else a reader thread holds
                    # it; it ends with the process
        except CollectorError as exc:
            ending.refused(self.record, exc)  # ended before it had a conclusion: usage error
            raise
        finally:
            await in_thread(self._emit_metrics, True)

    async def _steps(self) -> None:
        store = self.parts.store
        if isinstance(store, LocalStore):
            check_no_links(store.root, self.snapshot_date)
        await in_thread(check_writable, store)  # a bucket is the network: off the loop
        name = LOCK_NAME
        if self.shard is not None:  # shards run side by side: each locks its own share
            name = shard_lock(self.snapshot_date, self.shard.name)
            await in_thread(store.make_folder, date_staging(self.snapshot_date))
        held = self.finish.held = lock(store, self.run_id, name=name)
        await in_thread(held.__enter__)
        try:
            await self._locked_steps(store)
        finally:
            await in_thread(held.__exit__, None, None, None)
        if self._night_due:  # with this shard's own lock let go: the publish refuses (or
            await self._publish_night()  # waits for) a shard that still holds its lock

    async def _locked_steps(self, store: Store) -> None:
        """Under the output lock: mend and resume, collect, conclude, publish."""
        sink = ParquetSink(store, self.snapshot_date, self.run_id, self.share)
        if self._publishes_night() and self.shard is not None and await in_thread(
                begun, store, self.shard, self.snapshot_date):
            # a retry after the night's publish began: collecting again would double its rows
            self.finish.conclude(ending.staged(error="nothing collected: the night's publish "
                                                     "began or is done"))
            await self.finish.save()
            self._night_due = True
            return
        surveyed = await self._prepare(sink)
        try:
            try:
                async with self.parts.client:
                    images = await self.source.images(self._context(sink), surveyed)
                    self.listings, self._route = images.listings, route_of(images.listings,
                                                                           self.parts)
                    if images.lines is not None:
                        await self._collect(images.lines, sink, images.total)
            finally:  # a fatal run's manifest has its real counts too
                self._count_requests()
        except Exception as exc:  # ours keep their words and exit code
            await self.finish.fail(sink, ending.failure(exc), self._unproven())
            raise
        await self._end(sink)

    async def _prepare(self, sink: ParquetSink) -> int | None:
        """Mend and resume (``preflight``); the input's lines, as its survey counted them."""
        def fingerprint_of(digest: str | None) -> str | None:
            """The source's fingerprint, kept for the shard's mark and the plan's check."""
            self._fingerprint = self.source.fingerprint(digest)
            return self._fingerprint

        prepared = await in_thread(prepare, sink, self.source.path, self.source.fmt,
                                           fingerprint_of, mend=self.shard is None)
        self.intake.done = prepared.resumed.keys
        if self._last_success is None:  # off the loop, before the first metrics write
            self._last_success = await in_thread(
                last_success, self.parts.store, self.settings.observe.metrics_file)
        self.tally = Tally.resumed(prepared.resumed.counts, prepared.resumed.member_rows)
        await self.finish.save()
        return prepared.survey.lines

    def _context(self, sink: ParquetSink) -> Context:
        return Context(self.settings, self.parts, sink, self._stop, self.run_id,
                       self._fingerprint, self._ticking)

    async def _end(self, sink: ParquetSink) -> None:
        """Conclude: stage a shard's (or the plan's) share, publish, or fail."""
        endpoint = next((f.endpoint.verdict() for f in self._cph_fetchers()
                         if f.endpoint_unproven()), None)
        conclusion = ending.verdict(
            self._counts(), stop_signal=self.stop_signal, endpoint=endpoint,
            max_failed_share=None if self.stages else self.settings.limits.max_failed_share)
        if conclusion.publishes and self.stages:
            mark = str(self.shard) if self.shard else plan_name()
            await self.finish.stage(sink, conclusion, mark, self._fingerprint)
            self._night_due = self._publishes_night()
        elif conclusion.publishes:
            await self.finish.publish(sink, conclusion, stage_changes)
        else:
            await self.finish.fail(sink, conclusion, self._unproven())
            if conclusion.status is RunStatus.FATAL:
                raise FatalRunError(conclusion.error or "fatal")

    def _publishes_night(self) -> bool:
        return self.settings.shards.publish_when_staged and self.shard is not None

    async def _publish_night(self) -> None:
        """Publish the night if every shard is staged (``night.publish_night``); its metrics
        go to the Pushgateway in the night's group (no shard), as a ``publish``'s do."""
        assert self.shard is not None
        self.night = await in_thread(
            publish_night, self.parts.store, self.settings, self.shard, self.snapshot_date,
            self.run_id, new_run_id(dt.datetime.now(dt.UTC)))
        if self.night is not None and self.settings.observe.pushgateway is not None:
            night = self.settings.revise(shard=None, shards=None,
                                        metrics_file=None)
            await in_thread(emit_metrics, night, self.night.record, True,
                                    self._last_success)

    @contextlib.asynccontextmanager
    async def _ticking(self) -> AsyncIterator[None]:
        """The metrics file at every progress interval meanwhile (the collection's progress
        reporter does the same once images are collected)."""
        async def tick() -> None:
            """Until cancelled."""
            while True:
                await self.parts.clock.sleep(self.settings.observe.progress_interval)
                await in_thread(self._emit_metrics, False)

        async with alongside(tick() if self.settings.observe.metrics_file else None):
            yield

    async def _collect_one(self, target: Target) -> ImageResult:
        """An image, through its region's fetcher."""
        return await self._route.get(target.project_id, self.parts.fetcher).collect(target)

    async def _collect(self, lines: Iterator[Line], sink: ParquetSink, total: int | None) -> None:
        s, parts = self.settings, self.parts
        self._collection = Collection(self._collect_one, self.intake, sink, self.tally,
                                      concurrency=s.http.concurrency,
                                      chunk_images=s.output.chunk_images,
                                      clock=parts.clock, stop=self._stop)
        await self._collection.run(
            lines, total, s.observe.progress_interval, self.stderr,
            line=progress_json if s.observe.log_format == "json" else None,
            on_interval=(lambda: self._emit_metrics(False)) if s.observe.metrics_file else None)

    def _counts(self) -> dict[str, int]:
        return run_counts(self.intake, self.tally, self.listings if self.source.lists else None)

    def _emit_metrics(self, final: bool) -> None:
        s = self.settings
        if s.observe.metrics_file is None and (s.observe.pushgateway is None or not final):
            return
        if self._last_success is None:
            self._last_success = last_success(self.parts.store, self.settings.observe.metrics_file)
        self._count_requests()
        emit_metrics(s, dataclasses.replace(self.record, counts=self._counts()), final,
                     self._last_success)

    def _cph_fetchers(self) -> list[Fetcher]:
        return [r.fetcher for r in self.parts.regions]

    def _unproven(self) -> bool:
        return any(f.endpoint_unproven() for f in self._cph_fetchers())

    def _count_requests(self) -> None:
        self.parts.count_requests(self.record, self.settings.http.rate_limit)

    def _on_signal(self, signum: int) -> None:
        if self.stop_signal is None:
            log.warning("%s: stopping; in-flight images get %.0f s, then committing",
                        signal.Signals(signum).name, GRACE)
        self.stop_signal = signum
        self._stop.set()
