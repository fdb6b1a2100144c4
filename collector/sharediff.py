"""Building the change table's rows: each share one int64 key, the shares of the compared
images matched by set lookups and sorting over row indices (no hash join, no copy of a
million-row table), a slice of the images at a time; ``changes`` decides which images are
compared and what the rows mean."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from collector.nightcodes import KEY, SHARE, Night

TS = pa.timestamp("ms", tz="UTC")
SLICES = 4  # the compared images are matched a quarter at a time


def key_of(table: pa.Table, names: list[str], sizes: list[int],
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


def rows_of(image_key: pa.Array, wanted: pa.Array) -> pa.Array:
    """Indices of the member rows of the images ``wanted`` (a set lookup, not a join)."""
    return pc.indices_nonzero(pc.is_in(image_key, value_set=wanted))


def _unique_rows(table: pa.Table, rows: pa.Array, sizes: list[int]) -> tuple[pa.Array, pa.Array]:
    """``rows`` (indices) sorted by their share key, each key once (a share the API listed
    twice counts once), and those keys."""
    keys = key_of(table, SHARE, sizes, rows)
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


def compared_rows(old: pa.Table, old_images: pa.Array, cur: pa.Table, cur_images: pa.Array,
                  compared: pa.Array,
                  sizes: list[int]) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """``_matched`` over the images compared, a slice of them at a time: the images are
    disjoint, so are their shares, and the keys, sorts and sets of one slice are all the
    working memory there is (a million-row night stays under the 400 MB a diff may take)."""
    found: list[list[pa.Array]] = [[], [], [], []]
    step = max(1, len(compared) // SLICES + 1)
    for start in range(0, len(compared), step):
        part = compared.slice(start, step)
        for into, rows in zip(found, _matched(old, rows_of(old_images, part), cur,
                                              rows_of(cur_images, part), sizes),
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


def share_rows(before: Night, after: Night, compared: pa.Array, gone: pa.Array, new: pa.Array,
               sizes: list[int]) -> pa.Table:
    """The changed shares, their IDs still codes: added, removed and updated among the
    ``compared`` images, every share of a ``new`` image added, every former share of a
    ``gone`` one image_gone."""
    columns = [*SHARE, "create_time", "update_time"]
    old, cur = before.members.select(columns), after.members.select(columns)
    old_images, cur_images = key_of(old, KEY, sizes[:2]), key_of(cur, KEY, sizes[:2])
    added, removed, updated, was = compared_rows(old, old_images, cur, cur_images, compared,
                                                 sizes)
    parts = [
        _rows(cur.take(added), "added"),
        _rows(cur.take(rows_of(cur_images, new)), "added"),
        _rows(old.take(removed), "removed"),
        _rows(cur.take(updated), "updated", old["update_time"].take(was).cast(TS)),
        _rows(old.take(rows_of(old_images, gone)), "image_gone"),
    ]
    return pa.concat_tables(parts)
