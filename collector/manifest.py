"""The run manifest ``runs/<run_id>.json``: what a run did, written at start and again last.

Only a manifest with ``"status": "finished"`` describes published data. ``running``, ``fatal``,
``interrupted`` and ``crashed`` (killed, or the machine died) runs never published anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.conclude import verdict_of, with_changes
from collector.errors import RunStatus
from collector.secrets import redact
from collector.store import Store

# A discovery run's counts of its listings (``pipeline.run_counts`` gives them; ``publish
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
            "files": self.files,
        }
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        return redact(text.decode()).encode()


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
        dict(doc.get("auth") or {}), list(doc.get("files") or []),
        dict(doc.get("changes") or {}))


def read_manifest(store: Store, run_id: str) -> dict[str, Any] | None:
    """Run ``run_id``'s manifest, or None (missing, unreadable, not ours)."""
    return _read(store, f"{run_id}.json")


def latest_finished(store: Store, snapshot_date: dt.date) -> dict[str, Any] | None:
    """The manifest of the run that published ``snapshot_date`` last (the newest ``finished``
    one of that date), or None."""
    found = [doc for name in store.files("runs") if name.endswith(".json")
             and (doc := _read(store, name)) is not None
             and doc.get("status") == RunStatus.FINISHED
             and doc.get("snapshot_date") == snapshot_date.isoformat()]
    return max(found, key=lambda d: (str(d.get("ended_at") or ""), str(d["run_id"])),
               default=None)


def write_manifest(store: Store, record: RunRecord) -> str:
    """Write the manifest so that it exists only complete; returns its key."""
    key = f"runs/{record.run_id}.json"
    store.write(key, record.to_json())
    return key


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


def _rewrite(store: Store, doc: dict[str, Any]) -> None:
    store.write(f"runs/{doc['run_id']}.json",
                orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def record_published(store: Store, run_id: str, counts: dict[str, int], files: list[str],
                     by: str, changes: dict[str, Any] | None = None) -> bool:
    """A run stopped after its data became visible, before its manifest said so: say it now
    (``finished``, with the counts and files read back from what readers see, and the change
    summary its publish marker kept: its verdict is the one the run would have given, exit 4
    for untrusted shares under its ``fail_on_untrusted`` included)."""
    name = f"{run_id}.json"
    if name not in store.files("runs"):  # links are never listed
        return False
    doc = _read(store, name)
    if doc is None or doc.get("status") not in (RunStatus.RUNNING, RunStatus.FATAL):
        return False  # fatal: its publish failed part-way, and was finished since
    counts = {**doc.get("counts", {}), **counts}
    untrusted = (changes or {}).get("untrusted")
    alerts = sum(n for kind, n in untrusted.items() if kind in ("added", "updated")
                 and isinstance(n, int)) if isinstance(untrusted, dict) else 0
    settings = doc.get("settings")
    verdict = with_changes(verdict_of(counts), alerts, isinstance(settings, dict)
                           and settings.get("fail_on_untrusted") is True)
    doc.update(status=RunStatus.FINISHED.value, exit_code=int(verdict.exit_code),
               error=None, files=files, counts=counts, recorded_by=by)
    if changes:
        doc["changes"] = changes
    _rewrite(store, doc)
    return True


def mark_crashed(store: Store) -> list[str]:
    """Manifests still ``running`` belong to dead runs (the caller holds the output lock).
    Files in ``runs/`` that this tool did not write, and links, are left as they are."""
    found = []
    for name in store.files("runs"):
        if not name.endswith(".json"):
            continue
        doc = _read(store, name)
        if doc is not None and doc.get("status") == RunStatus.RUNNING:
            doc["status"] = RunStatus.CRASHED.value
            doc["error"] = "the run stopped without finishing (killed, or the machine died)"
            _rewrite(store, doc)
            found.append(str(doc.get("run_id")))
    return found
