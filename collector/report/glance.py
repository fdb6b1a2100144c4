"""The report's first section, the night at a glance: complete or not and why, the run's
figures, and the images and listings that got no definitive answer."""

# ruff: noqa: S608 (the queries are printed for a reader to run; this module executes none)
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from collector.changes import text
from collector.errors import Status
from collector.report.nights import (
    Coded,
    Names,
    Ours,
    Sql,
    first_rows,
    image_names,
    plain,
    read_table,
)
from collector.report.view import TOP, UNANSWERED, Cell, Figure, Section, Table, count_of


def glance_section(ours: Ours, day: dt.date, manifest: dict[str, object], status: pa.Table,
                   coded: Coded, sql: Sql, names: Names) -> tuple[Section, bool, str]:
    """The section, whether the night is complete (every image and listing answered, exit 0 or
    4), and the verdict sentence above everything."""
    by_status = dict.fromkeys((s.value for s in Status), 0)
    counted = status.group_by("status").aggregate([("status", "count")]).to_pydict()
    by_status.update(zip(counted["status"], counted["status_count"], strict=True))
    listings = read_table(ours, "listing_status", day, ["region", "project_id", "image_type",
                                                         "status", "http_status", "error_code",
                                                         "error_msg"])
    bad_listings = listings.filter(pc.not_equal(listings["status"], text(Status.OK.value)))
    unanswered = sum(by_status[s] for s in UNANSWERED)
    exit_code = manifest.get("exit_code")
    figures = _figures(manifest, len(status), by_status, len(listings), len(bad_listings),
                       coded.table)
    complete = not unanswered and not len(bad_listings) and exit_code in (0, 4)
    verdict = _verdict(day, manifest, complete, unanswered, len(bad_listings))
    tables = _unanswered(status, bad_listings, sql, names)
    lead = (f"Run {manifest.get('run_id', '?')}, from {_when(manifest.get('started_at'))} to "
            f"{_when(manifest.get('ended_at'))} UTC, input {manifest.get('input', '?')}.")
    return Section("glance", "The night at a glance", lead, figures, tables), complete, verdict


def _figures(manifest: dict[str, object], images: int, by_status: dict[str, int],
             listings: int, bad_listings: int, members: pa.Table) -> list[Figure]:
    """The run's numbers: the manifest's, and the tables' where the tables say it."""
    exit_code = manifest.get("exit_code")
    seconds = _seconds(manifest)
    return [
        Figure("exit_code", "exit code", exit_code if isinstance(exit_code, int) else "?"),
        Figure("images", "images", images),
        *(Figure(s.value, s.value, by_status[s.value]) for s in Status),
        Figure("listings", "listings", listings),
        Figure("listings_not_ok", "listings not ok", bad_listings),
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


def _verdict(day: dt.date, manifest: dict[str, object], complete: bool, unanswered: int,
             bad_listings: int) -> str:
    """The sentence that says whether tonight's shares are all known."""
    exit_code = manifest.get("exit_code")
    if not manifest:
        return (f"No finished run manifest in runs/ describes {day}: the figures below are "
                "the tables'.")
    if complete:
        return (f"Complete: every image and listing got a definitive answer (exit "
                f"{exit_code}).")
    return (f"Incomplete: {count_of(unanswered, 'image')} failed or forbidden and "
            f"{count_of(bad_listings, 'listing')} not ok (exit {exit_code}); their "
            "shares are not known tonight.")


def _unanswered(status: pa.Table, bad_listings: pa.Table, sql: Sql,
                names: Names) -> list[Table]:
    """Why images have no answer, which ones, and the listings not ok."""
    failed = plain(status.filter(pc.is_in(status["status"], value_set=pa.array(UNANSWERED))))
    failed = failed.append_column("code", pc.fill_null(failed["error_code"], text("")))
    top = first_rows(failed, TOP, [("status", "ascending"), ("code", "ascending"),
                                   ("project_id", "ascending"),
                                   ("image_id", "ascending")]).to_pylist()
    rows: list[tuple[Cell, ...]] = [
        (name, r["image_id"], r["project_id"], r["status"], r["http_status"], r["error_code"],
         r["error_msg"], r["attempts"])
        for name, r in zip(image_names(names, top), top, strict=True)]
    reasons = failed.group_by(["status", "code"]).aggregate([("image_id", "count")])
    reasons = reasons.sort_by([("image_id_count", "descending"), ("status", "ascending"),
                               ("code", "ascending")])
    bad_listings = bad_listings.sort_by([("region", "ascending"), ("project_id", "ascending"),
                                         ("image_type", "ascending")])
    return [
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

