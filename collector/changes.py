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
SLICES = 4  # the compared images are matched a quarter at a time


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


def lean_memory() -> None:
    """For what reads two whole snapshots: jemalloc, returning freed pages at once, where
    pyarrow has it (peak RSS near what Arrow holds; mimalloc keeps the Parquet reader's
    transient buffers). Arrays made before keep their pool. Without jemalloc, nothing
    changes."""
    pa.default_memory_pool().release_unused()  # what the pool before it kept, given back
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pass


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


def _identity(values: pa.Array) -> tuple[object, ...]:
    """Where an array's data lies: chunks that share one dictionary give it once."""
    return (values.offset, len(values),
            *(0 if buffer is None else buffer.address for buffer in values.buffers()))


def _recode(columns: list[pa.ChunkedArray]) -> tuple[pa.Array, list[pa.ChunkedArray]]:
    """One dictionary for every value of ``columns`` (string or dictionary chunks) and each
    column's int32 codes into it, from one hash pass over their distinct dictionaries: a
    dictionary chunk's codes are its indices mapped through its dictionary's encoding, so no
    column is expanded to strings."""
    sources: list[pa.Array] = []
    seen: dict[tuple[object, ...], int] = {}
    plans = []
    for column in columns:
        plan = []
        for chunk in column.chunks:
            is_dictionary = pa.types.is_dictionary(chunk.type)
            values = chunk.dictionary if is_dictionary else chunk
            source = seen.setdefault(_identity(values), len(sources)) if len(values) else -1
            if source == len(sources):
                sources.append(values)
            plan.append((source, chunk.indices if is_dictionary else None))
        plans.append(plan)
    encoded = pc.dictionary_encode(pa.chunked_array(sources, pa.string()))
    dictionary = (encoded.chunks[0].dictionary if encoded.num_chunks
                  else pa.array([], pa.string()))
    maps = [chunk.indices for chunk in encoded.chunks]  # one a source: none is empty
    nothing = pa.array([], pa.int32())
    return dictionary, [pa.chunked_array([nothing if source < 0 else maps[source]
                                          if indices is None else maps[source].take(indices)
                                          for source, indices in plan], pa.int32())
                        for plan in plans]


def share_dictionaries(tables: list[pa.Table], names: list[str]) -> list[pa.Table]:
    """``tables`` with each ID column of ``names`` a dictionary column whose chunks, in every
    table that has it, share one dictionary of distinct values: how ``sink.read_night`` hands
    a night to ``compare``, which then codes it without hashing it again
    (``unify_dictionaries`` takes twice the peak memory and unifies one table only)."""
    tables = list(tables)
    for name in names:
        having = [n for n, table in enumerate(tables) if name in table.column_names]
        dictionary, columns = _recode([tables[n][name] for n in having])
        for n, codes in zip(having, columns, strict=True):
            tables[n] = tables[n].set_column(
                tables[n].column_names.index(name), name, pa.chunked_array(
                    [pa.DictionaryArray.from_arrays(chunk, dictionary) for chunk in codes.chunks],
                    pa.dictionary(pa.int32(), pa.string())))
    return tables


def _night_codes(columns: list[pa.ChunkedArray]) -> tuple[pa.Array, list[pa.ChunkedArray]]:
    """One night's dictionary and codes for an ID column: the shared dictionary as it is
    when ``share_dictionaries`` made one, otherwise one hash pass (``_recode``)."""
    chunks = [chunk for column in columns for chunk in column.chunks]
    if chunks and all(pa.types.is_dictionary(chunk.type) for chunk in chunks):
        shared = {_identity(chunk.dictionary) for chunk in chunks}
        if len(shared) == 1:
            return chunks[0].dictionary, [pa.chunked_array(
                [chunk.indices for chunk in column.chunks], pa.int32()) for column in columns]
    return _recode(columns)


