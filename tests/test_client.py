"""The HTTP client against raw sockets: the HTTP/1.1 shapes a real gateway may send."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from collector.client import (
    SWEEP,
    AiohttpClient,
    BodyTooLarge,
    BrokenBody,
    ConnectFailed,
    ConnectionDropped,
    Timeouts,
    UnsafeHeader,
)
from collector.clock import FakeClock

Answer = Callable[[bytes], bytes | None]  # request head -> raw answer; None = close silently
CLOSE = b"<close>"  # an answer ending with this is sent without it, then the connection closes
Serve = Callable[[Answer], Awaitable[tuple["RawServer", str]]]


class RawServer:
    """Answers each request head with whatever bytes ``answer`` gives; counts connections."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                raw = self.answer(head)
                if raw is None:
                    break
                closing = raw.endswith(CLOSE)
                writer.write(raw.removesuffix(CLOSE))
                await writer.drain()
                lower = raw.lower()
                if closing:
                    break
                if b"connection: close" in lower or (b"content-length" not in lower
                                                     and b"chunked" not in lower):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[RawServer, str]:
        raw = RawServer(answer)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return raw, f"http://127.0.0.1:{port}/v1/p1/cloud-phone/images/img1/members"

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b'{"members":[]}', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: rid-1\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


TOKEN_HEADER = {"X-Auth-Token": "tok-secret"}


def client(**kw: int) -> AiohttpClient:
    return AiohttpClient(concurrency=kw.get("concurrency", 4),
                         timeouts=Timeouts(connect=2, read=0.5, total=2),
                         max_body_bytes=kw.get("max_body", 10_000), env={})


async def test_requests_reuse_one_kept_alive_connection_and_carry_the_token(serve: Serve) -> None:
    raw, url = await serve(lambda head: ok())
    async with client() as c:
        replies = [await c.get(url, TOKEN_HEADER) for _ in range(5)]
    assert [(r.status, r.body, r.request_id) for r in replies] == [(200, b'{"members":[]}',
                                                                    "rid-1")] * 5
    assert raw.connections == 1
    assert raw.heads[0].startswith(b"GET /v1/p1/cloud-phone/images/img1/members HTTP/1.1\r\n")
    assert b"X-Auth-Token: tok-secret\r\n" in raw.heads[0]
    assert f"Host: 127.0.0.1:{url.split(':')[2].split('/')[0]}".encode() in raw.heads[0]


async def test_a_chunked_answer_is_joined(serve: Serve) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"mem\r\n9\r\nbers\":[]}\r\n0\r\n\r\n")
    raw, url = await serve(lambda head: chunked)
    async with client() as c:
        assert (await c.get(url, TOKEN_HEADER)).body == b'{"members":[]}'
        assert (await c.get(url, TOKEN_HEADER)).body == b'{"members":[]}'
    assert raw.connections == 1


async def test_a_gzip_answer_is_understood_though_never_asked_for(serve: Serve) -> None:
    raw, url = await serve(lambda head: ok(gzip.compress(b'{"members":[]}'),
                                           "Content-Encoding: gzip\r\n"))
    async with client() as c:
        assert (await c.get(url, TOKEN_HEADER)).body == b'{"members":[]}'
    assert b"accept-encoding" not in raw.heads[0].lower()


