"""The run manifest ``runs/<run_id>.json``: what a run did, written at start and again last.

Only a manifest with ``"status": "finished"`` describes published data. ``running``, ``fatal``,
``interrupted`` and ``crashed`` (killed, or the machine died) runs never published anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.errors import RunStatus
from collector.secrets import redact
from collector.store import Store

# A discovery run's counts of its listings (``ending.run_counts`` gives them; ``publish
# --shards`` carries them over from the plan).
LISTING_COUNTS = ("projects", "listings", "listings_ok", "listings_forbidden", "listings_failed",
                  "images_listed", "private_images_listed", "unreadable_image_times",
                  "unfit_image_values", "repeated_listed_images")


@dataclass(slots=True)
class RunRecord:
    """What one run did, as ``runs/<run_id>.json`` says it."""
    run_id: str
    snapshot_date: dt.date
    started_at: dt.datetime
    input: str
    settings: dict[str, Any]
    status: str = RunStatus.RUNNING
    ended_at: dt.datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    rate: dict[str, float] = field(default_factory=dict)  # configured, lowest, final req/s
    auth: dict[str, object] = field(default_factory=dict)  # method, IAM token requests
    files: list[str] = field(default_factory=list)
    changes: dict[str, object] = field(default_factory=dict)  # see ``changes.Summary``

    @property
    def seconds(self) -> float:
        """How long it ran (so far, while it runs); never 0, rates divide by it."""
        end = self.ended_at or dt.datetime.now(dt.UTC)
        return max((end - self.started_at).total_seconds(), 1e-9)

    def to_json(self) -> bytes:
        """The manifest's bytes, redacted after encoding: no escaped form of a secret survives."""
        images = self.counts.get("unique_ids", 0)
        doc = {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "snapshot_date": self.snapshot_date.isoformat(),
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(self.seconds, 3),
            "input": self.input,
            "counts": self.counts,
            "requests": self.requests,
            "retries": self.retries,
            "throttled_429": self.throttled,
            "rate_per_second": self.rate,
            "auth": self.auth,
            "images_per_second": round(images / self.seconds, 1),
            "settings": self.settings,
            "changes": self.changes or None,
            "files": [f for f in self.files if self._own(f)],
            # a backfill's recomputed changes of the next date: that date's manifest lists them
            "recomputed_changes": [f for f in self.files if not self._own(f)],
        }
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        return redact(text.decode()).encode()

    def _own(self, key: str) -> bool:
        """``key`` is in one of this run's date's partitions."""
        return key.split("/")[1:2] == [f"snapshot_date={self.snapshot_date.isoformat()}"]


def record_of(doc: dict[str, Any]) -> RunRecord:
    """A manifest read back as the record that wrote it (its summary line is the same)."""
    ended = doc.get("ended_at")
    return RunRecord(
        str(doc["run_id"]), dt.date.fromisoformat(str(doc["snapshot_date"])),
        dt.datetime.fromisoformat(str(doc["started_at"])), str(doc.get("input") or ""),
        dict(doc.get("settings") or {}), str(doc["status"]),
        dt.datetime.fromisoformat(ended) if isinstance(ended, str) else None,
        doc.get("exit_code"), doc.get("error"), dict(doc.get("counts") or {}),
        int(doc.get("requests") or 0), int(doc.get("retries") or 0),
        int(doc.get("throttled_429") or 0), dict(doc.get("rate_per_second") or {}),
        dict(doc.get("auth") or {}),
        list(doc.get("files") or []) + list(doc.get("recomputed_changes") or []),
        dict(doc.get("changes") or {}))


def read_manifest(store: Store, run_id: str) -> dict[str, Any] | None:
    """Run ``run_id``'s manifest, or None (missing, unreadable, not ours)."""
    return _read(store, f"{run_id}.json")


def latest_finished(store: Store, snapshot_date: dt.date) -> dict[str, Any] | None:
    """The manifest of the run that published ``snapshot_date`` last (the newest ``finished``
    one of that date), or None."""
    return max(_finished(store, snapshot_date), key=_newness, default=None)


def _finished(store: Store, snapshot_date: dt.date) -> list[dict[str, Any]]:
    return [doc for name in store.files("runs") if name.endswith(".json")
            and (doc := _read(store, name)) is not None
            and doc.get("status") == RunStatus.FINISHED
            and doc.get("snapshot_date") == snapshot_date.isoformat()]


def _newness(doc: dict[str, Any]) -> tuple[str, str]:
    return str(doc.get("ended_at") or ""), str(doc["run_id"])


