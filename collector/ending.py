"""How a snapshot ends, in one place: its counts, its verdict and exit code, its record, its
manifest.

Every command that ends a snapshot goes through here: a run that fails, publishes or stages
its share (``pipeline``), ``plan``, ``publish --shards`` (``merge``), the next run's recording
of a publish a stopped run left (``record_published``, from ``preflight``) and a shard that
publishes its night (``night``); each then emits its metrics (``emit_metrics``). The verdict
is ``conclude``'s, from the counts, with the listings and ``--fail-on-untrusted``
(``verdict``); this module alone turns it into a record's status and exit code (``end``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from collector import metrics
from collector.conclude import Conclusion, verdict_of, with_changes
from collector.config import Settings
from collector.errors import CollectorError, ExitCode, FatalRunError, RunStatus, Status
from collector.intake import Intake
from collector.manifest import (
    LISTING_COUNTS,
    RunRecord,
    follow,
    newest_success,
    read_manifest,
    rewrite,
    write_manifest,
)
from collector.store import Store, reason

__all__ = ["LISTING_COUNTS", "Conclusion", "with_changes"]

log = logging.getLogger("collector")


class Totals(Protocol):
    """What a run's tally says (``collect.Tally``)."""

    done: int
    members: int
    by_status: dict[str, int]


class Listed(Protocol):
    """What a listing says of itself (``discover.Listing``)."""

    project_id: str
    image_type: str
    status: Status
    images: int
    bad_times: int
    unfit: int
    repeated: int


def run_counts(intake: Intake, tally: Totals, listings: Sequence[Listed] | None) -> dict[str, int]:
    """The manifest's ``counts``: the input's, the statuses', and (discovery) the listings'."""
    by_status = tally.by_status
    counts = {
        "input_lines": intake.lines - intake.other_shards,  # a shard's share: they add up
        "unique_ids": intake.unique,
        "duplicates": intake.duplicates,
        "resumed": intake.resumed,
        "invalid": by_status[Status.INVALID_ID.value],
        **{s: n for s, n in by_status.items() if s != Status.INVALID_ID.value},
        "member_rows": tally.members,
        "status_rows": tally.done,
    }
    if listings is not None:
        counts.update({
            "projects": len({x.project_id for x in listings}),
            "listings": len(listings),
            **{f"listings_{s.value}": sum(x.status is s for x in listings)
               for s in (Status.OK, Status.FORBIDDEN, Status.FAILED)},
            "images_listed": sum(x.images for x in listings),
            "private_images_listed": sum(x.images for x in listings
                                         if x.image_type == "private"),
            "unreadable_image_times": sum(x.bad_times for x in listings),
            "unfit_image_values": sum(x.unfit for x in listings),
            "repeated_listed_images": sum(x.repeated for x in listings),
        })
    return counts


def verdict(counts: dict[str, int], *, stop_signal: int | None = None,
            endpoint: str | None = None, max_failed_share: float | None = None,
            untrusted_alerts: int = 0, fail_on_untrusted: bool = False) -> Conclusion:
    """The night's verdict from its counts (its listings included): ``conclude``'s rule, then
    exit 4 for shares to untrusted projects under ``fail_on_untrusted``."""
    conclusion = verdict_of(counts, max_failed_share, stop_signal=stop_signal,
                            endpoint_verdict=endpoint)
    return with_changes(conclusion, untrusted_alerts, fail_on_untrusted)


def alerts_in(changes: dict[str, Any] | None) -> int:
    """Shares added or updated to untrusted projects, from a change summary's JSON."""
    untrusted = (changes or {}).get("untrusted")
    return sum(n for kind, n in untrusted.items() if kind in ("added", "updated")
               and isinstance(n, int)) if isinstance(untrusted, dict) else 0


def fatal(error: str, code: ExitCode = ExitCode.FATAL) -> Conclusion:
    """A run that stops on ``error``: nothing published."""
    return Conclusion(RunStatus.FATAL, code, error)


def failure(exc: BaseException) -> Conclusion:
    """The ending of a run that ``exc`` stopped: ours keep their words and exit code; anything
    else is an internal error, exit 3."""
    if isinstance(exc, CollectorError):
        return fatal(str(exc), exc.exit_code)
    return fatal(f"internal error: {type(exc).__name__}: {exc}")


def staged(conclusion: Conclusion | None = None, error: str | None = None) -> Conclusion:
    """A shard's (or the plan's) ending: exit 0 whatever its images' statuses, the night's
    verdict is the publish's (``error``: what it says, without a conclusion of its own)."""
    if conclusion is None:
        return Conclusion(RunStatus.STAGED, ExitCode.OK, error)
    return dataclasses.replace(conclusion, status=RunStatus.STAGED, exit_code=ExitCode.OK)


