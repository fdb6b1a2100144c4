"""A run's figures as Prometheus metrics, through ``prometheus_client`` (never the exposition
format by hand): a file for node_exporter's textfile collector, and a push to a Pushgateway.

The metrics describe the latest run. No ``snapshot_date`` label: a label that changes every
night makes a new series every night; the date is a value (``snapshot_date_seconds``).
``last_success_timestamp_seconds`` moves only when a run finishes; any other end gives the
output's newest finished run (0 when none ever finished, so "no success for 26 h" fires).
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    push_to_gateway,
    write_to_textfile,
)
from prometheus_client.parser import text_string_to_metric_families

from collector.concurrency import start_thread
from collector.errors import RunStatus, Status
from collector.manifest import LISTING_COUNTS, RunRecord
from collector.secrets import from_server, redact

PREFIX = "cph_collector_"
JOB = "cph_collector"
PUSH_DEADLINE = 15.0  # seconds for the whole push: connect, send, the answer's head
log = logging.getLogger("collector")
LISTED = {  # the help of a discovery run's listing counts beyond ``listings``
    "projects": "projects listed", "images_listed": "images listed, each once a listing",
    "private_images_listed": "private images listed (their members are collected)",
    "unreadable_image_times": "listed image times of no shape we know (stored as null)",
    "unfit_image_values": "listed values that did not fit their column (stored as null)",
    "repeated_listed_images": "images a later page of a listing showed again (kept once)"}


def registry_of(record: RunRecord, last_success: float | None) -> CollectorRegistry:
    """Every metric of ``record`` (a live record while the run goes)."""
    # no *_created series: a batch run's counters start with the run
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A gauge of the run's registry, named with the common prefix."""
        return Gauge(PREFIX + name, text, labels, registry=registry)

    counts = record.counts
    gauge("last_run_timestamp_seconds", "when the latest run started").set(
        record.started_at.timestamp())
    finished = record.status == RunStatus.FINISHED and record.ended_at is not None
    gauge("last_success_timestamp_seconds", "when the latest finished run ended (0: never)").set(
        record.ended_at.timestamp() if finished and record.ended_at else (last_success or 0))
    gauge("run_duration_seconds", "how long the latest run took (so far)").set(record.seconds)
    gauge("snapshot_date_seconds", "the latest run's snapshot date, as midnight UTC").set(
        _midnight(record))
    gauge("running", "1 while the run goes, 0 once it ended").set(
        1 if record.status == RunStatus.RUNNING else 0)
    gauge("staged", "1 when the run staged its share for the night's publish (a shard, a "
                    "plan): its task succeeded; the night's verdict is the publish's").set(
        1 if record.status == RunStatus.STAGED else 0)
    images = gauge("images", "images of the latest run by status", ("status",))
    for status in Status:
        key = "invalid" if status is Status.INVALID_ID else status.value
        images.labels(status.value).set(counts.get(key, 0))
    gauge("member_rows", "member rows of the latest run").set(counts.get("member_rows", 0))
    for name, value, text in (("requests", record.requests, "HTTP requests, retries included"),
                              ("retries", record.retries, "retried requests"),
                              ("throttled", record.throttled, "requests answered 429")):
        Counter(PREFIX + name, text + " (this run)", registry=registry).inc(value)
    rate = gauge("rate_limit_per_second", "requests per second: configured, the lowest the "
                                          "adaptive limiter went to, and where it ended", ("kind",))
    for kind, per_second in record.rate.items():
        rate.labels(kind).set(per_second)
    if "listings" in counts:
        listings = gauge("listings", "ListImages listings by status", ("status",))
        bad = {"failed": counts.get("listings_failed", 0),
               "forbidden": counts.get("listings_forbidden", 0)}
        listings.labels("ok").set(counts["listings"] - sum(bad.values()))
        for outcome, number in bad.items():
            listings.labels(outcome).set(number)
        for name in LISTING_COUNTS:  # the manifest's other listing counts, by their names
            if not name.startswith("listings"):
                gauge(name, LISTED.get(name, name)).set(counts.get(name, 0))
    _changes(record, gauge)
    if record.exit_code is not None:
        gauge("exit_code", "the latest run's exit code").set(record.exit_code)
    return registry


