"""What a storage error was, as values: whose fault (``Kind``), the S3 code, operation and HTTP
status. pyarrow's OSError carries only its text, so it is read here once (``fault_of``); the
decisions — retry a read, exit 2 or 3 at the probe — read the fields, never the text. And the
retry of the one request pyarrow's own strategy never retries: a read (``retry``)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pyarrow as pa

from collector.secrets import from_server

_AWS_ERROR = re.compile(r"AWS Error (\w+)(?: \(HTTP status (\d{3})\))? during (\w+) "
                        r"operation:?\s*([^(\n]*)")
BACKOFF = 0.2  # seconds before the second attempt of a read; doubled each time, at most 5 s


class Kind(StrEnum):
    """Whose fault a storage error is: the decisions (retry, exit 2 or 3) read this."""

    LOCAL = "local"  # errno: the disk, a missing key, a lost lease
    SERVER = "server"  # the store erred on its side (5xx, throttled): transient
    TIMEOUT = "timeout"  # connected, then silent: transient
    CONNECT = "connect"  # no connection: transient mid-run, a wrong endpoint at start
    REFUSED = "refused"  # credentials refused, access denied
    MISSING = "missing"  # the bucket does not exist
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class StoreFault:
    """A storage error as values. pyarrow's OSError carries only its text: it is read here,
    once, into these fields, and nothing else looks at the text."""

    kind: Kind
    code: str | None = None  # the AWS SDK's error name (``INTERNAL_FAILURE``)
    operation: str | None = None  # the S3 operation (``GetObject``)
    status: int | None = None  # the HTTP status, where the SDK says it or its code implies it
    message: str = ""  # the store's own words (a server's text: only ever shown escaped)

    @property
    def transient(self) -> bool:
        """Worth asking again: the store may answer next time."""
        return self.kind in (Kind.SERVER, Kind.TIMEOUT, Kind.CONNECT)


_SERVER_CODES = {"INTERNAL_FAILURE": 500, "SERVICE_UNAVAILABLE": 503, "SLOW_DOWN": 503,
                 "THROTTLING": 503, "REQUEST_TIMEOUT": 408}
_REFUSED_CODES = {"ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                  "EXPIRED_TOKEN", "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN"}


def fault_of(exc: OSError) -> StoreFault:
    """What ``exc`` says, as ``StoreFault``."""
    if exc.errno is not None or exc.strerror:
        return StoreFault(Kind.LOCAL, message=exc.strerror or "")
    text = str(exc)
    found = _AWS_ERROR.search(text)
    if found is None:
        return StoreFault(Kind.OTHER, message=text.splitlines()[0] if text else "")
    code, status_text, operation, message = found.groups()
    status = int(status_text) if status_text else _SERVER_CODES.get(code)
    if "InvalidAccessKeyId" in message:
        code = "INVALID_ACCESS_KEY_ID"
    elif "SignatureDoesNotMatch" in message:
        code = "SIGNATURE_DOES_NOT_MATCH"
    if code == "NETWORK_CONNECTION":
        kind = Kind.TIMEOUT if "curlCode: 28" in text else Kind.CONNECT
    elif code in _REFUSED_CODES or status in (401, 403):
        kind, status = Kind.REFUSED, status or 403
    elif code == "NO_SUCH_BUCKET":
        kind, status = Kind.MISSING, status or 404
    elif status is not None and (status >= 500 or status in (408, 429)):
        kind = Kind.SERVER
    else:
        kind = Kind.OTHER
    return StoreFault(kind, code, operation, status, message.strip())


_KNOWN = {
    "NO_SUCH_BUCKET": "the bucket does not exist",
    "ACCESS_DENIED": "the store refused the credentials (access denied)",
    "INVALID_ACCESS_KEY_ID": "the store refused the credentials (unknown access key)",
    "SIGNATURE_DOES_NOT_MATCH": "the store refused the credentials (wrong secret key)",
}
_WORDS = {Kind.CONNECT: "cannot connect to the store",
          Kind.TIMEOUT: "the store did not answer in time (timeout)"}


def reason(exc: OSError) -> str:
    """A short why for a storage error: errno's words on disk; a bucket's S3 error code in
    plain words (pyarrow's own message runs to a paragraph, request id included)."""
    fault = fault_of(exc)
    if fault.kind is Kind.LOCAL:
        return fault.message
    if fault.operation is None:
        return from_server(fault.message, 200) or type(exc).__name__  # a store's words
    known = _WORDS.get(fault.kind) or _KNOWN.get(fault.code or "")
    if known is None and fault.kind is Kind.SERVER:
        known = f"the store answered HTTP {fault.status} ({fault.code})" \
            if fault.code != "UNKNOWN" else f"the store answered HTTP {fault.status}"
    return f"{known or fault.code}, in {fault.operation}"


T = TypeVar("T")


def retry(call: Callable[[], T], attempts: int, sleep: Callable[[float], None]) -> T:
    """``call()``, again after a transient fault, up to ``attempts`` in all; the last fault,
    or any other, is raised as it came."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except OSError as exc:
            if attempt >= attempts or not fault_of(exc).transient:
                raise
            sleep(min(BACKOFF * 2 ** (attempt - 1), 5.0))
    raise AssertionError("unreachable: attempts >= 1")


class RetriedReader(io.RawIOBase):
    """A bucket object read by ranges, each range retried (``retry``): what
    ``pyarrow.parquet`` reads through ``pa.PythonFile``."""

    def __init__(self, inner: pa.NativeFile, retried: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__()
        self.inner, self._retried = inner, retried
        self.size, self.position = inner.size(), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(base + offset, 0)
        return self.position

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), max(self.size - self.position, 0))
        if want == 0:
            return 0
        at = self.position
        data = self._retried(lambda: self.inner.read_at(want, at))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()
