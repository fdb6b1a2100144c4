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
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.changes import CHANGES_SCHEMA, SHARE, Night, share_dictionaries, text
from collector.errors import Status
from collector.files import fsync_dir, write_atomically, write_bytes
from collector.intake import REJECTED, IdSet, Rejected
from collector.results import ImageResult
from collector.secrets import redact

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
OPTIONAL = frozenset({"changes"})  # a first snapshot has no changes: no file, not an empty one
STAGING = "_staging"
RESUME_FILE = "resume.json"
LISTED_FILE = "listed.json"  # in staging once a discovery run's listing is all committed
LATER = "later-changes"  # a later date's change table, recomputed by a backfill
PUBLISHING = "publishing"  # in staging while its tables are being swapped in
log = logging.getLogger("collector")


def partition(output: Path, table: str, snapshot_date: dt.date) -> Path:
    """The folder of one table's partition for one date."""
    return output / table / f"snapshot_date={snapshot_date.isoformat()}"


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


def write_parquet(table: pa.Table, target: Path) -> None:
    """Write ``target`` so that it exists only complete (see ``files``)."""
    write_atomically(target, lambda handle: pq.write_table(
        table, handle, compression="zstd", row_group_size=1_048_576,
        use_dictionary=["run_id", "project_id", "image_id", "status", "error_code"],
        write_statistics=True))


@dataclass(slots=True)
class Resumed:
    """What earlier, unfinished runs of this date already committed."""

    keys: IdSet = field(default_factory=IdSet)
    counts: dict[str, int] = field(default_factory=dict)
    member_rows: int = 0
    chunks: int = 0


