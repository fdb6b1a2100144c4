"""The tables' declared schemas, the one column builder, and Parquet files in a store.

Every table is built the same way: column buffers (``buffers``: plain lists, one per column
but ``run_id``) filled row by row, turned into Arrow arrays once (``table``); the chunks, the
inventory and the listing ledger all go through these two.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from collector import staging
from collector.changes import CHANGES_SCHEMA
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
# The name of every data file the tool writes: part-<run_id>-NNNNN (L: a listing's chunk).
OWN_FILE = re.compile(r"part-\d{8}T\d{6}Z-[0-9a-f]{6}-L?\d{5}\.parquet")
PARQUET_OPTIONS: dict[str, Any] = {  # every file we write, a chunk's or a packed table's
    "compression": "zstd", "write_statistics": True,
    "use_dictionary": ["run_id", "project_id", "image_id", "status", "error_code"],
}
Columns = dict[str, list[Any]]


def buffers(schema: pa.Schema) -> Columns:
    """Empty column buffers for rows of ``schema``, by name (``run_id`` is added by ``table``)."""
    return {name: [] for name in schema.names if name != "run_id"}


def append(columns: Columns, row: dict[str, Any]) -> None:
    """Append one row, its values by column name, to ``columns``."""
    for name, column in columns.items():
        column.append(row[name])


def table(columns: Columns, schema: pa.Schema, run_id: str) -> pa.Table:
    """The one column builder: ``columns`` (as ``buffers``) and ``run_id`` as a table of
    ``schema``, each column converted once, to its declared type."""
    rows = len(next(iter(columns.values())))
    arrays = [pa.array([run_id] * rows, pa.string())]
    arrays += [pa.array(columns[f.name], f.type) for f in schema if f.name != "run_id"]
    return pa.Table.from_arrays(arrays, schema=schema)


def partition_key(table_name: str, snapshot_date: dt.date) -> str:
    """The key of one table's partition for one date, relative to the output."""
    return f"{table_name}/{staging.date_name(snapshot_date)}"


def partition(output: Path, table_name: str, snapshot_date: dt.date) -> Path:
    """The folder of one table's partition for one date, in a local output."""
    return output / partition_key(table_name, snapshot_date)


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
        """Refuse pandas; leave every other import to the next finder."""
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is hidden while pyarrow looks for it")


def write_parquet(store: Store, key: str, data: pa.Table) -> None:
    """Write ``key`` so that it exists only complete (see ``store``)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(data, buffer, row_group_size=1_048_576, **PARQUET_OPTIONS)
    store.write(key, buffer.getvalue())


def read_parquet(store: Store, key: str, columns: list[str] | None = None,
                 read_dictionary: list[str] | None = None) -> pa.Table:
    """One Parquet file of the store (``columns`` only; ``read_dictionary``: as dictionaries)."""
    with store.open(key) as handle:
        return pq.ParquetFile(handle, read_dictionary=read_dictionary).read(columns=columns)


def parquet_files(store: Store, folder: str) -> list[str]:
    """The keys of the Parquet files directly in ``folder``, sorted."""
    return [f"{folder}/{name}" for name in store.files(folder) if name.endswith(".parquet")]


def own_files(store: Store, folder: str) -> list[str]:
    """The keys of the data files directly in ``folder`` that the tool named (``OWN_FILE``)."""
    return [key for key in parquet_files(store, folder)
            if OWN_FILE.fullmatch(key.rsplit("/", 1)[1])]
