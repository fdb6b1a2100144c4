"""The shared rate limiter: smooth windows, and a pool-wide slow-down on 429s (clock injected)."""

from __future__ import annotations

import asyncio
import bisect
from types import SimpleNamespace

import pytest
from asyncio_throttle import throttler

from collector.limiter import RateLimiter, announced_rate, window_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """asyncio-throttle reads ``time.monotonic`` and naps with ``asyncio.sleep``: both run on
    this clock, so a 30 s run takes no wall time and every stamp is exact."""
    clock = Clock()
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await real_sleep(0)

    monkeypatch.setattr(throttler, "time", SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(throttler, "asyncio", SimpleNamespace(sleep=sleep))
    return clock


async def admitted_over(limiter: RateLimiter, clock: Clock, seconds: float,
                        workers: int = 16) -> list[float]:
    """Stamps of every request the limiter let out in ``seconds`` of virtual time."""
    stamps: list[float] = []
    end = clock.now + seconds

    async def worker() -> None:
        while clock.now < end:
            await limiter.acquire()
            if clock.now < end:
                stamps.append(clock.now)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return stamps


def busiest(stamps: list[float], width: float) -> int:
    stamps = sorted(stamps)
    return max(bisect.bisect_left(stamps, t + width) - i for i, t in enumerate(stamps))


@pytest.mark.parametrize(("rate", "seconds", "one_second_at_most"), [
    (19, 30, 19), (105, 10, 105), (500, 4, 500), (2000, 2, 2000), (0.3, 100, 1),
    (97, 10, 97 + 9),  # a prime: windows of 9 do not tile a second
    (12.5, 10, 12 + 1),
])
async def test_the_configured_rate_is_the_rate_let_out(virtual_time: Clock, rate: float,
                                                       seconds: float,
                                                       one_second_at_most: int) -> None:
    limiter = RateLimiter(rate, clock=virtual_time, slow_start=False)
    stamps = await admitted_over(limiter, virtual_time, seconds)
    slots, _ = window_for(rate)
    # The poller notices a free slot up to 1/100 of a window late (-1%); the first window
    # opens at once (+slots). 19/s over 30 s: 564-570, where the floored window gave 300.
    assert rate * seconds * 0.99 - 1 <= len(stamps) <= rate * seconds + slots
    assert busiest(stamps, 1.0) <= one_second_at_most
    assert busiest(stamps, 0.1) <= 2 * slots  # at most two windows' bursts


@pytest.mark.parametrize(("rate", "window"), [
    (19, (1, 1 / 19)), (105, (7, 7 / 105)), (500, (50, 0.1)), (0.3, (1, 1 / 0.3)),
    (97, (9, 9 / 97)), (12.5, (1, 0.08)),
])
def test_the_window_of_a_rate(rate: float, window: tuple[int, float]) -> None:
    slots, period = window_for(rate)
    assert (slots, period) == (window[0], pytest.approx(window[1]))


def test_slow_start_doubles_every_quarter_second_up_to_the_configured_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(800, clock=clock)
    seen = [limiter.rate]
    for _ in range(5):
        clock.now += 0.25
        limiter.on_accepted()
        seen.append(limiter.rate)
    assert seen == [100, 200, 400, 800, 800, 800]


def test_a_429_drops_the_rate_to_just_under_what_was_accepted_halving_at_most() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock, slow_start=False)
    for _ in range(450):  # 1.5 s in which the gateway took 300 a second
        clock.now += 1 / 300
        limiter.on_accepted()
    limiter.on_throttled()
    assert limiter.rate == 500
    for _ in range(160):  # past the cooldown
        clock.now += 1 / 300
        limiter.on_accepted()
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(0.95 * 300, abs=1)
    assert limiter.effective_rate <= limiter.rate


def test_a_burst_of_429s_is_one_signal_and_halves_at_most() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock, slow_start=False)
    for _ in range(50):
        limiter.on_throttled()  # nothing accepted yet: the floor is half the rate
    assert limiter.rate == pytest.approx(500)
    clock.now += 0.51
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(250)


