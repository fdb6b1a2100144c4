"""The published tables as a notebook reads them: one ``pyarrow.dataset`` per table, with
``snapshot_date`` a date.

``snapshot_date`` lives only in the folder names (``snapshot_date=YYYY-MM-DD``), so its type is
whatever a reader guesses: a string or a category in pyarrow and pandas, where comparing it with
a date finds nothing and says nothing. Declared here once, as the README's read calls declare it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from collector.schemas import TABLES
from collector.store import BucketStore, LocalStore, Store, parse_bucket_url

SNAPSHOT_DATE = pa.field("snapshot_date", pa.date32(), nullable=False)
PARTITIONING = ds.partitioning(pa.schema([SNAPSHOT_DATE]), flavor="hive")


def schema(table: str) -> pa.Schema:
    """A table's columns as its files have them, then ``snapshot_date`` (date32)."""
    return TABLES[table].append(SNAPSHOT_DATE)


def dataset(output: str | Path | Store, table: str, *,
            storage_endpoint: str | None = None, region: str | None = None) -> ds.Dataset:
    """Table ``table`` of the output ``output`` (a folder, ``s3://``/``obs://bucket/prefix``
    opened as a run opens it, from the environment's credentials, or an open store), every
    date: ``snapshot_date`` is date32, and every file is read with the declared schema.

    KeyError for a table the tool does not write."""
    columns = schema(table)
    store = _store(output, storage_endpoint, region)
    if isinstance(store, BucketStore):
        return ds.dataset(store.path(table), schema=columns, format="parquet",
                          partitioning=PARTITIONING, filesystem=store.fs)
    if isinstance(store, LocalStore):
        return ds.dataset(store.path(table), schema=columns, format="parquet",
                          partitioning=PARTITIONING)
    raise TypeError(f"not an output: {output!r}")


def _store(output: str | Path | Store, endpoint: str | None, region: str | None) -> Store:
    if not isinstance(output, str | Path):
        return output
    url = parse_bucket_url(str(output)) if isinstance(output, str) else None
    if url is None:
        return LocalStore(Path(output))
    from collector.build import open_store  # the run's storage settings and credentials
    from collector.config import Settings

    return open_store(Settings.of(storage_endpoint=endpoint, region=region), url)
