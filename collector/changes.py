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

Split by job: these rules (which images are compared, what a change is, the summary) are
here; reading each night into codes is ``nightcodes``; building the rows is ``sharediff``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from collector.errors import Status
from collector.nightcodes import KEY, SHARE, Night, encoded, share_dictionaries
from collector.sharediff import TS, key_of, share_rows

__all__ = ["CHANGES_SCHEMA", "CHANGE_KINDS", "KEY", "SHARE", "Night", "Summary", "compare",
           "lean_memory", "line_of", "share_dictionaries", "text", "uncomparable_images"]

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
        """The summary line's clause (``line_of`` of the manifest's ``changes``)."""
        return line_of(self.to_json())

    def to_json(self) -> dict[str, object]:
        """The manifest's ``changes``: the counts, or that this is a first snapshot."""
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


def _statuses(before: Night, after: Night, sizes: list[int]) -> pa.Table:
    """Every (project, image) of either night as its int64 ``key``, with ``p`` and ``d``
    statuses (null: absent): set lookups, not a hash join (Acero's keeps tens of MB)."""
    p_key, d_key = key_of(before.status, KEY, sizes[:2]), key_of(after.status, KEY, sizes[:2])
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


def compare(before: Night, after: Night, previous: dt.date, run_id: str,
            trusted: frozenset[str]) -> tuple[pa.Table, Summary]:
    """The change rows (``CHANGES_SCHEMA``) from ``before`` (date ``previous``) to ``after``."""
    before, after, dictionaries = encoded(before, after)
    sizes = [len(dictionaries[name]) for name in SHARE]
    compared, gone, new, unsettled = _fates(_statuses(before, after, sizes), after.listed_ok,
                                            sizes[1])
    uncomparable = len(unsettled)
    rows = share_rows(before, after, compared, gone, new, sizes)
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
    before, after, dictionaries = encoded(before, after)
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
