"""The morning report's view model: one snapshot's published tables and manifests, read through
the ``Store`` and turned into figures, top-N tables and trend series by the rules the summary
line (``pipeline.summary_line``) and ``diff`` (``changes``) already use; no HTML here.

Bounded at any size: every table is its first ``TOP`` rows (the rest stays in Parquet, and
each table carries the DuckDB query that gives all of it); only a night's ID columns are read
as a whole, as Parquet dictionaries.
"""

# ruff: noqa: S608 (the queries are printed for a reader to run; this module executes none)
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.changes import (
    CHANGE_KINDS,
    line_of,
    share_dictionaries,
    text,
    uncomparable_images,
)
from collector.errors import Status, UsageError
from collector.manifest import is_ours, listed_files
from collector.published import our_files, published_dates, published_night, readable
from collector.schemas import TABLES, partition_key, read_parquet
from collector.store import Store, reason

TOP = 100  # rows of a table in the page; the query under it gives them all
TOP_SMALL = 20  # the "most" tables
UNANSWERED = (Status.FAILED.value, Status.FORBIDDEN.value)
NOT_COMPARED = (Status.FAILED.value, Status.FORBIDDEN.value, Status.INVALID_ID.value)
Cell = str | int | float | dt.datetime | None


@dataclass(frozen=True)
class Figure:
    """One number (or word) of the page, under a stable key the tests look up."""

    key: str
    label: str
    value: int | float | str
    unit: str = ""


