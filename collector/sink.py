"""Parquet output: declared schemas, chunked writes into staging, and an atomic publish.

Layout under OUTPUT (the data contract, see README "Output"):

    members/snapshot_date=D/part-<run_id>-NNNNN.parquet        one row per (image, member)
    image_status/snapshot_date=D/part-<run_id>-NNNNN.parquet   one row per unique input ID
    runs/<run_id>.json                                         the run manifest, written last
    _staging/snapshot_date=D/...              work in progress; no reader's glob sees it

A chunk is written as ``.tmp``, fsynced and renamed, members before status: a status file is
the chunk's commit record, and its member rows are always beside it. Staging belongs to the
snapshot date, not the run, so a run that crashed or was stopped is resumed by the next run for
the same date and input (``resume``). ``publish`` swaps each partition folder in with a rename.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.changes import CHANGES_SCHEMA, SHARE, Night, share_dictionaries, text
from collector.errors import FatalRunError, Status
from collector.intake import REJECTED, IdSet, Rejected
from collector.lease import clear, clear_tmp
from collector.manifest import listed_files
from collector.results import ImageResult
from collector.secrets import from_server, redact
from collector.store import Store

TS = pa.timestamp("ms", tz="UTC")
MEMBERS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("collected_at", TS, nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("member_id", pa.string(), nullable=False),
    pa.field("create_time", TS, nullable=False),
    pa.field("update_time", TS, nullable=False),
])
STATUS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("collected_at", TS, nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("http_status", pa.int32()),
    pa.field("error_code", pa.string()),
    pa.field("error_msg", pa.string()),
    pa.field("request_id", pa.string()),
    pa.field("attempts", pa.int32(), nullable=False),
    pa.field("member_count", pa.int32(), nullable=False),
])
IMAGES_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("collected_at", TS, nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image_name", pa.string()),
    pa.field("image_type", pa.string(), nullable=False),
    pa.field("status", pa.int32()),
    pa.field("image_size", pa.int64()),
    pa.field("image_version", pa.string()),
    pa.field("domain_id", pa.string()),
    pa.field("src_project_id", pa.string()),
    pa.field("create_time", TS),
    pa.field("update_time", TS),
])
LISTING_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("collected_at", TS, nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("image_type", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("images", pa.int64(), nullable=False),
    pa.field("pages", pa.int32(), nullable=False),
    pa.field("http_status", pa.int32()),
    pa.field("error_code", pa.string()),
    pa.field("error_msg", pa.string()),
    pa.field("request_id", pa.string()),
    pa.field("attempts", pa.int32(), nullable=False),
])
# Swapped in this order at publish: image_status last (see README "What a reader sees").
TABLES = {"images": IMAGES_SCHEMA, "listing_status": LISTING_SCHEMA,
          "members": MEMBERS_SCHEMA, "changes": CHANGES_SCHEMA, "image_status": STATUS_SCHEMA}
STAGING = "_staging"
RESUME_FILE = "resume.json"
# What a resume adopts: definitive answers. A ``failed`` row is asked again.
ADOPTED = frozenset({Status.OK, Status.NOT_FOUND, Status.FORBIDDEN, Status.INVALID_ID})
LISTED_FILE = "listed.json"  # in staging once a discovery run's listing is all committed
LATER = "later-changes"  # a later date's change table, recomputed by a backfill
PUBLISHING = "publishing"  # in staging while its tables are being swapped in
PACKED = "packed"  # in a bucket's staging: each table as one object, ready to be copied in
TODO = "to-do"  # beside a packed table until it is copied in
SHARD_MARK = "shard.json"  # in a shard's staging once it collected its share
PLAN = "plan"  # a discovery run's listing, made once for its shards (``cph-collector plan``)
# The name of every data file the tool writes: part-<run_id>-NNNNN (L: a listing's chunk).
OWN_FILE = re.compile(r"part-\d{8}T\d{6}Z-[0-9a-f]{6}-L?\d{5}\.parquet")
log = logging.getLogger("collector")


def partition_key(table: str, snapshot_date: dt.date) -> str:
    """The key of one table's partition for one date, relative to the output."""
    return f"{table}/snapshot_date={snapshot_date.isoformat()}"


