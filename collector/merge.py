"""``cph-collector publish --shards N``: N shards' staged shares, published as one snapshot.

    lock the output ─> mend (finish stopped publishes) ─> no shard still running ─> every
    shard's mark: well-formed, of a staged run, the same input and settings ─> the rows: each
    shard's own (its share of the hash split), as many as its mark says ─> conclude, as one
    run would ─> move the shards' chunks into the date's staging ─> the change table, once ─>
    publish (the same atomic steps as one run) ─> one manifest that lists the shards

Each step can be repeated after a crash: a chunk already moved stays moved (and is still
counted as its shard's), and a publish that began is finished by ``preflight.recover``.
Publishing again once it is done gives the first publish's verdict again, from its manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import orjson

from collector import staging as stage
from collector.changes import line_of
from collector.ending import end, fatal, publish_failure, save, verdict, write
from collector.errors import CollectorError, FatalRunError, RunStatus, Status
from collector.intake import REJECTED, IdSet
from collector.lease import claimed
from collector.manifest import (
    LISTING_COUNTS,
    RunRecord,
    latest_finished,
    read_manifest,
    record_of,
)
from collector.preflight import recover
from collector.publish import stage_changes
from collector.published import published_dates, read_published
from collector.schemas import TABLES, parquet_files, read_parquet
from collector.shards import place
from collector.sink import ParquetSink
from collector.store import LocalStore, Store, reason

log = logging.getLogger("collector")
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
ROW_COUNTS = ("ok", "not_found", "forbidden", "failed", "invalid", "member_rows", "status_rows")
SUMMED = ("input_lines", "unique_ids", "duplicates", "resumed")  # each shard counts its share


@dataclass(frozen=True, slots=True)
class Mark:
    """What a finished shard (or the plan) says of itself."""

    shard: str  # K/N, or "plan"
    run_id: str
    fingerprint: str | None
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)


class BadMark(Exception):
    """A mark that is not what a shard writes: what is wrong with it."""


def parse_mark(raw: bytes, expected: str) -> Mark:
    """A mark's fields, checked; ``BadMark`` saying what is wrong with it."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadMark("empty" if not raw.strip() else "not JSON") from None
    if not isinstance(doc, dict):
        raise BadMark("not a JSON object")
    for key, kind, called in (("shard", str, "a string"), ("run_id", str, "a string"),
                              ("exit_code", int, "a whole number"),
                              ("counts", dict, "a JSON object")):
        if key not in doc:
            raise BadMark(f"no {key}")
        if not isinstance(doc[key], kind) or isinstance(doc[key], bool):
            raise BadMark(f"{key} is not {called}")
    fingerprint = doc.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise BadMark("fingerprint is not a string")
    if doc["shard"] != expected:
        raise BadMark(f"it is the mark of {doc['shard'][:40]!r}")
    if not RUN_ID.fullmatch(doc["run_id"]):
        raise BadMark("run_id is not a run id")
    counts = doc["counts"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in counts.values()):
        raise BadMark("a count is not a whole number")
    needed = [*ROW_COUNTS, *SUMMED] if expected != stage.plan_name() else list(LISTING_COUNTS)
    missing = [name for name in needed if name not in counts]
    if missing:
        raise BadMark(f"no count {missing[0]}")
    return Mark(doc["shard"], doc["run_id"], fingerprint, doc["exit_code"], counts)


