"""The output folder before a run: is it writable, and is nobody else using it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from collector.errors import UsageError
from collector.sink import STAGING

LOCK_NAME = ".cph-collector.lock"


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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