async def test_connection_close_and_a_body_ended_by_the_connection(serve: Serve) -> None:
    answers = iter([ok(extra="Connection: close\r\n"),
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n\r\n{\"a\":1}"])
    raw, url = await serve(lambda head: next(answers))
    async with client() as c:
        first, second = await c.get(url, TOKEN_HEADER), await c.get(url, TOKEN_HEADER)
    assert first.status == 200
    assert (second.status, second.body, second.retry_after) == (503, b'{"a":1}', "3")
    assert raw.connections == 2  # the server said close: a new connection for the next


async def test_a_server_that_closes_without_answering_is_a_dropped_connection(serve: Serve) -> None:
    _, url = await serve(lambda head: None)
    async with client() as c:
        with pytest.raises(ConnectionDropped):
            await c.get(url, TOKEN_HEADER)


async def test_a_body_cut_short_is_a_broken_body(serve: Serve) -> None:
    _, url = await serve(lambda head: ok()[:-4] + CLOSE)  # 4 bytes short, then the end
    async with client() as c:
        with pytest.raises(BrokenBody):
            await c.get(url, TOKEN_HEADER)


async def test_garbage_instead_of_http_is_a_broken_body(serve: Serve) -> None:
    _, url = await serve(lambda head: b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
    async with client() as c:
        with pytest.raises(BrokenBody, match="malformed HTTP"):
            await c.get(url, TOKEN_HEADER)


@pytest.mark.parametrize("answer", [
    ok(b"x" * 20_000),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"y" * 4096
    + b"\r\n" * 1 + b"1000\r\n" + b"y" * 4096 + b"\r\n" + b"1000\r\n" + b"y" * 4096 + b"\r\n",
    ok(gzip.compress(b"z" * 50_000), "Content-Encoding: gzip\r\n"),
], ids=["content-length", "chunked", "gzip-bomb"])
async def test_a_body_over_the_limit_stops_early(serve: Serve, answer: bytes) -> None:
    _, url = await serve(lambda head: answer)
    async with client(max_body=10_000) as c:
        with pytest.raises(BodyTooLarge):
            await c.get(url, TOKEN_HEADER)


async def test_a_silent_server_times_out_and_the_next_request_gets_a_new_connection(
        serve: Serve) -> None:
    """On a fake clock: the request waits until the clock passes its read timeout (0.5 s),
    then fails within one sweep; no real half second goes by."""
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", ok()])
    raw, url = await serve(lambda head: next(answers))
    clock = FakeClock()
    async with AiohttpClient(concurrency=4, timeouts=Timeouts(connect=2, read=0.5, total=2),
                             max_body_bytes=10_000, env={}, clock=clock.now) as c:
        request = asyncio.create_task(c.get(url, TOKEN_HEADER))
        while not raw.heads:  # noqa: ASYNC110 - until the server has the request
            await asyncio.sleep(0.001)
        await asyncio.sleep(SWEEP)  # a sweep has run on the real clock
        assert not request.done()  # the real clock moved, ours did not
        clock.time += 0.6
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(request, timeout=1)
        assert (await c.get(url, TOKEN_HEADER)).status == 200
    assert raw.connections == 2


async def test_a_refused_port_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with client() as c:
        with pytest.raises(ConnectFailed) as caught:
            await c.get(f"http://127.0.0.1:{port}/v1/p1/x", TOKEN_HEADER)
    assert "refused" in caught.value.reason.lower()


async def test_connections_never_exceed_the_concurrency(serve: Serve) -> None:
    raw, url = await serve(lambda head: ok())
    async with client(concurrency=3) as c:
        replies = await asyncio.gather(*(c.get(url, TOKEN_HEADER) for _ in range(30)))
    assert {r.status for r in replies} == {200}
    assert raw.connections <= 3


async def test_a_token_with_a_line_break_is_refused_not_sent(serve: Serve) -> None:
    raw, url = await serve(lambda head: ok())
    async with client() as c:
        with pytest.raises(UnsafeHeader, match="X-Auth-Token header contains a control character"):
            await c.get(url, {"X-Auth-Token": "tok\r\nX-Evil: 1"})
    assert raw.heads == []


async def test_another_endpoint_never_gets_a_connection_to_the_first(serve: Serve) -> None:
    first, url_a = await serve(lambda head: ok(b'{"members":["a"]}'))
    second, url_b = await serve(lambda head: ok(b'{"members":["b"]}'))
    async with client() as c:
        bodies = [(await c.get(url, TOKEN_HEADER)).body for url in (url_a, url_b, url_a)]
    assert bodies == [b'{"members":["a"]}', b'{"members":["b"]}', b'{"members":["a"]}']
    assert len(first.heads) == 2 and len(second.heads) == 1


async def test_an_ipv6_endpoint_gets_a_bracketed_host_header() -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(ok())
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(handle, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = server.sockets[0].getsockname()[1]
    async with client() as c:
        assert (await c.get(f"http://[::1]:{port}/v1/p1/x", TOKEN_HEADER)).status == 200
    server.close()
    assert f"Host: [::1]:{port}\r\n".encode() in heads[0]
