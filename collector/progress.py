"""What the user sees while a run goes: a redrawn bar on a terminal, a line every few seconds in
a log, and one summary line at the end."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True, slots=True)
class Snapshot:
    done: int  # images with a status row (rejected included)
    members: int
    failed: int
    elapsed: float
    total: int | None  # input lines, when known up front


def render(snap: Snapshot, bar_width: int = 0) -> str:
    rate = snap.done / snap.elapsed if snap.elapsed > 0 else 0.0
    parts = [f"{snap.done:,} images", f"{snap.members:,} member rows", f"{rate:,.0f} images/s",
             f"{snap.failed:,} failed"]
    text = " | ".join(parts)
    if snap.total:
        share = min(snap.done / snap.total, 1.0)
        if bar_width:
            filled = round(share * bar_width)
            text = f"[{'#' * filled}{'.' * (bar_width - filled)}] {share:4.0%} {text}"
        else:
            text = f"{share:.0%} {text}"
    return text


async def report(snapshot: Callable[[], Snapshot], interval: float,
                 stream: TextIO = sys.stderr) -> None:
    """Runs until cancelled: a bar redrawn 5 times a second on a tty, else a line per interval."""
    tty = stream.isatty()
    last = time.monotonic()
    try:
        while True:
            await asyncio.sleep(0.2 if tty else min(interval, 1.0))
            if tty:
                stream.write("\r" + render(snapshot(), bar_width=30) + "\x1b[K")
                stream.flush()
            elif time.monotonic() - last >= interval:
                last = time.monotonic()
                stream.write("progress: " + render(snapshot()) + "\n")
                stream.flush()
    finally:
        if tty:
            stream.write("\r\x1b[K")
            stream.flush()
