"""Staging hygiene: finishing a publish a crash interrupted, and removing dead runs'
leftovers (the states and who moves a date between them: ``staging``)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson

from collector import staging
from collector.lease import clear, clear_tmp
from collector.schemas import OWN_FILE, TABLES, partition_key
from collector.store import Store

log = logging.getLogger("collector")


def finish_publish(store: Store, folder: str, snapshot_date: dt.date) -> None:
    """Put each staged table in place, then any later date's recomputed changes; safe to
    repeat after a crash at any step. On disk a table is one folder rename; in a bucket, the
    old objects are deleted, then the packed one is copied in (a reader sees the old table,
    for a moment none, or the new one)."""
    moves = [(f"{folder}/{table}", partition_key(table, snapshot_date), table)
             for table in TABLES]
    later_names = (store.folders(staging.later_root(folder)) if store.renames
                   else _todo_later(store, folder))
    moves += [(f"{folder}/{staging.later_name(name)}", f"changes/{name}",
               staging.later_name(name)) for name in later_names]
    for staged, final, name in moves:
        if store.renames:
            if not store.exists(staged):
                continue  # already swapped in
            for other in [*store.files(final), *store.folders(final), *store.links(final)]:
                if not OWN_FILE.fullmatch(other):  # not ours to delete: it moves across
                    store.rename_folder(f"{final}/{other}", f"{staged}/{other}")
            if store.exists(final):
                store.rename_folder(final, staging.replaced(folder, name))
            store.rename_folder(staged, final)
            continue
        packed = staging.packed(folder, name)
        if not store.exists(staging.todo(packed)):
            continue  # already swapped in
        new = [part for part in store.files(packed) if part.endswith(".parquet")]
        for old in store.files(final):
            if OWN_FILE.fullmatch(old) and old not in new:  # only ours: another's stays
                store.delete(f"{final}/{old}")
        for part in new:
            store.copy(f"{packed}/{part}", f"{final}/{part}")
        store.delete(staging.todo(packed))


def _todo_later(store: Store, folder: str) -> list[str]:
    """The later dates (their folders' names) whose change tables a bucket publish has still
    to copy in."""
    return [name for name in store.folders(staging.packed_later(folder))
            if store.exists(staging.todo(staging.packed(folder, staging.later_name(name))))]


def clean_stale_staging(store: Store, keep: str, run_id: str) -> list[str]:
    """Remove other dates' leftovers of dead runs (``finish_interrupted`` has run first), and
    a bucket's temporary uploads of dead runs. A date with a live shard is left whole (see
    ``lease``: alive is a held flock, or a renewed lease). Only folders named as the tool
    names them (``snapshot_date=YYYY-MM-DD``) are touched; a link is skipped with a warning,
    and anything else under ``_staging`` is not ours and stays."""
    removed = []
    clear_tmp(store)
    root = staging.root()
    for name in store.links(root):
        if staging.date_of(name) is not None:
            log.warning("left %s/%s/%s alone: not a folder the tool made", store.url, root,
                        name)
    for name in _dated_staging(store):
        if name == keep.rsplit("/", 1)[-1]:
            continue
        waiting = sharded_work(store, f"{root}/{name}")
        if waiting:  # staged for a publish that has not come yet: work, not a leftover
            log.info("left %s/%s/%s alone: %s wait for cph-collector publish", store.url,
                     root, name, ", ".join(waiting))
            continue
        alive = clear(store, f"{root}/{name}", run_id, whole=True)
        if alive:
            log.info("left %s/%s/%s alone: %s", store.url, root, name, ", ".join(
                f"{staging.locked(lock)} is running (run {run})"
                for lock, run in alive.items()))
        else:
            removed.append(name)
    return removed


def sharded_work(store: Store, folder: str) -> list[str]:
    """The plan and the shard folders in a date's staging: a sharded night's work, staged
    (or being staged) for ``publish --shards``, which alone removes it once published."""
    return [name for name in store.folders(folder)
            if name == staging.plan_name() or staging.is_shard_folder(name)]


def _dated_staging(store: Store) -> list[str]:
    """The folders under ``_staging`` that bear a name the tool gives
    (``snapshot_date=YYYY-MM-DD``); links are never listed."""
    return [name for name in store.folders(staging.root())
            if staging.date_of(name) is not None]


def finish_interrupted(store: Store, by: str) -> dict[str, tuple[dt.date, dict[str, Any]]]:
    """Finish every publish a stopped run began (so no date is left without its data, and
    before any manifest is judged); {run_id: (snapshot date, its change summary)} of the runs
    whose data that is. ``by``: the run id of the caller, which holds the output lock (live
    shards' work stays)."""
    finished = {}
    for name in _dated_staging(store):
        date = staging.date_of(name)
        assert date is not None
        folder = staging.date_staging(date)
        marker = staging.publishing_marker(folder)
        if store.exists(marker):
            run_id, changes = _marker(store.read(marker))
            finish_publish(store, folder, date)
            log.info("finished publishing %s, which run %s had begun", date, run_id or "?")
            clear(store, folder, by, shared=(staging.plan_name(),))  # the marker goes last
            if run_id:
                finished[run_id] = (date, changes)
    return finished


def _marker(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(run id, change summary) of a publish marker (an older one is the bare run id)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return raw.decode("utf-8", errors="replace").strip(), {}
    changes = doc.get("changes")
    return str(doc.get("run_id") or ""), changes if isinstance(changes, dict) else {}
