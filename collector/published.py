"""Reading back what is published: which dates, which files are ours, a night's tables for the
comparison, and a date's counts for a manifest a crash left ``running``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector import staging
from collector.changes import SHARE, Night, share_dictionaries, text
from collector.errors import FatalRunError, Status
from collector.manifest import listed_files
from collector.schemas import TABLES, own_files, parquet_files, partition_key, read_parquet
from collector.secrets import from_server
from collector.store import Store

log = logging.getLogger("collector")
_WARNED: set[str] = set()  # foreign files already named, once a process


def published_dates(store: Store) -> list[dt.date]:
    """The dates with a published snapshot (an ``image_status`` partition with its files:
    finished runs); a partition holding no file of ours (``ours``) is not one."""
    listed = listed_files(store)
    return sorted(d for name in store.folders("image_status")
                  if (d := staging.named_date(name)) is not None
                  and ours(store, parquet_files(store, f"image_status/{name}"), listed))


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
        """One table's ``columns``, file by file, the IDs as dictionaries."""
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
    status, members_ = share_dictionaries(
        [read("image_status", ["project_id", "image_id", "status"]),
         read("members", ["project_id", "image_id", "member_id", "create_time",
                          "update_time"])], SHARE)
    return Night(status, members_, listed_ok)


def published_night(store: Store, snapshot_date: dt.date, members: bool = True) -> Night:
    """The published snapshot of ``snapshot_date`` (only the files our manifests list)."""
    return read_night(store, lambda table: partition_key(table, snapshot_date),
                      listed_files(store), members)


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
