"""Parquet output: declared schemas, chunked writes into staging, and an atomic publish.

Layout under OUTPUT (the data contract, see README "Output"):

    members/snapshot_date=D/part-<run_id>-NNNNN.parquet        one row per (image, member)
    image_status/snapshot_date=D/part-<run_id>-NNNNN.parquet   one row per unique input ID
    runs/<run_id>.json                                         the run manifest, written last
    _staging/<run_id>/...                     work in progress; no reader's glob sees it

A chunk is written as ``.tmp``, fsynced and renamed, members before status, so a committed
status file always has its member rows beside it. ``publish`` swaps each partition folder in
with one rename, so a reader sees the old date or the new one, never a mix of files.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.errors import Status
from collector.fetch import ImageResult
from collector.intake import Rejected

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
TABLES = {"members": MEMBERS_SCHEMA, "image_status": STATUS_SCHEMA}
STAGING = "_staging"


def partition(output: Path, table: str, snapshot_date: dt.date) -> Path:
    return output / table / f"snapshot_date={snapshot_date.isoformat()}"


@dataclass(slots=True)
class Chunk:
    """Column buffers for one chunk: plain lists, turned into Arrow arrays once per chunk."""

    members: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in MEMBERS_SCHEMA.names if name != "run_id"})
    status: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in STATUS_SCHEMA.names if name != "run_id"})
    images: int = 0
    member_rows: int = 0
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
            values = (result.collected_at_ms, result.project_id, result.image_id, status,
                      result.http_status, result.error_code, result.error_msg, result.request_id,
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
                self.member_rows += len(result.members)
        for column, value in zip(self.status.values(), values, strict=True):
            column.append(value)


def _table(columns: dict[str, list[object]], schema: pa.Schema, run_id: str) -> pa.Table:
    rows = len(next(iter(columns.values())))
    arrays = [pa.array([run_id] * rows, pa.string())]
    arrays += [pa.array(columns[f.name], f.type) for f in schema if f.name != "run_id"]
    return pa.Table.from_arrays(arrays, schema=schema)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(table: pa.Table, target: Path) -> None:
    """Write ``target`` so that it exists only complete: tmp file, fsync, rename."""
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as handle:
        pq.write_table(table, handle, compression="zstd", row_group_size=1_048_576,
                       use_dictionary=["run_id", "project_id", "image_id", "status",
                                       "error_code"], write_statistics=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


class ParquetSink:
    """Owns every file of one run; called only from the pipeline's writer task."""

    def __init__(self, output: Path, snapshot_date: dt.date, run_id: str) -> None:
        self.output = output
        self.snapshot_date = snapshot_date
        self.run_id = run_id
        self.staging = output / STAGING / run_id
        self._sequence = 0
        self.files: list[str] = []  # relative to output, as published
        self.rows = {"members": 0, "image_status": 0}
        for table in TABLES:
            (self.staging / table).mkdir(parents=True, exist_ok=True)

    def commit(self, chunk: Chunk) -> None:
        """Write one chunk into staging (blocking; run it in a thread)."""
        if chunk.images == 0 and self._sequence > 0:
            return
        name = f"part-{self.run_id}-{self._sequence:05d}.parquet"
        for table, columns in (("members", chunk.members), ("image_status", chunk.status)):
            data = _table(columns, TABLES[table], self.run_id)
            write_atomically(data, self.staging / table / name)
            self.rows[table] += data.num_rows
            self.files.append(f"{partition(Path(), table, self.snapshot_date)}/{name}")
        for table in TABLES:
            _fsync_dir(self.staging / table)
        self._sequence += 1

    def publish(self) -> None:
        """Swap this run's partitions in for the date's; a reader sees old or new, never a mix."""
        if self._sequence == 0:
            self.commit(Chunk())  # an empty run still publishes its (empty) files
        for table in TABLES:
            final = partition(self.output, table, self.snapshot_date)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                os.rename(final, self.staging / f"replaced-{table}")
            os.rename(self.staging / table, final)
            _fsync_dir(final.parent)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def clean_stale_staging(output: Path, keep: str) -> list[str]:
    """Remove what crashed runs left in staging (we hold the output lock, so none is live)."""
    removed = []
    root = output / STAGING
    if root.is_dir():
        for child in root.iterdir():
            if child.name != keep and not child.name.startswith("."):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed
