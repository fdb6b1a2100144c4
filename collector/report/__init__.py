"""``cph-collector report``: the morning report, one self-contained HTML page of a published
snapshot, written beside the tables (``report/snapshot_date=D/index.html``) through the
``Store``, so it appears only complete, on disk or in a bucket.

``model`` reads the tables into a view model by the summary line's and ``diff``'s rules;
``page`` renders it.
"""

from __future__ import annotations

import datetime as dt

from collector.report.model import build_report
from collector.report.page import render
from collector.store import Store

NIGHTS = 30  # trend nights by default
OLDER_THAN_DAYS = 365  # "old shares" by default


def report_key(snapshot_date: dt.date) -> str:
    """Where a date's report lives, relative to the output."""
    return f"report/snapshot_date={snapshot_date.isoformat()}/index.html"


def write_report(store: Store, snapshot_date: dt.date, nights: int = NIGHTS,
                 older_than_days: int = OLDER_THAN_DAYS) -> str:
    """Build, render and write the report of ``snapshot_date``; returns its key."""
    page = render(build_report(store, snapshot_date, nights, older_than_days))
    key = report_key(snapshot_date)
    store.write(key, page.encode())
    return key
