"""The run, as steps: preflight, collect, conclude, publish; the manifest written in one place.

    check output ─> lock ─> preflight ─> collect ─> conclude ─┬─ finished ─> publish ─> manifest
                            (mend, resume)  (collect.py)  (pure) └─ otherwise ─────────> manifest

SIGINT/SIGTERM, from the first step on, stop the intake and end the run as ``interrupted``
(130/143) with what is done committed; a re-run resumes. Every object comes built (``build``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TextIO

import orjson

from collector import metrics
from collector.auth import AkSkAuth
from collector.build import Parts
from collector.changes import line_of
from collector.collect import GRACE, Collection, Tally
from collector.conclude import Conclusion, conclude, with_changes
from collector.config import Settings
from collector.discover import Listing, committed_listings, discover
from collector.errors import CollectorError, ExitCode, FatalRunError, RunStatus, Status, UsageError
from collector.feed import in_daemon_thread
from collector.fetch import Fetcher
from collector.ids import problem_with
from collector.inputs import Line, detect_format, read_input
from collector.intake import Intake, Target
from collector.lease import LeaseLost
from collector.logs import RunId, json_line
from collector.manifest import RunRecord, newest_success, write_manifest
from collector.night import Night, begun, publish_night
from collector.outdir import LOCK_NAME, check_no_links, check_writable, lock
from collector.preflight import prepare
from collector.progress import Snapshot
from collector.publish import stage_changes
from collector.report import write_report
from collector.results import ImageResult
from collector.shards import Shard
from collector.sink import PLAN, SHARD_MARK, ParquetSink, date_staging
from collector.store import BucketUrl, LocalStore, Store, parse_bucket_url, reason

log = logging.getLogger("collector")


def new_run_id(started: dt.datetime) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx``: sortable by start, unique by its random tail."""
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
    """What must match for a re-run to resume: the input's bytes (or, for discovery, what is
    listed) and what shapes the rows."""
    if settings.source.discover:
        shape = (f"discover|{settings.cph_endpoint}|{settings.source.project_id}|"
                 f"{settings.http.region}|{settings.iam_url}")
    elif input_digest is None:
        return None  # stdin cannot be read twice
    else:
        shape = (f"{input_digest}|{settings.cph_endpoint}|{settings.source.project_id}|"
                 f"{settings.source.input_format}")
    return hashlib.sha256(shape.encode()).hexdigest()


def discovered_lines(sink: ParquetSink) -> Iterator[Line]:
    """The listed private images, as input lines (read back from staging, in batches); an ID
    no URL may carry is a line with its problem (an ``invalid_id`` row naming the listing)."""
    for project, image in sink.private_images():
        problem = problem_with(image)
        yield Line(0, image, project, None if problem is None else
                   f"ListImages of project {project} (image_type private) listed an image ID "
                   f"that is not one: {problem}")


def local_input(input_path: str, scratch: Path, stores: Callable[[BucketUrl], Store]) -> str:
    """The input as a local path: a bucket's object is first copied into ``scratch``
    (streamed, named as it is, so its format and fingerprint are those of the object);
    UsageError when it cannot be read."""
    try:
        url = parse_bucket_url(input_path)
    except ValueError as exc:
        raise UsageError(f"input {input_path}: {exc}") from None
    if url is None:
        return input_path
    folder, name = url.parent()
    local = scratch / (name or "input")
    try:
        stores(folder).download(name, local)
    except OSError as exc:
        raise UsageError(f"input {url}: cannot be read ({reason(exc)})") from None
    return str(local)


def read_plan(store: Store, snapshot_date: dt.date, run_id: str, fingerprint: str | None,
              shard: Shard | None) -> tuple[list[Listing], Iterator[Line]]:
    """A discovery shard's images: the date's plan (``cph-collector plan``), listed once
    for all shards; UsageError when there is none, or it was made with other settings."""
    plan = ParquetSink(store, snapshot_date, run_id, PLAN)
    mark = f"{plan.staging}/{SHARD_MARK}"
    if not store.exists(mark):
        raise UsageError(f"shard {shard} of a --discover run: no plan for {snapshot_date} in "
                         f"{store.url}; run cph-collector plan with the same settings first")
    if orjson.loads(store.read(mark)).get("fingerprint") != fingerprint:
        raise UsageError(f"shard {shard}: the plan of {snapshot_date} was made with other "
                         "settings (endpoint, projects or region)")
    return committed_listings(plan), discovered_lines(plan)


