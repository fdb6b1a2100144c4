"""Who may write where, and how "alive" is decided: the locks of an output, in one place.

Every writer holds one lock for as long as it writes, named after what it writes::

    run, plan, publish --shards ── OUTPUT/.cph-collector.lock ─────── the output, except the
                                                                        work of live shards
    shard K of N of date D ─────── _staging/snapshot_date=D/shard-K-of-N.lock ── the folder
                                   shard-K-of-N/ beside it, and (bucket) _staging/.tmp/<run_id>/

The two kinds: on disk an flock (``lease_disk``), in a bucket a lease object
(``lease_bucket``).

A mender (an ordinary run, ``plan``, ``publish``) removes a dead writer's work only while it
holds that writer's lock itself, made if missing, so no writer starts there meanwhile
(``clear``); it never relabels the manifest of a live run (``live_runs``), nor removes a live
run's temporary uploads, nor any of a writer without a lease yet (a random name) written less
than ``lease`` s ago (``clear_tmp``). ``publish --shards`` claims every shard's
lock of its date (``claimed``, ``also``) and holds them from its check to its clean-up: it
refuses while a shard is alive, and a shard started meanwhile is refused (exit 2) or, in a
bucket, waits.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator

from collector import lease_bucket, staging
from collector.lease_bucket import BucketLock, LeaseLost, Timing, age, read_lease
from collector.lease_disk import LOCK_NAME, OutputLock, flock_claims
from collector.store import BucketStore, LocalStore, Store

__all__ = ["LOCK_NAME", "BucketLock", "LeaseLost", "OutputLock", "Timing", "claimed", "clear",
           "clear_tmp", "live_runs", "lock", "read_lease"]
UNLEASED = re.compile(r"[0-9a-f]{32}")  # ``store.writer`` until it holds a lease


def lock(store: Store, run_id: str, clock: Callable[[], float] | None = None,
         name: str = LOCK_NAME) -> OutputLock | BucketLock:
    """The output's one-writer lock (or a shard's, ``name``): an flock on disk, a lease object
    in a bucket. It fences the store: once lost, the store's next write fails."""
    if isinstance(store, LocalStore):
        return OutputLock(store.root, name, run_id)
    assert isinstance(store, BucketStore)
    return BucketLock(store, run_id, name, clock=clock, fence=True)


def _writer_locks(store: Store) -> list[str]:
    """Every writer's lock there can be: the output's, and each dated staging folder's."""
    names, root = [LOCK_NAME], staging.root()
    for day in store.folders(root):
        if staging.looks_dated(day):
            names += [f"{root}/{day}/{n}" for n in store.files(f"{root}/{day}")
                      if staging.is_lock(n)]
    return names


def live_runs(store: Store) -> set[str]:
    """The run ids of the writers alive now (the caller's own included)."""
    if isinstance(store, LocalStore):
        with flock_claims([store.path(n) for n in _writer_locks(store)]) as (_, alive):
            return set(alive.values())
    clock = time.time
    return {str(doc.get("run_id")) for name in _writer_locks(store)
            if (doc := read_lease(store, name)) is not None
            and age(doc, clock()) < lease_bucket.TIMING.lease}


@contextlib.contextmanager
def claimed(store: Store, folder: str, run_id: str, also: tuple[str, ...] = ()
            ) -> Iterator[dict[str, str]]:
    """Hold the lock in ``folder`` of every dead writer, of every writer's folder
    (``shard-K-of-N/``) whose lock is missing, and the locks ``also`` (of writers not begun:
    ``publish`` takes every shard's), so none can start meanwhile (deleted at the end); yields
    {lock name: run id} of those alive, whose work stays untouched."""
    names = sorted({n for n in store.files(folder) if staging.is_lock(n)}
                   | {staging.lock_name(n) for n in store.folders(folder) if staging.is_shard(n)}
                   | set(also))
    if not names:
        yield {}
        return
    if isinstance(store, LocalStore):
        if also:
            store.make_folder(folder)  # the caller removes it if it stays empty
        paths = {store.path(f"{folder}/{n}"): n for n in names}
        with flock_claims(list(paths), unlink=True, run_id=run_id) as (_, alive):
            yield {paths[p]: run for p, run in alive.items()}
        return
    assert isinstance(store, BucketStore)
    with BucketLock(store, run_id, *(f"{folder}/{n}" for n in names), wait=False) as held:
        yield {name.rsplit("/", 1)[1]: str(doc.get("run_id")) for name, doc in
               held.alive.items()}


def clear(store: Store, folder: str, run_id: str, shared: tuple[str, ...] = (),
          whole: bool = False, held: dict[str, str] | None = None) -> dict[str, str]:
    """Remove ``folder`` and what is in it, except the work of live writers: the folder
    ``X`` beside each live ``X.lock``, and the ``shared`` folders (which live writers read)
    while any is alive; ``whole``: any live writer keeps the whole folder. ``held``: the
    caller holds ``claimed`` of ``folder`` already (what it yielded). Returns {lock name: run
    id} of the live writers."""
    claims: contextlib.AbstractContextManager[dict[str, str]] = (
        claimed(store, folder, run_id) if held is None else contextlib.nullcontext(held))
    with claims as alive:
        if alive and whole:
            return alive
        keep = {staging.locked(n) for n in alive} | (set(shared) if alive else set())
        for name in store.folders(folder):
            if name not in keep:
                store.delete_tree(f"{folder}/{name}")
        for name in store.files(folder):
            if not staging.is_lock(name):
                store.delete(f"{folder}/{name}")
    if not alive and isinstance(store, LocalStore):
        with contextlib.suppress(OSError):
            store.path(folder).rmdir()  # a writer that began since keeps its new files
    return alive


def clear_tmp(store: Store, clock: Callable[[], float] | None = None) -> None:
    """A bucket's temporary uploads of writers that are gone (``_staging/.tmp/<run_id>/``; a
    loose key there is of a version that did not say whose). A writer not yet holding a lease
    uploads under a random name (``UNLEASED``): such a folder written to less than ``lease`` s
    ago stays."""
    if isinstance(store, LocalStore):
        return
    assert isinstance(store, BucketStore)
    alive = live_runs(store)
    now = (clock or time.time)()
    tmp = staging.tmp()
    for name in store.folders(tmp):
        if name in alive:
            continue
        if UNLEASED.fullmatch(name):  # a run id's own uploads end with its lease
            newest = store.newest(staging.tmp_of(name))
            if newest is not None and now - newest < lease_bucket.TIMING.lease:
                continue
        store.delete_tree(staging.tmp_of(name))
    for name in store.files(tmp):
        store.delete(f"{tmp}/{name}")