def read_marks(store: Store, snapshot_date: dt.date, count: int) -> list[Mark]:
    """Every shard's mark, in order, then the plan's if any; ``FatalRunError`` (exit 3)
    naming the first shard that has not finished, whose mark is not valid or not of a staged
    run, or that ran with another input or settings, or of another count."""
    staging = stage.date_staging(snapshot_date)
    others = [name for name in store.folders(staging)
              if stage.is_shard(name) and not stage.is_of_count(name, count)]
    if others:
        raise FatalRunError(f"publish {snapshot_date}: {others[0]} is staged, but --shards "
                            f"says {count}; nothing published")
    folders = [(f"{index}/{count}", stage.shard_folder(snapshot_date, index, count))
               for index in range(1, count + 1)]
    if store.exists(stage.shard_mark(stage.plan_folder(staging))):  # a discovery run's shards
        folders.append((stage.plan_name(), stage.plan_folder(staging)))
    marks = []
    for shard, folder in folders:
        what = "the plan" if shard == stage.plan_name() else f"shard {shard}"
        key = stage.shard_mark(folder)
        if not store.exists(key):
            raise FatalRunError(f"publish {snapshot_date}: {what} has not finished (run it "
                                "again with the same arguments); nothing published")
        try:
            mark = parse_mark(store.read(key), shard)
        except BadMark as exc:
            raise FatalRunError(f"publish {snapshot_date}: {what}: its "
                                f"{stage.shard_mark_name()} is not valid ({exc}); run it "
                                "again; nothing published") from None
        doc = read_manifest(store, mark.run_id)
        if doc is None or doc.get("status") != RunStatus.STAGED:
            raise FatalRunError(f"publish {snapshot_date}: {what}: its {stage.shard_mark_name()} "
                                f"names run {mark.run_id}, whose manifest does not say staged; "
                                "run it again; nothing published")
        marks.append(mark)
    for mark in marks[1:]:
        if mark.fingerprint != marks[0].fingerprint:
            what = "the plan" if mark.shard == stage.plan_name() else f"shard {mark.shard}"
            raise FatalRunError(f"publish {snapshot_date}: {what} ran with another "
                                f"input or settings than shard {marks[0].shard}; nothing "
                                "published")
    return marks


def _rows(store: Store, folder: str, count: int, seen: IdSet,
          owner_of_folder: int | None, skip: frozenset[str] = frozenset()) -> list[Counter[str]]:
    """Per shard (by the hash split), the status rows by status and the member rows of
    ``folder``'s chunks. ``owner_of_folder``: a shard's own folder, whose rows must all be
    its own (ValueError naming the other shard); no image may be seen twice anywhere.
    ``skip``: keys (relative to ``folder``) not to count."""
    found: list[Counter[str]] = [Counter() for _ in range(count)]
    for key in parquet_files(store, f"{folder}/image_status"):
        if key.removeprefix(f"{folder}/") in skip:
            continue
        columns = read_parquet(store, key, ["project_id", "image_id", "status"]).to_pydict()
        for project, image, status in zip(columns["project_id"], columns["image_id"],
                                          columns["status"], strict=True):
            invalid = status == Status.INVALID_ID
            bucket = REJECTED if invalid else project
            owner = place(bucket, image, count)
            if owner_of_folder is not None and owner != owner_of_folder:
                raise ValueError(f"holds rows of shard {owner + 1}/{count}")
            if not seen.add(bucket, image):
                raise ValueError(f"holds image {image[:64]!r} of project {project[:64]!r} twice")
            found[owner]["invalid" if invalid else status] += 1
            found[owner]["status_rows"] += 1
    for key in parquet_files(store, f"{folder}/members"):
        if key.removeprefix(f"{folder}/") in skip:
            continue
        columns = read_parquet(store, key, ["project_id", "image_id"]).to_pydict()
        for project, image in zip(columns["project_id"], columns["image_id"], strict=True):
            owner = place(project, image, count)
            if owner_of_folder is not None and owner != owner_of_folder:
                raise ValueError(f"holds member rows of shard {owner + 1}/{count}")
            found[owner]["member_rows"] += 1
    return found


def verify(store: Store, snapshot_date: dt.date, count: int,
           marks: list[Mark]) -> Counter[str]:
    """The rows the publish would gather, checked against the marks: every row in a shard's
    folder is of its share, no image twice, and each shard's rows (those a stopped publish
    already moved included) are as many, status by status, as its mark says. The night's row
    counts; ``FatalRunError`` naming the shard otherwise."""
    staging = stage.date_staging(snapshot_date)
    seen = IdSet()
    per_shard: list[Counter[str]] = [Counter() for _ in range(count)]
    for index in range(count):
        try:
            found = _rows(store, stage.shard_folder(snapshot_date, index + 1, count), count,
                          seen, index)
        except ValueError as exc:
            raise FatalRunError(f"publish {snapshot_date}: shard {index + 1}/{count}: its "
                                f"folder {exc} (copied or changed after it finished); "
                                "nothing published") from None
        for counter, more in zip(per_shard, found, strict=True):
            counter.update(more)
    try:
        # by a publish that stopped; in a bucket a chunk is copied, then deleted: one copied
        # but still in its shard's folder is counted there, once
        still = frozenset(key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1]
                          for index in range(1, count + 1) for table in ("image_status",
                                                                         "members")
                          for key in parquet_files(
                              store, f"{stage.shard_folder(snapshot_date, index, count)}/{table}"))
        moved = _rows(store, staging, count, seen, None, still)
    except ValueError as exc:
        raise FatalRunError(f"publish {snapshot_date}: the gathered rows {exc}; nothing "
                            "published") from None
    for counter, more in zip(per_shard, moved, strict=True):
        counter.update(more)
    shards = [m for m in marks if m.shard != stage.plan_name()]
    for mark, rows in zip(shards, per_shard, strict=True):
        wrong = [name for name in ROW_COUNTS if rows[name] != mark.counts[name]]
        if wrong:
            name = wrong[0]
            raise FatalRunError(f"publish {snapshot_date}: shard {mark.shard}: its folder "
                                f"holds {rows[name]:,} {name.replace('_', ' ')}, its mark says "
                                f"{mark.counts[name]:,}; run it again; nothing published")
    total: Counter[str] = Counter()
    for rows in per_shard:
        total.update(rows)
    return total