def partition(output: Path, table: str, snapshot_date: dt.date) -> Path:
    """The folder of one table's partition for one date, in a local output."""
    return output / partition_key(table, snapshot_date)


@dataclass(slots=True)
class Chunk:
    """Column buffers for one chunk: plain lists, turned into Arrow arrays once per chunk."""

    members: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in MEMBERS_SCHEMA.names if name != "run_id"})
    status: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in STATUS_SCHEMA.names if name != "run_id"})
    images: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, result: ImageResult | Rejected, now_ms: int) -> None:
        self.images += 1
        if isinstance(result, Rejected):
            values: tuple[object, ...] = (now_ms, result.project_id, result.image_id,
                                          Status.INVALID_ID.value, None, None, result.reason,
                                          None, 0, 0)
            self.counts[Status.INVALID_ID.value] = self.counts.get(Status.INVALID_ID.value, 0) + 1
        else:
            status = result.status.value
            # Messages come from servers and libraries: scrub them like the logs.
            message = redact(result.error_msg) if result.error_msg else None
            values = (result.collected_at_ms, result.project_id, result.image_id, status,
                      result.http_status, result.error_code, message, result.request_id,
                      result.attempts, len(result.members))
            self.counts[status] = self.counts.get(status, 0) + 1
            if result.members:
                m = self.members
                for member in result.members:
                    m["collected_at"].append(result.collected_at_ms)
                    m["project_id"].append(result.project_id)
                    m["image_id"].append(result.image_id)
                    m["member_id"].append(member.member_id)
                    m["create_time"].append(member.create_time)
                    m["update_time"].append(member.update_time)
        for column, value in zip(self.status.values(), values, strict=True):
            column.append(value)


def skip_pandas_lookup() -> None:
    """pyarrow imports pandas, when installed, the first time it converts a Python list (to
    ask whether the list is a pandas object): 49 MB and 0.4 s of CPU here, for nothing. It
    looks once, with pandas hidden, and remembers "no pandas" for such conversions only;
    ``to_pandas()`` and the like still import pandas when a program asks for them."""
    if "pandas" in sys.modules:  # already there: nothing to save
        return
    sys.meta_path.insert(0, _HidePandas)
    try:
        pa.array([0], pa.int64())
    finally:
        sys.meta_path.remove(_HidePandas)


class _HidePandas:
    """An import hook that makes ``import pandas`` fail (for ``skip_pandas_lookup`` only)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is hidden while pyarrow looks for it")


def _table(columns: dict[str, list[object]], schema: pa.Schema, run_id: str) -> pa.Table:
    rows = len(next(iter(columns.values())))
    arrays = [pa.array([run_id] * rows, pa.string())]
    arrays += [pa.array(columns[f.name], f.type) for f in schema if f.name != "run_id"]
    return pa.Table.from_arrays(arrays, schema=schema)


PARQUET_OPTIONS: dict[str, Any] = {  # every file we write, a chunk's or a packed table's
    "compression": "zstd", "write_statistics": True,
    "use_dictionary": ["run_id", "project_id", "image_id", "status", "error_code"],
}


def write_parquet(store: Store, key: str, table: pa.Table) -> None:
    """Write ``key`` so that it exists only complete (see ``store``)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, row_group_size=1_048_576, **PARQUET_OPTIONS)
    store.write(key, buffer.getvalue())


def read_parquet(store: Store, key: str, columns: list[str] | None = None,
                 read_dictionary: list[str] | None = None) -> pa.Table:
    with store.open(key) as handle:
        return pq.ParquetFile(handle, read_dictionary=read_dictionary).read(columns=columns)


def parquet_files(store: Store, folder: str) -> list[str]:
    """The keys of the Parquet files directly in ``folder``, sorted."""
    return [f"{folder}/{name}" for name in store.files(folder) if name.endswith(".parquet")]


