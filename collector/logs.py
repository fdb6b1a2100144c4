"""Log lines for people (text) or for log shippers (one JSON object a line), scrubbed alike.

Every record, progress line and the summary carries the run id in JSON (``run_id``), and the
encoded line is redacted as a whole, so no escaped form of a secret survives either format.
Text a server sent is data, never terminal or log control: the text format escapes control
characters in every message (JSON escapes them by itself); Python warnings (a library's too)
become log records, and the last line of a failed command (``final_line``) is a JSON object in
the JSON format as well.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

from collector.secrets import RedactingFilter, printable, redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


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


class TextFormatter(logging.Formatter):
    """The text format, its message's control characters escaped (a traceback stays as it is:
    its line breaks are ours)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, "%Y-%m-%dT%H:%M:%S%z")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class Format:
    """The format of the lines on stderr, as set up (``final_line`` follows it)."""

    current = "text"


def final_line(message: str, level: str = "error") -> str:
    """The last line of a command that failed: ``cph-collector: error: ...`` in text, one JSON
    object in JSON; redacted and escaped alike."""
    if Format.current == "json":
        return json_line({"logger": "collector", "message": f"cph-collector: {message}"}, level)
    return f"cph-collector: {printable(redact(message))}"


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log lines on stderr, each scrubbed of secrets by the redacting filter; Python warnings
    are logged too (``py.warnings``), so that none bypasses the format."""
    Format.current = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.captureWarnings(False)  # then True: installed afresh even where something (a
    logging.captureWarnings(True)  # warnings.catch_warnings block) put the old hook back
    handler.addFilter(RedactingFilter())
    handler.addFilter(RunId())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
