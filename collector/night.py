"""A shard that publishes its night (``--publish-when-staged``): no publish at a fixed hour.

Once staged, a shard takes the output lock (waiting while another shard publishes) and counts
the shards staged: the one that finds all N publishes, as ``publish --shards N`` would; the
others say how many are staged and exit 0. A shard started again once the night's publish
began (or is done) collects nothing: it finishes that publish, or gives its verdict again, so
a retry never washes out the night's exit code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from collector.config import Settings
from collector.ending import night_exit
from collector.errors import FatalRunError, UsageError
from collector.manifest import RunRecord, latest_finished
from collector.merge import publish_shards
from collector.outdir import lock
from collector.schemas import parquet_files
from collector.shards import Shard
from collector.staging import date_staging, shard_folder, shard_mark
from collector.store import Store

log = logging.getLogger("collector")
LOCK_WAIT = 1800.0  # seconds a shard waits for the output lock: another shard's publish
POLL = 1.0


@dataclass(frozen=True, slots=True)
class Night:
    """The night's publish as this shard saw it: its record, and what this shard exits with."""

    record: RunRecord
    exit_code: int


def begun(store: Store, shard: Shard, day: dt.date) -> bool:
    """The night's publish began (chunks gathered into the date's staging) or is done (the
    date published from ``shard.count`` shards)."""
    staging = date_staging(day)
    if any(parquet_files(store, f"{staging}/{table}") for table in ("image_status", "members")):
        return True
    doc = latest_finished(store, day)
    return doc is not None and str(doc.get("input", "")).startswith(f"{shard.count} shards: ")


def staged(store: Store, shard: Shard, day: dt.date) -> int:
    """How many of the night's shards have their mark."""
    return sum(store.exists(shard_mark(shard_folder(day, k, shard.count)))
               for k in range(1, shard.count + 1))


@contextlib.contextmanager
def output_lock(store: Store, run_id: str, wait: float = LOCK_WAIT,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """The output's lock, waited for up to ``wait`` seconds (a shard publishing holds it);
    past that, ``FatalRunError`` (exit 3: a retry finds the night published, or publishes
    it)."""
    deadline = clock() + wait
    while True:
        held = lock(store, run_id)
        try:
            held.__enter__()
            break
        except UsageError as exc:
            if clock() >= deadline:
                raise FatalRunError(f"{exc} (waited {wait:.0f} s for it); run the shard "
                                    "again") from None
            sleep(POLL)
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def publish_night(store: Store, settings: Settings, shard: Shard, day: dt.date, shard_run: str,
                  run_id: str, wait: float = LOCK_WAIT,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Night | None:
    """Blocking. Under the output lock: the night published by this shard when every shard is
    staged (or its publish began); None when some are not staged yet (the last one
    publishes). A night another shard published with this shard's share (``shard_run``, the
    run that staged it) is exit 0 here; a shard started again after the publish gets the
    night's exit code. ``FatalRunError`` (exit 3) when the publish refuses or fails."""
    with output_lock(store, run_id, wait, clock, sleep):
        if not begun(store, shard, day):
            count = staged(store, shard, day)
            if count < shard.count:
                log.info("shard %s staged; %d of %d shards staged: the last one publishes",
                         shard, count, shard.count)
                return None
        record = publish_shards(store, day, shard.count, run_id, settings.trust.trusted,
                                settings.public(), settings.trust.fail_on_untrusted,
                                settings.limits.max_failed_share)
    return Night(record, night_exit(record, run_id, shard_run))
