"""What the fake saw: every request (tests assert on it), counters, and the client's traffic
as a gateway would measure it (benchmarks report it)."""

from __future__ import annotations

import bisect
import os
import time
from array import array
from collections import Counter

from collector.fake.model import Exchange, LogEntry


class Recorder:
    """``begin`` when a request arrives, ``finish`` with the status the client saw."""

    def __init__(self, keep_log: bool = True) -> None:
        self.keep_log = keep_log
        self.log: list[LogEntry] = []
        self.received = array("d")  # monotonic time of every request
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def begin(self, method: str, path: str) -> Exchange:
        """A request arrived: counted in flight and given a request ID."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        now = time.monotonic()
        self.received.append(now)
        return Exchange(now, method, path, os.urandom(16).hex(), self.in_flight)

    def finish(self, ex: Exchange, status: int) -> None:
        """``status`` is 0 when the connection was cut before a status line."""
        self.in_flight -= 1
        self.statuses[status] += 1
        if self.keep_log:
            self.log.append(LogEntry(ex.arrived, ex.method, ex.path, ex.project_id, ex.image_id,
                                     ex.marker, status, ex.outcome, ex.attempt, ex.in_flight))

    def requested_images(self) -> set[str]:
        """The image IDs a member call asked for."""
        return {e.image_id for e in self.log if e.image_id is not None}

    def traffic(self) -> dict[str, float]:
        """Requests, 429s, the sustained rate (middle 80%) and the busiest 1 s and 100 ms."""
        times = sorted(self.received)
        stats: dict[str, float] = {"requests": len(times), "throttled": self.statuses[429],
                                   "max_in_flight": self.max_in_flight}
        if len(times) >= 10:
            lo, hi = times[len(times) // 10], times[len(times) * 9 // 10]
            stats["sustained_per_s"] = (len(times) * 8 // 10) / max(hi - lo, 1e-9)
            for name, width in (("busiest_1s", 1.0), ("busiest_100ms", 0.1)):
                stats[name] = max(bisect.bisect_right(times, t + width - 1e-9) - i
                                  for i, t in enumerate(times))
        return stats