def test_the_rate_creeps_back_but_never_above_the_configured_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(100, clock=clock, slow_start=False)
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(50)
    clock.now += 1.0
    limiter.on_accepted()
    assert limiter.rate == pytest.approx(51)  # creeps: +2% a second, no more slow start
    for _ in range(200):
        clock.now += 1.0
        limiter.on_accepted()
    assert limiter.rate == 100
    assert limiter.lowest == pytest.approx(50)


async def test_against_an_unknown_lower_limit_the_rate_converges_with_few_429s(
        virtual_time: Clock) -> None:
    """20 s against a gateway that admits 150 in any second (we are set to 400): 429s stay
    rare, the rate settles below the limit, and the gateway's window is never overrun by
    much. In virtual time, against a gateway of the test's own that answers at once."""
    limiter = RateLimiter(400, clock=virtual_time)
    admitted: list[float] = []
    requests = throttled = 0
    end = virtual_time.now + 20

    async def worker() -> None:
        nonlocal requests, throttled
        while virtual_time.now < end:
            await limiter.acquire()
            requests += 1
            now = virtual_time.now
            if bisect.bisect_right(admitted, now) - bisect.bisect_right(admitted, now - 1.0) \
                    >= 150:
                throttled += 1
                limiter.on_throttled("Too many requests")  # no policy in the message
            else:
                admitted.append(now)
                limiter.on_accepted()

    await asyncio.gather(*(worker() for _ in range(32)))
    assert throttled / requests < 0.10, f"{throttled} of {requests} requests got 429"
    assert limiter.rate < 200
    assert len(admitted) >= 0.8 * 150 * 20  # most of the quota was used
    assert busiest(admitted, 1.0) <= 150


@pytest.mark.parametrize(("message", "rate"), [
    ("The throttling threshold has been reached: policy user over ratelimit,limit:300,"
     "time:1 second", 300.0),
    ("policy user over ratelimit,limit:200,time:5 minute", 200 / 300),
    ("policy ip over ratelimit,limit:5,time:1 minute", 5 / 60),
    ("Too many requests", None),
    (None, None),
])
def test_the_gateway_policy_is_read_from_the_429_message(message: str | None,
                                                         rate: float | None) -> None:
    assert announced_rate(message) == (pytest.approx(rate) if rate else None)


def test_an_announced_limit_caps_the_rate_and_sporadic_429s_cannot_push_below_it() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock, slow_start=False)
    message = "policy user over ratelimit,limit:300,time:1 second"
    for _ in range(100):
        clock.now += 0.6
        limiter.on_throttled(message)
    assert limiter.rate == pytest.approx(285)
    for _ in range(100):
        clock.now += 1.0
        limiter.on_accepted()
    assert limiter.rate == pytest.approx(285)  # never above what the gateway allows


def test_a_sporadic_announced_429_does_not_end_slow_start() -> None:
    clock = Clock()
    limiter = RateLimiter(800, clock=clock)
    limiter.on_throttled("policy user over ratelimit,limit:2000,time:1 second")
    for _ in range(4):
        clock.now += 0.25
        limiter.on_accepted()
    assert limiter.rate == 800


async def test_waiting_workers_do_not_poll_in_a_storm(virtual_time: Clock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """64 workers held at 20 requests/s: only the first in line polls asyncio-throttle."""
    limiter = RateLimiter(20, clock=virtual_time, slow_start=False)
    polls = 0
    flush = limiter._throttler.flush

    end = virtual_time.now + 0.5

    def counted() -> None:
        nonlocal polls
        polls += virtual_time.now < end
        flush()

    monkeypatch.setattr(limiter._throttler, "flush", counted)
    admitted = 0

    async def worker() -> None:
        nonlocal admitted
        while virtual_time.now < end:
            await limiter.acquire()
            admitted += virtual_time.now < end

    await asyncio.gather(*(worker() for _ in range(64)))
    assert admitted == 10  # 20/s for half a second, in windows of 2
    assert polls < 700  # one poller every millisecond, not 64 of them (about 30,000)
