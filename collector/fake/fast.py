"""The fake CPH as a lean HTTP/1.1 protocol, so our benchmarks measure the client, not the server.

Same answers as the aiohttp front (both ask ``FakeApiCore``), the same fault steps acted out
(``wire``), a fraction of the cost per request: one ``asyncio.Protocol`` per connection and a
hand-rolled request parser that reads only what the API needs. Requests on one connection are
answered in order; answers that wait (latency, slow faults) run as a task meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from typing import cast
from urllib.parse import parse_qsl, unquote

from collector.fake.core import Answer, Exchange, FakeApiCore, ServerConfig, url_of
from collector.fake.dataset import Dataset
from collector.fake.wire import act_out, steps_for
from collector.fake.wire import head as render_head

MAX_HEAD = 65_536


class FastFakeCph(FakeApiCore):
    """``async with FastFakeCph(Dataset(...), ServerConfig(...)) as fake: fake.url``."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None,
                 regions: dict[str, Dataset] | None = None) -> None:
        super().__init__(dataset, config, regions)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> str:
        if tls is not None:
            raise ValueError("the lean front serves plain HTTP; use FakeCph for TLS")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                backlog=1024, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self.url = url_of(host, bound[1])
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()
            self._server = None


class _Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them in order, act out faults."""

    def __init__(self, api: FastFakeCph) -> None:
        self.api = api
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Task[None] | None = None  # an answer that is not written yet
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.api._connections.add(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.writable.set()
        self.api._connections.discard(self)
        if self.waiting is not None:
            self.waiting.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiting is None:
            self._serve()

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order, until one has to wait."""
        while self.transport is not None and self.waiting is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            method, target, _ = [*request_line.split(" "), "", ""][:3]
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            path, _, raw_query = target.partition("?")
            query = dict(parse_qsl(raw_query)) if raw_query else {}
            close = headers.get("connection", "").lower() == "close"
            ex = self.api.begin(method, unquote(path))
            answer = self.api.answer(ex, query, headers, body)
            if answer.fault is None and not (answer.backend and self.api.has_latency):
                self.transport.write(render_head(ex, answer, len(answer.body), close) + answer.body)
                self.api.finish(ex, answer.status)
                if close:
                    self.transport.close()
                continue
            self.waiting = asyncio.ensure_future(self._answer_later(ex, answer, close))

    async def _answer_later(self, ex: Exchange, answer: Answer, close: bool) -> None:
        status = 0
        try:
            if answer.backend:
                await self.api.delay()
            status = await self._act_out(ex, answer, close)
        finally:
            self.api.finish(ex, status)
            self.waiting = None
        if self.transport is not None and self.buffer:
            self._serve()

    async def _act_out(self, ex: Exchange, answer: Answer, close: bool) -> int:
        """Write the answer, or act out its fault; the status the client saw, 0 for none."""
        transport = self.transport
        if transport is None:
            return 0
        if answer.fault is None:
            transport.write(render_head(ex, answer, len(answer.body), close) + answer.body)
            if close:
                transport.close()
            return answer.status
        if await act_out(steps_for(ex, answer, self.api.config, close), self):
            return 0
        if close:
            transport.close()
        return answer.status

    # -- the wire.Wire that act_out plays on --------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        await self.writable.wait()  # the transport's flow control: as fast as it is read

    def cut(self, rst: bool) -> None:
        self._cut(rst=rst)

    def _cut(self, *, rst: bool) -> None:
        """Drop the connection: an RST (SO_LINGER 0) or a plain FIN."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if rst and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        self.buffer.clear()
