"""The request-rate cap: asyncio-throttle's sliding window, cut small so it cannot burst.

``Throttler(rate_limit=R, period=1)`` lets a whole second's quota out at once. We give it a
window of ``WINDOW`` seconds holding ``R * WINDOW`` requests instead: any 1 s interval is ten such
windows, so it still admits at most R per second, and no 100 ms sees more than R/10.
Its waiters poll, so only the fixed pool of workers ever waits on it, never a task per ID.
"""

from __future__ import annotations

import math

from asyncio_throttle.throttler import Throttler

WINDOW = 0.1  # seconds


class RateLimiter:
    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        if rate * WINDOW >= 1:
            slots, period = math.floor(rate * WINDOW), WINDOW
        else:  # slower than one request per window: one request per 1/rate seconds
            slots, period = 1, 1.0 / rate
        # Effective rate = slots / period <= rate; poll at a fifth of the window.
        self._throttler = Throttler(rate_limit=slots, period=period,
                                    retry_interval=min(0.01, period / 5))

    @property
    def effective_rate(self) -> float:
        return float(self._throttler.rate_limit / self._throttler.period)

    async def acquire(self) -> None:
        await self._throttler.acquire()  # type: ignore[no-untyped-call]  # untyped library
