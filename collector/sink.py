"""The sink: every file of one snapshot date's run, from its staging to its publish.

Layout under OUTPUT (the data contract, see README "Output"):

    members/snapshot_date=D/part-<run_id>-NNNNN.parquet        one row per (image, member)
    image_status/snapshot_date=D/part-<run_id>-NNNNN.parquet   one row per unique input ID
    runs/<run_id>.json                                         the run manifest, written last
    _staging/snapshot_date=D/...              work in progress; no reader's glob sees it

A chunk is written as ``.tmp``, fsynced and renamed, members before status: a status file is
the chunk's commit record, and its member rows are always beside it. Staging belongs to the
snapshot date, not the run, so a run that crashed or was stopped is resumed by the next run for
the same date and input (``resume``). ``publish`` swaps each partition folder in with a rename.
The staging states and their markers: ``staging``; the schemas and the column builder:
``schemas``; what is published, read back: ``published``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector import staging
from collector.changes import Night
from collector.chunks import Chunk
from collector.errors import Status
from collector.hygiene import finish_publish
from collector.intake import REJECTED, IdSet
from collector.lease import clear
from collector.published import published_dates, published_night, read_night
from collector.schemas import (
    IMAGES_SCHEMA,
    LISTING_SCHEMA,
    PARQUET_OPTIONS,
    STATUS_SCHEMA,
    TABLES,
    Columns,
    own_files,
    parquet_files,
    partition_key,
    read_parquet,
    skip_pandas_lookup,
    table,
    write_parquet,
)
from collector.store import Store

# What a resume adopts: definitive answers. A ``failed`` row is asked again.
ADOPTED = frozenset({Status.OK, Status.NOT_FOUND, Status.FORBIDDEN, Status.INVALID_ID})
log = logging.getLogger("collector")


@dataclass(slots=True)
class Resumed:
    """What earlier, unfinished runs of this date already committed."""

    keys: IdSet = field(default_factory=IdSet)
    counts: dict[str, int] = field(default_factory=dict)
    member_rows: int = 0
    chunks: int = 0
    retried: int = 0  # failed rows removed: those images are asked again


class ParquetSink:
    """Owns every file of one snapshot date's run; called only from the pipeline's writer task."""

    def __init__(self, store: Store, snapshot_date: dt.date, run_id: str,
                 shard: str | None = None) -> None:
        """``shard``: a shard's own staging folder under the date's (``shard-K-of-N``)."""
        skip_pandas_lookup()
        self.store = store
        self.snapshot_date = snapshot_date
        self.run_id = run_id
        self.staging = staging.date_staging(snapshot_date) + (f"/{shard}" if shard else "")
        self._sequence = 0
        self._later: dt.date | None = None  # a later date whose changes this run restaged
        self.retried = 0  # failed rows of earlier runs that ``resume`` removed, to ask again
        self.files: list[str] = []  # relative to output, as published

    def resume(self, fingerprint: str | None) -> Resumed:
        """Adopt the committed chunks of an unfinished earlier run of the same date and input:
        their definitive answers only (``ADOPTED``); their ``failed`` images are asked again.

        A different input (``fingerprint``), or stdin (None), starts over. A shard's mark goes
        first: the share is no longer finished once it changes. Files an earlier run
        did not finish (``.tmp``, member chunks without their status file, a bucket's packed
        tables of a publish that never began) are removed.
        """
        found = Resumed()
        store, folder = self.store, self.staging
        marker = staging.resume_marker(folder)
        previous = (orjson.loads(store.read(marker)).get("fingerprint")
                    if store.exists(marker) else None)
        if previous is None or previous != fingerprint:
            if store.folders(folder) or store.files(folder):
                log.info("staging of %s holds another input's work; starting over",
                         self.snapshot_date)
            clear(store, folder, self.run_id, shared=(staging.plan_name(),))  # live shards' stay
        for name in TABLES:
            store.make_folder(f"{folder}/{name}")
        store.delete(staging.shard_mark(folder))
        store.write(marker, orjson.dumps({"fingerprint": fingerprint}))
        if previous is None or previous != fingerprint:
            return found
        self._tidy()
        for key in parquet_files(store, f"{folder}/image_status"):
            columns = read_parquet(store, key, ["project_id", "image_id", "status",
                                                "member_count"]).to_pydict()
            for project, image, status, count in zip(columns["project_id"], columns["image_id"],
                                                     columns["status"], columns["member_count"],
                                                     strict=True):
                found.keys.add(REJECTED if status == "invalid_id" else project, image)
                found.counts[status] = found.counts.get(status, 0) + 1
                found.member_rows += count
            found.chunks += 1
        found.retried = self.retried
        return found

    def _tidy(self) -> None:
        """Remove what an earlier run of this input did not finish: ``packed/``, ``.tmp``
        files, a listing that failed or did not end, failed rows, uncommitted member chunks."""
        store, folder = self.store, self.staging
        store.delete_tree(staging.packed_root(folder))
        for name in TABLES:
            for part in store.files(f"{folder}/{name}"):
                if part.endswith(".tmp"):
                    store.delete(f"{folder}/{name}/{part}")
        if self.listed() and any(  # a failed listing (one never answered): list again
                Status.FAILED.value in read_parquet(store, key, ["status"]).column(0).to_pylist()
                for key in parquet_files(store, f"{folder}/listing_status")):
            store.delete(staging.listed_marker(folder))
        if not self.listed():  # a listing that did not finish is listed again, from scratch
            for name in ("images", "listing_status"):
                for key in parquet_files(store, f"{folder}/{name}"):
                    store.delete(key)
        for key in parquet_files(store, f"{folder}/image_status"):
            self.retried += _retry_failed(store, key)
        committed = set(store.files(f"{folder}/image_status"))
        for key in parquet_files(store, f"{folder}/members"):
            if key.rsplit("/", 1)[1] not in committed:
                store.delete(key)

    def commit(self, chunk: Chunk) -> None:
        """Write one chunk into staging (blocking; run it in a thread). Members first: the
        status file is the chunk's commit record."""
        if chunk.images == 0:
            return
        name = f"part-{self.run_id}-{self._sequence:05d}.parquet"
        for part, columns in (("members", chunk.members), ("image_status", chunk.status)):
            write_parquet(self.store, f"{self.staging}/{part}/{name}",
                          table(columns, TABLES[part], self.run_id))
        self._sequence += 1

    def publish(self, changes: dict[str, object] | None = None) -> None:
        """Swap the date's partitions for the staged ones; see README "What a reader sees".

        A marker written first lets the next run finish a swap that a crash interrupted, so
        a date is never left without its data (see ``finish_publish``), and record it with
        the change summary (``changes``) its verdict needs. In a bucket, each table is first
        packed into one object, so that it can appear with one copy.
        """
        store = self.store
        for name, schema in TABLES.items():  # an empty table still gets a file with its schema
            if not parquet_files(store, f"{self.staging}/{name}"):  # a first night's changes too
                write_parquet(store, f"{self.staging}/{name}/part-{self.run_id}-00000.parquet",
                              schema.empty_table())
        if not store.renames:
            self._pack()
        store.write(staging.publishing_marker(self.staging),  # whose publish, and its changes
                    orjson.dumps({"run_id": self.run_id, "changes": changes}))
        finish_publish(store, self.staging, self.snapshot_date)
        for name in TABLES:
            self.files += own_files(store, partition_key(name, self.snapshot_date))
        if self._later is not None:
            self.files += own_files(store, partition_key("changes", self._later))

    def _pack(self) -> None:
        """Each staged table (and a later date's changes) as one object under ``packed/``,
        and a to-do mark per table, which ``finish_publish`` removes once it is swapped in."""
        store = self.store
        folders = [(name, f"{self.staging}/{name}") for name in TABLES]
        folders += [(staging.later_name(name), f"{self.staging}/{staging.later_name(name)}")
                    for name in store.folders(staging.later_root(self.staging))]
        for name, folder in folders:
            sources = parquet_files(store, folder)
            schema = TABLES[name if name in TABLES else "changes"]
            packed = staging.packed(self.staging, name)
            if sources:
                store.write_stream(f"{packed}/part-{self.run_id}-00000.parquet",
                                   functools.partial(_concatenate, store, sources, schema))
            store.write(staging.todo(packed), b"")

    def drop_own_chunks(self) -> None:
        """Remove the chunks this run committed (earlier runs' chunks stay to be resumed), and
        its listing: nothing it stored was proved to come from the API."""
        prefix = f"part-{self.run_id}-"
        for name in TABLES:
            for part in self.store.files(f"{self.staging}/{name}"):
                if part.startswith(prefix) and part.endswith(".parquet"):
                    self.store.delete(f"{self.staging}/{name}/{part}")
        self.store.delete(staging.listed_marker(self.staging))

    def previous_date(self) -> dt.date | None:
        """The latest published snapshot date before this one (published means finished)."""
        earlier = [d for d in published_dates(self.store) if d < self.snapshot_date]
        return max(earlier) if earlier else None

    def night(self, snapshot_date: dt.date | None = None) -> Night:
        """This run's staged snapshot, or the published one of ``snapshot_date``."""
        if snapshot_date is None:
            return read_night(self.store, lambda name: f"{self.staging}/{name}")
        return published_night(self.store, snapshot_date)

    def later_date(self) -> dt.date | None:
        """The earliest published snapshot date after this one: its changes are against the
        date this run replaces, so a backfill recomputes them."""
        later = [d for d in published_dates(self.store) if d > self.snapshot_date]
        return min(later) if later else None

    def commit_later_changes(self, later: dt.date, changes: pa.Table) -> None:
        """Stage ``later``'s recomputed change table; publish swaps it in with the rest."""
        folder = staging.later(self.staging, later)
        self.store.make_folder(folder)
        write_parquet(self.store, f"{folder}/part-{self.run_id}-00000.parquet", changes)
        self._later = later

    def commit_changes(self, changes: pa.Table) -> None:
        """Stage tonight's change table against the night before."""
        write_parquet(self.store, f"{self.staging}/changes/part-{self.run_id}-00000.parquet",
                      changes)

    def commit_images(self, rows: Columns, number: int) -> None:
        """Write inventory chunk ``number`` (columns as ``IMAGES_SCHEMA``, without run_id).
        Listings commit side by side, each in a thread: the caller numbers the chunks before
        their writes begin, so no two writes ever share a file."""
        if not rows["image_id"]:
            return
        name = f"part-{self.run_id}-L{number:05d}.parquet"
        write_parquet(self.store, f"{self.staging}/images/{name}",
                      table(rows, IMAGES_SCHEMA, self.run_id))

    def commit_listings(self, rows: Columns, notes: list[list[object]] | None = None) -> None:
        """Write the listing ledger and mark the listing complete: a re-run does not list
        again, it collects members for the images listed here. ``notes``: what the manifest
        counts of each listing beyond its row (``listing.notes``), kept in the mark."""
        write_parquet(self.store,
                      f"{self.staging}/listing_status/part-{self.run_id}-00000.parquet",
                      table(rows, LISTING_SCHEMA, self.run_id))
        self.store.write(staging.listed_marker(self.staging),
                         orjson.dumps({"notes": notes or []}))

    def listed(self) -> bool:
        """The listing of this staging is all committed (its mark is there)."""
        return self.store.exists(staging.listed_marker(self.staging))

    def listing_notes(self) -> list[list[Any]]:
        """The ``notes`` of the committed listing ([] from a mark without them)."""
        try:
            doc = orjson.loads(self.store.read(staging.listed_marker(self.staging)))
        except orjson.JSONDecodeError:
            return []
        notes = doc.get("notes") if isinstance(doc, dict) else None
        return [n for n in notes if isinstance(n, list) and len(n) >= 3] \
            if isinstance(notes, list) else []

    def listings(self) -> list[dict[str, object]]:
        """The committed listing ledger's rows."""
        return [row for key in parquet_files(self.store, f"{self.staging}/listing_status")
                for row in read_parquet(self.store, key).to_pylist()]

    def private_images(self) -> Iterator[tuple[str, str]]:
        """(project_id, image_id) of every listed private image, in listing order, read in
        batches (never all in memory)."""
        for key in parquet_files(self.store, f"{self.staging}/images"):
            with self.store.open(key) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(
                        batch_size=8192, columns=["project_id", "image_id", "image_type"]):
                    columns = batch.to_pydict()
                    for project, image, kind in zip(columns["project_id"], columns["image_id"],
                                                    columns["image_type"], strict=True):
                        if kind == "private":
                            yield project, image

    def discard(self, held: dict[str, str] | None = None) -> None:
        """Remove this date's staging after a finished run (live shards' work stays;
        ``held``: the caller holds the shards' locks, see ``lease.clear``)."""
        clear(self.store, self.staging, self.run_id, shared=(staging.plan_name(),), held=held)


