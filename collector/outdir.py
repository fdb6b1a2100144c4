"""The output folder before a run: is it ours to write, is it writable (who else is in it, and
whether they are alive, is ``lease``'s: its names are re-exported here).

The tool writes only through folders it made: a symbolic link where it would write or delete
(``_staging``, a date's staging or partition folder, a table or ``runs`` folder, the lock file)
is refused, so a link can never turn a clean-up into the deletion of a folder elsewhere. The
output folder itself may be a link.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

from collector import staging
from collector.errors import FatalRunError, UsageError
from collector.lease import LOCK_NAME, BucketLock, OutputLock, lock
from collector.schemas import TABLES, partition
from collector.store import Kind, LocalStore, Store, fault_of, reason

__all__ = ["LOCK_NAME", "BucketLock", "OutputLock", "check_no_links", "check_writable", "lock"]


def check_no_links(output: Path, snapshot_date: dt.date) -> None:
    """UsageError naming the first path the run would write through that is a symbolic link."""
    paths = [output / staging.root(), output / staging.date_staging(snapshot_date),
             output / "runs", output / LOCK_NAME]
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
    before any request to the API; ``FatalRunError`` (exit 3) when the store itself failed
    (a 5xx or a timeout after its retries): nothing the user gave is wrong."""
    probe = f"{staging.root()}/.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if isinstance(store, LocalStore):
            store.make_folder(staging.root())
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
        if fault_of(exc).kind in (Kind.SERVER, Kind.TIMEOUT):  # the store's fault, not ours
            raise FatalRunError(f"output {store.url}: the store failed the probe "
                                f"({reason(exc)}); nothing was requested: run it again "
                                "later") from None
        raise UsageError(f"output {store.url}: not writable ({reason(exc)})") from None
    if back != b"probe":
        raise UsageError(f"output {store.url}: not writable (a probe read back is not what "
                         "was written)")
