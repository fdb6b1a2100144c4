"""A lean HTTP/1.1 keep-alive client for the one hot request: a GET with a small JSON answer.

Why not aiohttp here: aiohttp's ``ClientSession.get`` costs about 200 µs of CPU per request on
this machine kind; the collector is bound by client CPU, so that path alone capped us below a
hand-written aiohttp script. This client does only what our GET needs -- a pool of kept-alive
connections, one request in flight on each, bytes written in one call, the answer parsed by
httptools (llhttp, the parser Node.js uses; chunked and keep-alive rules included) -- at about
40 µs. What it leaves out on purpose: redirects (never followed, as before), cookies, proxies,
request bodies. aiohttp remains the client for IAM token requests and as ``http_client =
"aiohttp"``; both return the same ``Reply`` and raise the same ``client`` errors.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import zlib
from pathlib import Path
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import httptools

from collector.auth import Auth
from collector.client import (
    USER_AGENT,
    BrokenBody,
    ConnectFailed,
    ConnectionDropped,
    Reply,
    Timeouts,
    tls_context,
)
from collector.errors import UsageError
from collector.retry import BodyTooLarge

SWEEP = 0.05  # seconds between timeout checks: a timeout fires up to this late
_WANTED = {b"x-request-id": "request_id", b"retry-after": "retry_after", b"date": "date",
           b"content-encoding": "encoding", b"content-length": "length"}


class _Connection(asyncio.Protocol):
    """One kept-alive connection; ``request`` sends one GET and waits for its whole answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeouts: Timeouts, max_body: int) -> None:
        self._loop = loop
        self._timeouts = timeouts
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        self._started = self._last_read = 0.0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = self._chunked = False
        self._generation = 0
        self.reusable = False

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nobody asked: the connection is out of step, drop it
            self.close()
            return
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # a callback already failed the request with the real reason
        except httptools.HttpParserError as exc:
            self._fail(BrokenBody(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._transport = None
        if self._waiter is None:
            return
        if self._headers_done and "length" not in self._headers and not self._chunked:
            self._finish(keep_alive=False)  # a body that ends with the connection
        elif self._headers_done:
            self._fail(BrokenBody("response body ended early"))
        else:
            self._fail(ConnectionDropped("server closed the connection before answering"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _WANTED.get(name.lower())
        if key is not None:
            self._headers[key] = value.decode("latin-1")
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self._chunked = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = self._headers.get("length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._fail(BodyTooLarge(f"response body of {length} bytes is over the limit"))
            raise httptools.HttpParserCallbackError  # stop parsing this connection

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(BodyTooLarge(f"response body over {self._max_body} bytes"))
            raise httptools.HttpParserCallbackError
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish(keep_alive=self._parser.should_keep_alive())

    # -- the request ----------------------------------------------------------------------------

    def request(self, head: bytes, generation: int) -> asyncio.Future[Reply]:
        assert self._transport is not None, "request on a closed connection"
        assert self._waiter is None, "one request at a time"
        self._waiter = self._loop.create_future()
        self._generation = generation
        self._headers = {}
        self._body = []
        self._size = 0
        self._headers_done = self._chunked = False
        self.reusable = False  # until the whole answer is in
        self._started = self._last_read = self._loop.time()
        self._transport.write(head)
        return self._waiter

    def check_time(self, now: float) -> None:
        """Fail the request after ``read`` s without a byte, or ``total`` s in all."""
        if self._waiter is not None and (now >= self._last_read + self._timeouts.read
                                         or now >= self._started + self._timeouts.total):
            self._fail(TimeoutError())

    @property
    def closed(self) -> bool:
        return self._transport is None

    def _finish(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        headers = self._headers
        body = b"".join(self._body)
        self._body = []
        try:
            body = self._decode(body, headers.get("encoding"))
        except (BodyTooLarge, BrokenBody) as exc:
            self.close()
            waiter.set_exception(exc)
            return
        self.reusable = keep_alive and self._transport is not None
        waiter.set_result(Reply(self._parser.get_status_code(), body, headers.get("request_id"),
                                headers.get("retry_after"), headers.get("date"),
                                self._generation))

    def _decode(self, body: bytes, encoding: str | None) -> bytes:
        """We never ask for compression; a server that compresses anyway is still understood."""
        if encoding is None or encoding.strip().lower() in ("", "identity"):
            return body
        if encoding.strip().lower() not in ("gzip", "x-gzip", "deflate"):
            raise BrokenBody(f"unsupported Content-Encoding {encoding!r}")
        try:
            inflater = zlib.decompressobj(47)  # gzip or zlib header, detected
            plain = inflater.decompress(body, self._max_body + 1)
        except zlib.error as exc:
            raise BrokenBody(f"bad {encoding} body: {exc}") from None
        if len(plain) > self._max_body or inflater.unconsumed_tail:
            raise BodyTooLarge(f"decompressed body over {self._max_body} bytes")
        return plain

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()
            self._transport = None


class LeanClient:
    """``async with LeanClient(...) as client: await client.get(url, project_id)``."""

    def __init__(self, auth: Auth, *, concurrency: int, timeouts: Timeouts,
                 max_body_bytes: int, ca_bundle: Path | None = None) -> None:
        self.auth = auth
        self._ca_bundle = ca_bundle
        self._timeouts = timeouts
        self._max_body = max_body_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self._idle: list[_Connection] = []
        self._prefix = ""  # "scheme://host:port/" of the last URL, and what it splits into
        self._where = ("", "", 0)
        self._ssl: ssl.SSLContext | None = None
        self._static = b""
        self._session: aiohttp.ClientSession | None = None
        self._open: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> LeanClient:
        tls = tls_context(self._ca_bundle)
        self._ssl = tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context()
        static = {"User-Agent": USER_AGENT, "Accept": "application/json",
                  **self.auth.session_headers()}
        self._static = _lines(static)
        if hasattr(self.auth, "session"):  # IAM token requests go through aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls), trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self._timeouts.total,
                                              sock_connect=self._timeouts.connect,
                                              sock_read=self._timeouts.read))
            self.auth.session = self._session
        self._sweep()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, project_id: str) -> Reply:
        (scheme, host, port), target = self._split(url)
        headers, generation = await self.auth.headers("GET", url, project_id)
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        host_header = headers.pop("Host", None) or (
            name if port == (443 if scheme == "https" else 80) else f"{name}:{port}")
        head = (f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
                + self._static + (_lines(headers) if headers else b"") + b"\r\n")
        async with self._slots:
            conn = await self._connection(scheme, host, port)
            try:
                reply = await conn.request(head, generation)
            except BaseException:
                conn.close()
                raise
            if conn.reusable:
                self._idle.append(conn)
            else:
                conn.close()
            return reply

    def _split(self, url: str) -> tuple[tuple[str, str, int], str]:
        """((scheme, host, port), path?query); parsed once per endpoint (a run has one)."""
        if not (self._prefix and url.startswith(self._prefix)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConnectFailed(f"not an http(s) URL: {url[:100]}")
            for conn in self._idle:  # kept-alive connections go to the old endpoint
                conn.close()
            self._idle.clear()
            self._prefix = f"{parts.scheme}://{parts.netloc}/"
            self._where = (parts.scheme, parts.hostname,
                           parts.port or (443 if parts.scheme == "https" else 80))
            if not url.startswith(self._prefix):  # "http://host" alone
                return self._where, "/"
        return self._where, url[len(self._prefix) - 1:]

    async def _connection(self, scheme: str, host: str, port: int) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._timeouts, self._max_body), host, port,
                    ssl=self._ssl if scheme == "https" else None)
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(_reason(exc)) from exc
        self._open.add(conn)
        return conn

    def _sweep(self) -> None:
        """Timeouts for every request in flight, checked ``SWEEP`` s apart: one timer for the
        pool instead of one per request (a tenth of the request path's cost)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self._open):
            if conn.closed:
                self._open.discard(conn)
            else:
                conn.check_time(now)
        self._sweeper = loop.call_later(SWEEP, self._sweep)


def _reason(exc: OSError) -> str:
    """"Connection refused", "certificate verify failed: ..." -- not asyncio's wrapper text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _lines(headers: dict[str, str]) -> bytes:
    """Header lines; a value never carries a line break (no header injection by a bad token)."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise UsageError(f"the {name} header contains a line break; check the credentials")
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
