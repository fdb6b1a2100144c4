"""Files that exist only complete: written as ``.tmp`` (never through a link), fsynced, renamed.

A write that fails part-way (a full disk, a kill) leaves no file under the final name, and this
process removes its own ``.tmp``; one left by a kill is removed by the next run's clean-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(target: Path, write: Callable[[BinaryIO], None],
                     tmp: Path | None = None) -> None:
    """Call ``write`` on a fresh temporary file, fsync it, rename it to ``target``."""
    tmp = tmp or target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make the renames in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
