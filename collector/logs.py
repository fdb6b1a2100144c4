"""Log lines for people (text) or for log shippers (one JSON object a line), scrubbed alike.

Every record, progress line and the summary carries the run id in JSON (``run_id``), and the
encoded line is redacted as a whole, so no escaped form of a secret survives either format.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

from collector.secrets import RedactingFilter, redact


class RunId(logging.Filter):
    """Stamps each record with the run it belongs to (set once the run has an id)."""

    current: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = RunId.current
        return True


def json_line(fields: dict[str, Any], level: str = "info") -> str:
    """One JSON object: time, level, run id, then ``fields``; redacted after encoding."""
    doc = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "level": level,
           "run_id": RunId.current, **fields}
    return redact(orjson.dumps(doc, default=str).decode())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_text or record.exc_info:
            fields["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json_line(fields, record.levelname.lower())


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log lines on stderr, each scrubbed of secrets by the redacting filter."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%Y-%m-%dT%H:%M:%S%z"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(RunId())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
