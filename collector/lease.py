"""Who may write where, and how "alive" is decided: the locks of an output, in one place.

Every writer holds one lock for as long as it writes, named after what it writes::

    run, plan, publish --shards ── OUTPUT/.cph-collector.lock ─────── the output, except the
                                                                        work of live shards
    shard K of N of date D ─────── _staging/snapshot_date=D/shard-K-of-N.lock ── the folder
                                   shard-K-of-N/ beside it, and (bucket) _staging/.tmp/<run_id>/

**On disk** a lock is an flock (the kernel drops it when its process dies), and the file names
the holder's run id and pid, for messages. Alive = held: a non-blocking flock probe that
succeeds means the writer is dead, and a mender keeps that flock while it removes the dead
writer's work, so its replacement cannot start in between (it is refused, exit 2, and its
scheduler retries).

**In a bucket** a lock is a lease object ``{"run_id", "token", "renewed", "host", "pid"}`` (host
and pid for messages only: pods of one Indexed Job index share a host name and all run as PID
1). Alive = renewed less than ``lease`` seconds ago by the reader's clock (hosts keep their
clocks within a second or two, NTP; a host whose clock lags more than ``lease`` has its lease
taken over and stops at its next renewal). The states of one run's lease (``TIMING``: lease
20 s, renewed every 2 s, settled 5 s)::

    FREE (absent, or not renewed for lease s) ──write ours──> WRITTEN
    ALIVE (another's, renewed) ──re-read every renew s──> FREE, or after lease+renew s: refused
    WRITTEN ──wait settle, read back──> ours: HELD │ another's: refused (exit 2)
    HELD ──every renew s: still ours? write a fresh "renewed"──> HELD
    HELD ──another's found, or no renewal succeeded for lease-renew s──> LOST: its next write
           to the store, and the read-back before publishing, stop the run (exit 3)
    HELD ──the run ends──> deleted, if still ours

pyarrow's S3FileSystem cannot send a conditional write (``If-None-Match: *``; apache/arrow#44281
was never done), so the lease is acquired by create-then-confirm: a run writes its own lease
(with its own random token) only after a read found none alive, and that read-to-written
took less than ``settle``; then it waits ``settle`` and reads it back. Of two runs that both
found it free, the later write lands within ``settle`` of the earlier one's read, so the first
to re-read sees the other's and refuses: at most one proceeds. A killed holder's replacement
waits for its lease to expire (at most ``lease + renew`` s) instead of failing.

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
import errno
import fcntl
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from collector.concurrency import start_thread
from collector.errors import UsageError
from collector.store import TMP, BucketStore, LocalStore, Store, reason

LOCK_NAME = ".cph-collector.lock"
STAGING = "_staging"  # as ``sink.STAGING`` (the sink imports this module)
SUFFIX = ".lock"
UNLEASED = re.compile(r"[0-9a-f]{32}")  # ``store.writer`` until it holds a lease
WRITER = "shard-"  # a folder beside its own lock (``shard-K-of-N/`` and ``shard-K-of-N.lock``)


@dataclass(frozen=True, slots=True)
class Timing:
    """A bucket lease's times, in seconds."""

    lease: float = 20.0  # not renewed for this long: its holder is dead
    renew: float = 2.0  # how often the holder renews it
    settle: float = 5.0  # written, then read back after this: longer than any store latency


TIMING = Timing()


class LeaseLost(OSError):
    """This run's lock is no longer its own: it stops (exit 3) and publishes nothing."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.ENOLCK, why)


def lock(store: Store, run_id: str, clock: Callable[[], float] | None = None,
         name: str = LOCK_NAME) -> OutputLock | BucketLock:
    """The output's one-writer lock (or a shard's, ``name``): an flock on disk, a lease object
    in a bucket. It fences the store: once lost, the store's next write fails."""
    if isinstance(store, LocalStore):
        return OutputLock(store.root, name, run_id)
    assert isinstance(store, BucketStore)
    return BucketLock(store, run_id, name, clock=clock, fence=True)


# -- on disk ------------------------------------------------------------------------------------


