"""Answers on the wire: the response head, and the transport faults as steps, written once.

A fault is a list of steps (``steps_for``): send bytes, pause, send a piece again and again,
cut the connection. Each front gives a ``Wire`` (write, drain, cut) and ``act_out`` plays the
steps on it, so both fronts break a connection in exactly the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from collector.fake.faults import Outcome
from collector.fake.model import Answer, Exchange, ServerConfig

INTERIM_HEADS = (b"HTTP/1.1 100 Continue\r\n\r\n"
                 b"HTTP/1.1 102 Processing\r\n\r\n"
                 b"HTTP/1.1 103 Early Hints\r\nLink: </members.json>; rel=preload\r\n\r\n")
HUGE_HEADER_BYTES = 1 << 20
ENDLESS_PIECE = 65_536
_REASONS = {s.value: s.phrase for s in HTTPStatus}


def answer_headers(ex: Exchange, answer: Answer) -> dict[str, str]:
    """The headers every answer carries, besides the framing ones."""
    headers = {"X-Request-Id": answer.request_id or ex.rid}
    if answer.location is not None:
        headers["Location"] = answer.location
    if answer.retry_after is not None:
        headers["Retry-After"] = answer.retry_after
    if answer.subject_token is not None:
        headers["X-Subject-Token"] = answer.subject_token
    return headers


def head(ex: Exchange, answer: Answer, length: int | None, close: bool,
         extra: dict[str, str] | None = None) -> bytes:
    """Status line and headers; ``length`` None means a chunked body."""
    lines = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
             f"Content-Type: {answer.content_type}"]
    lines += [f"{name}: {value}" for name, value in
              {**answer_headers(ex, answer), **(extra or {})}.items()]
    lines.append(f"Content-Length: {length}" if length is not None
                 else "Transfer-Encoding: chunked")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes."""
    data: bytes


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before the next step."""
    seconds: float


@dataclass(frozen=True, slots=True)
class Repeat:
    """``piece`` again and again, ``total`` bytes in all, as fast as the client reads."""

    piece: bytes
    total: int


@dataclass(frozen=True, slots=True)
class Cut:
    """Drop the connection."""
    rst: bool  # an RST (SO_LINGER 0) rather than a FIN


Step = Send | Pause | Repeat | Cut


def steps_for(ex: Exchange, answer: Answer, config: ServerConfig, close: bool) -> list[Step]:
    """How the front acts out ``answer.fault`` around the good body ``answer.body``."""
    fault, good = answer.fault, answer.body
    half = good[: max(len(good) // 2, 1)]
    if fault is Outcome.RESET_BEFORE_HEADERS:
        return [Cut(rst=True)]
    if fault in (Outcome.RESET_MID_BODY, Outcome.SHORT_BODY):
        return [Send(head(ex, answer, len(good) + 64, close) + half),
                Cut(rst=fault is Outcome.RESET_MID_BODY)]
    if fault is Outcome.STALL:
        return [Pause(config.stall_seconds), Send(head(ex, answer, len(good), close) + good)]
    if fault is Outcome.TRICKLE:
        step = max(len(good) // config.trickle_pieces, 1)
        steps: list[Step] = [Send(head(ex, answer, len(good), close))]
        for start in range(0, len(good), step):
            steps += [Send(good[start:start + step]), Pause(config.trickle_delay)]
        return steps
    if fault is Outcome.INTERIM:
        return [Send(INTERIM_HEADS + head(ex, answer, len(good), close) + good)]
    if fault is Outcome.HUGE_HEADER:
        extra = {"X-Request-Id": "r" * HUGE_HEADER_BYTES}
        return [Send(head(ex, answer, len(good), close, extra) + good)]
    if fault is Outcome.ENDLESS_HEADER:
        return [Send(b"HTTP/1.1 200 OK\r\nX-Padding: "),
                Repeat(b"a" * ENDLESS_PIECE, config.huge_body_bytes), Cut(rst=False)]
    if fault is Outcome.HUGE_BODY:  # an endless chunked body
        piece = b'{"members":[' + b" " * ENDLESS_PIECE
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        return [Send(head(ex, answer, None, close)), Repeat(chunk, config.huge_body_bytes),
                Send(b"0\r\n\r\n")]
    raise AssertionError(f"not a transport fault: {fault}")


class Wire(Protocol):
    """One connection, as a front exposes it to ``act_out``."""

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def cut(self, rst: bool) -> None: ...


async def act_out(steps: list[Step], wire: Wire) -> bool:
    """Play the steps; True when the connection was cut (the client saw no whole answer)."""
    for step in steps:
        if wire.closed:
            return True
        if isinstance(step, Send):
            wire.write(step.data)
            await wire.drain()
        elif isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Repeat):
            sent = 0
            while sent < step.total and not wire.closed:
                wire.write(step.piece)
                sent += len(step.piece)
                await wire.drain()
        else:
            wire.cut(step.rst)
            return True
    return wire.closed