class ParquetSink:
    """Owns every file of one snapshot date's run; called only from the pipeline's writer task."""

    def __init__(self, output: Path, snapshot_date: dt.date, run_id: str) -> None:
        skip_pandas_lookup()
        self.output = output
        self.snapshot_date = snapshot_date
        self.run_id = run_id
        self.staging = output / STAGING / _staging_name(snapshot_date)
        self._sequence = 0
        self._later: dt.date | None = None  # a later date whose changes this run restaged
        self.files: list[str] = []  # relative to output, as published

    def resume(self, fingerprint: str | None) -> Resumed:
        """Adopt the committed chunks of an unfinished earlier run of the same date and input.

        A different input (``fingerprint``), or stdin (None), starts over. Files an earlier run
        did not finish (``.tmp``, member chunks without their status file) are removed.
        """
        found = Resumed()
        marker = self.staging / RESUME_FILE
        previous = orjson.loads(marker.read_bytes()).get("fingerprint") if marker.exists() else None
        if previous is None or previous != fingerprint:
            if self.staging.exists():
                log.info("staging of %s holds another input's work; starting over",
                         self.snapshot_date)
            shutil.rmtree(self.staging, ignore_errors=True)
        for table in TABLES:
            (self.staging / table).mkdir(parents=True, exist_ok=True)
        self._write_marker(fingerprint)
        if previous is None or previous != fingerprint:
            return found
        for leftover in self.staging.rglob("*.tmp"):
            leftover.unlink()
        if not self.listed():  # a listing that did not finish is listed again, from scratch
            for table in ("images", "listing_status"):
                for partial in (self.staging / table).glob("*.parquet"):
                    partial.unlink()
        committed = {p.name for p in (self.staging / "image_status").glob("*.parquet")}
        for orphan in (self.staging / "members").glob("*.parquet"):
            if orphan.name not in committed:
                orphan.unlink()
        for name in sorted(committed):
            table = pq.ParquetFile(self.staging / "image_status" / name).read(
                columns=["project_id", "image_id", "status", "member_count"])
            columns = table.to_pydict()
            for project, image, status, count in zip(columns["project_id"], columns["image_id"],
                                                     columns["status"], columns["member_count"],
                                                     strict=True):
                found.keys.add(REJECTED if status == "invalid_id" else project, image)
                found.counts[status] = found.counts.get(status, 0) + 1
                found.member_rows += count
            found.chunks += 1
        return found

    def _write_marker(self, fingerprint: str | None) -> None:
        write_bytes(self.staging / RESUME_FILE, orjson.dumps({"fingerprint": fingerprint}))

    def commit(self, chunk: Chunk) -> None:
        """Write one chunk into staging (blocking; run it in a thread)."""
        if chunk.images == 0:
            return
        name = f"part-{self.run_id}-{self._sequence:05d}.parquet"
        for table, columns in (("members", chunk.members), ("image_status", chunk.status)):
            write_parquet(_table(columns, TABLES[table], self.run_id),
                          self.staging / table / name)
            fsync_dir(self.staging / table)  # members are durable before status commits them
        self._sequence += 1

    def publish(self) -> None:
        """Swap the date's partitions for the staged ones; see README "What a reader sees".

        A marker written first lets the next run finish a swap that a crash interrupted, so
        a date is never left without its data (see ``finish_publish``).
        """
        for table, schema in TABLES.items():  # an empty table still gets a file with its schema
            if table not in OPTIONAL and not any((self.staging / table).glob("*.parquet")):
                write_parquet(schema.empty_table(),
                              self.staging / table / f"part-{self.run_id}-00000.parquet")
        write_bytes(self.staging / PUBLISHING, self.run_id.encode())  # whose publish it is
        fsync_dir(self.staging)
        finish_publish(self.output, self.staging, self.snapshot_date)
        for table in TABLES:
            final = partition(self.output, table, self.snapshot_date)
            self.files += sorted(str(p.relative_to(self.output)) for p in final.glob("*.parquet"))
        if self._later is not None:
            final = partition(self.output, "changes", self._later)
            self.files += sorted(str(p.relative_to(self.output)) for p in final.glob("*.parquet"))

    def drop_own_chunks(self) -> None:
        """Remove the chunks this run committed (earlier runs' chunks stay to be resumed), and
        its listing: nothing it stored was proved to come from the API."""
        for table in TABLES:
            for path in (self.staging / table).glob(f"part-{self.run_id}-*.parquet"):
                path.unlink()
        (self.staging / LISTED_FILE).unlink(missing_ok=True)

    # -- changes --------------------------------------------------------------------------------

    def previous_date(self) -> dt.date | None:
        """The latest published snapshot date before this one (published means finished)."""
        earlier = [d for d in published_dates(self.output) if d < self.snapshot_date]
        return max(earlier) if earlier else None

    def night(self, snapshot_date: dt.date | None = None) -> Night:
        """This run's staged snapshot, or the published one of ``snapshot_date``."""
        if snapshot_date is None:
            return read_night(lambda table: self.staging / table)
        return published_night(self.output, snapshot_date)

    def later_date(self) -> dt.date | None:
        """The earliest published snapshot date after this one: its changes are against the
        date this run replaces, so a backfill recomputes them."""
        later = [d for d in published_dates(self.output) if d > self.snapshot_date]
        return min(later) if later else None

    def commit_later_changes(self, later: dt.date, table: pa.Table) -> None:
        """Stage ``later``'s recomputed change table; publish swaps it in with the rest."""
        folder = self.staging / LATER / _staging_name(later)
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet(table, folder / f"part-{self.run_id}-00000.parquet")
        self._later = later

    def commit_changes(self, table: pa.Table) -> None:
        write_parquet(table, self.staging / "changes" / f"part-{self.run_id}-00000.parquet")

    # -- discovery ------------------------------------------------------------------------------

    def commit_images(self, rows: dict[str, list[object]]) -> None:
        """Write one chunk of the inventory (columns as ``IMAGES_SCHEMA``, without run_id)."""
        if not rows["image_id"]:
            return
        name = f"part-{self.run_id}-L{self._sequence:05d}.parquet"
        write_parquet(_table(rows, IMAGES_SCHEMA, self.run_id), self.staging / "images" / name)
        self._sequence += 1

    def commit_listings(self, rows: dict[str, list[object]]) -> None:
        """Write the listing ledger and mark the listing complete: a re-run does not list
        again, it collects members for the images listed here."""
        write_parquet(_table(rows, LISTING_SCHEMA, self.run_id),
                      self.staging / "listing_status" / f"part-{self.run_id}-00000.parquet")
        fsync_dir(self.staging / "images")
        write_bytes(self.staging / LISTED_FILE, b"{}")

    def listed(self) -> bool:
        return (self.staging / LISTED_FILE).is_file()

    def listings(self) -> list[dict[str, object]]:
        """The committed listing ledger's rows."""
        return [row for path in sorted((self.staging / "listing_status").glob("*.parquet"))
                for row in pq.ParquetFile(path).read().to_pylist()]

    def private_images(self) -> Iterator[tuple[str, str]]:
        """(project_id, image_id) of every listed private image, in listing order, read in
        batches (never all in memory)."""
        for path in sorted((self.staging / "images").glob("*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(
                    batch_size=8192, columns=["project_id", "image_id", "image_type"]):
                columns = batch.to_pydict()
                for project, image, kind in zip(columns["project_id"], columns["image_id"],
                                                columns["image_type"], strict=True):
                    if kind == "private":
                        yield project, image

    def discard(self) -> None:
        """Remove this date's staging after a finished run."""
        shutil.rmtree(self.staging, ignore_errors=True)


def published_dates(output: Path) -> list[dt.date]:
    """The dates with a published snapshot (an ``image_status`` partition: finished runs)."""
    folders = (output / "image_status").glob("snapshot_date=*")
    return sorted(d for d in (_staged_date(p) for p in folders
                              if p.is_dir() and not p.is_symlink()) if d is not None)


def read_night(folder: Callable[[str], Path]) -> Night:
    """A snapshot's statuses, members and (discovery) listings, from ``folder(table)``, with
    the ID columns as dictionaries status and members share (``changes.share_dictionaries``):
    a fraction of the memory of the strings, and coded for the comparison as they are."""
    def read(table: str, columns: list[str]) -> pa.Table:
        files = sorted(folder(table).glob("*.parquet"))
        if not files:
            return TABLES[table].empty_table().select(columns)
        ids = [c for c in columns if c in SHARE]
        parts = []
        for path in files:
            # ParquetFile, not read_table: that one imports pyarrow.dataset, and pandas with it
            parts.append(pq.ParquetFile(path, read_dictionary=ids).read(columns=columns))
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


def published_night(output: Path, snapshot_date: dt.date) -> Night:
    return read_night(lambda table: partition(output, table, snapshot_date))


def finish_publish(output: Path, staging: Path, snapshot_date: dt.date) -> None:
    """Move each staged table into place, then any later date's recomputed changes; safe to
    repeat after a crash at any step."""
    for table in TABLES:
        staged, final = staging / table, partition(output, table, snapshot_date)
        if not staged.exists():
            continue  # already swapped in
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            os.rename(final, staging / f"replaced-{table}")
        os.rename(staged, final)
        fsync_dir(final.parent)
    later = staging / LATER
    for staged in sorted(later.glob("snapshot_date=*")) if later.is_dir() else []:
        final = output / "changes" / staged.name
        if final.exists():
            os.rename(final, staging / f"replaced-later-{staged.name}")
        os.rename(staged, final)
        fsync_dir(final.parent)


def _staged_date(folder: Path) -> dt.date | None:
    try:
        return dt.date.fromisoformat(folder.name.removeprefix("snapshot_date="))
    except ValueError:
        return None


def clean_stale_staging(output: Path, keep: str) -> list[str]:
    """Remove other dates' leftovers of crashed runs (we hold the output lock: none is live;
    ``finish_interrupted`` has run first). Only folders named as the tool names
    them (``snapshot_date=YYYY-MM-DD``) are touched; a link is skipped with a warning, and
    anything else under ``_staging`` is not ours and stays."""
    removed = []
    for child, _ in _dated_staging(output):
        if child.name == keep:
            continue
        if child.is_symlink() or not child.is_dir():
            log.warning("left %s alone: not a folder the tool made", child)
            continue
        shutil.rmtree(child)
        removed.append(child.name)
    return removed


def _dated_staging(output: Path) -> list[tuple[Path, dt.date]]:
    """What under ``_staging`` bears a name the tool gives (``snapshot_date=YYYY-MM-DD``)."""
    root = output / STAGING
    if not root.is_dir() or root.is_symlink():
        return []
    return [(child, date) for child in sorted(root.iterdir())
            if (date := _staged_date(child)) is not None and child.name == _staging_name(date)]


def _own_staging(output: Path) -> list[tuple[Path, dt.date]]:
    """The staging folders of dates, as the tool names them, that are real folders."""
    return [(child, date) for child, date in _dated_staging(output)
            if child.is_dir() and not child.is_symlink()]


def finish_interrupted(output: Path) -> dict[str, dt.date]:
    """Finish every publish a stopped run began (so no date is left without its data, and
    before any manifest is judged); {run_id: snapshot date} of the runs whose data that is."""
    finished = {}
    for folder, date in _own_staging(output):
        marker = folder / PUBLISHING
        if marker.is_file() and not marker.is_symlink():
            run_id = marker.read_text(encoding="utf-8", errors="replace").strip()
            finish_publish(output, folder, date)
            log.info("finished publishing %s, which run %s had begun", date, run_id or "?")
            shutil.rmtree(folder)
            if run_id:
                finished[run_id] = date
    return finished


@dataclass(frozen=True, slots=True)
class Published:
    """What readers find for one date: the manifest's counts and files, read back."""

    counts: dict[str, int]
    files: list[str]


def read_published(output: Path, snapshot_date: dt.date) -> Published:
    """The counts and files of a date's published partitions (for a manifest a crash left
    ``running``): status counts from ``image_status``, member rows from Parquet metadata."""
    counts: dict[str, int] = {s.value: 0 for s in Status}
    files, members = [], 0
    for table in TABLES:
        for path in sorted(partition(output, table, snapshot_date).glob("*.parquet")):
            files.append(str(path.relative_to(output)))
            if table == "members":
                members += pq.ParquetFile(path).metadata.num_rows
            elif table == "image_status":
                for status in pq.ParquetFile(path).read(columns=["status"]).column(0).to_pylist():
                    counts[status] = counts.get(status, 0) + 1
    invalid = counts.pop(Status.INVALID_ID.value, 0)
    return Published({**counts, "invalid": invalid, "member_rows": members,
                      "status_rows": sum(counts.values()) + invalid}, files)


def _staging_name(snapshot_date: dt.date) -> str:
    return f"snapshot_date={snapshot_date.isoformat()}"
