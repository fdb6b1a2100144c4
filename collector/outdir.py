"""The output folder before a run: is it ours to write, is it writable, is anyone else in it.

The tool writes only through folders it made: a symbolic link where it would write or delete
(``_staging``, a date's staging or partition folder, a table or ``runs`` folder, the lock file)
is refused, so a link can never turn a clean-up into the deletion of a folder elsewhere. The
output folder itself may be a link.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from collector.errors import UsageError
from collector.sink import STAGING, TABLES, partition

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


def check_writable(output: Path) -> None:
    """Create, write, rename and delete a probe, as the run will; UsageError if any step fails."""
    try:
        (output / STAGING).mkdir(parents=True, exist_ok=True)
        probe = output / STAGING / f".probe-{os.getpid()}"
        probe.write_bytes(b"probe")
        moved = probe.with_name(probe.name + ".renamed")
        os.replace(probe, moved)
        moved.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"output {output}: not writable ({reason})") from None


class OutputLock:
    """An exclusive flock on OUTPUT/.cph-collector.lock; the kernel drops it if we die."""

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise UsageError(f"output {self.path.parent}: cannot open the lock file "
                             f"{LOCK_NAME} ({why})") from None
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