def own_files(store: Store, folder: str) -> list[str]:
    """The keys of the data files directly in ``folder`` that the tool named (``OWN_FILE``)."""
    return [key for key in parquet_files(store, folder)
            if OWN_FILE.fullmatch(key.rsplit("/", 1)[1])]


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
        self.staging = date_staging(snapshot_date) + (f"/{shard}" if shard else "")
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
        store, staging = self.store, self.staging
        marker = f"{staging}/{RESUME_FILE}"
        previous = (orjson.loads(store.read(marker)).get("fingerprint")
                    if store.exists(marker) else None)
        if previous is None or previous != fingerprint:
            if store.folders(staging) or store.files(staging):
                log.info("staging of %s holds another input's work; starting over",
                         self.snapshot_date)
            clear(store, staging, self.run_id, shared=(PLAN,))  # live shards' work stays
        for table in TABLES:
            store.make_folder(f"{staging}/{table}")
        store.delete(f"{staging}/{SHARD_MARK}")
        self._write_marker(fingerprint)
        if previous is None or previous != fingerprint:
            return found
        store.delete_tree(f"{staging}/{PACKED}")
        for table in TABLES:
            for name in store.files(f"{staging}/{table}"):
                if name.endswith(".tmp"):
                    store.delete(f"{staging}/{table}/{name}")
        if self.listed() and self._listing_failed():  # a failed listing: list again
            store.delete(f"{staging}/{LISTED_FILE}")
        if not self.listed():  # a listing that did not finish is listed again, from scratch
            for table in ("images", "listing_status"):
                for key in parquet_files(store, f"{staging}/{table}"):
                    store.delete(key)
        for key in parquet_files(store, f"{staging}/image_status"):
            self._retry_failed(key)
        committed = set(store.files(f"{staging}/image_status"))
        for key in parquet_files(store, f"{staging}/members"):
            if key.rsplit("/", 1)[1] not in committed:
                store.delete(key)
        for key in parquet_files(store, f"{staging}/image_status"):
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

    def _listing_failed(self) -> bool:
        """A committed listing with a ``failed`` row (a listing that never got its answer)."""
        return any(Status.FAILED.value in read_parquet(self.store, key, ["status"]).column(0)
                   .to_pylist() for key in parquet_files(self.store,
                                                         f"{self.staging}/listing_status"))

    def _retry_failed(self, key: str) -> None:
        """Keep only the definitive answers of a committed status chunk (``ADOPTED``): its
        ``failed`` rows are removed, so the re-run asks those images again and each image
        still has one row. A failed row has no member rows; a chunk left with no row goes,
        status file first (its members file, alone, is then removed like any uncommitted
        one). The rewrite replaces the file whole, so a crash leaves the old or the new."""
        store = self.store
        statuses = read_parquet(store, key, ["status"]).column(0)
        adopted = pc.is_in(statuses, value_set=pa.array(sorted(ADOPTED), pa.string()))
        if pc.all(adopted).as_py() is not False:
            return
        kept = read_parquet(store, key).filter(adopted)
        if len(kept):
            write_parquet(store, key, kept.cast(STATUS_SCHEMA))
        else:
            store.delete(key)
        self.retried += len(statuses) - len(kept)

    def _write_marker(self, fingerprint: str | None) -> None:
        self.store.write(f"{self.staging}/{RESUME_FILE}",
                         orjson.dumps({"fingerprint": fingerprint}))

    def commit(self, chunk: Chunk) -> None:
        """Write one chunk into staging (blocking; run it in a thread). Members first: the
        status file is the chunk's commit record."""
        if chunk.images == 0:
            return
        name = f"part-{self.run_id}-{self._sequence:05d}.parquet"
        for table, columns in (("members", chunk.members), ("image_status", chunk.status)):
            write_parquet(self.store, f"{self.staging}/{table}/{name}",
                          _table(columns, TABLES[table], self.run_id))
        self._sequence += 1

    def publish(self, changes: dict[str, object] | None = None) -> None:
        """Swap the date's partitions for the staged ones; see README "What a reader sees".

        A marker written first lets the next run finish a swap that a crash interrupted, so
        a date is never left without its data (see ``finish_publish``), and record it with
        the change summary (``changes``) its verdict needs. In a bucket, each table is first
        packed into one object, so that it can appear with one copy.
        """
        store = self.store
        for table, schema in TABLES.items():  # an empty table still gets a file with its schema
            if not parquet_files(store, f"{self.staging}/{table}"):  # a first night's changes too
                write_parquet(store, f"{self.staging}/{table}/part-{self.run_id}-00000.parquet",
                              schema.empty_table())
        if not store.renames:
            self._pack()
        store.write(f"{self.staging}/{PUBLISHING}",  # whose publish, and its changes
                    orjson.dumps({"run_id": self.run_id, "changes": changes}))
        finish_publish(store, self.staging, self.snapshot_date)
        for table in TABLES:
            self.files += own_files(store, partition_key(table, self.snapshot_date))
        if self._later is not None:
            self.files += own_files(store, partition_key("changes", self._later))

    def _pack(self) -> None:
        """Each staged table (and a later date's changes) as one object under ``packed/``,
        and a to-do mark per table, which ``finish_publish`` removes once it is swapped in."""
        store = self.store
        folders = [(table, f"{self.staging}/{table}") for table in TABLES]
        folders += [(f"{LATER}/{name}", f"{self.staging}/{LATER}/{name}")
                    for name in store.folders(f"{self.staging}/{LATER}")]
        for name, folder in folders:
            sources = parquet_files(store, folder)
            schema = TABLES[name if name in TABLES else "changes"]
            target = f"{self.staging}/{PACKED}/{name}/part-{self.run_id}-00000.parquet"
            if sources:
                store.write_stream(target, functools.partial(_concatenate, store, sources,
                                                             schema))
            store.write(f"{self.staging}/{PACKED}/{name}/{TODO}", b"")

    def drop_own_chunks(self) -> None:
        """Remove the chunks this run committed (earlier runs' chunks stay to be resumed), and
        its listing: nothing it stored was proved to come from the API."""
        prefix = f"part-{self.run_id}-"
        for table in TABLES:
            for name in self.store.files(f"{self.staging}/{table}"):
                if name.startswith(prefix) and name.endswith(".parquet"):
                    self.store.delete(f"{self.staging}/{table}/{name}")
        self.store.delete(f"{self.staging}/{LISTED_FILE}")

    # -- changes --------------------------------------------------------------------------------

    def previous_date(self) -> dt.date | None:
        """The latest published snapshot date before this one (published means finished)."""
        earlier = [d for d in published_dates(self.store) if d < self.snapshot_date]
        return max(earlier) if earlier else None

    def night(self, snapshot_date: dt.date | None = None) -> Night:
        """This run's staged snapshot, or the published one of ``snapshot_date``."""
        if snapshot_date is None:
            return read_night(self.store, lambda table: f"{self.staging}/{table}")
        return published_night(self.store, snapshot_date)

    def later_date(self) -> dt.date | None:
        """The earliest published snapshot date after this one: its changes are against the
        date this run replaces, so a backfill recomputes them."""
        later = [d for d in published_dates(self.store) if d > self.snapshot_date]
        return min(later) if later else None

    def commit_later_changes(self, later: dt.date, table: pa.Table) -> None:
        """Stage ``later``'s recomputed change table; publish swaps it in with the rest."""
        folder = f"{self.staging}/{LATER}/{_staging_name(later)}"
        self.store.make_folder(folder)
        write_parquet(self.store, f"{folder}/part-{self.run_id}-00000.parquet", table)
        self._later = later

    def commit_changes(self, table: pa.Table) -> None:
        write_parquet(self.store, f"{self.staging}/changes/part-{self.run_id}-00000.parquet",
                      table)

    # -- discovery ------------------------------------------------------------------------------

    def commit_images(self, rows: dict[str, list[object]], number: int) -> None:
        """Write inventory chunk ``number`` (columns as ``IMAGES_SCHEMA``, without run_id).
        Listings commit side by side, each in a thread: the caller numbers the chunks before
        their writes begin, so no two writes ever share a file."""
        if not rows["image_id"]:
            return
        name = f"part-{self.run_id}-L{number:05d}.parquet"
        write_parquet(self.store, f"{self.staging}/images/{name}",
                      _table(rows, IMAGES_SCHEMA, self.run_id))

    def commit_listings(self, rows: dict[str, list[object]],
                        notes: list[list[object]] | None = None) -> None:
        """Write the listing ledger and mark the listing complete: a re-run does not list
        again, it collects members for the images listed here. ``notes``: what the manifest
        counts of each listing beyond its row (``discover.notes``), kept in the mark."""
        write_parquet(self.store,
                      f"{self.staging}/listing_status/part-{self.run_id}-00000.parquet",
                      _table(rows, LISTING_SCHEMA, self.run_id))
        self.store.write(f"{self.staging}/{LISTED_FILE}", orjson.dumps({"notes": notes or []}))

    def listed(self) -> bool:
        return self.store.exists(f"{self.staging}/{LISTED_FILE}")

    def listing_notes(self) -> list[list[Any]]:
        """The ``notes`` of the committed listing ([] from a mark without them)."""
        try:
            doc = orjson.loads(self.store.read(f"{self.staging}/{LISTED_FILE}"))
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
        clear(self.store, self.staging, self.run_id, shared=(PLAN,), held=held)