def newest_success(store: Store) -> float | None:
    """When the newest finished run of the output ended (a Unix time), or None: what
    ``last_success_timestamp_seconds`` says, from the output itself, so it is the same with
    a metrics file, a Pushgateway or neither. Run IDs sort by start: the newest are read
    first, until one finished."""
    for name in sorted((n for n in store.files("runs") if n.endswith(".json")), reverse=True):
        doc = _read(store, name)
        if doc is not None and doc.get("status") == RunStatus.FINISHED and doc.get("ended_at"):
            return dt.datetime.fromisoformat(str(doc["ended_at"])).timestamp()
    return None


def write_manifest(store: Store, record: RunRecord) -> str:
    """Write the manifest so that it exists only complete; returns its key. A ``finished``
    one then becomes the one a loader follows for its date (``follow``)."""
    key = f"runs/{record.run_id}.json"
    store.write(key, record.to_json())
    if record.status == RunStatus.FINISHED:
        follow(store, orjson.loads(store.read(key)))
    return key


def follow(store: Store, doc: dict[str, Any]) -> None:
    """Make ``doc``, a finished manifest, the one a loader follows for its date: every other
    finished manifest of the date that it replaced gets ``superseded_by``, and a backfill's
    recomputed change files go into the manifest of the date they belong to (its ``files``,
    and ``changes_recomputed_by``). Safe to repeat."""
    day = dt.date.fromisoformat(str(doc["snapshot_date"]))
    for older in _finished(store, day):
        if older["run_id"] != doc["run_id"] and not older.get("superseded_by") \
                and _newness(older) <= _newness(doc):
            older["superseded_by"] = doc["run_id"]
            rewrite(store, older)
    recomputed: dict[str, list[str]] = {}
    for key in doc.get("recomputed_changes") or []:
        recomputed.setdefault(key.split("/")[1].removeprefix("snapshot_date="), []).append(key)
    for later, keys in recomputed.items():
        current = latest_finished(store, dt.date.fromisoformat(later))
        if current is None:
            continue
        folder = f"changes/snapshot_date={later}/"
        current["files"] = [f for f in current.get("files") or []
                            if not f.startswith(folder)] + keys
        current["changes_recomputed_by"] = doc["run_id"]
        rewrite(store, current)


OWN_FIELDS = frozenset({"run_id", "status", "snapshot_date", "started_at", "settings",
                        "counts", "files"})


def is_ours(name: str, doc: object) -> bool:
    """A manifest this tool wrote: its own fields, and named after its run id."""
    return (isinstance(doc, dict) and doc.keys() >= OWN_FIELDS
            and name == f"{doc['run_id']}.json")


_FINISHED_FILES: dict[tuple[str, str], frozenset[str]] = {}  # (output, manifest): its files


def listed_files(store: Store) -> frozenset[str]:
    """Every key our manifests list in ``files``: the published files that are ours, whatever
    else lies in a partition. A finished run's list never changes: read once a process."""
    found: set[str] = set()
    for name in store.files("runs"):
        if not name.endswith(".json"):
            continue
        files = _FINISHED_FILES.get((store.url, name))
        if files is None:
            doc = _read(store, name)
            listed = doc.get("files") if doc is not None else None
            files = frozenset(f for f in listed if isinstance(f, str)) \
                if isinstance(listed, list) else frozenset()
            if doc is not None and doc.get("status") == RunStatus.FINISHED:
                _FINISHED_FILES[(store.url, name)] = files
        found |= files
    return frozenset(found)


def _read(store: Store, name: str) -> dict[str, Any] | None:
    """One of ours from ``runs/``, or None (unreadable, not JSON, not ours)."""
    try:
        doc = orjson.loads(store.read(f"runs/{name}"))
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if is_ours(name, doc) else None


def rewrite(store: Store, doc: dict[str, Any]) -> None:
    """Write ``doc`` back as the manifest of its run."""
    store.write(f"runs/{doc['run_id']}.json",
                orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def mark_crashed(store: Store, alive: Callable[[], set[str]]) -> list[str]:
    """Manifests still ``running`` of runs not in ``alive()`` (asked after the manifests are
    read: a live writer holds its lock before it writes its manifest) are of dead runs.
    Files in ``runs/`` that this tool did not write, and links, are left as they are."""
    running = []
    for name in store.files("runs"):
        if not name.endswith(".json"):
            continue
        doc = _read(store, name)
        if doc is not None and doc.get("status") == RunStatus.RUNNING:
            running.append(doc)
    live = alive() if running else set()
    found = []
    for doc in running:
        if doc["run_id"] not in live:
            doc["status"] = RunStatus.CRASHED.value
            doc["error"] = "the run stopped without finishing (killed, or the machine died)"
            rewrite(store, doc)
            found.append(str(doc.get("run_id")))
    return found
