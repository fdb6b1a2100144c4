"""Reading the nights for the report: our files only (those a manifest of ours lists), each
night's members coded as integer ranks, image names looked up for the rows shown, and the
DuckDB queries printed under each table."""

# ruff: noqa: S608 (the queries are printed for a reader to run; this module executes none)
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.changes import share_dictionaries, text
from collector.manifest import is_ours
from collector.published import our_files, readable
from collector.schemas import TABLES, partition_key, read_parquet
from collector.store import Store


def finished_manifest(store: Store, day: dt.date) -> dict[str, object] | None:
    """The finished run that published ``day`` (the latest, when a date was re-run)."""
    found = []
    for name in store.files("runs"):
        if not name.endswith(".json"):
            continue
        try:
            doc = orjson.loads(store.read(f"runs/{name}"))
        except (OSError, orjson.JSONDecodeError):
            continue
        if is_ours(name, doc) and doc.get("status") == "finished" \
                and doc.get("snapshot_date") == day.isoformat():
            found.append(doc)
    return max(found, key=lambda d: str(d.get("ended_at") or "")) if found else None


@dataclass(frozen=True)
class Ours:
    """The output and the files our manifests list: the report reads those only, as diff
    does (``sink.our_files``); another tool's file or a copy is ignored with a warning."""

    store: Store
    listed: frozenset[str]


def read_table(ours: Ours, table: str, day: dt.date, columns: list[str],
               dictionary: list[str] | None = None) -> pa.Table:
    """A table's columns of one date, from our files only (``dictionary``: read as Parquet
    dictionaries); an empty table of its schema when the date has none."""
    keys = our_files(ours.store, partition_key(table, day), ours.listed)
    if not keys:
        return TABLES[table].empty_table().select(columns)
    parts = []
    for key in keys:
        with readable(ours.store, key):
            parts.append(read_parquet(ours.store, key, columns, read_dictionary=dictionary))
    return pa.concat_tables(parts)


def rows_in(ours: Ours, table: str, day: dt.date) -> int:
    """A partition's row count, from the Parquet footers alone."""
    total = 0
    for key in our_files(ours.store, partition_key(table, day), ours.listed):
        with readable(ours.store, key), ours.store.open(key) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def count_true(mask: pa.Array | pa.ChunkedArray) -> int:
    """How many of ``mask`` are true (a null counts as false)."""
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def trusted_mask(members: pa.ChunkedArray | pa.Array, trusted: frozenset[str]) -> pa.Array:
    """Which of ``members`` are trusted projects."""
    return pc.is_in(members, value_set=pa.array(sorted(trusted), pa.string()))


def first_rows(table: pa.Table, k: int, keys: list[tuple[str, str]]) -> pa.Table:
    """The first ``k`` rows in the order of ``keys`` (which end in unique IDs: a total order),
    without sorting the rest: a heap of ``k`` over a million rows."""
    if len(table) <= k:
        return table.sort_by(keys)
    return table.take(pc.select_k_unstable(table, k, sort_keys=keys)).sort_by(keys)


@dataclass(frozen=True)
class Coded:
    """A night's members with each ID column as int32 ranks into its sorted dictionary: the
    grouping, counting and top-N run on integers, and rank order is the IDs' string order
    (DuckDB's ORDER BY), so the page's rows are the printed queries' first rows."""

    table: pa.Table  # project_id, image_id, member_id (ranks), create_time
    ids: dict[str, pa.Array]  # the sorted dictionary of each ID column

    @classmethod
    def read(cls, ours: Ours, day: dt.date) -> Coded:
        """The members of ``day``, coded."""
        names = ["project_id", "image_id", "member_id"]
        (table,) = share_dictionaries([read_table(ours, "members", day, [*names, "create_time"],
                                                  names)], names)
        ids = {}
        for name in names:
            column = table[name]
            chunks = [c for c in column.chunks if len(c)]
            dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
            order = pc.sort_indices(dictionary)
            rank = pc.sort_indices(order).cast(pa.int32())  # the inverse permutation
            ids[name] = dictionary.take(order)
            table = table.set_column(table.column_names.index(name), name, pa.chunked_array(
                [rank.take(c.indices) for c in chunks], pa.int32()))
        return cls(table, ids)

    def codes(self, name: str, values: frozenset[str]) -> pa.Array:
        """The ranks of ``values`` that occur (for is_in on a coded column)."""
        return pc.drop_null(pc.index_in(pa.array(sorted(values), pa.string()),
                                        value_set=self.ids[name])).cast(pa.int32())

    def decoded(self, rows: pa.Table) -> list[dict[str, Any]]:
        """``rows`` (of this table or grouped from it) with their IDs as strings again."""
        for name in self.ids:
            if name in rows.column_names:
                rows = rows.set_column(rows.column_names.index(name), name,
                                       self.ids[name].take(rows[name]))
        listed: list[dict[str, Any]] = rows.to_pylist()
        return listed


class Sql:
    """The DuckDB queries printed under the tables: the output's globs, one date."""

    def __init__(self, output: str, run_id: str | None, day: dt.date) -> None:
        base = output.replace("obs://", "s3://", 1).replace("'", "''")
        self.base = base
        self.day = day.isoformat()
        self.trusted = (f"trusted AS (SELECT unnest(string_split(coalesce("
                        f"settings.trusted_projects, ''), ',')) AS member_id FROM "
                        f"read_json('{base}/runs/{run_id}.json'))" if run_id else
                        "trusted AS (SELECT '' AS member_id)")  # no manifest: none trusted
        self.names = (f"names AS (SELECT DISTINCT snapshot_date, project_id, image_id, "
                      f"image_name FROM {self.t('images')} WHERE image_type = 'private')")

    def t(self, table: str) -> str:
        """The glob of ``table`` over every date, as DuckDB reads it."""
        return f"read_parquet('{self.base}/{table}/*/*.parquet', hive_partitioning = true)"



class Names:
    """image_name by (project_id, image_id), from a night's ``images`` (discovery), looked up
    for the rows a page shows only: a million images stay an Arrow table."""

    def __init__(self, ours: Ours, day: dt.date) -> None:
        images = read_table(ours, "images", day, ["project_id", "image_id", "image_name",
                                                   "image_type"])
        self.images = images.filter(pc.equal(images["image_type"], text("private")))

    def lookup(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The names of ``keys`` (project, image) that tonight's private listing has."""
        if not keys or not len(self.images):
            return {}
        wanted = pa.array(sorted({image for _, image in keys}), pa.string())
        rows = self.images.filter(pc.is_in(self.images["image_id"], value_set=wanted))
        found: dict[tuple[str, str], str] = {}
        for row in rows.to_pylist():
            found.setdefault((row["project_id"], row["image_id"]), row["image_name"] or "")
        return found


def image_names(names: Names, rows: list[dict[str, object]],
                fallback: Names | None = None) -> list[str]:
    """The image names of ``rows`` (dicts with project_id and image_id), in order."""
    keys = [(str(r["project_id"]), str(r["image_id"])) for r in rows]
    found = names.lookup(keys)
    older = fallback.lookup([k for k in keys if k not in found]) if fallback else {}
    return [found.get(k) or older.get(k, "") for k in keys]



def plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary columns as plain strings (for a few rows)."""
    for n, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(n, f.name, table[f.name].cast(pa.string()))
    return table

