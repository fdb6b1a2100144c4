"""Disk locks: an exclusive flock on a lock file (the output's, or a shard's; see ``lease``).

**On disk** a lock is an flock (the kernel drops it when its process dies), and the file names
the holder's run id and pid, for messages. Alive = held: a non-blocking flock probe that
succeeds means the writer is dead, and a mender keeps that flock while it removes the dead
writer's work, so its replacement cannot start in between (it is refused, exit 2, and its
scheduler retries).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import orjson

from collector.errors import LockHeld, UsageError

LOCK_NAME = ".cph-collector.lock"


def _open_lock(path: Path, create: bool) -> int | None:
    """A lock file's descriptor, never through a link (None: missing, unless ``create``)."""
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
        """The lock file ``name`` in ``output``, held for ``run_id`` (named in it)."""
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
                raise LockHeld(str(self.path.parent), holder) from None
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
    """The run id a lock file's holder wrote, if any."""
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("run_id"), str):
            return str(doc["run_id"])
    return None


@contextlib.contextmanager
def flock_claims(paths: list[Path], unlink: bool = False, run_id: str = ""
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
