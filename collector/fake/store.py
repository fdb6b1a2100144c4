"""A misbehaving S3 endpoint: a reverse proxy on loopback in front of a real one (moto's
server in the tests) that answers chosen requests itself — a 500, a 503, a 403 — instead of
passing them on, so a store's faults can be played against ``pyarrow.fs.S3FileSystem``.

It runs in its own threads (pyarrow's calls block; the proxy must not share their loop).
``fault(n, method, path)`` sees each request (``n`` counts from 1) and returns the status to
answer, or None to forward it.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

Fault = Callable[[int, str, str], int | None]
_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied", 404: "NoSuchBucket"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


def every(n: int, status: int = 500) -> Fault:
    """Answer ``status`` to every ``n``-th request."""
    return lambda count, _method, _path: status if count % n == 0 else None


class FaultyStore:
    """``with FaultyStore(upstream, fault) as store:`` ``store.endpoint`` is its URL; ``answered``
    lists the (method, path, status) of every request, forwarded or not."""

    def __init__(self, upstream: str, fault: Fault) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault = fault
        self.answered: list[tuple[str, str, int]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyStore:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _decide(self, method: str, path: str) -> int | None:
        with self._lock:
            self._count += 1
            count = self._count
        return self.fault(count, method, path)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the tests read what they need from ``answered``

            def _any(self) -> None:
                body = self._body()
                status = store._decide(self.command, self.path)
                if status is not None:
                    self._answer(status)
                    return
                upstream = http.client.HTTPConnection(*store.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    upstream.request(self.command, self.path, body, headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    store.answered.append((self.command, self.path, answer.status))
                    self.send_response(answer.status, answer.reason)
                    head = self.command == "HEAD"  # its length is the object's, unsent
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if not head:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(parts)

            def _answer(self, status: int) -> None:
                store.answered.append((self.command, self.path, status))
                code = _CODES.get(status, "InternalError")
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>fault injected</Message><RequestId>fault-1</RequestId>"
                        "</Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body) if self.command != "HEAD"
                                                       else 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
