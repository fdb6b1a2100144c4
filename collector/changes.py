"""What changed between two snapshots, computed with Arrow, only where both nights answered.

For each (project, image), by its status on the earlier date P and on date D:

    ok in P, ok in D                       its shares: added, removed, updated (update_time)
    ok in P, not_found in D, or no longer
      listed by a listing of D that was ok every share of P is image_gone
    not in P (or not_found), ok in D       every share of D is added
    failed, forbidden or invalid_id on
      either side; absent from D's input,
      or from a listing of D that failed   not compared: counted, never "removed" or "added"

so an image that failed tonight never looks as if its shares were revoked. ``trusted`` is true
for the partner projects we expect to share with. No Python loop over rows: IDs become int32
codes into one dictionary per column, shares one int64 key each, and set lookups, sorting and
compute kernels over row indices do the rest, so a million member rows a night take seconds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from collector.errors import Status

TS = pa.timestamp("ms", tz="UTC")
CHANGES_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("previous_snapshot_date", pa.date32(), nullable=False),
    pa.field("project_id", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("member_id", pa.string(), nullable=False),
    pa.field("change", pa.string(), nullable=False),
    pa.field("create_time", TS, nullable=False),
    pa.field("update_time", TS, nullable=False),
    pa.field("previous_update_time", TS),
    pa.field("trusted", pa.bool_(), nullable=False),
])
CHANGE_KINDS = ("added", "removed", "updated", "image_gone")
KEY = ["project_id", "image_id"]
SHARE = [*KEY, "member_id"]


@dataclass(frozen=True)
class Night:
    """One snapshot, as the comparison needs it."""

    status: pa.Table  # project_id, image_id, status
    members: pa.Table  # project_id, image_id, member_id, create_time, update_time
    listed_ok: frozenset[str] | None = None  # projects whose private listing was ok (discovery)


@dataclass
class Summary:
    """What the manifest and the summary line say about the changes."""

    previous: dt.date | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    untrusted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANGE_KINDS, 0))
    uncomparable_images: int = 0

    @property
    def untrusted_alerts(self) -> int:
        """Shares added or updated to a project that is not trusted."""
        return self.untrusted["added"] + self.untrusted["updated"]

    def line(self) -> str:
        return line_of(self.to_json())

    def to_json(self) -> dict[str, object]:
        if self.previous is None:
            return {"previous_snapshot_date": None, "first_snapshot": True}
        return {"previous_snapshot_date": self.previous.isoformat(), "first_snapshot": False,
                **self.counts, "untrusted": self.untrusted,
                "uncomparable_images": self.uncomparable_images}


def text(value: str) -> pa.Scalar:
    """A typed string scalar: a bare Python str in a compute call makes pyarrow look for
    pandas (49 MB) to convert it (see ``sink.skip_pandas_lookup``)."""
    return pa.scalar(value, pa.string())


def line_of(doc: dict[str, object]) -> str:
    """The summary line's clause for a manifest's ``changes``: ``changes since D: 3 added (1 to
    an untrusted project), 2 removed, 0 updated, 0 image_gone; 4 images not comparable``."""
    if doc.get("first_snapshot", True):
        return "first snapshot: no changes to compare"
    untrusted = doc["untrusted"]
    assert isinstance(untrusted, dict)
    return (f"changes since {doc['previous_snapshot_date']}: {doc['added']:,} added "
            f"({untrusted['added']:,} to an untrusted project), {doc['removed']:,} removed, "
            f"{doc['updated']:,} updated, {doc['image_gone']:,} image_gone; "
            f"{doc['uncomparable_images']:,} images not comparable")


def _values(column: pa.ChunkedArray) -> list[pa.Array]:
    """The distinct values a column may hold: its (unified) dictionary, or its strings."""
    if pa.types.is_dictionary(column.type):
        return [column.chunks[0].dictionary] if column.num_chunks else []
    return list(column.chunks)


def _code(column: pa.ChunkedArray, dictionary: pa.Array) -> pa.ChunkedArray:
    """int32 codes of ``column`` into ``dictionary``; a dictionary column (its chunks share one,
    see ``sink.read_night``) is re-coded through it, never expanded to strings."""
    if not pa.types.is_dictionary(column.type):
        return pa.chunked_array([pc.index_in(chunk, value_set=dictionary)
                                 for chunk in column.chunks], pa.int32())
    if not column.num_chunks:
        return pa.chunked_array([], pa.int32())
    mapping = pc.index_in(column.chunks[0].dictionary, value_set=dictionary)
    return pa.chunked_array([mapping.take(chunk.indices) for chunk in column.chunks],
                            pa.int32())


def _encoded(before: Night, after: Night) -> tuple[Night, Night, dict[str, pa.Array]]:
    """Both nights with their ID columns as int32 codes into one dictionary per column, and
    the dictionaries: joins on integers take a fraction of the memory joins on strings do."""
    tables = (before.status, after.status, before.members, after.members)
    dictionaries = {}
    for name in SHARE:
        values = [v.cast(pa.string()) for table in tables if name in table.column_names
                  for v in _values(table[name])]
        dictionaries[name] = pc.unique(pa.chunked_array(values, pa.string()))

    def codes(table: pa.Table) -> pa.Table:
        for name in SHARE:
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name,
                                         _code(table[name], dictionaries[name]))
        return table

    def night(data: Night) -> Night:
        listed = None if data.listed_ok is None else frozenset(
            pc.drop_null(pc.index_in(pa.array(sorted(data.listed_ok), pa.string()),
                                     value_set=dictionaries["project_id"])).to_pylist())
        return Night(codes(data.status), codes(data.members), listed)

    return night(before), night(after), dictionaries


def _statuses(before: Night, after: Night) -> pa.Table:
    """Every (project, image) of either night, with ``p`` and ``d`` statuses (null: absent)."""
    p = before.status.select([*KEY, "status"]).rename_columns([*KEY, "p"])
    d = after.status.select([*KEY, "status"]).rename_columns([*KEY, "d"])
    return p.join(d, keys=KEY, join_type="full outer")


def _fates(both: pa.Table, listed_ok: frozenset[str] | None) -> tuple[pa.Table, pa.Table,
                                                                          pa.Table, int]:
    """(compared, gone, new) image keys, and how many images are not comparable."""
    ok, missing = text(Status.OK.value), text(Status.NOT_FOUND.value)
    p, d = both["p"], both["d"]
    p_ok, d_ok = pc.equal(p, ok), pc.equal(d, ok)
    p_none = pc.or_kleene(pc.is_null(p), pc.equal(p, missing))
    d_none = pc.or_kleene(pc.is_null(d), pc.equal(d, missing))
    if listed_ok is None:
        unlisted = pc.is_null(d)  # absent from D's input: not comparable, not gone
        delisted = pc.and_kleene(unlisted, pa.scalar(False, pa.bool_()))
    else:
        in_ok_listing = pc.is_in(both["project_id"], pa.array(sorted(listed_ok), pa.int32()))
        delisted = pc.and_kleene(pc.is_null(d), in_ok_listing)
    compared = pc.and_kleene(p_ok, d_ok)
    gone = pc.and_kleene(p_ok, pc.or_kleene(pc.equal(d, missing), delisted))
    new = pc.and_kleene(p_none, d_ok)
    nothing = pc.and_kleene(p_none, d_none)  # no shares on either night: nothing to compare
    settled = pc.or_kleene(pc.or_kleene(compared, gone), pc.or_kleene(new, nothing))
    uncomparable = len(both) - pc.sum(pc.fill_null(settled, False).cast(pa.int64())).as_py()
    keys = both.select(KEY)
    return (keys.filter(pc.fill_null(compared, False)), keys.filter(pc.fill_null(gone, False)),
            keys.filter(pc.fill_null(new, False)), int(uncomparable))


def _key(table: pa.Table, names: list[str], sizes: list[int]) -> pa.Array:
    """One int64 per row from the int32 codes of ``names`` (a mixed radix of ``sizes``)."""
    key = pc.cast(table[names[0]], pa.int64())
    for name, size in zip(names[1:], sizes[1:], strict=True):
        key = pc.add(pc.multiply(key, pa.scalar(size, pa.int64())),
                     pc.cast(table[name], pa.int64()))
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


def _rows_of(members: pa.Table, image_key: pa.Array, keys: pa.Table,
             sizes: list[int]) -> pa.Array:
    """Indices of the member rows of the images in ``keys`` (a set lookup, not a join)."""
    wanted = _key(keys, KEY, sizes[:2])
    return pc.indices_nonzero(pc.is_in(image_key, value_set=wanted))


def _unique_rows(key: pa.Array, rows: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``rows`` (indices) sorted by their ``key``, each key once (a share the API listed twice
    counts once), and those keys."""
    keys = key.take(rows)
    order = pc.sort_indices(keys)
    keys, rows = keys.take(order), rows.take(order)
    if len(keys) < 2:
        return rows, keys
    first = pa.concat_arrays([pa.array([True], pa.bool_()),
                              pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))])
    return rows.filter(first), keys.filter(first)


