"""The report's "What changed" section: the published change table, untrusted shares first,
and the images ``changes`` did not compare, with the words for why."""

# ruff: noqa: S608 (the queries are printed for a reader to run; this module executes none)
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from collector.changes import CHANGE_KINDS, line_of, text, uncomparable_images
from collector.published import published_night
from collector.report.nights import (
    Names,
    Ours,
    Sql,
    count_true,
    first_rows,
    image_names,
    read_table,
)
from collector.report.view import NOT_COMPARED, TOP, Cell, Figure, Section, Table


def changes_section(ours: Ours, day: dt.date, previous: dt.date | None,
                    manifest: dict[str, object], status: pa.Table, sql: Sql,
                    names: Names) -> Section:
    """``status``: tonight's images that were failed, forbidden or invalid (for their codes)."""
    if previous is None:
        return Section("changes", "What changed", "The first snapshot in this output: nothing "
                       "to compare with yet.")
    table = read_table(ours, "changes", day, ["previous_snapshot_date", "project_id", "image_id",
                                               "member_id", "change", "create_time",
                                               "update_time", "previous_update_time", "trusted"])
    figures = []
    for kind in CHANGE_KINDS:
        of_kind = pc.equal(table["change"], text(kind))
        figures.append(Figure(kind, kind, count_true(of_kind)))
        figures.append(Figure(f"untrusted_{kind}", f"{kind}, to untrusted projects",
                              count_true(pc.and_(of_kind, pc.invert(table["trusted"])))))
    old_names = Names(ours, previous)
    before, after = (published_night(ours.store, d, members=False) for d in (previous, day))
    unsettled = uncomparable_images(before, after)
    figures.append(Figure("uncomparable_images", "images not comparable", len(unsettled)))
    summary = manifest.get("changes")
    lead = (f"Since {previous}; the run's summary line said: {line_of(summary)}."
            if isinstance(summary, dict) else f"Since {previous}, from the change table.")
    return Section("changes", "What changed", lead, figures, [
        _changed(table, previous, sql, names, old_names),
        _not_compared(unsettled, status, after.listed_ok, previous, day, sql, names, old_names),
    ])


def _changed(table: pa.Table, previous: dt.date, sql: Sql, names: Names,
             old_names: Names) -> Table:
    """The change table's first rows, untrusted first and newest first (names from either
    night: an image gone tonight has its name on ``previous``)."""
    top = first_rows(table, TOP, [("trusted", "ascending"), ("update_time", "descending"),
                                  ("change", "ascending"), ("project_id", "ascending"),
                                  ("image_id", "ascending"),
                                  ("member_id", "ascending")]).to_pylist()
    rows: list[tuple[Cell, ...]] = [
        ("trusted" if r["trusted"] else "untrusted", r["change"], name, r["image_id"],
         r["project_id"], r["member_id"], r["update_time"])
        for name, r in zip(image_names(names, top, old_names), top, strict=True)]
    c = sql.t("changes")
    return Table("changes", f"Changed shares since {previous}, untrusted first",
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
          untrusted=[not r["trusted"] for r in top], empty="no share changed")


def _not_compared(unsettled: pa.Table, status: pa.Table, listed_ok: frozenset[str] | None,
                  previous: dt.date, day: dt.date, sql: Sql, names: Names,
                  old_names: Names) -> Table:
    """The images ``changes`` did not compare, each with why (tonight's error code when
    tonight's status is the reason)."""
    unsettled_top = unsettled.slice(0, TOP).to_pylist()
    wanted = pa.array(sorted({str(r["image_id"]) for r in unsettled_top}), pa.string())
    shown = status.filter(pc.is_in(status["image_id"], value_set=wanted)).to_pylist()
    codes = {(r["project_id"], r["image_id"]): r["error_code"] for r in shown}
    why_rows: list[tuple[Cell, ...]] = [
        (name, r["image_id"], r["project_id"], r["before"] or "absent", r["after"] or "absent",
         _why(r["before"], r["after"], codes.get((r["project_id"], r["image_id"])), previous,
              listed_ok, str(r["project_id"])))
        for name, r in zip(image_names(names, unsettled_top, old_names), unsettled_top,
                           strict=True)]
    s = sql.t("image_status")
    return Table("uncomparable", "Images not comparable, and why",
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
                 empty="none: every image was compared")


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

