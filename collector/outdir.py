"""The output folder before a run: is it ours to write, is it writable, is anyone else in it.

The tool writes only through folders it made: a symbolic link where it would write or delete
(``_staging``, a date's staging or partition folder, a table or ``runs`` folder, the lock file)
is refused, so a link can never turn a clean-up into the deletion of a folder elsewhere. The
output folder itself may be a link.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from collector.errors import UsageError
from collector.sink import STAGING, TABLES, partition
from collector.store import LocalStore, Store, reason

LOCK_NAME = ".cph-collector.lock"


def check_no_links(output: Path, snapshot_date: dt.date) -> None:
    """UsageError naming the first path the run would write through that is a symbolic link."""
    day = f"snapshot_date={snapshot_date.isoformat()}"
    paths = [output / STAGING, output / STAGING / day, output / "runs", output / LOCK_NAME]
    for table in TABLES:
        paths += [output / table, partition(output, table, snapshot_date)]
    for path in paths:
        if path.is_symlink():
            raise UsageError(f"output {output}: {path.relative_to(output)} is a symbolic link; "
                             "the tool writes and deletes only in folders it made (remove the "
                             "link, or use another --output)")


def check_writable(store: Store) -> None:
    """Write, read back and delete a probe, as the run will (on disk: rename it too);
    UsageError if any step fails: a missing bucket or refused credentials are found here,
    before any request to the API."""
    probe = f"{STAGING}/.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if isinstance(store, LocalStore):
            store.make_folder(STAGING)
            path = store.path(probe)
            path.write_bytes(b"probe")
            moved = path.with_name(path.name + ".renamed")
            os.replace(path, moved)
            moved.unlink()
            return
        store.write(probe, b"probe")
        back = store.read(probe)
        store.delete(probe)
    except OSError as exc:
        raise UsageError(f"output {store.url}: not writable ({reason(exc)})") from None
    if back != b"probe":
        raise UsageError(f"output {store.url}: not writable (a probe read back is not what "
                         "was written)")


def lock(store: Store, run_id: str, clock: Callable[[], float] = time.time,
         name: str = LOCK_NAME) -> contextlib.AbstractContextManager[object]:
    """The output's one-writer lock (or a shard's, ``name``): an flock on disk, a lease object
    in a bucket."""
    if isinstance(store, LocalStore):
        return OutputLock(store.root, name)
    return BucketLock(store, run_id, clock, name)


class OutputLock:
    """An exclusive flock on OUTPUT/.cph-collector.lock; the kernel drops it if we die."""

    def __init__(self, output: Path, name: str = LOCK_NAME) -> None:
        self.path = output / name
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise UsageError(f"output {self.path.parent}: cannot open the lock file "
                             f"{self.path.name} ({why})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"output {self.path.parent}: another cph-collector run "
                             f"(pid {holder}) is writing to it; wait for it or use another "
                             "--output") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


LEASE_SECONDS = 120.0  # a bucket lock not renewed for this long belongs to a dead run
RENEW_SECONDS = 30.0


class BucketLock:
    """A lease: ``.cph-collector.lock`` holds the run's id, host, pid and when it was last
    renewed (every 30 s, by a thread). A run finding a lease renewed less than 120 s ago by a
    live run refuses (exit 2); a lease of a process gone from this host (or of an earlier run
    of this process), or an expired one, is taken over. pyarrow cannot send a conditional
    write (``If-None-Match``), so two runs that start within the same moment are not told
    apart for sure: each writes its lease and reads it back, and the one that reads the
    other's refuses; one that reads its own while the other's is in flight is not caught."""

    def __init__(self, store: Store, run_id: str, clock: Callable[[], float],
                 name: str = LOCK_NAME) -> None:
        self.store, self.run_id, self.clock, self.name = store, run_id, clock, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease(self) -> bytes:
        return orjson.dumps({"run_id": self.run_id, "host": socket.gethostname(),
                             "pid": os.getpid(), "renewed": self.clock()})

    def _holder(self) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(self.store.read(self.name))
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            return None  # not a lease of ours: taken over
        return doc if isinstance(doc, dict) else None

    def _refuse_if_held(self) -> None:
        holder = self._holder()
        if holder is None or holder.get("run_id") == self.run_id:
            return
        age = self.clock() - float(holder.get("renewed", 0))
        pid = holder.get("pid")  # this very process runs one run at a time: its lease is stale
        gone = holder.get("host") == socket.gethostname() and (pid == os.getpid()
                                                                or not _alive(pid))
        if age < LEASE_SECONDS and not gone:
            raise UsageError(f"output {self.store.url}: another cph-collector run "
                             f"({holder.get('run_id')} on {holder.get('host')}, pid "
                             f"{holder.get('pid')}, seen {max(age, 0):.0f} s ago) is writing "
                             f"to it; wait for it or use another --output")

    def __enter__(self) -> BucketLock:
        try:
            self._refuse_if_held()
            self.store.write(self.name, self._lease())
            self._refuse_if_held()  # another run wrote its lease over ours meanwhile
        except OSError as exc:
            raise UsageError(f"output {self.store.url}: cannot take the lock {self.name} "
                             f"({reason(exc)})") from None
        self._thread = threading.Thread(target=self._renew, name="bucket-lock", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            with contextlib.suppress(OSError):
                self.store.write(self.name, self._lease())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            holder = self._holder()
            if holder is not None and holder.get("run_id") == self.run_id:
                self.store.delete(self.name)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
