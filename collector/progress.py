"""What the user sees while a run goes: a redrawn bar on a terminal, a line every few seconds in
a log, and one summary line at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from collector.clock import SYSTEM, Clock


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the run has done so far, as the progress line shows it."""

    done: int  # images with a status row (rejected included)
    members: int
    failed: int
    elapsed: float
    total: int | None  # input lines, when known up front


def render(snap: Snapshot, bar_width: int = 0) -> str:
    """One progress line; with ``bar_width``, a bar for a terminal."""
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


def text_line(snap: Snapshot) -> str:
    """The progress line of a log (no terminal)."""
    return "progress: " + render(snap)


async def report(snapshot: Callable[[], Snapshot], interval: float,
                 stream: TextIO = sys.stderr, clock: Clock = SYSTEM, *,
                 line: Callable[[Snapshot], str] | None = None,
                 on_interval: Callable[[], None] | None = None) -> None:
    """Runs until cancelled: a bar redrawn 5 times a second on a tty, else a line per interval
    (``line``: its own form, e.g. JSON, never a bar); ``on_interval`` runs at each interval."""
    tty = stream.isatty() and line is None
    last = clock.now()
    try:
        while True:
            await clock.sleep(0.2 if tty else min(interval, 1.0))
            if tty:
                stream.write("\r" + render(snapshot(), bar_width=30) + "\x1b[K")
                stream.flush()
            if clock.now() - last >= interval:
                last = clock.now()
                if not tty:
                    stream.write((line or text_line)(snapshot()) + "\n")
                    stream.flush()
                if on_interval is not None:
                    on_interval()
    finally:
        if tty:
            stream.write("\r\x1b[K")
            stream.flush()