def emit_metrics(settings: Settings, live: RunRecord, final: bool,
                 last_success: float | None) -> None:
    """The metrics file (every progress interval, and at the end) and, at the end, the
    Pushgateway. Neither can fail the run: each failure is a warning."""
    registry = metrics.registry_of(live, last_success)
    if settings.observe.metrics_file is not None:
        metrics.write_file(settings.observe.metrics_file, registry)
    if final and settings.observe.pushgateway is not None:
        metrics.push(settings.observe.pushgateway, registry,
                     metrics.grouping_key(settings.http.region, settings.shards.label))


class Run:
    """One collection run of one snapshot date: ``await Run(...).execute()`` -> its record."""

    def __init__(self, settings: Settings, input_path: str | None, parts: Parts, *,
                 stderr: TextIO = sys.stderr, plan: bool = False) -> None:
        """``input_path`` None: the images are discovered (``settings.discover``). ``plan``:
        list only, into the date's plan, which shards of a discovery run then collect."""
        if len(settings.source.project_ids) > 1 and not settings.source.discover:
            raise UsageError("project_id: one project for input rows that have none (a list "
                             "is for --discover)")
        self.settings = settings
        self.input_path = input_path
        self.parts = parts
        self.stderr = stderr
        self.started = dt.datetime.now(dt.UTC)
        self.snapshot_date = settings.output.snapshot_date or self.started.date()
        self.run_id = new_run_id(self.started)
        RunId.current = self.run_id  # in every log line of the JSON format
        self.shard = settings.shards.shard
        self.plan = plan
        if plan and (not settings.source.discover or self.shard is not None):
            raise UsageError("plan: lists once for the shards of a --discover run; give "
                             "--discover, and no --shard")
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
                                input_path or "discover", settings.public())

    @property
    def input_still_reading(self) -> bool:
        """A reader thread is blocked in the input (a pipe that has not ended)."""
        return self._collection is not None and self._collection.input_still_reading

    async def execute(self) -> RunRecord:
        """Every step; returns the final record (exit code included), or raises the
        ``CollectorError`` that ended the run after recording it. The metrics are written
        (and pushed) at the end, whatever the end."""
        try:
            return await self._execute()
        except CollectorError as exc:
            if self.record.exit_code is None:  # ended before it had a conclusion: a usage error
                self.record.exit_code, self.record.error = int(exc.exit_code), str(exc)
                self.record.status = RunStatus.FATAL.value
            raise
        finally:
            await asyncio.to_thread(self._emit_metrics, True)

    async def _execute(self) -> RunRecord:
        fmt = detect_format(self.input_path or "-", self.settings.source.input_format)
        lines: Generator[Line, None, None] | None = None
        with tempfile.TemporaryDirectory(prefix="cph-input-") as scratch:
            if self.input_path is not None:
                path = await asyncio.to_thread(local_input, self.input_path, Path(scratch),
                                               self.parts.stores)
                self.input_path = path
                lines = await in_daemon_thread(
                    lambda: open_input(path, fmt, self.settings.source.project_id))
            try:
                with self._signals():  # from here on, a signal is a clean stop (130/143)
                    await self._steps(lines, fmt)
                    return self.record
            finally:
                if lines is not None and not self.input_still_reading:  # else a reader
                    lines.close()  # thread holds it; it ends with the process

    async def _steps(self, lines: Iterator[Line] | None, fmt: str) -> None:
        store = self.parts.store
        if isinstance(store, LocalStore):
            check_no_links(store.root, self.snapshot_date)
        await asyncio.to_thread(check_writable, store)  # a bucket is the network: off the loop
        name = LOCK_NAME
        if self.shard is not None:  # shards run side by side: each locks its own share
            name = f"{date_staging(self.snapshot_date)}/{self.shard.name}.lock"
            await asyncio.to_thread(store.make_folder, date_staging(self.snapshot_date))
        held = self._held = lock(store, self.run_id, name=name)
        await asyncio.to_thread(held.__enter__)
        try:
            await self._locked_steps(store, lines, fmt)
        finally:
            await asyncio.to_thread(held.__exit__, None, None, None)
        if self._night_due:  # with this shard's own lock let go: the publish refuses (or
            await self._publish_night()  # waits for) a shard that still holds its lock

    async def _locked_steps(self, store: Store, lines: Iterator[Line] | None,
                            fmt: str) -> None:
        """Under the output lock: mend and resume, collect, conclude, publish."""
        sink = ParquetSink(store, self.snapshot_date, self.run_id,
                           PLAN if self.plan else self.shard.name if self.shard else None)
        if self._publishes_night() and self.shard is not None and await asyncio.to_thread(
                begun, store, self.shard, self.snapshot_date):
            # a retry after the night's publish began: collecting again would double its rows
            self._conclude(Conclusion(RunStatus.STAGED, ExitCode.OK, "nothing collected: the "
                                      "night's publish began or is done"))
            await self._save()
            self._night_due = True
            return

        def fingerprint_of(digest: str | None) -> str | None:
            self._fingerprint = fingerprint(digest, self.settings)
            return self._fingerprint

        prepared = await asyncio.to_thread(prepare, sink, self.input_path, fmt, fingerprint_of,
                                           mend=self.shard is None)
        self.intake.done = prepared.resumed.keys
        if self._last_success is None:  # off the loop, before the first metrics write
            self._last_success = await asyncio.to_thread(self._newest_success)
        self.tally = Tally.resumed(prepared.resumed.counts, prepared.resumed.member_rows)
        await self._save()
        try:
            try:
                async with self.parts.client:
                    total = prepared.survey.lines
                    if lines is None and self.shard is not None:
                        total, lines = await asyncio.to_thread(self._planned, store)
                    elif lines is None:
                        total = await self._discover(sink)
                        lines = iter(()) if self._stop.is_set() or self.plan \
                            else discovered_lines(sink)
                    if not self.plan:
                        assert lines is not None
                        await self._collect(lines, sink, total)
            finally:  # a fatal run's manifest has its real counts too
                self._count_requests()
        except CollectorError as exc:  # ours: its own words and exit code
            await self._fail(sink, Conclusion(RunStatus.FATAL, exc.exit_code, str(exc)))
            raise
        except Exception as exc:
            await self._fail(sink, Conclusion(RunStatus.FATAL, ExitCode.FATAL,
                                              f"internal error: {type(exc).__name__}: {exc}"))
            raise
        verdict = next((f.endpoint.verdict() for f in self._cph_fetchers()
                        if f.endpoint_unproven()), None)
        failed = sum(x.status is not Status.OK for x in self.listings)
        staged = self.shard is not None or self.plan  # the night's verdict is the publish's
        conclusion = conclude(self.stop_signal, verdict, self.tally.by_status, failed,
                              listings=(sum(x.status is Status.FAILED for x in self.listings),
                                        len(self.listings)),
                              max_failed_share=None if staged
                              else self.settings.limits.max_failed_share)
        if conclusion.publishes and staged:
            await self._stage_shard(sink, conclusion)
            self._night_due = self._publishes_night()
            return
        if conclusion.publishes:
            await self._publish(sink, conclusion)
            return
        await self._fail(sink, conclusion)
        if conclusion.status is RunStatus.FATAL:
            raise FatalRunError(conclusion.error or "fatal")

    def _publishes_night(self) -> bool:
        return self.settings.shards.publish_when_staged and self.shard is not None and not self.plan

    async def _publish_night(self) -> None:
        """Publish the night if every shard is staged (``night.publish_night``); its metrics
        go to the Pushgateway in the night's group (no shard), as a ``publish``'s do."""
        assert self.shard is not None
        self.night = await asyncio.to_thread(
            publish_night, self.parts.store, self.settings, self.shard, self.snapshot_date,
            self.run_id, new_run_id(dt.datetime.now(dt.UTC)))
        if self.night is not None and self.settings.observe.pushgateway is not None:
            night = self.settings.revise(shard=None, shards=None,
                                        metrics_file=None)
            await asyncio.to_thread(emit_metrics, night, self.night.record, True,
                                    self._last_success)

    def _planned(self, store: Store) -> tuple[int, Iterator[Line]]:
        """A discovery shard's share of the plan: (private images listed, their lines)."""
        self.listings, lines = read_plan(store, self.snapshot_date, self.run_id,
                                         self._fingerprint, self.shard)
        by_region = {r.name: r.fetcher for r in self.parts.regions}
        self._route = {x.project_id: by_region.get(x.region, self.parts.fetcher)
                       for x in self.listings}
        return sum(x.images for x in self.listings if x.image_type == "private"), lines

    async def _discover(self, sink: ParquetSink) -> int:
        """List the images into staging (or adopt a committed listing); returns how many
        private images there are to collect, and routes each project to its region."""
        parts = self.parts
        ticker = asyncio.create_task(self._tick_metrics()) if self.settings.observe.metrics_file \
            else None  # the listing of a large account takes a while: the file keeps moving
        try:
            self.listings = await discover(self.settings, sink, parts.regions,
                                           isinstance(parts.auth, AkSkAuth), self._stop)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        by_region = {r.name: r.fetcher for r in parts.regions}
        self._route = {x.project_id: by_region.get(x.region, parts.fetcher)
                       for x in self.listings}
        return sum(x.images for x in self.listings if x.image_type == "private")

    async def _tick_metrics(self) -> None:
        """The metrics file at every progress interval, until cancelled (the collection's
        progress reporter does the same once images are collected)."""
        while True:
            await self.parts.clock.sleep(self.settings.observe.progress_interval)
            await asyncio.to_thread(self._emit_metrics, False)

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

    def _emit_metrics(self, final: bool) -> None:
        s = self.settings
        if s.observe.metrics_file is None and (s.observe.pushgateway is None or not final):
            return
        if self._last_success is None:
            self._last_success = self._newest_success()
        self._count_requests()
        emit_metrics(s, dataclasses.replace(self.record, counts=run_counts(
            self.intake, self.tally, self.listings if s.source.discover else None)), final,
            self._last_success)

    def _newest_success(self) -> float:
        """The output's newest finished run, read once (blocking): every later write of this
        run carries it over; an output that cannot be read falls back on the metrics file."""
        try:
            return newest_success(self.parts.store) or 0.0
        except OSError:
            file = self.settings.observe.metrics_file
            return (metrics.previous_success(file) if file else None) or 0.0

    async def _fail(self, sink: ParquetSink, conclusion: Conclusion) -> None:
        """End without publishing. Chunks of a run that nothing proved are dropped, so a
        re-run does not resume its ``failed`` rows."""
        if any(f.endpoint_unproven() for f in self._cph_fetchers()):
            await asyncio.to_thread(sink.drop_own_chunks)
        self._conclude(conclusion)
        await self._save(quiet=True)

    async def _publish(self, sink: ParquetSink, conclusion: Conclusion) -> None:
        """Publish, then say so in the manifest; a stop between the two is mended by the next
        run (``preflight.recover``), so the manifest never says less than readers can see.
        The change table is staged first and swapped in with the rest."""
        try:
            summary = await asyncio.to_thread(stage_changes, sink, self.run_id,
                                              self.settings.trust.trusted)
            self.record.changes = summary.to_json()
            conclusion = with_changes(conclusion, summary.untrusted_alerts,
                                      self.settings.trust.fail_on_untrusted)
            await self._still_ours()
            await asyncio.to_thread(sink.publish, self.record.changes)
        except CollectorError as exc:  # ours: its own words and exit code
            self._conclude(Conclusion(RunStatus.FATAL, exc.exit_code, str(exc)))
            await self._save(quiet=True)
            raise
        except Exception as exc:  # whatever it is: the manifest says fatal, one line says why
            log.debug("publish failed", exc_info=True)
            error = (f"output {sink.store.url}: publish failed ({publish_failure(exc)}); the "
                     "next run finishes it")
            self._conclude(Conclusion(RunStatus.FATAL, ExitCode.FATAL, error))
            await self._save(quiet=True)
            raise FatalRunError(error) from None
        self._conclude(conclusion)
        self.record.files = list(sink.files)
        await self._save(after_publish=True)
        try:
            await asyncio.to_thread(sink.discard)
        except OSError as exc:  # published and recorded: the night's verdict stands
            log.warning("output %s: %s is published, but its staging could not be removed "
                        "(%s); the next run removes it", sink.store.url, self.snapshot_date,
                        reason(exc))
        if self.settings.observe.report:  # after the manifest, which the page reads too
            try:
                key = await asyncio.to_thread(write_report, sink.store, self.snapshot_date)
                log.info("report: %s/%s", sink.store.url, key)
            except (OSError, ValueError) as exc:  # published: a warning, as for a Pushgateway
                log.warning("output %s: the report could not be written (%s); cph-collector "
                            "report writes it", sink.store.url,
                            reason(exc) if isinstance(exc, OSError) else exc)

    async def _stage_shard(self, sink: ParquetSink, conclusion: Conclusion) -> None:
        """A shard (or the plan) publishes nothing: it leaves its share committed in its
        staging, and a mark that says it finished, for which input and settings, with its
        counts (``publish --shards N`` checks every mark against the rows). Staged is the
        task's success, exit 0 whatever its images' statuses: the night's verdict is the
        publish's. The manifest first, then the mark: a mark always has its manifest."""
        await self._still_ours()
        self._conclude(dataclasses.replace(conclusion, status=RunStatus.STAGED,
                                           exit_code=ExitCode.OK))
        await self._save()
        mark = {"shard": str(self.shard) if self.shard else PLAN, "run_id": self.run_id,
                "fingerprint": self._fingerprint, "exit_code": self.record.exit_code,
                "counts": self.record.counts}
        try:
            await asyncio.to_thread(sink.store.write, f"{sink.staging}/{SHARD_MARK}",
                                    orjson.dumps(mark))
        except OSError as exc:
            error = (f"output {sink.store.url}: cannot write the mark {sink.staging}/"
                     f"{SHARD_MARK} ({reason(exc)}); run it again")
            self._conclude(Conclusion(RunStatus.FATAL, ExitCode.FATAL, error))
            await self._save(quiet=True)
            raise FatalRunError(error) from None

    async def _still_ours(self) -> None:
        """The lock read back before publishing (or marking a shard staged): a run that lost
        it stops, exit 3, and publishes nothing."""
        try:
            await asyncio.to_thread(self._held.verify)
        except LeaseLost as exc:
            error = f"output {self.parts.store.url}: {exc.strerror}"
            self._conclude(Conclusion(RunStatus.FATAL, ExitCode.FATAL, error))
            await self._save(quiet=True)
            raise FatalRunError(error) from None

    def _conclude(self, conclusion: Conclusion) -> None:
        record = self.record
        record.status = conclusion.status.value
        record.exit_code = int(conclusion.exit_code)
        record.error = conclusion.error
        record.ended_at = dt.datetime.now(dt.UTC)
        record.counts = run_counts(self.intake, self.tally,
                                   self.listings if self.settings.source.discover else None)

    def _cph_fetchers(self) -> list[Fetcher]:
        return [r.fetcher for r in self.parts.regions]

    def _count_requests(self) -> None:
        parts, record = self.parts, self.record
        counters = [f.counters for f in parts.fetchers]
        iam = parts.iam_post  # token requests: counted as "token_requests", their retries here
        record.requests = sum(c.requests for c in counters)
        record.retries = sum(c.retries for c in counters) + (iam.retries if iam else 0)
        record.throttled = sum(c.throttled for c in counters) + (iam.throttled if iam else 0)
        record.rate = {"configured": self.settings.http.rate_limit,
                       "lowest": round(parts.limiter.lowest, 1),
                       "final": round(parts.limiter.rate, 1)}
        record.auth = {"method": parts.auth.name,
                       "token_requests": getattr(parts.auth, "requests", 0)}

    async def _save(self, *, quiet: bool = False, after_publish: bool = False) -> None:
        """The one place the run's manifest is written. A failure is one line (exit 3), or a
        warning (``quiet``) when the run is ending anyway and already has its error."""
        output = self.parts.store.url
        try:
            await asyncio.to_thread(write_manifest, self.parts.store, self.record)
        except OSError as exc:
            why = reason(exc)
            if quiet:
                log.warning("output %s: cannot write the manifest runs/%s.json (%s)", output,
                            self.run_id, why)
                return
            if after_publish:  # the data is visible: the record stays finished, exit 3
                error = (f"output {output}: {self.snapshot_date} is published, but its manifest "
                         f"could not be written ({why}); the next run records it")
                self.record.exit_code, self.record.error = int(ExitCode.FATAL), error
            else:
                error = (f"output {output}: cannot write the manifest runs/{self.run_id}.json "
                         f"({why})")
                self._conclude(Conclusion(RunStatus.FATAL, ExitCode.FATAL, error))
            raise FatalRunError(error) from None

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


