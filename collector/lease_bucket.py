"""Bucket leases: a lease object, renewed while its run lives (the output's lock, or a
shard's; see ``lease``).

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
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collector.concurrency import start_thread
from collector.errors import LockHeld, UsageError
from collector.lease_disk import LOCK_NAME
from collector.store import BucketStore, Store, reason


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
        """``why``: the message, for the run's error."""
        super().__init__(errno.ENOLCK, why)


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
        return doc is not None and not self._ours(doc) and age(doc, self.clock()) < \
            self.timing.lease

    def _refusal(self, doc: dict[str, Any]) -> UsageError:
        return LockHeld(str(self.store.url),
                        f"{doc.get('run_id')} on {doc.get('host')}, pid {doc.get('pid')}, "
                        f"seen {max(age(doc, self.clock()), 0):.0f} s ago")

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


def age(doc: dict[str, Any], now: float) -> float:
    """Seconds since a lease was renewed, by ``now`` (infinite: no time in it)."""
    try:
        return now - float(doc.get("renewed", 0))
    except (TypeError, ValueError):
        return float("inf")
