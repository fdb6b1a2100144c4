"""Speaking HTTP through one aiohttp connection pool: what a request returns and raises.

A request returns what came back (status, body, request id, Retry-After) or raises one of the
transport errors below; deciding what that means is ``retry.classify``'s job. The client holds
no credentials: callers pass each request's headers. The CPH calls and IAM's token requests
share the pool, its TLS trust and its proxy.

    OSError
    └── ConnectionError
        ├── ConnectFailed      no connection (refused, unreachable, DNS, TLS, proxy)
        ├── BrokenBody         the answer ended early or was not well-formed HTTP
        └── ConnectionDropped  the connection broke before an answer
    TimeoutError               no answer, or no part of one, in time (the sweep)
    BodyTooLarge               a body over ``max_body_bytes``
    ProxyRefused               the proxy itself said no (407, or a refused CONNECT): no retry
    UnsafeHeader (ValueError)  a header value with a control character: never sent

What is done once, not per request: the static headers (session defaults), the proxy of each
endpoint (``proxy.choose``), the TLS context. The read and whole-request timeouts are one sweep
over the requests in flight every ``SWEEP`` s instead of timer objects per request and per read;
aiohttp keeps the connect timeout. aiohttp's silent resend of a GET on a dead kept-alive
connection is switched off, so every request passes our rate limiter and attempt count
(aio-libs/aiohttp#10790).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Protocol

import aiohttp
from yarl import URL

from collector import proxy as proxies
from collector.secrets import from_server

USER_AGENT = "cph-collector/0.1"
SWEEP = 0.05  # seconds between whole-request timeout checks: a timeout fires up to this late


class Reply(NamedTuple):  # a tuple: cheap to build on the hot path
    """What one request got back: only the parts the collector reads."""
    status: int
    body: bytes
    request_id: str | None
    retry_after: str | None
    date: str | None = None  # the server's Date header, to tell a skewed clock
    location: str | None = None  # of a redirect, to say where a wrong endpoint points


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect, to wait for (each part of) an answer, and for the whole request."""
    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, timed out, DNS, TLS, proxy)."""

    def __init__(self, reason: str, proxy: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.proxy = proxy  # shown form of the proxy, when it was the proxy that failed


class BrokenBody(ConnectionError):
    """The answer ended early or was not well-formed HTTP."""


class ConnectionDropped(ConnectionError):
    """The connection broke before an answer arrived."""


class BodyTooLarge(Exception):
    """The response body exceeded ``max_body_bytes``."""


class ProxyRefused(Exception):
    """The proxy refused us (407 Proxy Authentication Required, or a refused CONNECT)."""


class UnsafeHeader(ValueError):
    """A header value holds a line break or another control character (header injection)."""


class Client(Protocol):
    """What ``fetch`` needs of a client (tests give it stand-ins)."""

    async def get(self, url: str, headers: Mapping[str, str] | None) -> Reply:
        """One GET: what came back, or one of this module's transport errors."""


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The system's trust store, plus ``ca_bundle`` if given; verification is always on.
    ValueError (saying why) for a bundle that is not a readable PEM file."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_bundle {ca_bundle}: not a readable PEM file "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    return context


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_header_values(headers: Mapping[str, str]) -> None:
    """A value never carries a line break or other control character (no header injection).
    On the per-request path for signed and IAM headers: one C-level search per value (an IAM
    token is kilobytes long)."""
    for name, value in headers.items():
        if _CONTROL.search(value):
            raise UnsafeHeader(f"the {name} header contains a control character; check the "
                               "credentials")