def _merged(first: pa.Array, second: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``first`` followed by the values of ``second`` it lacks, and where each value of
    ``second`` is in that: night one's codes stand, night two's are mapped (one set lookup)."""
    found = pc.index_in(second, value_set=first)
    fresh = pc.is_null(found)
    new_codes = pc.add(pc.subtract(pc.cumulative_sum(fresh.cast(pa.int32())),
                                   pa.scalar(1, pa.int32())),
                       pa.scalar(len(first), pa.int32()))
    return (pa.concat_arrays([first, second.filter(fresh)]),
            pc.if_else(fresh, new_codes, found).cast(pa.int32()))


def _encoded(before: Night, after: Night) -> tuple[Night, Night, dict[str, pa.Array]]:
    """Both nights with their ID columns as int32 codes into one dictionary per column, and
    the dictionaries: joins on integers take a fraction of the memory joins on strings do.
    Night one's codes are its own dictionary's; night two's are mapped into the merged one."""
    nights = [{"status": data.status, "members": data.members} for data in (before, after)]
    dictionaries = {}
    for name in SHARE:
        found = []
        for tables in nights:
            parts = [part for part, table in tables.items() if name in table.column_names]
            dictionary, columns = _night_codes([tables[part][name] for part in parts])
            found.append((dictionary, dict(zip(parts, columns, strict=True))))
        (first, codes_one), (second, codes_two) = found
        dictionaries[name], mapping = _merged(first, second)
        codes_two = {part: pa.chunked_array([mapping.take(chunk) for chunk in column.chunks],
                                            pa.int32()) for part, column in codes_two.items()}
        for tables, codes in zip(nights, (codes_one, codes_two), strict=True):
            for part, column in codes.items():
                table = tables[part]
                tables[part] = table.set_column(table.column_names.index(name), name, column)

    def night(tables: dict[str, pa.Table], listed_ok: frozenset[str] | None) -> Night:
        listed = None if listed_ok is None else frozenset(
            pc.drop_null(pc.index_in(pa.array(sorted(listed_ok), pa.string()),
                                     value_set=dictionaries["project_id"])).to_pylist())
        return Night(tables["status"], tables["members"], listed)

    return (night(nights[0], before.listed_ok), night(nights[1], after.listed_ok),
            dictionaries)


def _statuses(before: Night, after: Night, sizes: list[int]) -> pa.Table:
    """Every (project, image) of either night as its int64 ``key``, with ``p`` and ``d``
    statuses (null: absent): set lookups, not a hash join (Acero's keeps tens of MB)."""
    p_key, d_key = _key(before.status, KEY, sizes[:2]), _key(after.status, KEY, sizes[:2])
    keys = pc.unique(pa.concat_arrays([p_key, d_key]))
    return pa.table({
        "key": keys,
        "p": before.status["status"].take(pc.index_in(keys, value_set=p_key)),
        "d": after.status["status"].take(pc.index_in(keys, value_set=d_key))})


def _fates(both: pa.Table, listed_ok: frozenset[object] | None,
           images: int) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """(compared, gone, new, not comparable) image keys; a key's project is its code
    ``key // images``."""
    ok, missing = text(Status.OK.value), text(Status.NOT_FOUND.value)
    p, d = both["p"], both["d"]
    p_ok, d_ok = pc.equal(p, ok), pc.equal(d, ok)
    p_none = pc.or_kleene(pc.is_null(p), pc.equal(p, missing))
    d_none = pc.or_kleene(pc.is_null(d), pc.equal(d, missing))
    if listed_ok is None:
        unlisted = pc.is_null(d)  # absent from D's input: not comparable, not gone
        delisted = pc.and_kleene(unlisted, pa.scalar(False, pa.bool_()))
    else:
        project = pc.divide(both["key"], pa.scalar(images, pa.int64()))
        in_ok_listing = pc.is_in(project, pa.array(list(listed_ok), pa.int64()))
        delisted = pc.and_kleene(pc.is_null(d), in_ok_listing)
    compared = pc.and_kleene(p_ok, d_ok)
    gone = pc.and_kleene(p_ok, pc.or_kleene(pc.equal(d, missing), delisted))
    new = pc.and_kleene(p_none, d_ok)
    nothing = pc.and_kleene(p_none, d_none)  # no shares on either night: nothing to compare
    settled = pc.or_kleene(pc.or_kleene(compared, gone), pc.or_kleene(new, nothing))
    keys = both["key"].combine_chunks()
    return (keys.filter(pc.fill_null(compared, False)), keys.filter(pc.fill_null(gone, False)),
            keys.filter(pc.fill_null(new, False)),
            keys.filter(pc.invert(pc.fill_null(settled, False))))


def _key(table: pa.Table, names: list[str], sizes: list[int],
         rows: pa.Array | None = None) -> pa.Array:
    """One int64 per row (of ``rows`` only, when given) from the int32 codes of ``names`` (a
    mixed radix of ``sizes``)."""
    key: pa.Array | None = None
    for name, size in zip(names, sizes, strict=True):
        column = table[name] if rows is None else table[name].take(rows)
        column = pc.cast(column, pa.int64())
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        key = column if key is None else pc.add(pc.multiply(key, pa.scalar(size, pa.int64())),
                                                column)
    assert key is not None
    return key


def _rows_of(image_key: pa.Array, wanted: pa.Array) -> pa.Array:
    """Indices of the member rows of the images ``wanted`` (a set lookup, not a join)."""
    return pc.indices_nonzero(pc.is_in(image_key, value_set=wanted))


def _unique_rows(table: pa.Table, rows: pa.Array, sizes: list[int]) -> tuple[pa.Array, pa.Array]:
    """``rows`` (indices) sorted by their share key, each key once (a share the API listed
    twice counts once), and those keys."""
    keys = _key(table, SHARE, sizes, rows)
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
    old_rows, old_keys = _unique_rows(old, old_rows, sizes)
    cur_rows, cur_keys = _unique_rows(cur, cur_rows, sizes)
    in_cur = pc.is_in(old_keys, value_set=cur_keys)
    in_old = pc.is_in(cur_keys, value_set=old_keys)
    kept_old, kept_cur = old_rows.filter(in_cur), cur_rows.filter(in_old)  # both in key order
    changed = pc.not_equal(old["update_time"].take(kept_old), cur["update_time"].take(kept_cur))
    return (cur_rows.filter(pc.invert(in_old)), old_rows.filter(pc.invert(in_cur)),
            kept_cur.filter(changed), kept_old.filter(changed))


def _compared(old: pa.Table, old_images: pa.Array, cur: pa.Table, cur_images: pa.Array,
              compared: pa.Array,
              sizes: list[int]) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """``_matched`` over the images compared, a slice of them at a time: the images are
    disjoint, so are their shares, and the keys, sorts and sets of one slice are all the
    working memory there is (a million-row night stays under the 400 MB a diff may take)."""
    found: list[list[pa.Array]] = [[], [], [], []]
    step = max(1, len(compared) // SLICES + 1)
    for start in range(0, len(compared), step):
        part = compared.slice(start, step)
        for into, rows in zip(found, _matched(old, _rows_of(old_images, part), cur,
                                              _rows_of(cur_images, part), sizes),
                              strict=True):
            into.append(rows)
    added, removed, updated, was = (pa.chunked_array(rows, pa.uint64()).combine_chunks()
                                    for rows in found)
    return added, removed, updated, was


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
    sizes = [len(dictionaries[name]) for name in SHARE]
    compared, gone, new, unsettled = _fates(_statuses(before, after, sizes), after.listed_ok,
                                            sizes[1])
    uncomparable = len(unsettled)
    columns = [*SHARE, "create_time", "update_time"]
    old, cur = before.members.select(columns), after.members.select(columns)
    old_images, cur_images = _key(old, KEY, sizes[:2]), _key(cur, KEY, sizes[:2])
    added, removed, updated, was = _compared(old, old_images, cur, cur_images, compared, sizes)
    parts = [
        _rows(cur.take(added), "added"),
        _rows(cur.take(_rows_of(cur_images, new)), "added"),
        _rows(old.take(removed), "removed"),
        _rows(cur.take(updated), "updated", old["update_time"].take(was).cast(TS)),
        _rows(old.take(_rows_of(old_images, gone)), "image_gone"),
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


def uncomparable_images(before: Night, after: Night) -> pa.Table:
    """The images ``compare`` counts as not comparable, by the same rule: ``project_id``,
    ``image_id``, and their ``before`` and ``after`` statuses (null: absent that night), sorted
    by project and image. Members are not needed: the statuses and listings decide."""
    before, after, dictionaries = _encoded(before, after)
    sizes = [len(dictionaries[name]) for name in SHARE]
    both = _statuses(before, after, sizes)
    *_, unsettled = _fates(both, after.listed_ok, sizes[1])
    rows = both.filter(pc.is_in(both["key"], value_set=unsettled))
    images = pa.scalar(sizes[1], pa.int64())
    project = pc.divide(rows["key"], images)
    image = pc.subtract(rows["key"], pc.multiply(project, images))
    table = pa.table({
        "project_id": dictionaries["project_id"].take(project.cast(pa.int32())),
        "image_id": dictionaries["image_id"].take(image.cast(pa.int32())),
        "before": rows["p"], "after": rows["d"]})
    return table.sort_by([("project_id", "ascending"), ("image_id", "ascending")])
