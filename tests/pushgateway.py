"""A Pushgateway on loopback that misbehaves on purpose: each mode is one way a bad one answers."""

from __future__ import annotations

import socketserver
import threading
import time
from types import TracebackType

MODES = ("ok", "not_http", "huge_header", "many_headers", "trickle", "reason")


class _Handler(socketserver.StreamRequestHandler):
    server: BadPushgateway  # type: ignore[assignment]

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:  # the request's head, then its body
            chunk = self.request.recv(65_536)
            if not chunk:
                return
            head += chunk
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += self.request.recv(65_536)
        self.server.pushes.append(body)
        write, mode = self.request.sendall, self.server.mode
        if mode == "ok":
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        elif mode == "not_http":
            write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        elif mode == "huge_header":
            write(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n")
        elif mode == "many_headers":
            write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
                  + b"\r\n")
        elif mode == "reason":
            write(b"HTTP/1.1 500 Bad\x1b[2J\x07 things\r\nContent-Length: 0\r\n\r\n")
        elif mode == "trickle":  # one byte of a header at a time, for ever
            write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.server.stopping.is_set():
                try:
                    write(b"a")
                except OSError:
                    return
                time.sleep(self.server.trickle_every)


class BadPushgateway(socketserver.ThreadingTCPServer):
    """``with BadPushgateway("trickle") as gw: push(gw.url, ...)``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str, trickle_every: float = 0.05) -> None:
        assert mode in MODES
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.trickle_every = trickle_every
        self.pushes: list[bytes] = []
        self.stopping = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> BadPushgateway:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