def _concatenate(store: Store, sources: list[str], schema: pa.Schema, handle: Any) -> None:
    """The rows of ``sources``, file after file, as one Parquet file on ``handle``: a row
    group a source, so the memory is one chunk's, never the table's."""
    with pq.ParquetWriter(handle, schema, **PARQUET_OPTIONS) as writer:
        for key in sources:
            writer.write_table(read_parquet(store, key).cast(schema))


def published_dates(store: Store) -> list[dt.date]:
    """The dates with a published snapshot (an ``image_status`` partition with its files:
    finished runs); a partition holding no file of ours (``ours``) is not one."""
    listed = listed_files(store)
    return sorted(d for name in store.folders("image_status")
                  if (d := _staged_date(name)) is not None
                  and ours(store, parquet_files(store, f"image_status/{name}"), listed))


_WARNED: set[str] = set()  # foreign files already named, once a process


def ours(store: Store, keys: list[str], listed: frozenset[str]) -> list[str]:
    """The ``keys`` that a manifest of ours lists; each other one (another tool's file, a
    copy, garbage) is ignored with one warning naming it."""
    for key in keys:
        if key not in listed and f"{store.url}/{key}" not in _WARNED:
            _WARNED.add(f"{store.url}/{key}")
            log.warning("ignoring %s/%s: no manifest of ours in runs/ lists it (another tool's "
                        "file, or a copy); it is never read as a snapshot", store.url, key)
    return [key for key in keys if key in listed]