def _matched(old: pa.Table, old_rows: pa.Array, cur: pa.Table, cur_rows: pa.Array,
             sizes: list[int]) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Row indices of the added (into ``cur``), removed (into ``old``) and updated shares (into
    ``cur``, and the matching ``old`` rows) among the shares of compared images: one int64 key
    per share, set lookups, and the kept shares lined up by sorting. Only index arrays and
    keys are built here: no copy of a million-row table, no hash join."""
    old_rows, old_keys = _unique_rows(_key(old, SHARE, sizes), old_rows)
    cur_rows, cur_keys = _unique_rows(_key(cur, SHARE, sizes), cur_rows)
    in_cur = pc.is_in(old_keys, value_set=cur_keys)
    in_old = pc.is_in(cur_keys, value_set=old_keys)
    kept_old, kept_cur = old_rows.filter(in_cur), cur_rows.filter(in_old)  # both in key order
    changed = pc.not_equal(old["update_time"].take(kept_old), cur["update_time"].take(kept_cur))
    return (cur_rows.filter(pc.invert(in_old)), old_rows.filter(pc.invert(in_cur)),
            kept_cur.filter(changed), kept_old.filter(changed))


def _rows(table: pa.Table, change: str, previous: pa.Array | None = None) -> pa.Table:
    n = len(table)
    return pa.table({
        "project_id": table["project_id"], "image_id": table["image_id"],
        "member_id": table["member_id"], "change": pa.array([change] * n, pa.string()),
        "create_time": table["create_time"].cast(TS), "update_time": table["update_time"].cast(TS),
        "previous_update_time": previous if previous is not None else pa.nulls(n, TS)})


def compare(before: Night, after: Night, previous: dt.date, run_id: str,
            trusted: frozenset[str]) -> tuple[pa.Table, Summary]:
    """The change rows (``CHANGES_SCHEMA``) from ``before`` (date ``previous``) to ``after``."""
    before, after, dictionaries = _encoded(before, after)
    compared, gone, new, uncomparable = _fates(_statuses(before, after), after.listed_ok)
    columns = [*SHARE, "create_time", "update_time"]
    sizes = [len(dictionaries[name]) for name in SHARE]
    old, cur = before.members.select(columns), after.members.select(columns)
    old_images, cur_images = _key(old, KEY, sizes[:2]), _key(cur, KEY, sizes[:2])
    added, removed, updated, was = _matched(
        old, _rows_of(old, old_images, compared, sizes),
        cur, _rows_of(cur, cur_images, compared, sizes), sizes)
    parts = [
        _rows(cur.take(added), "added"),
        _rows(cur.take(_rows_of(cur, cur_images, new, sizes)), "added"),
        _rows(old.take(removed), "removed"),
        _rows(cur.take(updated), "updated", old["update_time"].take(was).cast(TS)),
        _rows(old.take(_rows_of(old, old_images, gone, sizes)), "image_gone"),
    ]
    rows = pa.concat_tables(parts)
    for name in SHARE:  # back to the IDs themselves
        rows = rows.set_column(rows.column_names.index(name), name,
                               dictionaries[name].take(rows[name]))
    is_trusted = pc.is_in(rows["member_id"], pa.array(sorted(trusted), pa.string()))
    n = len(rows)
    table = pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "previous_snapshot_date": pa.array([previous] * n, pa.date32()),
        **{name: rows[name] for name in rows.column_names}, "trusted": is_trusted,
    }).cast(CHANGES_SCHEMA)
    table = table.sort_by([("change", "ascending"), ("project_id", "ascending"),
                           ("image_id", "ascending"), ("member_id", "ascending")])
    summary = Summary(previous, uncomparable_images=uncomparable)
    for kind in CHANGE_KINDS:
        of_kind = pc.equal(table["change"], text(kind))
        summary.counts[kind] = pc.sum(of_kind.cast(pa.int64())).as_py() or 0
        untrusted = pc.and_(of_kind, pc.invert(table["trusted"]))
        summary.untrusted[kind] = pc.sum(untrusted.cast(pa.int64())).as_py() or 0
    return table, summary
