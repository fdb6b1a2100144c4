"""The one home of credentials and of redaction, and the log filter that is our second line of
defence.

A ``Secret`` never prints itself: ``repr``/``str`` are redacted, and every secret ever created
is registered with ``redact()``, which scrubs it (and its URL-encoded, JSON-escaped and base64
forms) from any text about to be logged or written. ``redact()`` also scrubs what is a
credential by its shape, whoever's it is: the userinfo of a URL (``scheme://***@host``), the
value of a ``Basic``/``Bearer``/``Digest`` credential and an AK/SK ``Signature=``.

The rule for short secrets: a secret shorter than ``MIN_SCRUBBED`` (8) characters is not
scrubbed as a substring, because a short value is most likely an ordinary word (a proxy user
``collector`` once turned ``/srv/collector/ids.csv`` into ``/srv/***/ids.csv``); where such a
value can surface (a URL's userinfo, a ``Basic`` header) it is removed by shape instead. A user
name is not a secret at all: only the proxy's password (and ``user:password``, whose base64 is
a ``Basic`` credential) is registered.

Text a server sent is redacted *before* it is shortened (``from_server``), so no tail of a long
token survives a cut; and in it, any piece of a secret (as it is or URL-encoded) of 27
characters or more is scrubbed too, for a server that echoes part of a token (its own cut).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import orjson

from collector.errors import UsageError

REDACTED = "***"
MIN_SCRUBBED = 8  # shorter secrets are not scrubbed as substrings: see the module docstring
_known: set[str] = set()
_by_length: list[str] = []  # _known, longest first; rebuilt when a secret is registered
WINDOW = 24
_windows: set[int] = set()  # hashes of every WINDOW characters of a secret (plain, URL-encoded)
# Credentials by their shape: a URL's userinfo, an Authorization-style value, a signature.
_SHAPES = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@"), r"\1***@"),
    (re.compile(r"(?i)\b(Basic|Bearer|Digest|Negotiate)(\s+|%20|\+)[A-Za-z0-9+/=._~%-]{4,}"),
     r"\1\2***"),
    (re.compile(r"(?i)\b(Signature=)[0-9a-f]{16,}"), r"\1***"),
)
_TRIGGERS = ("://", "basic", "bearer", "digest", "negotiate", "signature=")  # of _SHAPES


class Secret:
    """A credential value; ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= MIN_SCRUBBED and value not in _known:
            _known.update(forms(value))
            _by_length[:] = sorted(_known, key=len, reverse=True)
            for form in {value, urllib.parse.quote(value, safe="")}:
                _windows.update(hash(form[i:i + WINDOW]) for i in range(len(form) - WINDOW + 1))

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
    (orjson keeps non-ASCII, ``json`` escapes it), as in a manifest or a JSON log line, or
    base64-encoded inside a longer base64 text (as in ``Basic``)."""
    found = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
             orjson.dumps(value).decode()[1:-1], json.dumps(value)[1:-1]}
    found.update(_base64_forms(value.encode()))
    return {form for form in found if form}


def _base64_forms(raw: bytes) -> set[str]:
    """The characters of base64 that depend on ``raw`` alone, at each of the three byte
    offsets it may start at inside an encoded text, in both alphabets."""
    found = set()
    for skip in range(3):
        encoded = base64.b64encode(bytes(skip) + raw).decode()
        middle = encoded[-(-8 * skip // 6):(8 * (skip + len(raw))) // 6]
        found |= {middle, middle.replace("+", "-").replace("/", "_")}
    return found


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` (longest first, so no tail survives), then
    every credential known by its shape."""
    for form in _by_length:
        if form in text:
            text = text.replace(form, REDACTED)
    lowered = text.lower()  # on the hot path (a request id a request): mostly no trigger
    if any(trigger in lowered for trigger in _TRIGGERS):
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
    return text


def from_server(text: str | None, limit: int) -> str | None:
    """Text a server sent, fit to store and print: redacted, control characters escaped, and
    only then cut to ``limit`` characters (a cut first would let a long token's tail by)."""
    if text is None:
        return None
    return printable(_pieces(redact(text)))[:limit]


def _pieces(text: str) -> str:
    """``text`` with every run of characters that lies in a secret (``WINDOW`` at least)
    replaced: what is left of a token a server cut before echoing it."""
    if not _windows or len(text) < WINDOW:
        return text
    windows, last = _windows, len(text) - WINDOW + 1
    # every 4th window first (a request id a request passes here): any piece of 27 characters
    # or more has one; then every window, so that all of each piece is covered
    for start in range(0, last, 4):
        if hash(text[start:start + WINDOW]) in windows:
            break
    else:
        return text
    hits = [i for i in range(last) if hash(text[i:i + WINDOW]) in windows]
    covered = bytearray(len(text))
    for start in hits:
        covered[start:start + WINDOW] = b"\1" * WINDOW
    out, start = [], 0
    while start < len(text):
        end = start
        while end < len(text) and covered[end] == covered[start]:
            end += 1
        out.append(REDACTED if covered[start] else text[start:end])
        start = end
    return "".join(out)


def printable(text: str) -> str:
    """``text`` with every control or format character (CR, LF, ESC, BEL, bidi overrides...)
    written as its Python escape, so that text from elsewhere never steers a terminal or
    forges a log line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class RedactingFilter(logging.Filter):
    """Formats the record once, scrubs it, and freezes the result into ``msg``."""

    def filter(self, record: logging.LogRecord) -> bool:
        # always: credentials by their shape are scrubbed before any secret is registered
        """Scrubs the record; always True (nothing is dropped, only redacted)."""
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