def publish_failure(exc: BaseException) -> str:
    """Why a publish failed, in a few words: a store's reason, or an internal error named by
    its type."""
    if isinstance(exc, OSError):
        return reason(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def end(record: RunRecord, conclusion: Conclusion, counts: dict[str, int] | None = None,
        **also: Any) -> None:
    """``record`` ends as ``conclusion`` says (its counts, files or changes too, if given)."""
    record.status = conclusion.status.value
    record.exit_code = int(conclusion.exit_code)
    record.error = conclusion.error
    record.ended_at = dt.datetime.now(dt.UTC)
    if counts is not None:
        record.counts = counts
    for name, value in also.items():
        setattr(record, name, value)


def refused(record: RunRecord, exc: CollectorError) -> None:
    """A run stopped before it had a conclusion (a usage error): ``fatal``, its exit code."""
    if record.exit_code is None:
        record.exit_code, record.error = int(exc.exit_code), str(exc)
        record.status = RunStatus.FATAL.value


def write(store: Store, record: RunRecord) -> None:
    """Blocking: the manifest as ``record`` says it; an OSError is the caller's to word."""
    write_manifest(store, record)


def save(store: Store, record: RunRecord, counts: dict[str, int] | None = None, *,
         quiet: bool = False, after_publish: bool = False) -> None:
    """Blocking: the manifest written. A failure is ``FatalRunError`` (exit 3, the record
    ``fatal`` with ``counts``, or still finished ``after_publish``: the data is visible), or
    a warning (``quiet``) when the run is ending anyway and already has its error."""
    output = store.url
    try:
        write(store, record)
    except OSError as exc:
        why = reason(exc)
        if quiet:
            log.warning("output %s: cannot write the manifest runs/%s.json (%s)", output,
                        record.run_id, why)
            return
        if after_publish:  # the data is visible: the record stays finished, exit 3
            error = (f"output {output}: {record.snapshot_date} is published, but its manifest "
                     f"could not be written ({why}); the next run records it")
            record.exit_code, record.error = int(ExitCode.FATAL), error
        else:
            error = f"output {output}: cannot write the manifest runs/{record.run_id}.json ({why})"
            end(record, fatal(error), counts)
        raise FatalRunError(error) from None


def last_success(store: Store, metrics_file: Path | None) -> float:
    """The output's newest finished run (blocking), read once a run: every later metrics
    write carries it over; an output that cannot be read falls back on the metrics file."""
    try:
        return newest_success(store) or 0.0
    except OSError:
        return (metrics.previous_success(metrics_file) if metrics_file else None) or 0.0

def emit_metrics(settings: Settings, live: RunRecord, final: bool,
                 last_success: float | None) -> None:
    """The metrics file (every progress interval, and at the end) and, at the end, the
    Pushgateway. Neither can fail the run: each failure is a warning."""
    registry = metrics.registry_of(live, last_success)
    if settings.observe.metrics_file is not None:
        metrics.write_file(settings.observe.metrics_file, registry)
    if final and settings.observe.pushgateway is not None:
        metrics.push(settings.observe.pushgateway, registry,
                     metrics.grouping_key(settings.http.region, settings.shards.label))



def record_published(store: Store, run_id: str, counts: dict[str, int], files: list[str],
                     by: str, changes: dict[str, Any] | None = None) -> bool:
    """A run stopped after its data became visible, before its manifest said so: say it now
    (``finished``, with the counts and files read back from what readers see, and the change
    summary its publish marker kept: its verdict is the one the run would have given, exit 4
    for untrusted shares under its ``fail_on_untrusted`` included)."""
    if f"{run_id}.json" not in store.files("runs"):  # links are never listed
        return False
    doc = read_manifest(store, run_id)
    if doc is None or doc.get("status") not in (RunStatus.RUNNING, RunStatus.FATAL):
        return False  # fatal: its publish failed part-way, and was finished since
    counts = {**doc.get("counts", {}), **counts}
    settings = doc.get("settings")
    conclusion = verdict(counts, untrusted_alerts=alerts_in(changes),
                         fail_on_untrusted=isinstance(settings, dict)
                         and settings.get("fail_on_untrusted") is True)
    doc.update(status=conclusion.status.value, exit_code=int(conclusion.exit_code),
               error=None, files=files, counts=counts, recorded_by=by)
    if changes:
        doc["changes"] = changes
    rewrite(store, doc)
    follow(store, doc)
    return True


def night_exit(record: RunRecord, run_id: str, shard_run: str) -> int:
    """What a shard that saw its night published exits with: the night's exit code, or 0
    when another shard published it with this shard's share (``shard_run``, the run that
    staged it) in it."""
    assert record.exit_code is not None
    if record.run_id != run_id and shard_run in record.input:
        log.info("%s was published by another shard (run %s, exit %s), this shard's share "
                 "with it", record.snapshot_date, record.run_id, record.exit_code)
        return int(ExitCode.OK)
    return record.exit_code