def our_files(store: Store, folder: str, listed: frozenset[str]) -> list[str]:
    """The Parquet files in ``folder`` of a published snapshot that our manifests list."""
    return ours(store, parquet_files(store, folder), listed)


@contextmanager
def readable(store: Store, key: str) -> Iterator[None]:
    """A file our manifest lists that cannot be read (truncated, garbage, or of another
    schema) is ``FatalRunError`` naming it: one line, not a traceback."""
    try:
        yield
    except (ValueError, KeyError, pa.ArrowException) as exc:
        raise FatalRunError(
            f"output {store.url}: {key} cannot be read ({from_server(str(exc), 200)}); "
            "a manifest of ours lists it: restore it, or remove that snapshot") from None


def read_night(store: Store, folder: Callable[[str], str],
               listed: frozenset[str] | None = None, members: bool = True) -> Night:
    """A snapshot's statuses, members (none when not ``members``: which images are comparable
    needs only the statuses) and (discovery) listings, from ``folder(table)``, with
    the ID columns as dictionaries status and members share (``changes.share_dictionaries``):
    a fraction of the memory of the strings, and coded for the comparison as they are.
    With ``listed`` (a published snapshot), only the files our manifests list are read, and
    one of them that cannot be read is ``FatalRunError`` naming it."""
    def read(table: str, columns: list[str]) -> pa.Table:
        keys = parquet_files(store, folder(table)) if members or table != "members" else []
        if listed is not None:
            keys = ours(store, keys, listed)
        if not keys:
            return TABLES[table].empty_table().select(columns)
        ids = [c for c in columns if c in SHARE]
        parts = []
        for key in keys:
            # ParquetFile, not read_table: that one imports pyarrow.dataset, and pandas with it
            with readable(store, key):
                parts.append(read_parquet(store, key, columns, read_dictionary=ids))
            pa.default_memory_pool().release_unused()  # the reader's buffers, file by file
        return pa.concat_tables(parts)

    listings = read("listing_status", ["project_id", "image_type", "status"])
    ok = listings.filter(pc.and_(pc.equal(listings["image_type"], text("private")),
                                 pc.equal(listings["status"], text(Status.OK.value))))
    listed_ok = frozenset(ok["project_id"].to_pylist()) if len(listings) else None
    status, members = share_dictionaries(
        [read("image_status", ["project_id", "image_id", "status"]),
         read("members", ["project_id", "image_id", "member_id", "create_time",
                          "update_time"])], SHARE)
    return Night(status, members, listed_ok)


