"""Each night of a comparison, read for ``changes``: IDs as int32 codes into one dictionary
per column, so joins, sets and sorts run on integers (a fraction of the memory strings take),
and a night's Parquet dictionaries are recoded, never expanded to strings."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

KEY = ["project_id", "image_id"]
SHARE = [*KEY, "member_id"]


@dataclass(frozen=True)
class Night:
    """One snapshot, as the comparison needs it."""

    status: pa.Table  # project_id, image_id, status
    members: pa.Table  # project_id, image_id, member_id, create_time, update_time
    listed_ok: frozenset[str] | None = None  # projects whose private listing was ok (discovery)




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


def night_codes(columns: list[pa.ChunkedArray]) -> tuple[pa.Array, list[pa.ChunkedArray]]:
    """One night's dictionary and codes for an ID column: the shared dictionary as it is
    when ``share_dictionaries`` made one, otherwise one hash pass (``_recode``)."""
    chunks = [chunk for column in columns for chunk in column.chunks]
    if chunks and all(pa.types.is_dictionary(chunk.type) for chunk in chunks):
        shared = {_identity(chunk.dictionary) for chunk in chunks}
        if len(shared) == 1:
            return chunks[0].dictionary, [pa.chunked_array(
                [chunk.indices for chunk in column.chunks], pa.int32()) for column in columns]
    return _recode(columns)


def merged(first: pa.Array, second: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``first`` followed by the values of ``second`` it lacks, and where each value of
    ``second`` is in that: night one's codes stand, night two's are mapped (one set lookup)."""
    found = pc.index_in(second, value_set=first)
    fresh = pc.is_null(found)
    new_codes = pc.add(pc.subtract(pc.cumulative_sum(fresh.cast(pa.int32())),
                                   pa.scalar(1, pa.int32())),
                       pa.scalar(len(first), pa.int32()))
    return (pa.concat_arrays([first, second.filter(fresh)]),
            pc.if_else(fresh, new_codes, found).cast(pa.int32()))


def encoded(before: Night, after: Night) -> tuple[Night, Night, dict[str, pa.Array]]:
    """Both nights with their ID columns as int32 codes into one dictionary per column, and
    the dictionaries: joins on integers take a fraction of the memory joins on strings do.
    Night one's codes are its own dictionary's; night two's are mapped into the merged one."""
    nights = [{"status": data.status, "members": data.members} for data in (before, after)]
    dictionaries = {}
    for name in SHARE:
        found = []
        for tables in nights:
            parts = [part for part, table in tables.items() if name in table.column_names]
            dictionary, columns = night_codes([tables[part][name] for part in parts])
            found.append((dictionary, dict(zip(parts, columns, strict=True))))
        (first, codes_one), (second, codes_two) = found
        dictionaries[name], mapping = merged(first, second)
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
