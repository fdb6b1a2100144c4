"""Before the first request, under the output lock: mend what stopped runs left, then resume.

In this order, each step safe to repeat: finish the publishes stopped runs began (so no date
is left without its data) and give those runs the manifest their visible data deserves; mark
the other dead runs ``crashed``; remove other dates' staging leftovers; survey the input (its
hash and size); adopt the committed chunks of an unfinished run of the same date and input.
The output lock excludes other runs, plans and publishes, not shards: nothing of a live
shard is touched (``lease`` says who is alive).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from collector.ending import record_published
from collector.errors import FatalRunError
from collector.hygiene import clean_stale_staging, finish_interrupted
from collector.inputs import Survey, survey
from collector.lease import live_runs
from collector.manifest import mark_crashed
from collector.published import read_published
from collector.sink import ParquetSink, Resumed
from collector.staging import date_staging
from collector.store import Store, reason

log = logging.getLogger("collector")


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the run starts from."""

    survey: Survey
    resumed: Resumed


def prepare(sink: ParquetSink, input_path: str | None, fmt: str,
            fingerprint_of: Callable[[str | None], str | None], *,
            mend: bool = True) -> Prepared:
    """Blocking (run it in a thread). ``fingerprint_of(digest)`` gives the resume fingerprint
    of the input's sha256 (None for a discovery run, which has no input). An OSError on the
    way is ``FatalRunError``, one line. ``mend`` False (a shard, which holds only its own
    lock while other shards run): nothing but its own staging is touched; the publish step
    mends the rest."""
    store = sink.store
    about = survey(input_path, fmt) if input_path is not None else Survey(None, None)
    removed: list[str] = []
    try:
        if mend:
            recover(store, sink.run_id)
            removed = clean_stale_staging(store, date_staging(sink.snapshot_date), sink.run_id)
        resumed = sink.resume(fingerprint_of(about.digest))
    except OSError as exc:
        raise FatalRunError(f"output {store.url}: write failed ({reason(exc)})") from None
    if removed:
        log.info("removed leftovers of unfinished runs for other dates: %s", ", ".join(removed))
    if resumed.chunks or resumed.retried:
        log.info("resuming: %d chunk(s), %d images already committed for %s; %d failed "
                 "images are asked again", resumed.chunks, len(resumed.keys),
                 sink.snapshot_date, resumed.retried)
    return Prepared(about, resumed)


def recover(store: Store, run_id: str) -> None:
    """Finish interrupted publishes and record them; mark the other dead runs crashed (a run
    whose lock is held is alive, see ``lease``)."""
    for stopped, (day, changes) in finish_interrupted(store, run_id).items():
        published = read_published(store, day)
        if record_published(store, stopped, published.counts, published.files, by=run_id,
                            changes=changes):
            log.info("run %s had published %s before it stopped; its manifest now says "
                     "finished", stopped, day)
    for crashed in mark_crashed(store, lambda: live_runs(store) | {run_id}):
        log.info("run %s had stopped without finishing; marked crashed", crashed)