def _open_lock(path: Path, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None


class OutputLock:
    """An exclusive flock on a lock file; the kernel drops it if we die."""

    def __init__(self, output: Path, name: str = LOCK_NAME, run_id: str = "") -> None:
        self.path = output / name
        self.run_id = run_id
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        for _ in range(10):  # a mender unlinks a lock file it holds: lock the one named now
            try:
                fd = _open_lock(self.path, create=True)
            except OSError as exc:
                why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
                raise UsageError(f"output {self.path.parent}: cannot open the lock file "
                                 f"{self.path.name} ({why})") from None
            assert fd is not None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_holder_bytes(fd))
                os.close(fd)
                raise UsageError(f"output {self.path.parent}: another cph-collector run "
                                 f"({holder}) is writing to it; wait for it or use another "
                                 "--output") from None
            if _names(self.path, fd):
                break
            os.close(fd)
        else:
            raise UsageError(f"output {self.path.parent}: the lock file {self.path.name} "
                             "keeps being removed; run it again")
        os.ftruncate(fd, 0)
        os.write(fd, orjson.dumps({"run_id": self.run_id, "pid": os.getpid()}))
        self._fd = fd
        return self

    def check(self) -> None:
        """An flock is never lost while the process lives."""

    verify = check

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _names(path: Path, fd: int) -> bool:
    """``path`` still names the file ``fd`` locked (not unlinked or replaced meanwhile)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _holder_bytes(fd: int, tries: int = 20, pause: float = 0.01) -> bytes:
    """What the holder of a lock file wrote into it. A holder writes its name just after it
    takes the flock, so a run refused in that moment reads an empty file: read again, a
    few times, before naming it "unknown"."""
    for _ in range(tries):
        raw = os.pread(fd, 256, 0)
        if raw.strip():
            return raw
        time.sleep(pause)
    return b""


def _describe(raw: bytes) -> str:
    """A lock file's holder, for a message: ``run R, pid P`` (or a bare pid, as before)."""
    text = raw.decode(errors="replace").strip()
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return f"pid {text or 'unknown'}"
    if not isinstance(doc, dict):
        return "pid unknown"
    return f"run {doc.get('run_id') or '?'}, pid {doc.get('pid')}"


def _holder_id(raw: bytes) -> str | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("run_id"), str):
            return str(doc["run_id"])
    return None


@contextlib.contextmanager
def _flock_claims(paths: list[Path], unlink: bool = False, run_id: str = ""
                  ) -> Iterator[tuple[list[Path], dict[Path, str]]]:
    """Take every dead writer's flock (non-blocking); (claimed, {path: live holder's run id}).
    ``unlink``: a mender (``run_id``) clearing their work, which makes a missing lock file too
    (so a writer starting meanwhile is refused, and told by whom) and removes the claimed
    files at the end."""
    fds: dict[Path, int] = {}
    alive: dict[Path, str] = {}
    try:
        for path in paths:
            fd = _open_lock(path, create=unlink)
            if fd is None:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive[path] = _holder_id(os.read(fd, 256)) or "?"
                os.close(fd)
                continue
            fds[path] = fd
            if unlink and run_id:
                os.ftruncate(fd, 0)
                os.pwrite(fd, orjson.dumps({"run_id": run_id, "pid": os.getpid()}), 0)
        yield list(fds), alive
    finally:
        for path, fd in fds.items():
            if unlink:
                with contextlib.suppress(OSError):
                    path.unlink()  # before the flock goes: a new writer makes a new file
            os.close(fd)


# -- in a bucket --------------------------------------------------------------------------------


