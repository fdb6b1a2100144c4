"""The fake CPH on aiohttp.web: ``core``'s answers as aiohttp responses, faults as ``wire`` steps.

Every path goes to one handler. A normal answer is a ``web.Response``; a transport fault is
played on the raw connection by ``wire.act_out`` (the same steps as the lean front), after
which the connection is closed: aiohttp.web cannot go on after raw bytes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

from aiohttp import web

from collector.fake.core import FakeApiCore, LogEntry, ServerConfig, url_of
from collector.fake.dataset import Dataset
from collector.fake.wire import act_out, answer_headers, steps_for

__all__ = ["FakeCph", "LogEntry", "ServerConfig"]
SHUTDOWN = 0.5  # seconds close() gives handlers still running (a stall) before cancelling them


class FakeCph(FakeApiCore):
    """``async with FakeCph(Dataset(...), ServerConfig(...)) as fake: fake.url``."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None,
                 regions: dict[str, Dataset] | None = None) -> None:
        super().__init__(dataset, config, regions)
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> str:
        """Serve on ``host:port`` (0: a free port), over TLS with ``tls``; returns the URL."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN)
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
        status = 0  # stays 0 when the connection is cut before a whole answer
        try:
            body = await request.read() if request.can_read_body else b""
            answer = self.answer(ex, request.query, request.headers, body)
            if answer.backend:
                await self.delay()
            if answer.fault is None:
                status = answer.status
                return web.Response(status=answer.status, body=answer.body,
                                    headers=answer_headers(ex, answer),
                                    content_type=answer.content_type)
            wire = _RawWire(request)
            cut = await act_out(steps_for(ex, answer, self.config, close=True), wire)
            status = 0 if cut else answer.status
            wire.cut(rst=False)
            # aiohttp treats a cancelled handler as a vanished client: no response, no noise.
            raise asyncio.CancelledError
        finally:
            self.finish(ex, status)


class _RawWire:
    """aiohttp.web's connection, written to directly."""

    def __init__(self, request: web.Request) -> None:
        transport = request.transport
        assert transport is not None
        self.transport = transport

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        # as fast as the client reads; aiohttp.web has no public drain for raw writes
        while self.transport.get_write_buffer_size() > 1 << 20 and not self.closed:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    def cut(self, rst: bool) -> None:
        if self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if rst and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()