class AiohttpClient:
    """``async with AiohttpClient(...) as client: await client.get(url, headers)``: the one
    pool, its timeouts and its body limit."""

    def __init__(self, *, concurrency: int, timeouts: Timeouts,
                 max_body_bytes: int, ca_bundle: Path | None = None, proxy: str | None = None,
                 env: Mapping[str, str] | None = None,
                 static_headers: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._static = dict(static_headers or {})
        self._clock = clock
        self._ca_bundle = ca_bundle
        self._concurrency = concurrency
        self._timeouts = timeouts
        self._max_body = max_body_bytes
        self._proxy_setting = proxy
        self._env = os.environ if env is None else env
        self._proxies: dict[str, URL | None] = {}  # "scheme://host:port" -> proxy
        self._session: aiohttp.ClientSession | None = None
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def add_static_headers(self, headers: Mapping[str, str]) -> None:
        """Headers the same on every request (a fixed token): sent as the pool's defaults, so
        nothing is merged or checked per request. Only before the pool opens."""
        assert self._session is None, "static headers are set before the pool opens"
        self._static.update(headers)

    async def __aenter__(self) -> AiohttpClient:
        static = {"User-Agent": USER_AGENT, "Accept": "application/json", **self._static}
        check_header_values(static)
        connector = aiohttp.TCPConnector(limit=self._concurrency,
                                         limit_per_host=self._concurrency, ttl_dns_cache=300,
                                         ssl=tls_context(self._ca_bundle))
        # Connect timeouts stay aiohttp's; read and whole-request timeouts are ``_sweep``'s.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=static, raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True, trust_env=False,
            skip_auto_headers=("Accept-Encoding",))
        if hasattr(self._session, "_retry_connection"):  # private; see the module docstring
            self._session._retry_connection = False
        self._sweep()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._session is not None:
            await self._session.close()

    def proxy_for(self, url: str) -> URL | None:
        """The proxy of ``url``'s endpoint, decided once per endpoint."""
        scheme, _, rest = url.partition("://")
        prefix = f"{scheme}://{rest.partition('/')[0]}"
        if prefix not in self._proxies:
            chosen = proxies.choose(url, self._proxy_setting, self._env)
            if chosen is not None:
                proxies.register_credentials(chosen)
            self._proxies[prefix] = URL(chosen) if chosen is not None else None
        return self._proxies[prefix]

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Reply:
        """One GET, its body read whole (bounded); headers beyond the pool's static ones."""
        assert self._session is not None, "use AiohttpClient as an async context manager"
        if headers:
            check_header_values(headers)
        proxy = self.proxy_for(url)
        request = self._session.get(URL(url, encoded=True), headers=headers or None,
                                    proxy=proxy, allow_redirects=False)
        status, answer, body = await self._exchange(request, proxy)
        return Reply(status, body, from_server(answer.get("X-Request-Id"), 200),
                     answer.get("Retry-After"), answer.get("Date"),  # Date: only parsed
                     from_server(answer.get("Location"), 300))

    async def post(self, url: str, body: bytes,
                   headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body) of a POST (IAM's token requests); same errors as ``get``."""
        assert self._session is not None, "use AiohttpClient as an async context manager"
        check_header_values(headers)
        proxy = self.proxy_for(url)
        return await self._exchange(self._session.post(
            URL(url, encoded=True), data=body, headers=headers, proxy=proxy,
            allow_redirects=False), proxy)

    async def _exchange(self, request: Awaitable[aiohttp.ClientResponse],
                        proxy: URL | None) -> tuple[int, Mapping[str, str], bytes]:
        """Send, take the whole bounded body, release the connection; timeouts by the sweep:
        ``read`` s for the answer to begin and between two parts of its body, ``total`` s in
        all."""
        task = asyncio.current_task()
        assert task is not None
        now = self._clock()
        limit = now + self._timeouts.total
        self._deadlines[task] = min(limit, now + self._timeouts.read)
        try:
            resp = await request
            try:
                _refuse_proxy_answer(resp, proxy)
                body = await self._read(resp, task, limit)
            finally:
                resp.release()
        except aiohttp.ClientError as exc:
            raise _translate(exc, proxy) from exc
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() == 0:
                raise TimeoutError("request timed out") from None
            raise
        else:
            return resp.status, resp.headers, body
        finally:
            del self._deadlines[task]
            self._expired.discard(task)

    async def _read(self, resp: aiohttp.ClientResponse, task: asyncio.Task[object],
                    limit: float) -> bytes:
        """The body, never more than ``max_body_bytes`` of it, compressed or not."""
        length = resp.content_length
        if length is not None and length > self._max_body:
            resp.close()  # do not drain a huge body just to reuse the connection
            raise BodyTooLarge(f"response body of {length} bytes is over the limit")
        content = resp.content
        parts, size = [], 0
        while True:
            self._deadlines[task] = min(limit, self._clock() + self._timeouts.read)
            chunk = await content.readany()  # decompressed, if it was
            if not chunk:
                break
            size += len(chunk)
            if size > self._max_body:
                resp.close()
                raise BodyTooLarge(f"response body over {self._max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _sweep(self) -> None:
        """Cancel the requests past their deadline (``_exchange`` makes that a TimeoutError):
        one timer for the pool instead of timer objects per request and per read."""
        now = self._clock()
        for task, deadline in self._deadlines.items():
            if now >= deadline and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)


def _refuse_proxy_answer(resp: aiohttp.ClientResponse, proxy: URL | None) -> None:
    """A plain-HTTP proxy answers 407 itself when it wants credentials: that ends the run."""
    if proxy is not None and resp.status == 407:
        raise ProxyRefused(f"proxy {proxies.shown(str(proxy))} refused the request: HTTP 407 "
                            "Proxy Authentication Required; check the proxy's user and password "
                            "(CPH_PROXY, HTTPS_PROXY or HTTP_PROXY)")


def _translate(exc: aiohttp.ClientError, proxy: URL | None) -> BaseException:
    """aiohttp's error, as one of ours (or a TimeoutError for a read that timed out)."""
    via = proxies.shown(str(proxy)) if proxy is not None else None
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the proxy refused the CONNECT tunnel
        return ProxyRefused(f"proxy {via} refused the connection: HTTP {exc.status} "
                             f"{from_server(exc.message, 200)}; check the proxy and its "
                             "credentials")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ConnectFailed(f"cannot connect to proxy {via}: {_os_reason(exc.os_error)}", via)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectFailed(f"connect to proxy {via} timed out" if via else "connect timed out",
                             via)
    if isinstance(exc, aiohttp.ClientConnectorError):  # TLS failures too: see _os_reason
        return ConnectFailed(_os_reason(exc.os_error))
    if isinstance(exc, TimeoutError):  # any other timeout aiohttp may raise
        return TimeoutError("request timed out")
    if isinstance(exc, aiohttp.ClientResponseError):  # the parser refused the answer's head
        return BrokenBody(f"malformed HTTP response: {from_server(exc.message, 200)}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return BrokenBody("response body ended early or was malformed")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionDropped("server closed the connection before answering")
    return ConnectionDropped(f"{type(exc).__name__}: {from_server(str(exc), 200)}")


def _os_reason(exc: OSError) -> str:
    """"Connection refused", "certificate verify failed: ..." -- not a wrapper's text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if exc.errno:
        return os.strerror(exc.errno)  # asyncio's wrapper text names the address, not why
    return str(exc) or type(exc).__name__