def night_counts(marks: list[Mark], rows: Counter[str], count: int) -> dict[str, int]:
    """The counts one unsharded run would give: the input's summed from the shards' marks,
    the statuses from the rows, the listings from the plan (or any shard: they share it)."""
    shards = [m for m in marks if m.shard != stage.plan_name()]
    counts = {name: sum(m.counts[name] for m in shards) for name in SUMMED}
    counts.update({name: rows[name] for name in ROW_COUNTS})
    listed = next((m for m in reversed(marks) if "listings" in m.counts), None)
    if listed is not None:
        counts.update({name: listed.counts.get(name, 0) for name in LISTING_COUNTS})
    counts["shards"] = count
    return counts


def gather(store: Store, snapshot_date: dt.date, count: int) -> None:
    """Move every shard's committed chunks into the date's staging (file by file: a chunk
    moved stays moved, so this can be repeated)."""
    staging = stage.date_staging(snapshot_date)
    folders = [stage.shard_folder(snapshot_date, index, count) for index in range(1, count + 1)]
    for shard in [*folders, stage.plan_folder(staging)]:  # the plan: the listing of a discovery run
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


def left_over(store: Store, snapshot_date: dt.date, count: int, staged: list[str]) -> bool:
    """The date's shard folders (``staged``) are what its finished publish left (its
    clean-up failed): each has its mark, naming a shard run that publish published. A folder
    without a mark is a shard running (a re-run removes its mark first) or stopped: not."""
    doc = latest_finished(store, snapshot_date)
    if doc is None or not str(doc.get("input", "")).startswith(f"{count} shards: "):
        return False
    published = set(str(doc["input"]).removeprefix(f"{count} shards: ").split(", "))
    staging = stage.date_staging(snapshot_date)
    for name in staged:
        try:
            shard = stage.shard_label(name)
            run_id = parse_mark(store.read(stage.shard_mark(f"{staging}/{name}")), shard).run_id
        except (OSError, BadMark):
            return False
        if run_id not in published:
            return False  # a shard run since: a new publish
    return True


def _discard(store: Store, snapshot_date: dt.date, held: dict[str, str]) -> None:
    """Remove the date's staging after a publish, under the shards' locks (``held``: the live
    ones); a failure is a warning (the data and its manifest are published, the night's
    verdict stands; the next run removes it)."""
    try:
        ParquetSink(store, snapshot_date, "").discard(held)
    except OSError as exc:
        log.warning("output %s: %s is published, but its staging could not be removed (%s); "
                    "the next run removes it", store.url, snapshot_date, reason(exc))


def already_published(store: Store, snapshot_date: dt.date,
                      record: RunRecord) -> RunRecord:
    """A publish repeated after success: the first publish's record, read from its manifest,
    so the retry says (and exits) what the first one did. Without such a manifest, the
    verdict of what is published, recorded in this publish's own manifest."""
    doc = latest_finished(store, snapshot_date)
    if doc is not None:
        log.info("%s is already published (run %s, exit %s); nothing to do", snapshot_date,
                 doc["run_id"], doc.get("exit_code"))
        return record_of(doc)
    published = read_published(store, snapshot_date)
    end(record, dataclasses.replace(verdict(published.counts), error="already published (no "
                                    "manifest said how; counted from the tables)"),
        published.counts, files=published.files)
    write(store, record)
    return record


