"""The request-rate cap, shared by every worker: smooth, and slowed by the API's own throttling.

Smooth: asyncio-throttle's sliding window, cut small. ``Throttler(rate_limit=R, period=1)`` lets a
whole second's quota out at once; we give it a window of about ``WINDOW`` = 0.1 s holding about
``R/10`` requests (at least one), sized so that the rate is exactly R (``window_for``): a second
admits R (whole rates) or R plus one window, and no 100 ms more than two windows.
Its waiters poll, so they wait behind a lock: one polls, the others sleep in line.

Adaptive, over the whole pool (the quota is per account, not per worker):

- slow start: the run begins at ``R / 8`` and doubles every ``RAMP`` seconds without a 429,
  up to the configured rate R, so an unknown, lower gateway limit is met by a small overshoot;
- on a 429 whose message states the gateway's policy (``... over ratelimit,limit:N,time:1
  second``, see ``announced_rate``), the rate is capped at ``MARGIN * N / window`` for the rest of
  the run: the gateway said what it allows, and a sporadic 429 cannot talk us below that;
- on any other 429, at most once per ``COOLDOWN`` (one burst is one signal)::

      rate = max(MIN_RATE, rate / 2, MARGIN * min(rate, accepted_per_second))

  where ``accepted_per_second`` counts the responses of the last second (or since the start)
  that were not 429s: about the gateway's real limit once we send faster than it;
- then each full second without a 429 multiplies the rate by ``1 + INCREASE``, never above R.

Against an unknown limit L the rate saws between about 0.95 L and L: few 429s, most of the quota.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable

from asyncio_throttle.throttler import Throttler

WINDOW = 0.1  # seconds per slot window, about
MIN_PERIOD = 0.02  # shortest window, seconds
START = 1 / 8  # slow start begins at this share of the configured rate
RAMP = 0.25  # seconds per doubling in slow start
COOLDOWN = 0.5  # seconds between two decreases
MARGIN = 0.95
INCREASE = 0.02  # per 429-free second, after the first 429
MIN_RATE = 0.5  # requests per second
POLLS = 100  # the one waiter in front checks the throttler this often per window
_POLICY = re.compile(r"limit:\s*(\d+)\s*,\s*time:\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day)",
                     re.IGNORECASE)
_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def window_for(rate: float) -> tuple[int, float]:
    """(slots, period): ``slots`` requests per ``period`` seconds, ``slots / period == rate``.

    The period is about ``WINDOW`` (never shorter than ``MIN_PERIOD``, so that the one poller
    naps long enough). For a whole-number rate the slots divide it, so that windows tile a
    second and no second sees more than the rate: 19/s is 1 per 52.6 ms, 105/s is 7 per
    66.7 ms, 500/s is 50 per 0.1 s. Otherwise (a rate that is not whole, or a prime such as
    97/s) one second may see up to one window's slots more; the long-run rate is exact.
    """
    slots = max(1, math.floor(rate * WINDOW))
    if rate >= 1 and rate == int(rate):
        for divisor in range(slots, 0, -1):
            if int(rate) % divisor == 0 and divisor / rate >= MIN_PERIOD:
                return divisor, divisor / rate
    return slots, slots / rate


def announced_rate(message: str | None) -> float | None:
    """Requests per second an APIGW.0308 message allows, e.g. 'limit:200,time:5 minute' -> 0.67."""
    found = _POLICY.search(message or "")
    if found is None:
        return None
    limit, span = int(found.group(1)), float(found.group(2)) * _SECONDS[found.group(3).lower()]
    return limit / span if limit > 0 and span > 0 else None


class RateLimiter:
    """The run's one request-rate cap, shared by every worker (see the module docstring)."""
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 slow_start: bool = True) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.configured = rate
        self.ceiling = rate  # the configured rate, or less once the gateway announced its limit
        self.rate = max(MIN_RATE, rate * START) if slow_start else rate
        self.lowest = rate  # the lowest rate a 429 brought us to
        self._clock = clock
        self._starting = slow_start
        self._accepted: deque[float] = deque()
        self._last_decrease = -math.inf
        self._started = self._last_change = clock()
        self._throttler = Throttler(rate_limit=1, period=1.0, retry_interval=0.01)
        self._gate = asyncio.Lock()
        self._apply()

    def _apply(self) -> None:
        """Translate ``rate`` into the throttler's window (see ``window_for``)."""
        slots, period = window_for(self.rate)
        self._throttler.rate_limit = slots
        self._throttler.period = period
        # A slot is noticed up to one interval late: period / POLLS keeps that loss near 0.5%.
        self._throttler.retry_interval = period / POLLS

    @property
    def effective_rate(self) -> float:
        """Requests per second the limiter lets out now (the adaptive rate)."""
        return float(self._throttler.rate_limit / self._throttler.period)

    async def acquire(self) -> None:
        # asyncio-throttle's waiters each poll every retry_interval: 64 waiting workers would
        # wake 64,000 times a second. Behind the gate only the first polls; the rest sleep in
        # line (FIFO), and each is let through as soon as the one before it got a slot.
        """Wait for the next slot; every attempt, retries included, passes here."""
        async with self._gate:
            await self._throttler.acquire()  # type: ignore[no-untyped-call]  # untyped library

    def _forget_before(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - 1.0:
            self._accepted.popleft()

    def on_accepted(self) -> None:
        """A response that was not a 429: the quota took it."""
        now = self._clock()
        self._accepted.append(now)
        self._forget_before(now)
        if self.rate >= self.ceiling:
            return
        if self._starting and now - self._last_change >= RAMP:
            self.rate = min(self.ceiling, self.rate * 2)
        elif not self._starting and now - self._last_change >= 1.0:
            self.rate = min(self.ceiling, self.rate * (1 + INCREASE))
        else:
            return
        self._last_change = now
        self._apply()

    def on_throttled(self, message: str | None = None) -> None:
        """A 429: slow the whole pool to the announced limit, or by AIMD once per COOLDOWN."""
        now = self._clock()
        announced = announced_rate(message)
        if announced is not None:  # authoritative: cap, and let slow start go on below the cap
            self.ceiling = max(MIN_RATE, min(self.ceiling, MARGIN * announced))
            if self.rate > self.ceiling:
                self.rate = self.ceiling
                self.lowest = min(self.lowest, self.rate)
                self._apply()
            return
        self._starting = False
        self._last_change = now
        if now - self._last_decrease < COOLDOWN:
            return
        self._last_decrease = now
        self._forget_before(now)
        span = min(1.0, max(now - self._started, 0.25))
        accepted = len(self._accepted) / span
        self.rate = max(MIN_RATE, self.rate / 2, MARGIN * min(self.rate, accepted))
        self.lowest = min(self.lowest, self.rate)
        self._apply()