def publish_failure(exc: BaseException) -> str:
    """Why a publish failed, in a few words: a store's reason, or an internal error named by
    its type."""
    if isinstance(exc, OSError):
        return reason(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def run_counts(intake: Intake, tally: Tally, listings: list[Listing] | None) -> dict[str, int]:
    """The manifest's ``counts``: the input's, the statuses', and (discovery) the listings'."""
    by_status = tally.by_status
    counts = {
        "input_lines": intake.lines - intake.other_shards,  # a shard's share: they add up
        "unique_ids": intake.unique,
        "duplicates": intake.duplicates,
        "resumed": intake.resumed,
        "invalid": by_status[Status.INVALID_ID.value],
        **{s: n for s, n in by_status.items() if s != Status.INVALID_ID.value},
        "member_rows": tally.members,
        "status_rows": tally.done,
    }
    if listings is not None:
        counts.update({
            "projects": len({x.project_id for x in listings}),
            "listings": len(listings),
            **{f"listings_{s.value}": sum(x.status is s for x in listings)
               for s in (Status.OK, Status.FORBIDDEN, Status.FAILED)},
            "images_listed": sum(x.images for x in listings),
            "private_images_listed": sum(x.images for x in listings
                                         if x.image_type == "private"),
            "unreadable_image_times": sum(x.bad_times for x in listings),
            "unfit_image_values": sum(x.unfit for x in listings),
            "repeated_listed_images": sum(x.repeated for x in listings),
        })
    return counts


def progress_json(snap: Snapshot) -> str:
    """A progress line for ``log_format = json``."""
    rate = snap.done / snap.elapsed if snap.elapsed > 0 else 0.0
    return json_line({"event": "progress", "images": snap.done, "member_rows": snap.members,
                      "failed": snap.failed, "images_per_second": round(rate, 1),
                      "total": snap.total})


def summary_json(record: RunRecord) -> str:
    """The summary for ``log_format = json``: the manifest's figures as one object."""
    return json_line({"event": "summary", "run_id": record.run_id, "status": record.status,
                      "exit_code": record.exit_code, "error": record.error,
                      "snapshot_date": record.snapshot_date.isoformat(),
                      "counts": record.counts, "requests": record.requests,
                      "retries": record.retries, "throttled_429": record.throttled,
                      "seconds": round(record.seconds, 3), "changes": record.changes or None,
                      "manifest": f"runs/{record.run_id}.json"})


def summary_line(record: RunRecord) -> str:
    """The one line a run prints at its end (the README quotes it)."""
    c = record.counts
    statuses = ", ".join(f"{c.get(s.value, 0):,} {s.value}" for s in Status
                         if s is not Status.INVALID_ID) + f", {c.get('invalid', 0):,} invalid_id"
    rate = c.get("status_rows", 0) / record.seconds
    listed = ""
    if "listings" in c:
        listed = (f"listed {c['images_listed']:,} images in {c['listings']:,} listings of "
                  f"{c['projects']:,} projects ({c.get('listings_failed', 0):,} failed, "
                  f"{c.get('listings_forbidden', 0):,} forbidden); ")
    return (f"run {record.run_id} {record.status}: {listed}{c.get('status_rows', 0):,} images "
            f"({statuses}), {c.get('member_rows', 0):,} member rows, "
            f"{c.get('duplicates', 0):,} duplicates; {record.requests:,} requests, "
            f"{record.retries:,} retries, {record.throttled:,} throttled (429); "
            f"{rate:,.0f} images/s in {record.seconds:.1f} s; "
            f"{line_of(record.changes) + '; ' if record.changes else ''}exit {record.exit_code}")