def _midnight(record: RunRecord) -> float:
    return dt.datetime.combine(record.snapshot_date, dt.time(), dt.UTC).timestamp()


def _changes(record: RunRecord, gauge: Callable[..., Gauge]) -> None:
    """``changes{change, trusted}`` from the manifest's ``changes`` (none for a first
    snapshot, or before the run compared anything)."""
    doc = record.changes
    if not doc or doc.get("first_snapshot", True):
        return
    changes = gauge("changes", "changed shares since the previous snapshot",
                    ("change", "trusted"))
    untrusted = doc.get("untrusted", {})
    assert isinstance(untrusted, dict)
    for kind in ("added", "removed", "updated", "image_gone"):
        total = int(doc.get(kind, 0))  # type: ignore[call-overload]
        changes.labels(kind, "false").set(int(untrusted.get(kind, 0)))
        changes.labels(kind, "true").set(total - int(untrusted.get(kind, 0)))


def previous_success(path: Path) -> float | None:
    """``last_success_timestamp_seconds`` in an earlier metrics file, read with
    ``prometheus_client``'s own parser; None when there is none or it does not parse."""
    try:
        if not path.is_file():  # never open a FIFO: reading it waits for a writer
            return None
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == PREFIX + "last_success_timestamp_seconds":
                    return float(sample.value) or None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def write_file(path: Path, registry: CollectorRegistry) -> None:
    """The textfile, written atomically (``prometheus_client`` writes a temporary file and
    renames it); a failure is a warning, never the run's."""
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        log.warning("metrics_file %s: cannot write it (%s)", path,
                    exc.strerror or type(exc).__name__)


def _within(deadline: float, call: Callable[[], object]) -> str | None:
    """``call()`` in a daemon thread, abandoned after ``deadline`` s (``urllib``'s timeout is
    per read: a byte every few seconds would hold it for ever); None, or why it failed."""
    failure: list[str] = []

    def run() -> None:
        try:
            call()
        except Exception as exc:  # URLError, HTTPError, http.client's errors for non-HTTP
            said = str(getattr(exc, "reason", None) or exc)
            if isinstance(exc, http.client.HTTPException):  # what answered is not HTTP
                said = f"not an HTTP answer: {type(exc).__name__} {said}"
            code = getattr(exc, "code", None)
            failure.append(" ".join(filter(None, (
                f"HTTP {code}" if isinstance(code, int) else None,
                said if said and said != "None" else None))) or type(exc).__name__)

    worker = start_thread(run, "pushgateway")
    worker.join(deadline)
    if worker.is_alive():
        return f"no answer within {deadline:g} s"
    return from_server(failure[0], 200) if failure else None


def probe(gateway: str, deadline: float = 5.0) -> str | None:
    """``GET /-/ready`` of a Pushgateway (``check``: nothing is pushed); None when it is
    ready, else why not."""
    def ready() -> None:
        with urllib.request.urlopen(f"{gateway.rstrip('/')}/-/ready",  # noqa: S310 (http(s) only)
                                    timeout=deadline):
            pass

    return _within(deadline, ready)


def push(gateway: str, registry: CollectorRegistry, grouping: Mapping[str, str],
         deadline: float | None = None) -> bool:
    """The metrics to a Pushgateway (``job="cph_collector"``); a Pushgateway that is down,
    refuses, answers something that is not HTTP, or has not answered within ``deadline``
    seconds in all (``_within``) is a warning, never a failed or held run."""
    deadline = PUSH_DEADLINE if deadline is None else deadline
    failure = _within(deadline, lambda: push_to_gateway(
        gateway, job=JOB, registry=registry, grouping_key=dict(grouping),
        timeout=min(deadline, 10.0)))
    if failure is not None:
        log.warning("pushgateway %s: push failed (%s)", redact(gateway), failure)
        return False
    return True


def grouping_key(region: str | None, shard: str | None = None) -> dict[str, str]:
    """What tells runs apart on one Pushgateway, besides the job: the region and the shard
    (``2-of-3``: a slash would need base64 in the push URL). Never the host or pod: a key
    that is the same every night makes each push replace the night before's group."""
    key: dict[str, str] = {}
    if region:
        key["region"] = region
    if shard:
        key["shard"] = shard.replace("/", "-of-")
    return key
