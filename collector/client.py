"""Speaking HTTP: what a client returns and raises, and the aiohttp client.

A client returns what came back (status, body, request id, Retry-After) or raises one of the
errors below, whichever HTTP library sits underneath; deciding what that means is
``retry.classify``'s job. Two clients do the work: ``lean.LeanClient`` (the default, for speed)
and ``AiohttpClient`` (``http_client = "aiohttp"``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from collector.auth import Auth
from collector.errors import UsageError
from collector.retry import BodyTooLarge

USER_AGENT = "cph-collector/0.1"


class Reply(NamedTuple):  # a tuple: cheap to build on the hot path
    status: int
    body: bytes
    request_id: str | None
    retry_after: str | None
    date: str | None = None  # the server's Date header, to tell a skewed clock
    generation: int = 0  # of the credentials the request carried (see auth.Auth)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, DNS, TLS); ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokenBody(ConnectionError):
    """The answer ended early or was not well-formed HTTP."""


class ConnectionDropped(ConnectionError):
    """The connection broke before an answer arrived."""


class Client(Protocol):
    auth: Auth

    async def __aenter__(self) -> Client: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def get(self, url: str, project_id: str) -> Reply: ...


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """Verified TLS; a CA bundle adds trust, it never turns checking off. UsageError if bad."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"ca_bundle {ca_bundle}: not a readable PEM file "
                         f"({getattr(exc, 'strerror', None) or exc})") from None


class AiohttpClient:
    """``async with AiohttpClient(...) as client: await client.get(url, project_id)``."""

    def __init__(self, auth: Auth, *, concurrency: int, timeouts: Timeouts,
                 max_body_bytes: int, ca_bundle: Path | None = None) -> None:
        self.auth = auth
        self._ca_bundle = ca_bundle
        self._concurrency = concurrency
        self._timeouts = timeouts
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpClient:
        tls = tls_context(self._ca_bundle)
        connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=self._concurrency,
                                         ttl_dns_cache=300, enable_cleanup_closed=True, ssl=tls)
        timeout = aiohttp.ClientTimeout(total=self._timeouts.total,
                                        sock_connect=self._timeouts.connect,
                                        sock_read=self._timeouts.read)
        headers = CIMultiDict({"User-Agent": USER_AGENT, "Accept": "application/json",
                               **self.auth.session_headers()})
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers, raise_for_status=False,
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True, trust_env=False)
        # aiohttp silently resends a GET once when a kept-alive connection dies before the
        # answer (aio-libs/aiohttp#10790); that request would skip our rate limiter and our
        # attempt count. The switch is private; without it we only lose that accounting.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
        if hasattr(self.auth, "session"):
            self.auth.session = self._session  # IAM token requests share the pool
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, project_id: str) -> Reply:
        assert self._session is not None, "use AiohttpClient as an async context manager"
        headers, generation = await self.auth.headers("GET", url, project_id)
        target = URL(url, encoded=True)
        try:
            return await self._get(self._session, target, headers, generation)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(exc.os_error.strerror or type(exc.os_error).__name__) from exc
        except aiohttp.ClientPayloadError as exc:
            raise BrokenBody("response body ended early or was malformed") from exc
        except aiohttp.ClientError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise ConnectionDropped(f"{type(exc).__name__}: {str(exc)[:200]}") from exc

    async def _get(self, session: aiohttp.ClientSession, target: URL, headers: dict[str, str],
                   generation: int) -> Reply:
        async with session.get(target, headers=headers or None,
                                     allow_redirects=False) as resp:
            length = resp.content_length
            if length is not None and length > self._max_body:
                resp.release()
                resp.close()  # do not drain a huge body just to reuse the connection
                raise BodyTooLarge(f"response body of {length} bytes is over the limit")
            if length is not None:
                body = await resp.read()
            else:
                body = await self._read_bounded(resp)
            return Reply(resp.status, body, resp.headers.get("X-Request-Id"),
                         resp.headers.get("Retry-After"), resp.headers.get("Date"), generation)

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        parts, size = [], 0
        async for chunk in resp.content.iter_chunked(65_536):
            size += len(chunk)
            if size > self._max_body:
                resp.close()
                raise BodyTooLarge(f"response body over {self._max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)