class BucketLock:
    """Leases of ``names`` for ``run_id`` (one name for a run's own lock; a mender claims
    several); see the module's docstring. ``fence``: this is the run's own lock, and the
    store's writes stop once it is lost."""

    def __init__(self, store: BucketStore, run_id: str, *names: str,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None,
                 timing: Timing | None = None, fence: bool = False, wait: bool = True) -> None:
        self.store, self.run_id, self.names = store, run_id, names or (LOCK_NAME,)
        self.name = self.names[0]
        self.clock = clock or time.time
        self.sleep = sleep or time.sleep
        self.timing = timing or TIMING
        self.fence, self.wait = fence, wait
        self.token = uuid.uuid4().hex
        self.held: list[str] = []
        self._written: list[str] = []  # ours until read back: removed if we give up
        self.alive: dict[str, dict[str, Any]] = {}  # names another live run holds
        self.lost: str | None = None
        self._renewed = 0.0  # our clock, when the last renewal began that succeeded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease(self) -> bytes:
        return orjson.dumps({"run_id": self.run_id, "token": self.token,
                             "renewed": self.clock(), "host": socket.gethostname(),
                             "pid": os.getpid()})

    def _ours(self, doc: dict[str, Any] | None) -> bool:
        return doc is not None and doc.get("token") == self.token

    def _live(self, doc: dict[str, Any] | None) -> bool:
        """Another run's lease, renewed less than ``lease`` s ago."""
        return doc is not None and not self._ours(doc) and _age(doc, self.clock()) < \
            self.timing.lease

    def _refusal(self, doc: dict[str, Any]) -> UsageError:
        return UsageError(f"output {self.store.url}: another cph-collector run "
                          f"({doc.get('run_id')} on {doc.get('host')}, pid {doc.get('pid')}, "
                          f"seen {max(_age(doc, self.clock()), 0):.0f} s ago) is writing to it; "
                          "wait for it or use another --output")

    def __enter__(self) -> BucketLock:
        try:
            self._acquire()
        except OSError as exc:
            self._release()
            raise UsageError(f"output {self.store.url}: cannot take the lock {self.name} "
                             f"({reason(exc)})") from None
        except BaseException:
            self._release()
            raise
        if self.fence:
            if not self.held:
                doc = self.alive.get(self.name) or {}
                raise self._refusal(doc)
            self.store.writer, self.store.guard = self.run_id, self.check
        if self.held:
            self._thread = start_thread(self._renew_loop, "bucket-lease")
        return self

    def _acquire(self) -> None:
        """Write ours over every free name, settle, read back: ``held`` and ``alive``."""
        deadline = self.clock() + self.timing.lease + self.timing.renew
        written = self._written
        for name in self.names:
            while True:
                began = self.clock()
                doc = read_lease(self.store, name)
                if not self._live(doc):
                    break
                assert doc is not None
                if not self.wait or self.clock() >= deadline:
                    self.alive[name] = doc
                    break
                self.sleep(self.timing.renew)  # a killed holder's lease runs out meanwhile
            if name in self.alive:
                continue
            self._renewed = began
            written.append(name)
            self.store.write(name, self._lease())
            if self.clock() - began >= self.timing.settle:  # a slower write than settle
                raise OSError(errno.ETIMEDOUT, "the store answers too slowly to take it "
                              "safely")  # could land after another run confirmed its own
        if written:
            self.sleep(self.timing.settle)
        for name in written:
            doc = read_lease(self.store, name)
            if self._ours(doc):
                self.held.append(name)
            else:
                self.alive[name] = doc or {}

    def renew_once(self) -> None:
        """Re-read each held lease: still ours, a fresh renewal; another's, lost. A store that
        fails every renewal for ``lease - renew`` s loses it too (another run may take it)."""
        began = self.clock()
        try:
            for name in self.held:
                doc = read_lease(self.store, name)
                if not self._ours(doc):
                    self.lost = _lost(name, doc)
                    return
                self.store.write(name, self._lease())
            self._renewed = began
        except OSError as exc:
            if began - self._renewed >= self.timing.lease - self.timing.renew:
                self.lost = (f"could not renew the lock {self.name} for "
                             f"{began - self._renewed:.0f} s ({reason(exc)}); this run stops "
                             "and publishes nothing")

    def _renew_loop(self) -> None:
        while self.lost is None and not self._stop.wait(self.timing.renew):
            self.renew_once()

    def check(self) -> None:
        """LeaseLost once the renewal found the lease lost (cheap: a flag)."""
        if self.lost is not None:
            raise LeaseLost(self.lost)

    def verify(self) -> None:
        """``check``, and read the leases back: before publishing."""
        self.check()
        for name in self.held:
            doc = read_lease(self.store, name)
            if not self._ours(doc):
                self.lost = _lost(name, doc)
                raise LeaseLost(self.lost)

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.fence and self.store.guard == self.check:
            self.store.guard = None
        for name in dict.fromkeys([*self.held, *self._written]):
            with contextlib.suppress(OSError):
                if self._ours(read_lease(self.store, name)):
                    self.store.delete(name)
        self.held, self._written = [], []

    def __exit__(self, *exc: object) -> None:
        self._release()


