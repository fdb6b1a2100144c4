"""The report's "Exposure" and "Trends" sections: tonight's shares judged by the run's trusted
projects, and the last nights' counts side by side."""

# ruff: noqa: S608 (the queries are printed for a reader to run; this module executes none)
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from collector.report.nights import (
    Coded,
    Names,
    Ours,
    Sql,
    count_true,
    first_rows,
    image_names,
    read_table,
    rows_in,
    trusted_mask,
)
from collector.report.view import (
    TOP,
    TOP_SMALL,
    UNANSWERED,
    Cell,
    Figure,
    Section,
    Series,
    Table,
    count_of,
)


def exposure_section(day: dt.date, coded: Coded, trusted: frozenset[str], older_than_days: int,
                     sql: Sql, names: Names) -> Section:
    """Tonight's shares judged by the run's trusted projects: the images and projects exposed,
    the most-shared images, and the shares older than ``older_than_days``."""
    members = coded.table
    untrusted = pc.invert(pc.is_in(members["member_id"],
                                   value_set=coded.codes("member_id", trusted)))
    members = members.append_column("untrusted", untrusted.cast(pa.int64()))
    per_image = members.group_by(["project_id", "image_id"]).aggregate(
        [("member_id", "count"), ("untrusted", "sum")])
    exposed = per_image.filter(pc.greater(per_image["untrusted_sum"], 0))
    cutoff = dt.datetime.combine(day, dt.time(), dt.UTC) - dt.timedelta(days=older_than_days)
    old = members.filter(pc.less(members["create_time"],
                                 pa.scalar(cutoff, members.schema.field("create_time").type)))
    figures = [
        Figure("untrusted_shares", "shares to untrusted projects", count_true(untrusted)),
        Figure("untrusted_images", "images shared with untrusted projects", len(exposed)),
        Figure("untrusted_receiving", "untrusted projects receiving shares",
               len(pc.unique(members.filter(untrusted)["member_id"]))),
        Figure("old_shares", f"shares older than {older_than_days} days", len(old)),
    ]
    lead = (f"Tonight's shares, judged by the run's trusted_projects ("
            f"{count_of(len(trusted), 'partner project')}): every share to a project outside "
            "them is untrusted.")
    view = _View(coded, trusted, sql, names)
    return Section("exposure", "Exposure", lead, figures, [
        *view.images(per_image, exposed), view.receiving(members),
        view.old_shares(old, cutoff, older_than_days)])