def _concatenate(store: Store, sources: list[str], schema: pa.Schema, handle: Any) -> None:
    """The rows of ``sources``, file after file, as one Parquet file on ``handle``: a row
    group a source, so the memory is one chunk's, never the table's."""
    with pq.ParquetWriter(handle, schema, **PARQUET_OPTIONS) as writer:
        for key in sources:
            writer.write_table(read_parquet(store, key).cast(schema))


def _retry_failed(store: Store, key: str) -> int:
    """Keep only the definitive answers of a committed status chunk (``ADOPTED``): its
    ``failed`` rows are removed (how many: returned), so the re-run asks those images again
    and each image still has one row. A failed row has no member rows; a chunk left with no
    row goes, status file first (its members file, alone, is then removed like any
    uncommitted one). The rewrite replaces the file whole, so a crash leaves the old or the
    new."""
    statuses = read_parquet(store, key, ["status"]).column(0)
    adopted = pc.is_in(statuses, value_set=pa.array(sorted(ADOPTED), pa.string()))
    if pc.all(adopted).as_py() is not False:
        return 0
    kept = read_parquet(store, key).filter(adopted)
    if len(kept):
        write_parquet(store, key, kept.cast(STATUS_SCHEMA))
    else:
        store.delete(key)
    return len(statuses) - len(kept)