@dataclass(frozen=True)
class Table:
    """The first rows of a list, how many there are in all, and the query for all of them."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    total: int
    query: str
    numeric: frozenset[str] = frozenset()
    untrusted: list[bool] = field(default_factory=list)  # per row: a share to an untrusted one
    empty: str = "none"


@dataclass(frozen=True)
class Series:
    """One trend line: a value per night."""

    key: str
    title: str
    points: list[tuple[dt.date, int]]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    lead: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    snapshot_date: dt.date
    output: str
    run_id: str | None
    complete: bool
    verdict: str
    sections: list[Section]


def count_of(n: int, noun: str) -> str:
    """``n`` things in a sentence: "1 image", "2 images" (nouns of the page add an s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _manifest(store: Store, day: dt.date) -> dict[str, object] | None:
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


def _read(ours: Ours, table: str, day: dt.date, columns: list[str],
          dictionary: list[str] | None = None) -> pa.Table:
    keys = our_files(ours.store, partition_key(table, day), ours.listed)
    if not keys:
        return TABLES[table].empty_table().select(columns)
    parts = []
    for key in keys:
        with readable(ours.store, key):
            parts.append(read_parquet(ours.store, key, columns, read_dictionary=dictionary))
    return pa.concat_tables(parts)


def _rows_in(ours: Ours, table: str, day: dt.date) -> int:
    """A partition's row count, from the Parquet footers alone."""
    total = 0
    for key in our_files(ours.store, partition_key(table, day), ours.listed):
        with readable(ours.store, key), ours.store.open(key) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def _trusted_mask(members: pa.ChunkedArray | pa.Array, trusted: frozenset[str]) -> pa.Array:
    return pc.is_in(members, value_set=pa.array(sorted(trusted), pa.string()))


def _top(table: pa.Table, k: int, keys: list[tuple[str, str]]) -> pa.Table:
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
        names = ["project_id", "image_id", "member_id"]
        (table,) = share_dictionaries([_read(ours, "members", day, [*names, "create_time"],
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


class _Sql:
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
        return f"read_parquet('{self.base}/{table}/*/*.parquet', hive_partitioning = true)"


def build_report(store: Store, day: dt.date, nights: int = 30,
                 older_than_days: int = 365) -> Report:
    """The report of the published snapshot ``day``; UsageError when it has none."""
    try:
        dates = published_dates(store)
    except OSError as exc:
        raise UsageError(f"output {store.url}: cannot be read ({reason(exc)})") from None
    if day not in dates:
        raise UsageError(f"snapshot {day.isoformat()}: no finished snapshot in {store.url}")
    manifest = _manifest(store, day) or {}
    run_id = str(manifest["run_id"]) if manifest.get("run_id") else None
    settings = manifest.get("settings")
    raw = settings.get("trusted_projects") if isinstance(settings, dict) else None
    trusted = frozenset(str(raw).split(",")) if raw else frozenset()
    sql = _Sql(store.url, run_id, day)
    ours = Ours(store, listed_files(store))
    names = Names(ours, day)
    status = _read(ours, "image_status", day, ["project_id", "image_id", "status",
                                                 "http_status", "error_code", "error_msg",
                                                 "attempts"],
                   ["project_id", "image_id", "status", "error_code"])
    status = status.set_column(2, "status", status["status"].cast(pa.string()))
    members = Coded.read(ours, day)
    glance, complete, verdict = _glance(ours, day, manifest, status, members, sql, names)
    exposure = _exposure(day, members, trusted, older_than_days, sql, names)
    not_compared = _plain(status.filter(pc.is_in(status["status"],
                                                 value_set=pa.array(NOT_COMPARED))))
    del status, members  # the comparison reads both nights' statuses: only one night at a time
    earlier = [d for d in dates if d < day]
    changes = _changes(ours, day, earlier[-1] if earlier else None, manifest, not_compared,
                       sql, names)
    trends = _trends(ours, [d for d in dates if d <= day][-nights:], trusted, sql)
    return Report(day, store.url, run_id, complete, verdict,
                  [glance, changes, exposure, trends])


class Names:
    """image_name by (project_id, image_id), from a night's ``images`` (discovery), looked up
    for the rows a page shows only: a million images stay an Arrow table."""

    def __init__(self, ours: Ours, day: dt.date) -> None:
        images = _read(ours, "images", day, ["project_id", "image_id", "image_name",
                                              "image_type"])
        self.images = images.filter(pc.equal(images["image_type"], text("private")))

    def lookup(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys or not len(self.images):
            return {}
        wanted = pa.array(sorted({image for _, image in keys}), pa.string())
        rows = self.images.filter(pc.is_in(self.images["image_id"], value_set=wanted))
        found: dict[tuple[str, str], str] = {}
        for row in rows.to_pylist():
            found.setdefault((row["project_id"], row["image_id"]), row["image_name"] or "")
        return found


def _named(names: Names, rows: list[dict[str, object]],
           fallback: Names | None = None) -> list[str]:
    """The image names of ``rows`` (dicts with project_id and image_id), in order."""
    keys = [(str(r["project_id"]), str(r["image_id"])) for r in rows]
    found = names.lookup(keys)
    older = fallback.lookup([k for k in keys if k not in found]) if fallback else {}
    return [found.get(k) or older.get(k, "") for k in keys]


def _glance(ours: Ours, day: dt.date, manifest: dict[str, object], status: pa.Table,
            coded: Coded, sql: _Sql, names: Names) -> tuple[Section, bool, str]:
    members = coded.table
    by_status = dict.fromkeys((s.value for s in Status), 0)
    counted = status.group_by("status").aggregate([("status", "count")]).to_pydict()
    by_status.update(zip(counted["status"], counted["status_count"], strict=True))
    listings = _read(ours, "listing_status", day, ["region", "project_id", "image_type",
                                                    "status", "http_status", "error_code",
                                                    "error_msg"])
    bad_listings = listings.filter(pc.not_equal(listings["status"], text(Status.OK.value)))
    unanswered = sum(by_status[s] for s in UNANSWERED)
    exit_code = manifest.get("exit_code")
    seconds = _seconds(manifest)
    images = len(status)
    figures = [
        Figure("exit_code", "exit code", exit_code if isinstance(exit_code, int) else "?"),
        Figure("images", "images", images),
        *(Figure(s.value, s.value, by_status[s.value]) for s in Status),
        Figure("listings", "listings", len(listings)),
        Figure("listings_not_ok", "listings not ok", len(bad_listings)),
        Figure("shared_images", "shared images",
               len(members.group_by(["project_id", "image_id"]).aggregate([]))),
        Figure("shares", "shares (member rows)", len(members)),
        Figure("receiving_projects", "projects receiving shares",
               len(pc.unique(members["member_id"]))),
        Figure("seconds", "duration", round(seconds, 1), "s"),
        Figure("requests", "requests", _int(manifest.get("requests"))),
        Figure("retries", "retries", _int(manifest.get("retries"))),
        Figure("throttled_429", "throttled (429)", _int(manifest.get("throttled_429"))),
        Figure("images_per_second", "images per second", round(images / seconds)),
    ]
    complete = not unanswered and not len(bad_listings) and exit_code in (0, 4)
    if not manifest:
        verdict = (f"No finished run manifest in runs/ describes {day}: the figures below are "
                   "the tables'.")
    elif complete:
        verdict = (f"Complete: every image and listing got a definitive answer (exit "
                   f"{exit_code}).")
    else:
        verdict = (f"Incomplete: {count_of(unanswered, 'image')} failed or forbidden and "
                   f"{count_of(len(bad_listings), 'listing')} not ok (exit {exit_code}); their "
                   "shares are not known tonight.")
    failed = _plain(status.filter(pc.is_in(status["status"], value_set=pa.array(UNANSWERED))))
    failed = failed.append_column("code", pc.fill_null(failed["error_code"], text("")))
    top = _top(failed, TOP, [("status", "ascending"), ("code", "ascending"),
                             ("project_id", "ascending"), ("image_id", "ascending")]).to_pylist()
    rows: list[tuple[Cell, ...]] = [
        (name, r["image_id"], r["project_id"], r["status"], r["http_status"], r["error_code"],
         r["error_msg"], r["attempts"]) for name, r in zip(_named(names, top), top, strict=True)]
    reasons = failed.group_by(["status", "code"]).aggregate([("image_id", "count")])
    reasons = reasons.sort_by([("image_id_count", "descending"), ("status", "ascending"),
                               ("code", "ascending")])
    bad_listings = bad_listings.sort_by([("region", "ascending"), ("project_id", "ascending"),
                                         ("image_type", "ascending")])
    tables = [
        Table("reasons", "Why images have no answer", ("status", "error_code", "images"),
              [(r["status"], r["code"], r["image_id_count"])
               for r in reasons.slice(0, TOP).to_pylist()], len(reasons),
              f"SELECT status, coalesce(error_code, '') AS error_code, count(*) AS images "
              f"FROM {sql.t('image_status')} WHERE snapshot_date = '{sql.day}' AND status IN "
              f"('failed', 'forbidden') GROUP BY ALL ORDER BY images DESC, status, error_code",
              frozenset({"images"}), empty="none: every image got a definitive answer"),
        Table("failed_images", "Images without an answer",
              ("image_name", "image_id", "project_id", "status", "http_status", "error_code",
               "error_msg", "attempts"), rows, len(failed),
              f"WITH {sql.names} SELECT coalesce(n.image_name, '') AS image_name, s.image_id, "
              f"s.project_id, s.status, s.http_status, s.error_code, s.error_msg, s.attempts "
              f"FROM {sql.t('image_status')} s LEFT JOIN names n USING (snapshot_date, "
              f"project_id, image_id) WHERE snapshot_date = '{sql.day}' AND s.status IN "
              f"('failed', 'forbidden') ORDER BY s.status, coalesce(s.error_code, ''), "
              f"s.project_id, s.image_id",
              frozenset({"http_status", "attempts"}), empty="none"),
        Table("failed_listings", "Listings not ok",
              ("region", "project_id", "image_type", "status", "http_status", "error_code",
               "error_msg"), [tuple(r.values()) for r in bad_listings.slice(0, TOP).to_pylist()],
              len(bad_listings),
              f"SELECT region, project_id, image_type, status, http_status, error_code, "
              f"error_msg FROM {sql.t('listing_status')} WHERE snapshot_date = '{sql.day}' "
              f"AND status <> 'ok' ORDER BY region, project_id, image_type",
              frozenset({"http_status"}), empty="none (or not a discovery run)"),
    ]
    lead = (f"Run {manifest.get('run_id', '?')}, from {_when(manifest.get('started_at'))} to "
            f"{_when(manifest.get('ended_at'))} UTC, input {manifest.get('input', '?')}.")
    return Section("glance", "The night at a glance", lead, figures, tables), complete, verdict


def _plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary columns as plain strings (for a few rows)."""
    for n, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(n, f.name, table[f.name].cast(pa.string()))
    return table


def _seconds(manifest: dict[str, object]) -> float:
    """The run's duration as the summary line has it (``RunRecord.seconds``: end minus start,
    exactly; the manifest's ``seconds`` is rounded to 3 decimals)."""
    try:
        start = dt.datetime.fromisoformat(str(manifest["started_at"]))
        end = dt.datetime.fromisoformat(str(manifest["ended_at"]))
    except (KeyError, ValueError):
        return _float(manifest.get("seconds")) or 1e-9
    return max((end - start).total_seconds(), 1e-9)


def _when(value: object) -> str:
    """A manifest's ISO time as ``2026-12-01 02:00:00`` (UTC)."""
    try:
        return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "?"


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _changes(ours: Ours, day: dt.date, previous: dt.date | None, manifest: dict[str, object],
             status: pa.Table, sql: _Sql, names: Names) -> Section:
    """``status``: tonight's images that were failed, forbidden or invalid (for their codes)."""
    if previous is None:
        return Section("changes", "What changed", "The first snapshot in this output: nothing "
                       "to compare with yet.")
    table = _read(ours, "changes", day, ["previous_snapshot_date", "project_id", "image_id",
                                          "member_id", "change", "create_time", "update_time",
                                          "previous_update_time", "trusted"])
    figures = []
    for kind in CHANGE_KINDS:
        of_kind = pc.equal(table["change"], text(kind))
        figures.append(Figure(kind, kind, _count(of_kind)))
        figures.append(Figure(f"untrusted_{kind}", f"{kind}, to untrusted projects",
                              _count(pc.and_(of_kind, pc.invert(table["trusted"])))))
    old_names = Names(ours, previous)
    before, after = (published_night(ours.store, d, members=False) for d in (previous, day))
    unsettled = uncomparable_images(before, after)
    figures.append(Figure("uncomparable_images", "images not comparable", len(unsettled)))
    top = _top(table, TOP, [("trusted", "ascending"), ("update_time", "descending"),
                            ("change", "ascending"), ("project_id", "ascending"),
                            ("image_id", "ascending"), ("member_id", "ascending")]).to_pylist()
    rows: list[tuple[Cell, ...]] = [
        ("trusted" if r["trusted"] else "untrusted", r["change"], name, r["image_id"],
         r["project_id"], r["member_id"], r["update_time"])
        for name, r in zip(_named(names, top, old_names), top, strict=True)]
    unsettled_top = unsettled.slice(0, TOP).to_pylist()
    wanted = pa.array(sorted({str(r["image_id"]) for r in unsettled_top}), pa.string())
    shown = status.filter(pc.is_in(status["image_id"], value_set=wanted)).to_pylist()
    codes = {(r["project_id"], r["image_id"]): r["error_code"] for r in shown}
    why_rows: list[tuple[Cell, ...]] = [
        (name, r["image_id"], r["project_id"], r["before"] or "absent", r["after"] or "absent",
         _why(r["before"], r["after"], codes.get((r["project_id"], r["image_id"])), previous,
              after.listed_ok, str(r["project_id"])))
        for name, r in zip(_named(names, unsettled_top, old_names), unsettled_top,
                           strict=True)]
    summary = manifest.get("changes")
    lead = (f"Since {previous}; the run's summary line said: {line_of(summary)}."
            if isinstance(summary, dict) else f"Since {previous}, from the change table.")
    c, s = sql.t("changes"), sql.t("image_status")
    return Section("changes", "What changed", lead, figures, [
        Table("changes", f"Changed shares since {previous}, untrusted first",
              ("trust", "change", "image_name", "image_id", "project_id", "member_id",
               "when (UTC)"), rows, len(table),
              f"WITH {sql.names} SELECT CASE WHEN c.trusted THEN 'trusted' ELSE 'untrusted' "
              f"END AS trust, c.change, coalesce(n.image_name, o.image_name, '') AS image_name, "
              f"c.image_id, c.project_id, c.member_id, c.update_time FROM {c} c LEFT JOIN "
              f"names n ON n.snapshot_date = c.snapshot_date AND n.project_id = c.project_id "
              f"AND n.image_id = c.image_id LEFT JOIN names o ON o.snapshot_date = "
              f"c.previous_snapshot_date AND o.project_id = c.project_id AND o.image_id = "
              f"c.image_id WHERE c.snapshot_date = '{sql.day}' ORDER BY c.trusted, "
              f"c.update_time DESC, c.change, c.project_id, c.image_id, c.member_id",
              untrusted=[not r["trusted"] for r in top], empty="no share changed"),
        Table("uncomparable", "Images not comparable, and why",
              ("image_name", "image_id", "project_id", str(previous), str(day), "why"),
              why_rows, len(unsettled),
              f"WITH {sql.names}, p AS (SELECT * FROM {s} WHERE snapshot_date = '{previous}'), "
              f"d AS (SELECT * FROM {s} WHERE snapshot_date = '{sql.day}'), ok AS (SELECT "
              f"project_id FROM {sql.t('listing_status')} WHERE snapshot_date = '{sql.day}' AND "
              f"image_type = 'private' AND status = 'ok'), listed AS (SELECT count(*) AS n FROM "
              f"{sql.t('listing_status')} WHERE snapshot_date = '{sql.day}') SELECT coalesce(n."
              f"image_name, o.image_name, '') AS image_name, image_id, project_id, coalesce("
              f"p.status, 'absent') AS before, coalesce(d.status, 'absent') AS after, CASE WHEN "
              f"d.status IN ('failed', 'forbidden', 'invalid_id') THEN d.status || ' tonight' "
              f"|| coalesce(' (' || d.error_code || ')', '') WHEN p.status IN ('failed', "
              f"'forbidden', 'invalid_id') THEN p.status || ' on {previous}' WHEN (SELECT n "
              f"FROM listed) > 0 THEN 'its project''s listing was not ok tonight' ELSE 'not in "
              f"tonight''s input' END AS why FROM p FULL JOIN d USING (project_id, image_id) "
              f"LEFT JOIN names n ON n.snapshot_date = '{sql.day}' AND n.project_id = "
              f"project_id AND n.image_id = image_id LEFT JOIN names o ON o.snapshot_date = "
              f"'{previous}' AND o.project_id = project_id AND o.image_id = image_id WHERE "
              f"p.status IN ('failed', 'forbidden', 'invalid_id') OR d.status IN ('failed', "
              f"'forbidden', 'invalid_id') OR (p.status = 'ok' AND d.status IS NULL AND "
              f"project_id NOT IN (SELECT project_id FROM ok)) ORDER BY project_id, image_id",
              empty="none: every image was compared"),
    ])


def _why(before: str | None, after: str | None, code: str | None, previous: dt.date,
         listed_ok: frozenset[str] | None, project: str) -> str:
    """Words for why ``changes`` did not compare an image (the rule itself is ``changes``')."""
    if after in NOT_COMPARED:
        return f"{after} tonight" + (f" ({code})" if code else "")
    if before in NOT_COMPARED:
        return f"{before} on {previous}"
    if after is None and listed_ok is not None:
        return "its project's listing was not ok tonight"
    return "not in tonight's input"


def _exposure(day: dt.date, coded: Coded, trusted: frozenset[str], older_than_days: int,
              sql: _Sql, names: Names) -> Section:
    members = coded.table
    untrusted = pc.invert(pc.is_in(members["member_id"],
                                   value_set=coded.codes("member_id", trusted)))
    members = members.append_column("untrusted", untrusted.cast(pa.int64()))
    per_image = members.group_by(["project_id", "image_id"]).aggregate(
        [("member_id", "count"), ("untrusted", "sum")])
    exposed = per_image.filter(pc.greater(per_image["untrusted_sum"], 0))
    exposed_top = _top(exposed, TOP, [("untrusted_sum", "descending"),
                                      ("project_id", "ascending"), ("image_id", "ascending")])
    most = _top(per_image, TOP_SMALL, [("member_id_count", "descending"),
                                       ("project_id", "ascending"), ("image_id", "ascending")])
    receiving = members.group_by("member_id").aggregate([("image_id", "count")])
    receiving_top = _top(receiving, TOP_SMALL, [("image_id_count", "descending"),
                                                ("member_id", "ascending")])
    cutoff = dt.datetime.combine(day, dt.time(), dt.UTC) - dt.timedelta(days=older_than_days)
    old = members.filter(pc.less(members["create_time"],
                                 pa.scalar(cutoff, members.schema.field("create_time").type)))
    old_top = _top(old.select(["project_id", "image_id", "member_id", "create_time"]), TOP,
                   [("create_time", "ascending"), ("project_id", "ascending"),
                    ("image_id", "ascending"), ("member_id", "ascending")])

    def named(rows: pa.Table, *columns: str) -> list[tuple[Cell, ...]]:
        listed = coded.decoded(rows)
        return [(name, r["image_id"], r["project_id"], *(r[c] for c in columns))
                for name, r in zip(_named(names, listed), listed, strict=True)]

    def word(member: object) -> str:
        return "trusted" if member in trusted else "untrusted"

    m = sql.t("members")
    where = f"WHERE m.snapshot_date = '{sql.day}'"
    join = "LEFT JOIN names n USING (snapshot_date, project_id, image_id)"
    top_receiving = coded.decoded(receiving_top)
    old_rows = named(old_top, "member_id", "create_time")
    most_rows = named(most, "member_id_count", "untrusted_sum")
    figures = [
        Figure("untrusted_shares", "shares to untrusted projects", _count(untrusted)),
        Figure("untrusted_images", "images shared with untrusted projects", len(exposed)),
        Figure("untrusted_receiving", "untrusted projects receiving shares",
               len(pc.unique(members.filter(untrusted)["member_id"]))),
        Figure("old_shares", f"shares older than {older_than_days} days", len(old)),
    ]
    lead = (f"Tonight's shares, judged by the run's trusted_projects ("
            f"{count_of(len(trusted), 'partner project')}): every share to a project outside "
            "them is untrusted.")
    return Section("exposure", "Exposure", lead, figures, [
        Table("untrusted_images", "Images shared with untrusted projects",
              ("image_name", "image_id", "project_id", "untrusted projects", "projects"),
              named(exposed_top, "untrusted_sum", "member_id_count"), len(exposed),
              f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
              f"image_name, image_id, project_id, count(*) FILTER (WHERE m.member_id NOT IN "
              f"(SELECT member_id FROM trusted)) AS untrusted, count(*) AS projects FROM {m} m "
              f"{join} {where} GROUP BY ALL HAVING untrusted > 0 ORDER BY untrusted DESC, "
              f"project_id, image_id", frozenset({"untrusted projects", "projects"}),
              untrusted=[True] * min(len(exposed), TOP), empty="none"),
        Table("most_shared", "The most-shared images",
              ("image_name", "image_id", "project_id", "projects", "untrusted projects"),
              most_rows, len(per_image),
              f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
              f"image_name, image_id, project_id, count(*) AS projects, count(*) FILTER (WHERE "
              f"m.member_id NOT IN (SELECT member_id FROM trusted)) AS untrusted FROM {m} m "
              f"{join} {where} GROUP BY ALL ORDER BY projects DESC, project_id, image_id",
              frozenset({"projects", "untrusted projects"}),
              untrusted=[bool(r[4]) for r in most_rows], empty="no image is shared"),
        Table("receiving", "The projects receiving the most shares",
              ("member_id", "trust", "shares"),
              [(r["member_id"], word(r["member_id"]), r["image_id_count"])
               for r in top_receiving], len(receiving),
              f"WITH {sql.trusted} SELECT member_id, CASE WHEN member_id IN (SELECT member_id "
              f"FROM trusted) THEN 'trusted' ELSE 'untrusted' END AS trust, count(*) AS shares "
              f"FROM {m} m {where} GROUP BY ALL ORDER BY shares DESC, member_id",
              frozenset({"shares"}),
              untrusted=[r["member_id"] not in trusted for r in top_receiving],
              empty="no project receives a share"),
        Table("old_shares", f"Shares older than {older_than_days} days, oldest first",
              ("image_name", "image_id", "project_id", "member_id", "trust", "shared (UTC)"),
              [(*row[:4], word(row[3]), row[4]) for row in old_rows], len(old),
              f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
              f"image_name, image_id, project_id, member_id, CASE WHEN member_id IN (SELECT "
              f"member_id FROM trusted) THEN 'trusted' ELSE 'untrusted' END AS trust, "
              f"create_time FROM {m} m {join} {where} AND m.create_time < TIMESTAMPTZ "
              f"'{cutoff.isoformat()}' ORDER BY create_time, project_id, image_id, member_id",
              untrusted=[row[3] not in trusted for row in old_rows], empty="none"),
    ])


def _trends(ours: Ours, dates: list[dt.date], trusted: frozenset[str], sql: _Sql) -> Section:
    """Per night: images, shares, untrusted shares (by tonight's trusted list) and images
    without an answer; IDs read as dictionaries, so a night costs its distinct IDs."""
    images, shares, untrusted, unanswered = [], [], [], []
    for day in dates:
        images.append((day, _rows_in(ours, "image_status", day)))
        shares.append((day, _rows_in(ours, "members", day)))
        members = _read(ours, "members", day, ["member_id"], ["member_id"])["member_id"]
        outside = 0
        for chunk in members.chunks:
            if pa.types.is_dictionary(chunk.type):
                inside = pc.take(_trusted_mask(chunk.dictionary, trusted), chunk.indices)
            else:
                inside = _trusted_mask(chunk, trusted)
            outside += len(chunk) - _count(inside)
        untrusted.append((day, outside))
        status = _read(ours, "image_status", day, ["status"], ["status"])["status"]
        unanswered.append((day, _count(pc.is_in(status.cast(pa.string()),
                                                value_set=pa.array(UNANSWERED)))))
    series = [Series("images", "images", images), Series("shares", "shares", shares),
              Series("untrusted_shares", "untrusted shares", untrusted),
              Series("unanswered", "images failed or forbidden", unanswered)]
    rows: list[tuple[Cell, ...]] = [
        (day.isoformat(), a[1], b[1], c[1], d[1])
        for day, a, b, c, d in zip(dates, images, shares, untrusted, unanswered, strict=True)]
    rows.reverse()  # newest first
    lead = (f"The last {count_of(len(dates), 'published night')} (at most --nights); untrusted by "
            "tonight's trusted_projects.")
    table = Table(
        "trend", "Night by night", ("night", "images", "shares", "untrusted shares",
                                    "failed or forbidden"), rows, len(rows),
        f"WITH {sql.trusted}, s AS (SELECT snapshot_date, count(*) AS images, count(*) FILTER "
        f"(WHERE status IN ('failed', 'forbidden')) AS unanswered FROM "
        f"{sql.t('image_status')} GROUP BY ALL), m AS (SELECT snapshot_date, count(*) AS "
        f"shares, count(*) FILTER (WHERE member_id NOT IN (SELECT member_id FROM trusted)) AS "
        f"untrusted FROM {sql.t('members')} GROUP BY ALL) SELECT snapshot_date, images, "
        f"coalesce(shares, 0) AS shares, coalesce(untrusted, 0) AS untrusted, unanswered FROM "
        f"s LEFT JOIN m USING (snapshot_date) WHERE snapshot_date <= '{sql.day}' ORDER BY "
        f"snapshot_date DESC LIMIT {len(dates)}",
        frozenset({"images", "shares", "untrusted shares", "failed or forbidden"}))
    return Section("trends", "Trends", lead, [], [table], series)