class _View:
    """What the exposure tables share: the coded night, the trusted projects, the queries'
    pieces and the image names."""

    def __init__(self, coded: Coded, trusted: frozenset[str], sql: Sql, names: Names) -> None:
        self.coded, self.trusted, self.sql, self.names = coded, trusted, sql, names
        self.m = sql.t("members")
        self.where = f"WHERE m.snapshot_date = '{sql.day}'"
        self.join = "LEFT JOIN names n USING (snapshot_date, project_id, image_id)"

    def named(self, rows: pa.Table, *columns: str) -> list[tuple[Cell, ...]]:
        """Rows as (image_name, image_id, project_id, *columns), IDs decoded."""
        listed = self.coded.decoded(rows)
        return [(name, r["image_id"], r["project_id"], *(r[c] for c in columns))
                for name, r in zip(image_names(self.names, listed), listed, strict=True)]

    def word(self, member: object) -> str:
        """The trust column's word for a member project."""
        return "trusted" if member in self.trusted else "untrusted"

    def images(self, per_image: pa.Table, exposed: pa.Table) -> list[Table]:
        """The images shared with untrusted projects, and the most-shared images."""
        sql, m, join, where = self.sql, self.m, self.join, self.where
        exposed_top = first_rows(exposed, TOP, [("untrusted_sum", "descending"),
                                                ("project_id", "ascending"),
                                                ("image_id", "ascending")])
        most = first_rows(per_image, TOP_SMALL, [("member_id_count", "descending"),
                                                 ("project_id", "ascending"),
                                                 ("image_id", "ascending")])
        most_rows = self.named(most, "member_id_count", "untrusted_sum")
        return [
            Table(
                "untrusted_images", "Images shared with untrusted projects",
                ("image_name", "image_id", "project_id", "untrusted projects", "projects"),
                self.named(exposed_top, "untrusted_sum", "member_id_count"), len(exposed),
                f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
                f"image_name, image_id, project_id, count(*) FILTER (WHERE m.member_id NOT IN "
                f"(SELECT member_id FROM trusted)) AS untrusted, count(*) AS projects FROM {m} m "
                f"{join} {where} GROUP BY ALL HAVING untrusted > 0 ORDER BY untrusted DESC, "
                f"project_id, image_id", frozenset({"untrusted projects", "projects"}),
                untrusted=[True] * min(len(exposed), TOP), empty="none"),
            Table(
                "most_shared", "The most-shared images",
                ("image_name", "image_id", "project_id", "projects", "untrusted projects"),
                most_rows, len(per_image),
                f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
                f"image_name, image_id, project_id, count(*) AS projects, count(*) FILTER (WHERE "
                f"m.member_id NOT IN (SELECT member_id FROM trusted)) AS untrusted FROM {m} m "
                f"{join} {where} GROUP BY ALL ORDER BY projects DESC, project_id, image_id",
                frozenset({"projects", "untrusted projects"}),
                untrusted=[bool(r[4]) for r in most_rows], empty="no image is shared"),
        ]

    def receiving(self, members: pa.Table) -> Table:
        """The projects receiving the most shares."""
        sql, m, where = self.sql, self.m, self.where
        receiving = members.group_by("member_id").aggregate([("image_id", "count")])
        top_receiving = self.coded.decoded(first_rows(
            receiving, TOP_SMALL, [("image_id_count", "descending"), ("member_id", "ascending")]))
        return Table(
            "receiving", "The projects receiving the most shares",
            ("member_id", "trust", "shares"),
            [(r["member_id"], self.word(r["member_id"]), r["image_id_count"])
             for r in top_receiving], len(receiving),
            f"WITH {sql.trusted} SELECT member_id, CASE WHEN member_id IN (SELECT member_id "
            f"FROM trusted) THEN 'trusted' ELSE 'untrusted' END AS trust, count(*) AS shares "
            f"FROM {m} m {where} GROUP BY ALL ORDER BY shares DESC, member_id",
            frozenset({"shares"}),
            untrusted=[r["member_id"] not in self.trusted for r in top_receiving],
            empty="no project receives a share")

    def old_shares(self, old: pa.Table, cutoff: dt.datetime, older_than_days: int) -> Table:
        """The shares older than ``older_than_days``, oldest first."""
        sql, m, join, where = self.sql, self.m, self.join, self.where
        old_top = first_rows(old.select(["project_id", "image_id", "member_id", "create_time"]),
                             TOP, [("create_time", "ascending"), ("project_id", "ascending"),
                                   ("image_id", "ascending"), ("member_id", "ascending")])
        old_rows = self.named(old_top, "member_id", "create_time")
        return Table(
            "old_shares", f"Shares older than {older_than_days} days, oldest first",
            ("image_name", "image_id", "project_id", "member_id", "trust", "shared (UTC)"),
            [(*row[:4], self.word(row[3]), row[4]) for row in old_rows], len(old),
            f"WITH {sql.trusted}, {sql.names} SELECT coalesce(n.image_name, '') AS "
            f"image_name, image_id, project_id, member_id, CASE WHEN member_id IN (SELECT "
            f"member_id FROM trusted) THEN 'trusted' ELSE 'untrusted' END AS trust, "
            f"create_time FROM {m} m {join} {where} AND m.create_time < TIMESTAMPTZ "
            f"'{cutoff.isoformat()}' ORDER BY create_time, project_id, image_id, member_id",
            untrusted=[row[3] not in self.trusted for row in old_rows], empty="none")


def trends_section(ours: Ours, dates: list[dt.date], trusted: frozenset[str], sql: Sql) -> Section:
    """Per night: images, shares, untrusted shares (by tonight's trusted list) and images
    without an answer; IDs read as dictionaries, so a night costs its distinct IDs."""
    images, shares, untrusted, unanswered = [], [], [], []
    for day in dates:
        images.append((day, rows_in(ours, "image_status", day)))
        shares.append((day, rows_in(ours, "members", day)))
        members = read_table(ours, "members", day, ["member_id"], ["member_id"])["member_id"]
        outside = 0
        for chunk in members.chunks:
            if pa.types.is_dictionary(chunk.type):
                inside = pc.take(trusted_mask(chunk.dictionary, trusted), chunk.indices)
            else:
                inside = trusted_mask(chunk, trusted)
            outside += len(chunk) - count_true(inside)
        untrusted.append((day, outside))
        status = read_table(ours, "image_status", day, ["status"], ["status"])["status"]
        unanswered.append((day, count_true(pc.is_in(status.cast(pa.string()),
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
