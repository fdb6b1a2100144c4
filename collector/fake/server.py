"""The fake CPH on aiohttp.web: the answers of ``core``, and the faults acted out on the socket.

Every path goes to one handler; ``FakeApiCore.answer`` decides (see ``core`` for the API), this
module only turns an ``Answer`` into an aiohttp response, or into a reset, a short body, a slow
body, a stall or an endless body.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from typing import NoReturn

from aiohttp import web

from collector.fake.core import (
    HUGE_HEADER_BYTES,
    INTERIM_HEADS,
    Answer,
    Exchange,
    FakeApiCore,
    LogEntry,
    ServerConfig,
    url_of,
)
from collector.fake.dataset import Dataset
from collector.fake.faults import Outcome

__all__ = ["FakeCph", "LogEntry", "ServerConfig"]


class FakeCph(FakeApiCore):
    """``async with FakeCph(Dataset(...), ServerConfig(...)) as fake: fake.url``."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None) -> None:
        super().__init__(dataset, config)
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> str:
        """Serve on ``host:port`` (0: a free port), over TLS with ``tls``; returns the URL."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True,
                           ssl_context=tls)
        await site.start()
        server = site._server
        assert server is not None
        assert server.sockets  # type: ignore[attr-defined]
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        self.url = url_of(host, bound[1], "https" if tls is not None else "http")
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ex = self.begin(request.method, request.path)
        status = 0  # stays 0 when the connection is cut before a status line
        try:
            body = await request.read() if request.can_read_body else b""
            answer = self.answer(ex, request.query, request.headers, body)
            if answer.backend:
                await self.delay()
            if answer.fault is None:
                response: web.StreamResponse = web.Response(
                    status=answer.status, body=answer.body, headers=_headers(ex, answer),
                    content_type=answer.content_type)
            else:
                response = await self._act_out(request, ex, answer)
            status = response.status
            return response
        finally:
            self.finish(ex, status)

    async def _act_out(self, request: web.Request, ex: Exchange,
                       answer: Answer) -> web.StreamResponse:
        fault, good = answer.fault, answer.body
        if fault is Outcome.RESET_BEFORE_HEADERS:
            _cut(request, rst=True)
        if fault is Outcome.INTERIM:  # raw on the socket: aiohttp.web cannot send 1xx itself
            assert request.transport is not None
            request.transport.write(INTERIM_HEADS)
            return web.Response(body=good, headers=_headers(ex, answer),
                                content_type="application/json")
        if fault is Outcome.HUGE_HEADER:
            headers = {**_headers(ex, answer), "X-Request-Id": "r" * HUGE_HEADER_BYTES}
            return web.Response(body=good, headers=headers, content_type="application/json")
        if fault is Outcome.ENDLESS_HEADER:
            await _endless_header(request, self.config.huge_body_bytes)
        if fault is Outcome.STALL:
            await asyncio.sleep(self.config.stall_seconds)
            return web.Response(body=good, headers=_headers(ex, answer),
                                content_type="application/json")
        response = web.StreamResponse(headers=_headers(ex, answer))
        response.content_type = "application/json"
        if fault in (Outcome.RESET_MID_BODY, Outcome.SHORT_BODY):
            response.content_length = len(good) + 64
            await response.prepare(request)
            await response.write(good[: max(len(good) // 2, 1)])
            _cut(request, rst=fault is Outcome.RESET_MID_BODY)
        if fault is Outcome.TRICKLE:
            response.content_length = len(good)
            await response.prepare(request)
            step = max(len(good) // self.config.trickle_pieces, 1)
            for start in range(0, len(good), step):
                await response.write(good[start:start + step])
                await asyncio.sleep(self.config.trickle_delay)
        else:  # HUGE_BODY: an endless chunked body
            response.enable_chunked_encoding()
            await response.prepare(request)
            piece, sent = b'{"members":[' + b" " * 65_536, 0
            while sent < self.config.huge_body_bytes:
                await response.write(piece)
                sent += len(piece)
        await response.write_eof()
        return response


async def _endless_header(request: web.Request, limit: int) -> NoReturn:
    """A status line, then one header line that goes on until the client hangs up."""
    transport = request.transport
    assert transport is not None
    transport.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
    piece, sent = b"a" * 65_536, 0
    while sent < limit and not transport.is_closing():
        transport.write(piece)
        sent += len(piece)
        # as fast as the client reads; aiohttp.web has no public drain for raw writes
        while transport.get_write_buffer_size() > 1 << 20 and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    _cut(request, rst=False)


def _headers(ex: Exchange, answer: Answer) -> dict[str, str]:
    headers = {"X-Request-Id": ex.rid}
    if answer.location is not None:
        headers["Location"] = answer.location
    if answer.retry_after is not None:
        headers["Retry-After"] = answer.retry_after
    if answer.subject_token is not None:
        headers["X-Subject-Token"] = answer.subject_token
    return headers


def _cut(request: web.Request, *, rst: bool) -> NoReturn:
    """Drop the connection: an RST (SO_LINGER 0) or a plain FIN; the client sees no status."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if rst and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if rst:
            transport.abort()
        else:
            transport.close()
    # aiohttp treats a cancelled handler as a vanished client: no 500, no log noise.
    raise asyncio.CancelledError
