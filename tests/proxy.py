"""A forwarding HTTP proxy on loopback for the tests: absolute-form requests and CONNECT tunnels.

It logs every request line it gets, can insist on a ``Proxy-Authorization`` (407 otherwise),
and forwards one request per client connection (it adds ``Connection: close`` upstream), which
is all a test of "every request went through the proxy" needs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from urllib.parse import urlsplit


class ForwardingProxy:
    def __init__(self, credentials: tuple[str, str] | None = None,
                 upstream: tuple[str, int] | None = None,
                 hold: Callable[[str, dict[str, str]], bool] | None = None,
                 leak_credentials: bool = False) -> None:
        self.requests: list[str] = []  # "GET http://host:port/path", "CONNECT host:port"
        self.authorizations: list[str | None] = []
        self.hosts: list[str] = []  # the Host header of each forwarded request
        self._credentials = credentials
        self._upstream = upstream  # where every request goes, whatever its host names
        self._hold = hold  # a request it says yes to is never forwarded (``held`` is set)
        self._leak = leak_credentials  # forward Proxy-Authorization upstream, as a bad proxy does
        self.held = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> ForwardingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open:  # connections a client opened and left idle: their
            writer.transport.abort()  # handlers see the end and return
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)
            self._open.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        first, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = first.split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        self.requests.append(f"{method} {target}")
        auth = headers.get("Proxy-Authorization")
        self.authorizations.append(auth)
        if self._credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self._credentials).encode()).decode()
            if auth != expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                writer.close()
                return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        if self._hold is not None and self._hold(f"{method} {target}", headers):
            self.held.set()
            await reader.read()  # until the client goes away
            return
        parts = urlsplit(target)
        self.hosts.append(headers.get("Host", headers.get("host", "")))
        up_reader, up_writer = await asyncio.open_connection(
            *(self._upstream or (parts.hostname, parts.port or 80)))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        kept = [line for line in lines if line and (not line.lower().startswith(
            ("proxy-", "connection:", "expect:")) or (
                self._leak and line.lower().startswith("proxy-authorization:")))]
        if any(line.lower().startswith("expect: 100-continue") for line in lines):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body follows; we forward it
            await writer.drain()
        up_writer.write(f"{method} {path} {version}\r\n".encode("latin-1")
                        + "".join(f"{line}\r\n" for line in kept).encode("latin-1")
                        + b"Connection: close\r\n\r\n")
        lower = {k.lower(): v for k, v in headers.items()}
        length = int(lower.get("content-length", "0"))
        if length:
            up_writer.write(await reader.readexactly(length))
        elif lower.get("transfer-encoding", "").lower() == "chunked":
            await _copy_chunked(reader, up_writer)
        await up_writer.drain()
        await _pipe(up_reader, writer)
        up_writer.close()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chunked body as it comes, through its last chunk and trailers."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        writer.write(await reader.readexactly(size + 2))
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        writer.write(line)  # trailers (S3's checksums)
    writer.write(b"\r\n")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))
