"""``cph-collector publish --shards N``: N shards' staged shares, published as one snapshot.

    lock the output ─> mend (finish stopped publishes) ─> no shard still running ─> every
    shard's mark: present, the same input and settings ─> move the shards' chunks into the
    date's staging ─> the change table, once ─> publish (the same atomic steps as one run) ─>
    one manifest that lists the shards

Each step can be repeated after a crash: a chunk already moved stays moved, and a publish that
began is finished by ``preflight.recover``. Publishing again once it is done says so (exit 0).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import orjson

from collector.changes import line_of
from collector.errors import ExitCode, FatalRunError, RunStatus
from collector.lease import live_holders
from collector.manifest import RunRecord, write_manifest
from collector.preflight import recover
from collector.publish import stage_changes
from collector.sink import (
    PLAN,
    SHARD_MARK,
    TABLES,
    ParquetSink,
    date_staging,
    parquet_files,
    published_dates,
    read_published,
)
from collector.store import Store

log = logging.getLogger("collector")


@dataclass(frozen=True, slots=True)
class Mark:
    """What a finished shard says of itself."""

    shard: str  # K/N
    run_id: str
    fingerprint: str | None
    exit_code: int


def read_marks(store: Store, snapshot_date: dt.date, count: int) -> list[Mark]:
    """Every shard's mark, in order; ``FatalRunError`` (exit 3) naming the first shard that
    has not finished, or that ran with another input or settings, or of another count."""
    staging = date_staging(snapshot_date)
    others = [name for name in store.folders(staging)
              if name.startswith("shard-") and not name.endswith(f"-of-{count}")]
    if others:
        raise FatalRunError(f"publish {snapshot_date}: {others[0]} is staged, but --shards "
                            f"says {count}; nothing published")
    marks = []
    for index in range(1, count + 1):
        key = f"{staging}/shard-{index}-of-{count}/{SHARD_MARK}"
        if not store.exists(key):
            raise FatalRunError(f"publish {snapshot_date}: shard {index}/{count} has not "
                                "finished (run it again with the same arguments); nothing "
                                "published")
        doc = orjson.loads(store.read(key))
        marks.append(Mark(str(doc["shard"]), str(doc["run_id"]), doc.get("fingerprint"),
                          int(doc.get("exit_code") or 0)))
    plan = f"{staging}/{PLAN}/{SHARD_MARK}"
    if store.exists(plan):  # a discovery run's shards: the plan they collected must agree
        doc = orjson.loads(store.read(plan))
        marks.append(Mark(PLAN, str(doc["run_id"]), doc.get("fingerprint"), 0))
    for mark in marks[1:]:
        if mark.fingerprint != marks[0].fingerprint:
            what = "the plan" if mark.shard == PLAN else f"shard {mark.shard}"
            raise FatalRunError(f"publish {snapshot_date}: {what} ran with another "
                                f"input or settings than shard {marks[0].shard}; nothing "
                                "published")
    return marks


def gather(store: Store, snapshot_date: dt.date, count: int) -> None:
    """Move every shard's committed chunks into the date's staging (file by file: a chunk
    moved stays moved, so this can be repeated)."""
    staging = date_staging(snapshot_date)
    folders = [f"{staging}/shard-{index}-of-{count}" for index in range(1, count + 1)]
    for shard in [*folders, f"{staging}/{PLAN}"]:  # the plan: the listing of a discovery run
        for table in TABLES:
            store.make_folder(f"{staging}/{table}")
            for key in parquet_files(store, f"{shard}/{table}"):
                name = key.rsplit("/", 1)[1]
                target = f"{staging}/{table}/{name}"
                if store.renames:
                    store.rename_folder(key, target)  # a file: one rename
                else:
                    store.copy(key, target)
                    store.delete(key)


def publish_shards(store: Store, snapshot_date: dt.date, count: int, run_id: str,
                   trusted: frozenset[str], settings: dict[str, object],
                   fail_on_untrusted: bool = False) -> RunRecord:
    """Blocking, under the output lock. The record of the publish (its manifest written)."""
    started = dt.datetime.now(dt.UTC)
    record = RunRecord(run_id, snapshot_date, started, f"{count} shards", settings)
    recover(store, run_id)
    staging = date_staging(snapshot_date)
    if not [n for n in store.folders(staging) if n.startswith("shard-")] \
            and snapshot_date in published_dates(store):
        log.info("%s is already published; nothing to do", snapshot_date)
        record.status, record.exit_code = RunStatus.FINISHED.value, 0
        record.error = "already published"
        return record
    running = live_holders(store, staging)  # a premature publish: a shard still writes
    if running:
        lock, run = sorted(running.items())[0]
        raise FatalRunError(f"publish {snapshot_date}: {lock.removesuffix('.lock')} is still "
                            f"running (run {run}); nothing published")
    marks = read_marks(store, snapshot_date, count)
    record.input = f"{count} shards: " + ", ".join(m.run_id for m in marks if m.shard != PLAN)
    write_manifest(store, record)  # running: a stop from here on is recorded by the next run
    gather(store, snapshot_date, count)
    sink = ParquetSink(store, snapshot_date, run_id)
    for table in TABLES:
        store.make_folder(f"{staging}/{table}")
    summary = stage_changes(sink, run_id, trusted)
    sink.publish()
    published = read_published(store, snapshot_date)
    failed = published.counts.get("failed", 0) + published.counts.get("forbidden", 0)
    record.status = RunStatus.FINISHED.value
    record.exit_code = int(ExitCode.SOME_FAILED if failed else ExitCode.OK)
    record.ended_at = dt.datetime.now(dt.UTC)
    record.counts = {**published.counts, "shards": count}
    record.files = sink.files
    record.changes = summary.to_json()
    if summary.untrusted_alerts and fail_on_untrusted:
        record.exit_code = int(ExitCode.UNTRUSTED)
    write_manifest(store, record)
    sink.discard()
    log.info("published %s from %d shards; %s", snapshot_date, count,
             line_of(record.changes))
    return record