def published_night(store: Store, snapshot_date: dt.date, members: bool = True) -> Night:
    return read_night(store, lambda table: partition_key(table, snapshot_date),
                      listed_files(store), members)


def finish_publish(store: Store, staging: str, snapshot_date: dt.date) -> None:
    """Put each staged table in place, then any later date's recomputed changes; safe to
    repeat after a crash at any step. On disk a table is one folder rename; in a bucket, the
    old objects are deleted, then the packed one is copied in (a reader sees the old table,
    for a moment none, or the new one)."""
    moves = [(f"{staging}/{table}", partition_key(table, snapshot_date), table)
             for table in TABLES]
    later_names = (store.folders(f"{staging}/{LATER}") if store.renames
                   else _todo_later(store, staging))
    moves += [(f"{staging}/{LATER}/{name}", f"changes/{name}", f"{LATER}/{name}")
              for name in later_names]
    for staged, final, name in moves:
        if store.renames:
            if not store.exists(staged):
                continue  # already swapped in
            for other in [*store.files(final), *store.folders(final), *store.links(final)]:
                if not OWN_FILE.fullmatch(other):  # not ours to delete: it moves across
                    store.rename_folder(f"{final}/{other}", f"{staged}/{other}")
            if store.exists(final):
                store.rename_folder(final, f"{staging}/replaced-{name.replace('/', '-')}")
            store.rename_folder(staged, final)
            continue
        packed = f"{staging}/{PACKED}/{name}"
        if not store.exists(f"{packed}/{TODO}"):
            continue  # already swapped in
        new = [part for part in store.files(packed) if part.endswith(".parquet")]
        for old in store.files(final):
            if OWN_FILE.fullmatch(old) and old not in new:  # only ours: another's stays
                store.delete(f"{final}/{old}")
        for part in new:
            store.copy(f"{packed}/{part}", f"{final}/{part}")
        store.delete(f"{packed}/{TODO}")


def _todo_later(store: Store, staging: str) -> list[str]:
    """The later dates (their folders' names) whose change tables a bucket publish has still
    to copy in."""
    return [name for name in store.folders(f"{staging}/{PACKED}/{LATER}")
            if store.exists(f"{staging}/{PACKED}/{LATER}/{name}/{TODO}")]


def _staged_date(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name.removeprefix("snapshot_date="))
    except ValueError:
        return None


def clean_stale_staging(store: Store, keep: str, run_id: str) -> list[str]:
    """Remove other dates' leftovers of dead runs (``finish_interrupted`` has run first), and
    a bucket's temporary uploads of dead runs. A date with a live shard is left whole (see
    ``lease``: alive is a held flock, or a renewed lease). Only folders named as the tool
    names them (``snapshot_date=YYYY-MM-DD``) are touched; a link is skipped with a warning,
    and anything else under ``_staging`` is not ours and stays."""
    removed = []
    clear_tmp(store)
    for name in store.links(STAGING):
        if (date := _staged_date(name)) is not None and name == _staging_name(date):
            log.warning("left %s/%s/%s alone: not a folder the tool made", store.url, STAGING,
                        name)
    for name in _dated_staging(store):
        if name == keep.rsplit("/", 1)[-1]:
            continue
        waiting = sharded_work(store, f"{STAGING}/{name}")
        if waiting:  # staged for a publish that has not come yet: work, not a leftover
            log.info("left %s/%s/%s alone: %s wait for cph-collector publish", store.url,
                     STAGING, name, ", ".join(waiting))
            continue
        alive = clear(store, f"{STAGING}/{name}", run_id, whole=True)
        if alive:
            log.info("left %s/%s/%s alone: %s", store.url, STAGING, name, ", ".join(
                f"{lock.removesuffix('.lock')} is running (run {run})"
                for lock, run in alive.items()))
        else:
            removed.append(name)
    return removed