def _lost(name: str, doc: dict[str, Any] | None) -> str:
    other = f"run {doc.get('run_id')}" if doc and doc.get("run_id") else "another run"
    return f"lost the lock {name} to {other}; this run stops and publishes nothing"


def read_lease(store: Store, name: str) -> dict[str, Any] | None:
    """A lease object, or None (absent, or not a lease of ours: taken over). A read that
    overlapped a renewal can be cut short (the size was asked before the object changed):
    read again, never "absent"."""
    for _ in range(5):
        try:
            doc = orjson.loads(store.read(name))
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            continue
        return doc if isinstance(doc, dict) else None
    return None


def _age(doc: dict[str, Any], now: float) -> float:
    try:
        return now - float(doc.get("renewed", 0))
    except (TypeError, ValueError):
        return float("inf")


# -- who is alive, and clearing a dead writer's work ---------------------------------------------


def _writer_locks(store: Store) -> list[str]:
    """Every writer's lock there can be: the output's, and each dated staging folder's."""
    names = [LOCK_NAME]
    for day in store.folders(STAGING):
        if day.startswith("snapshot_date="):
            names += [f"{STAGING}/{day}/{n}" for n in store.files(f"{STAGING}/{day}")
                      if n.endswith(SUFFIX)]
    return names


def live_runs(store: Store) -> set[str]:
    """The run ids of the writers alive now (the caller's own included)."""
    if isinstance(store, LocalStore):
        with _flock_claims([store.path(n) for n in _writer_locks(store)]) as (_, alive):
            return set(alive.values())
    clock = time.time
    return {str(doc.get("run_id")) for name in _writer_locks(store)
            if (doc := read_lease(store, name)) is not None
            and _age(doc, clock()) < TIMING.lease}


@contextlib.contextmanager
def claimed(store: Store, folder: str, run_id: str, also: tuple[str, ...] = ()
            ) -> Iterator[dict[str, str]]:
    """Hold the lock in ``folder`` of every dead writer, of every writer's folder
    (``shard-K-of-N/``) whose lock is missing, and the locks ``also`` (of writers not begun:
    ``publish`` takes every shard's), so none can start meanwhile (deleted at the end); yields
    {lock name: run id} of those alive, whose work stays untouched."""
    names = sorted({n for n in store.files(folder) if n.endswith(SUFFIX)}
                   | {n + SUFFIX for n in store.folders(folder) if n.startswith(WRITER)}
                   | set(also))
    if not names:
        yield {}
        return
    if isinstance(store, LocalStore):
        if also:
            store.make_folder(folder)  # the caller removes it if it stays empty
        paths = {store.path(f"{folder}/{n}"): n for n in names}
        with _flock_claims(list(paths), unlink=True, run_id=run_id) as (_, alive):
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
        keep = {n.removesuffix(SUFFIX) for n in alive} | (set(shared) if alive else set())
        for name in store.folders(folder):
            if name not in keep:
                store.delete_tree(f"{folder}/{name}")
        for name in store.files(folder):
            if not name.endswith(SUFFIX):
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
    for name in store.folders(TMP):
        if name in alive:
            continue
        if UNLEASED.fullmatch(name):  # a run id's own uploads end with its lease
            newest = store.newest(f"{TMP}/{name}")
            if newest is not None and now - newest < TIMING.lease:
                continue
        store.delete_tree(f"{TMP}/{name}")
    for name in store.files(TMP):
        store.delete(f"{TMP}/{name}")
