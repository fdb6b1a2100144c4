"""A run's last step: fail, publish, or stage its share, each recorded through ``ending``.

    conclusion ─┬─ finished, a run ─────────> stage the change table ─> lock still ours? ─>
                │                             publish ─> manifest ─> staging removed, report
                ├─ finished, a shard or plan ─> lock still ours? ─> manifest ─> its mark
                └─ otherwise ─────────────────> (unproven: drop its chunks) ─> manifest

Whatever stops a step on the way is recorded ``fatal`` (its own words for ours, one line for
anything else) before it is raised: the manifest never says less than readers can see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn, Protocol

import orjson

from collector import ending
from collector.changes import Summary
from collector.concurrency import in_thread
from collector.config import Settings
from collector.ending import Conclusion, fatal, publish_failure
from collector.errors import CollectorError, FatalRunError
from collector.lease import LeaseLost
from collector.manifest import RunRecord
from collector.report import write_report
from collector.sink import ParquetSink
from collector.staging import shard_mark
from collector.store import Store, reason

log = logging.getLogger("collector")

StageChanges = Callable[[ParquetSink, str, frozenset[str]], Summary]


class Held(Protocol):
    """The run's lock, as the last step needs it."""

    def verify(self) -> None:
        """Read the lock back: ``LeaseLost`` when another run took it."""


class Finish:
    """The ending of one run: its record (``record``), concluded and saved through ``ending``
    with the counts ``counts()`` gives at that moment."""

    def __init__(self, settings: Settings, store: Store, record: RunRecord,
                 counts: Callable[[], dict[str, int]]) -> None:
        """``counts``: the run's counts now (``ending.run_counts``)."""
        self.settings, self.store, self.record, self.counts = settings, store, record, counts
        self.held: Held | None = None  # the run's lock, once taken

    def conclude(self, conclusion: Conclusion) -> None:
        """The record ends as ``conclusion`` says, with the counts of now."""
        ending.end(self.record, conclusion, self.counts())

    async def save(self, *, quiet: bool = False, after_publish: bool = False) -> None:
        """The one place the run's manifest is written (``ending.save``)."""
        await in_thread(ending.save, self.store, self.record, self.counts(),
                                quiet=quiet, after_publish=after_publish)

    async def fail(self, sink: ParquetSink, conclusion: Conclusion, unproven: bool) -> None:
        """End without publishing. Chunks of a run that nothing proved (``unproven``) are
        dropped, so a re-run does not resume its ``failed`` rows."""
        if unproven:
            await in_thread(sink.drop_own_chunks)
        self.conclude(conclusion)
        await self.save(quiet=True)

    async def publish(self, sink: ParquetSink, conclusion: Conclusion,
                      stage_changes: StageChanges) -> None:
        """Publish, then say so in the manifest; a stop between the two is mended by the next
        run (``preflight.recover``), so the manifest never says less than readers can see.
        The change table is staged first (``stage_changes``) and swapped in with the rest."""
        s, record = self.settings, self.record
        try:
            summary = await in_thread(stage_changes, sink, record.run_id, s.trust.trusted)
            record.changes = summary.to_json()
            conclusion = ending.with_changes(conclusion, summary.untrusted_alerts,
                                             s.trust.fail_on_untrusted)
            await self.still_ours()
            await in_thread(sink.publish, record.changes)
        except CollectorError as exc:  # ours: its own words and exit code
            await self.stop_fatal(ending.failure(exc), exc)
        except Exception as exc:  # whatever it is: the manifest says fatal, one line says why
            log.debug("publish failed", exc_info=True)
            await self.stop_fatal(fatal(f"output {sink.store.url}: publish failed "
                                        f"({publish_failure(exc)}); the next run finishes it"))
        self.conclude(conclusion)
        record.files = list(sink.files)
        await self.save(after_publish=True)
        await in_thread(after_publish, sink, s.observe.report)

    async def stage(self, sink: ParquetSink, conclusion: Conclusion, shard: str,
                    fingerprint: str | None) -> None:
        """A shard (or the plan) publishes nothing: it leaves its share committed in its
        staging, and a mark that says it finished, for which input and settings, with its
        counts (``publish --shards N`` checks every mark against the rows). Staged is the
        task's success, exit 0 whatever its images' statuses: the night's verdict is the
        publish's. The manifest first, then the mark: a mark always has its manifest."""
        await self.still_ours()
        self.conclude(ending.staged(conclusion))
        await self.save()
        mark = {"shard": shard, "run_id": self.record.run_id, "fingerprint": fingerprint,
                "exit_code": self.record.exit_code, "counts": self.record.counts}
        try:
            await in_thread(sink.store.write, shard_mark(sink.staging),
                                    orjson.dumps(mark))
        except OSError as exc:
            await self.stop_fatal(fatal(f"output {sink.store.url}: cannot write the mark "
                                        f"{shard_mark(sink.staging)} ({reason(exc)}); run "
                                        "it again"))

    async def still_ours(self) -> None:
        """The lock read back before publishing (or marking a shard staged): a run that lost
        it stops, exit 3, and publishes nothing."""
        assert self.held is not None
        try:
            await in_thread(self.held.verify)
        except LeaseLost as exc:
            await self.stop_fatal(fatal(f"output {self.store.url}: {exc.strerror}"))

    async def stop_fatal(self, conclusion: Conclusion,
                         exc: CollectorError | None = None) -> NoReturn:
        """The run ends ``fatal`` (recorded), raising ``exc`` or one ``FatalRunError``."""
        self.conclude(conclusion)
        await self.save(quiet=True)
        if exc is not None:
            raise exc
        raise FatalRunError(conclusion.error or "fatal") from None


def after_publish(sink: ParquetSink, report: bool) -> None:
    """Blocking, once published and recorded: the staging removed and the report written;
    a failure of either is a warning (the night's verdict stands; the next run removes the
    staging, ``cph-collector report`` writes the report)."""
    try:
        sink.discard()
    except OSError as exc:
        log.warning("output %s: %s is published, but its staging could not be removed "
                    "(%s); the next run removes it", sink.store.url, sink.snapshot_date,
                    reason(exc))
    if report:  # after the manifest, which the page reads too
        try:
            key = write_report(sink.store, sink.snapshot_date)
            log.info("report: %s/%s", sink.store.url, key)
        except (OSError, ValueError) as exc:  # published: a warning, as for a Pushgateway
            log.warning("output %s: the report could not be written (%s); cph-collector "
                        "report writes it", sink.store.url,
                        reason(exc) if isinstance(exc, OSError) else exc)