def publish_shards(store: Store, snapshot_date: dt.date, count: int, run_id: str,
                   trusted: frozenset[str], settings: dict[str, object],
                   fail_on_untrusted: bool = False,
                   max_failed_share: float | None = 0.1) -> RunRecord:
    """Blocking, under the output lock. The record of the publish (its manifest written);
    ``FatalRunError`` (exit 3, one line, the manifest says ``fatal``) when it refuses or
    fails."""
    started = dt.datetime.now(dt.UTC)
    record = RunRecord(run_id, snapshot_date, started, f"{count} shards", settings)
    recover(store, run_id)
    staging = stage.date_staging(snapshot_date)
    every = tuple(stage.lock_name(stage.shard_name(k, count)) for k in range(1, count + 1))
    try:
        with claimed(store, staging, run_id, also=every) as running:  # no shard starts now
            staged = [n for n in store.folders(staging) if stage.is_shard(n)]
            if snapshot_date in published_dates(store) and (
                    not staged or left_over(store, snapshot_date, count, staged)):
                if staged:  # a clean-up that failed after the publish: done now
                    _discard(store, snapshot_date, running)
                return already_published(store, snapshot_date, record)
            if running:  # a premature publish: a shard still writes
                lock, run = sorted(running.items())[0]
                raise FatalRunError(f"publish {snapshot_date}: {stage.locked(lock)} is "
                                    f"still running (run {run}); nothing published")
            _held_publish(store, snapshot_date, count, record, trusted, fail_on_untrusted,
                          max_failed_share)
    finally:
        if isinstance(store, LocalStore):
            with contextlib.suppress(OSError):
                store.path(staging).rmdir()  # if empty once the shards' lock files are gone
    log.info("published %s from %d shards; %s", snapshot_date, count,
             line_of(record.changes))
    return record


def _held_publish(store: Store, snapshot_date: dt.date, count: int, record: RunRecord,
                  trusted: frozenset[str], fail_on_untrusted: bool,
                  max_failed_share: float | None) -> None:
    """``_publish`` with its manifest kept (a failure is recorded, and ``FatalRunError``),
    then the staging discarded; the caller holds every shard's lock."""
    write(store, record)  # running: a stop from here on is recorded by the next run
    try:
        _publish(store, snapshot_date, count, record, trusted, fail_on_untrusted,
                 max_failed_share)
    except Exception as exc:
        if isinstance(exc, CollectorError):
            error = str(exc)
        else:
            if not isinstance(exc, OSError):
                log.debug("publish failed", exc_info=True)
            error = (f"output {store.url}: publish failed ({publish_failure(exc)}); run it "
                     "again to finish it")
        end(record, fatal(error))
        save(store, record, quiet=True)
        raise FatalRunError(error) from None
    _discard(store, snapshot_date, {})


def _publish(store: Store, snapshot_date: dt.date, count: int, record: RunRecord,
             trusted: frozenset[str], fail_on_untrusted: bool,
             max_failed_share: float | None) -> None:
    """Check, conclude, gather, publish, and record it (``record`` filled in)."""
    marks = read_marks(store, snapshot_date, count)
    record.input = f"{count} shards: " + ", ".join(m.run_id for m in marks
                                                   if m.shard != stage.plan_name())
    record.counts = night_counts(marks, verify(store, snapshot_date, count, marks), count)
    conclusion = verdict(record.counts, max_failed_share=max_failed_share)
    if not conclusion.publishes:  # too broken: the shards stay staged, to be run again
        raise FatalRunError(f"publish {snapshot_date}: {conclusion.error}")
    staging = stage.date_staging(snapshot_date)
    gather(store, snapshot_date, count)
    sink = ParquetSink(store, snapshot_date, record.run_id)
    for table in TABLES:
        store.make_folder(f"{staging}/{table}")
    summary = stage_changes(sink, record.run_id, trusted)
    conclusion = verdict(record.counts, max_failed_share=max_failed_share,
                         untrusted_alerts=summary.untrusted_alerts,
                         fail_on_untrusted=fail_on_untrusted)
    sink.publish(summary.to_json())
    end(record, conclusion, files=sink.files, changes=summary.to_json())
    write(store, record)
