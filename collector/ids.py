"""What an image or project ID may be: the allowlist that keeps any input from changing a URL.

Only ASCII letters, digits, ``-`` and ``_``, 1 to 64 characters, ever reach a request path.
Everything else is rejected with a reason a person can act on.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 64
_ALLOWED = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OFFENDING = re.compile(r"[^A-Za-z0-9_-]")
# Characters str.strip() leaves alone but that no ID ends with: BOM, zero-width space/joiners.
_STRIP = " \t\r\n\v\f\ufeff\u200b\u200c\u200d\u2060"


def clean(raw: str) -> str:
    """The ID as a person meant it: surrounding whitespace, CR/LF and BOMs removed."""
    return raw.strip(_STRIP)


def is_valid_id(value: str) -> bool:
    """True for an ID that may go into a URL path (see the module docstring)."""
    return _ALLOWED.fullmatch(value) is not None


def problem_with(value: str) -> str | None:
    """Why ``value`` (already cleaned) is not a usable ID, or None if it is."""
    if is_valid_id(value):
        return None
    if not value:
        return "empty ID"
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        return "not valid UTF-8"
    if len(value) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters ({len(value)})"
    bad = _OFFENDING.search(value)
    assert bad is not None
    return f"contains '{shown(bad.group())}'; only letters, digits, '-' and '_' are allowed"


def shown(value: str, limit: int = MAX_ID_LENGTH) -> str:
    """A printable, ASCII, bounded rendering of untrusted input for status rows and messages."""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(text) - limit} chars)"
    return text


def as_text(value: str) -> str:
    """Untrusted input kept whole for its ``invalid_id`` row: valid UTF-8 as it is, only
    undecodable bytes escaped (``\\xff``), so two different lines are never one row."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
