"""``cph-collector diff``: the change table between any two finished snapshots, on stdout.

The same computation as at publish (``changes.compare``), read from the published partitions;
nothing is collected. ``table`` is for people (newest changes first, untrusted shares marked
``!``), ``csv`` and ``jsonl`` for programs.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import BinaryIO

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from collector.changes import Summary, compare
from collector.errors import UsageError
from collector.manifest import latest_finished
from collector.published import published_dates, published_night
from collector.secrets import printable
from collector.store import Store, reason

FORMATS = ("table", "csv", "jsonl")


def changes_between(store: Store, since: dt.date, until: dt.date,
                    trusted: frozenset[str]) -> tuple[pa.Table, Summary]:
    """The changes from snapshot ``since`` to snapshot ``until``; UsageError naming a date
    that has no finished snapshot in the output."""
    try:
        finished = set(published_dates(store))
    except OSError as exc:
        raise UsageError(f"output {store.url}: cannot be read ({reason(exc)})") from None
    for day in (since, until):
        if day not in finished:
            raise UsageError(f"snapshot {day.isoformat()}: no finished snapshot in {store.url}")
    return compare(published_night(store, since), published_night(store, until), since,
                   "diff", trusted)


def trusted_of(store: Store, until: dt.date, given: frozenset[str] | None,
               ) -> tuple[frozenset[str], str]:
    """The trusted projects to mark shares with, and a line saying whose they are: ``given``
    (``--trusted-projects`` or the settings), else those the later night ran with (its
    manifest's settings), so that a diff marks what that night's change table marked."""
    if given is not None:
        return given, f"trusted projects: {len(given)}, from --trusted-projects"
    doc = latest_finished(store, until)
    settings = (doc or {}).get("settings") or {}
    listed = settings.get("trusted_projects") if isinstance(settings, dict) else None
    found = frozenset(p for p in str(listed or "").split(",") if p)
    if doc is None:
        return found, f"trusted projects: none (no manifest of {until.isoformat()})"
    return found, (f"trusted projects: {len(found)}, those the {until.isoformat()} run "
                   f"{doc['run_id']} had")


def render(table: pa.Table, fmt: str, stream: BinaryIO) -> None:
    """Write the change rows in ``fmt``."""
    if fmt == "csv":
        pacsv.write_csv(table.drop_columns(["run_id"]), stream)
        return
    rows = table.sort_by([("update_time", "descending"), ("image_id", "ascending")]).to_pylist()
    if fmt == "jsonl":
        for row in rows:
            row.pop("run_id")
            stream.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        return
    text = io.StringIO()
    text.write(f"  {'change':<10} {'when (UTC)':<19}  {'project_id':<32}  {'image_id':<32}  "
               "member_id\n")
    for row in rows:
        mark = " " if row["trusted"] else "!"
        when = row["update_time"].strftime("%Y-%m-%d %H:%M:%S")
        project, image, member = (printable(row[k]) for k in ("project_id", "image_id",
                                                               "member_id"))
        text.write(f"{mark} {row['change']:<10} {when:<19}  {project:<32}  {image:<32}  "
                   f"{member}\n")
    stream.write(text.getvalue().encode())
