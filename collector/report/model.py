"""The morning report's view model: one snapshot's published tables and manifests, read through
the ``Store`` and turned into figures, top-N tables and trend series by the rules the summary
line (``pipeline.summary_line``) and ``diff`` (``changes``) already use; no HTML here.

Bounded at any size: every table is its first ``TOP`` rows (the rest stays in Parquet, and
each table carries the DuckDB query that gives all of it); only a night's ID columns are read
as a whole, as Parquet dictionaries.

Split by job: ``view`` holds the values the page renders, ``nights`` reads the nights (our
files only, members coded as ranks, names, the printed queries), and ``glance``, ``changed``
and ``exposure`` compute each section's figures and tables; this module puts them together.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from collector.errors import UsageError
from collector.manifest import listed_files
from collector.published import published_dates
from collector.report.changed import changes_section
from collector.report.exposure import exposure_section, trends_section
from collector.report.glance import glance_section
from collector.report.nights import Coded, Names, Ours, Sql, finished_manifest, plain, read_table
from collector.report.view import (
    NOT_COMPARED,
    TOP,
    TOP_SMALL,
    UNANSWERED,
    Cell,
    Figure,
    Report,
    Section,
    Series,
    Table,
    count_of,
)
from collector.store import Store, reason

__all__ = ["NOT_COMPARED", "TOP", "TOP_SMALL", "UNANSWERED", "Cell", "Figure", "Report",
           "Section", "Series", "Table", "build_report", "count_of"]


def build_report(store: Store, day: dt.date, nights: int = 30,
                 older_than_days: int = 365) -> Report:
    """The report of the published snapshot ``day``; UsageError when it has none."""
    try:
        dates = published_dates(store)
    except OSError as exc:
        raise UsageError(f"output {store.url}: cannot be read ({reason(exc)})") from None
    if day not in dates:
        raise UsageError(f"snapshot {day.isoformat()}: no finished snapshot in {store.url}")
    manifest = finished_manifest(store, day) or {}
    run_id = str(manifest["run_id"]) if manifest.get("run_id") else None
    settings = manifest.get("settings")
    raw = settings.get("trusted_projects") if isinstance(settings, dict) else None
    trusted = frozenset(str(raw).split(",")) if raw else frozenset()
    sql = Sql(store.url, run_id, day)
    ours = Ours(store, listed_files(store))
    names = Names(ours, day)
    status = read_table(ours, "image_status", day, ["project_id", "image_id", "status",
                                                    "http_status", "error_code", "error_msg",
                                                    "attempts"],
                        ["project_id", "image_id", "status", "error_code"])
    status = status.set_column(2, "status", status["status"].cast(pa.string()))
    members = Coded.read(ours, day)
    glance, complete, verdict = glance_section(ours, day, manifest, status, members, sql, names)
    exposure = exposure_section(day, members, trusted, older_than_days, sql, names)
    not_compared = plain(status.filter(pc.is_in(status["status"],
                                                value_set=pa.array(NOT_COMPARED))))
    del status, members  # the comparison reads both nights' statuses: only one night at a time
    earlier = [d for d in dates if d < day]
    changes = changes_section(ours, day, earlier[-1] if earlier else None, manifest,
                              not_compared, sql, names)
    trends = trends_section(ours, [d for d in dates if d <= day][-nights:], trusted, sql)
    return Report(day, store.url, run_id, complete, verdict,
                  [glance, changes, exposure, trends])

