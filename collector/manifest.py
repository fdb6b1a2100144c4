"""The run manifest ``runs/<run_id>.json``: what a run did, written at start and again last.

Only a manifest with ``"status": "finished"`` describes published data. ``running``, ``fatal``,
``interrupted`` and ``crashed`` (killed, or the machine died) runs never published anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collector.errors import RunStatus
from collector.files import write_bytes
from collector.secrets import redact


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


def write_manifest(output: Path, record: RunRecord) -> Path:
    """Atomically (tmp, fsync, rename) write the manifest; returns its path."""
    runs = output / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    target = runs / f"{record.run_id}.json"
    write_bytes(target, record.to_json(), runs / f".{record.run_id}.json.tmp")
    return target


OWN_FIELDS = frozenset({"run_id", "status", "snapshot_date", "started_at", "settings",
                        "counts", "files"})


def is_ours(path: Path, doc: object) -> bool:
    """A manifest this tool wrote: its own fields, and named after its run id."""
    return (isinstance(doc, dict) and doc.keys() >= OWN_FIELDS
            and path.name == f"{doc['run_id']}.json")


def record_published(output: Path, run_id: str, counts: dict[str, int], files: list[str],
                     by: str) -> bool:
    """A run stopped after its data became visible, before its manifest said so: say it now
    (``finished``, with the counts and files read back from what readers see)."""
    path = output / "runs" / f"{run_id}.json"
    if not path.is_file() or path.is_symlink():
        return False
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    if not is_ours(path, doc) or doc.get("status") not in (RunStatus.RUNNING, RunStatus.FATAL):
        return False  # fatal: its publish failed part-way, and was finished since
    failed = counts.get("failed", 0) + counts.get("forbidden", 0)
    doc.update(status=RunStatus.FINISHED.value, exit_code=1 if failed else 0, error=None,
               files=files, counts={**doc.get("counts", {}), **counts}, recorded_by=by)
    write_bytes(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE),
                path.with_name(f".{path.name}.tmp"))
    return True


def mark_crashed(output: Path) -> list[str]:
    """Manifests still ``running`` belong to dead runs (the caller holds the output lock).
    Files in ``runs/`` that this tool did not write, and links, are left as they are."""
    found = []
    for path in sorted((output / "runs").glob("*.json")):
        if path.is_symlink():
            continue
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if is_ours(path, doc) and doc.get("status") == RunStatus.RUNNING:
            doc["status"] = RunStatus.CRASHED.value
            doc["error"] = "the run stopped without finishing (killed, or the machine died)"
            write_bytes(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2 |
                                           orjson.OPT_APPEND_NEWLINE),
                        path.with_name(f".{path.name}.tmp"))
            found.append(str(doc.get("run_id")))
    return found