def sharded_work(store: Store, staging: str) -> list[str]:
    """The plan and the shard folders in a date's staging: a sharded night's work, staged
    (or being staged) for ``publish --shards``, which alone removes it once published."""
    return [name for name in store.folders(staging)
            if name == PLAN or (name.startswith("shard-") and "-of-" in name)]


def _dated_staging(store: Store) -> list[str]:
    """The folders under ``_staging`` that bear a name the tool gives
    (``snapshot_date=YYYY-MM-DD``); links are never listed."""
    return [name for name in store.folders(STAGING)
            if (date := _staged_date(name)) is not None and name == _staging_name(date)]


def finish_interrupted(store: Store, by: str) -> dict[str, tuple[dt.date, dict[str, Any]]]:
    """Finish every publish a stopped run began (so no date is left without its data, and
    before any manifest is judged); {run_id: (snapshot date, its change summary)} of the runs
    whose data that is. ``by``: the run id of the caller, which holds the output lock (live
    shards' work stays)."""
    finished = {}
    for name in _dated_staging(store):
        date = _staged_date(name)
        assert date is not None
        folder = f"{STAGING}/{name}"
        marker = f"{folder}/{PUBLISHING}"
        if store.exists(marker):
            run_id, changes = _marker(store.read(marker))
            finish_publish(store, folder, date)
            log.info("finished publishing %s, which run %s had begun", date, run_id or "?")
            clear(store, folder, by, shared=(PLAN,))  # the marker goes last
            if run_id:
                finished[run_id] = (date, changes)
    return finished


def _marker(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(run id, change summary) of a publish marker (an older one is the bare run id)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return raw.decode("utf-8", errors="replace").strip(), {}
    changes = doc.get("changes")
    return str(doc.get("run_id") or ""), changes if isinstance(changes, dict) else {}


@dataclass(frozen=True, slots=True)
class Published:
    """What readers find for one date: the manifest's counts and files, read back."""

    counts: dict[str, int]
    files: list[str]


def read_published(store: Store, snapshot_date: dt.date) -> Published:
    """The counts and files of a date's published partitions (for a manifest a crash left
    ``running``): status counts from ``image_status``, member rows from Parquet metadata.
    Only files named as the tool names them (``OWN_FILE``) are ours; another is ignored
    with one warning (``ours``)."""
    counts: dict[str, int] = {s.value: 0 for s in Status}
    listings: dict[str, int] = {}
    files, members = [], 0
    for table in TABLES:
        folder = partition_key(table, snapshot_date)
        for key in ours(store, parquet_files(store, folder), frozenset(own_files(store, folder))):
            files.append(key)
            if table == "members":
                with store.open(key) as handle:
                    members += pq.ParquetFile(handle).metadata.num_rows
            elif table == "image_status":
                for status in read_parquet(store, key, ["status"]).column(0).to_pylist():
                    counts[status] = counts.get(status, 0) + 1
            elif table == "listing_status":  # a discovery run's: its verdict counts them
                for status in read_parquet(store, key, ["status"]).column(0).to_pylist():
                    listings[f"listings_{status}"] = listings.get(f"listings_{status}", 0) + 1
                    listings["listings"] = listings.get("listings", 0) + 1
    invalid = counts.pop(Status.INVALID_ID.value, 0)
    return Published({**counts, "invalid": invalid, "member_rows": members,
                      "status_rows": sum(counts.values()) + invalid, **listings}, files)


def date_staging(snapshot_date: dt.date) -> str:
    """The key of a date's staging folder."""
    return f"{STAGING}/{_staging_name(snapshot_date)}"


def _staging_name(snapshot_date: dt.date) -> str:
    return f"snapshot_date={snapshot_date.isoformat()}"
