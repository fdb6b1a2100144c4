"""The one home of credentials, and the log filter that is our second line of defence.

A ``Secret`` never prints itself: ``repr``/``str`` are redacted, and every secret ever created
is registered with ``redact()``, which scrubs it (and its URL-encoded and JSON-escaped forms)
from any text about to be logged or written.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import orjson

from collector.errors import UsageError

REDACTED = "***"
_known: set[str] = set()


class Secret:
    """A credential value; ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 4:  # shorter strings would scrub ordinary words from logs
            _known.update(forms(value))

    def reveal(self) -> str:
        """The value itself: only for the header or body that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def forms(value: str) -> set[str]:
    """How a secret may appear in text we write: as it is, URL-encoded, or JSON-escaped
    (orjson keeps non-ASCII, ``json`` escapes it), as in a manifest or a JSON log line."""
    return {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
            orjson.dumps(value).decode()[1:-1], json.dumps(value)[1:-1]}


def redact(text: str) -> str:
    """Replace every registered secret in ``text``; longest first so no tail survives."""
    for form in sorted(_known, key=len, reverse=True):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record once, scrubs it, and freezes the result into ``msg``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args = redact(message), None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def token_from(env: Mapping[str, str], token_file: Path | None) -> Secret | None:
    """The X-Auth-Token: ``CPH_AUTH_TOKEN`` wins over the file named by ``token_file``."""
    value = env.get("CPH_AUTH_TOKEN", "").strip()
    if not value and token_file is not None:
        try:
            value = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"token_file {token_file}: cannot read it "
                             f"({type(exc).__name__})") from None
    if not value:
        return None
    check_credential("CPH_AUTH_TOKEN" if env.get("CPH_AUTH_TOKEN", "").strip()
                     else f"token_file {token_file}", value)
    return Secret(value)


def check_credential(name: str, value: str, spaces: bool = False) -> None:
    """A credential holds no control character (a line break in a header would smuggle a
    second request), nor a space unless ``spaces``. Said by name only; never the value."""
    value = value.strip()
    if any(not ch.isprintable() for ch in value):
        raise UsageError(f"{name}: contains a line break or another control character; check "
                         "how it is set (e.g. a file with Windows line endings)")
    if not spaces and any(ch.isspace() for ch in value):
        raise UsageError(f"{name}: contains a space; a key or token has none")
