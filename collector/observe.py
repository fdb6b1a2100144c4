"""What a run shows of itself: its progress lines and its summary line.

Formatting only (the figures are the record's, ``ending`` decides them): the summary line the
README quotes, and the JSON forms of ``log_format = json``.
"""

from __future__ import annotations

from collector.changes import line_of
from collector.errors import Status
from collector.logs import json_line
from collector.manifest import RunRecord
from collector.progress import Snapshot


def progress_json(snap: Snapshot) -> str:
    """A progress line for ``log_format = json``."""
    rate = snap.done / snap.elapsed if snap.elapsed > 0 else 0.0
    return json_line({"event": "progress", "images": snap.done, "member_rows": snap.members,
                      "failed": snap.failed, "images_per_second": round(rate, 1),
                      "total": snap.total})


def summary_json(record: RunRecord) -> str:
    """The summary for ``log_format = json``: the manifest's figures as one object."""
    return json_line({"event": "summary", "run_id": record.run_id, "status": record.status,
                      "exit_code": record.exit_code, "error": record.error,
                      "snapshot_date": record.snapshot_date.isoformat(),
                      "counts": record.counts, "requests": record.requests,
                      "retries": record.retries, "throttled_429": record.throttled,
                      "seconds": round(record.seconds, 3), "changes": record.changes or None,
                      "manifest": f"runs/{record.run_id}.json"})


def summary_line(record: RunRecord) -> str:
    """The one line a run prints at its end (the README quotes it)."""
    c = record.counts
    statuses = ", ".join(f"{c.get(s.value, 0):,} {s.value}" for s in Status
                         if s is not Status.INVALID_ID) + f", {c.get('invalid', 0):,} invalid_id"
    rate = c.get("status_rows", 0) / record.seconds
    listed = ""
    if "listings" in c:
        listed = (f"listed {c['images_listed']:,} images in {c['listings']:,} listings of "
                  f"{c['projects']:,} projects ({c.get('listings_failed', 0):,} failed, "
                  f"{c.get('listings_forbidden', 0):,} forbidden); ")
    return (f"run {record.run_id} {record.status}: {listed}{c.get('status_rows', 0):,} images "
            f"({statuses}), {c.get('member_rows', 0):,} member rows, "
            f"{c.get('duplicates', 0):,} duplicates; {record.requests:,} requests, "
            f"{record.retries:,} retries, {record.throttled:,} throttled (429); "
            f"{rate:,.0f} images/s in {record.seconds:.1f} s; "
            f"{line_of(record.changes) + '; ' if record.changes else ''}exit {record.exit_code}")
