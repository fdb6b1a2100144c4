"""The retry policy, written down once: what is retryable, and how long to wait.

Classification (``classify``) maps one attempt's outcome to an ``Action`` and, where the image is
done, its ``Status``. Retryable, and only these: 429 (API Gateway's ``APIGW.0308``/``APIG.0308``
throttling), 408, 500, 502, 503, 504, 400 ``CPS.0003`` ("service internal error, try again
later"), connection failures, timeouts and broken or short bodies. 401 asks for fresh
credentials. Everything else is final on the first answer.

Backoff (``backoff``) for attempt n = 1, 2, ... (the n-th retry), full jitter (AWS, "Exponential
Backoff and Jitter")::

    wait = uniform(0, min(cap, base * 2 ** (n - 1)))         defaults: base 0.5 s, cap 30 s

unless the server sent ``Retry-After`` (seconds or an HTTP date) with a positive value, then::

    wait = min(retry_after, retry_after_cap)                 default cap 60 s

A zero, negative, past or unparsable ``Retry-After`` falls back to full jitter, so there is never
a hot loop and never a day's sleep. The run-wide ``RetryBudget`` stops a sick API from being
hammered: each retry spends one token, each finished image earns ``ratio`` tokens back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from collector.api import BodyError
from collector.client import BodyTooLarge
from collector.errors import Status

THROTTLED_CODES = frozenset({"APIGW.0308", "APIG.0308"})
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NOT_FOUND_CODES = frozenset({"CPS.0030", "CPS.0029", "APIGW.0101"})
FORBIDDEN_CODES = frozenset({"CPS.0001", "CPS.0006", "CPS.0007", "CPS.0008", "APIGW.0302"})
RETRYABLE_CODES = frozenset({"CPS.0003"})


class Action(Enum):
    """What to do after one attempt (see ``classify``)."""
    DONE = "done"  # a definitive answer: the image gets `status`
    RETRY = "retry"  # try again after a backoff, if attempts and budget allow
    REFRESH_AUTH = "refresh_auth"  # the credentials were rejected
    GIVE_UP = "give_up"  # no retry will help: the image is `failed`


@dataclass(frozen=True, slots=True)
class Verdict:
    """An action and, when the image is done, its status."""
    action: Action
    status: Status


def classify(http_status: int | None, error_code: str | None,
             exc: BaseException | None = None) -> Verdict:
    """The whole table; ``http_status`` is None when no response arrived (``exc`` says why)."""
    if exc is not None:
        if isinstance(exc, BodyError | BodyTooLarge):
            return Verdict(Action.GIVE_UP, Status.FAILED)
        if isinstance(exc, asyncio.TimeoutError | ConnectionError):
            return Verdict(Action.RETRY, Status.FAILED)
        return Verdict(Action.GIVE_UP, Status.FAILED)
    assert http_status is not None
    if http_status == 200:
        return Verdict(Action.DONE, Status.OK)
    if http_status == 429 or error_code in THROTTLED_CODES:
        return Verdict(Action.RETRY, Status.FAILED)
    if http_status == 401:
        return Verdict(Action.REFRESH_AUTH, Status.FAILED)
    if error_code in RETRYABLE_CODES or http_status in RETRYABLE_STATUSES:
        return Verdict(Action.RETRY, Status.FAILED)
    if http_status == 404 or error_code in NOT_FOUND_CODES:
        return Verdict(Action.DONE, Status.NOT_FOUND)
    if http_status == 403 or error_code in FORBIDDEN_CODES:
        return Verdict(Action.DONE, Status.FORBIDDEN)
    return Verdict(Action.GIVE_UP, Status.FAILED)


def is_throttled(http_status: int | None, error_code: str | None) -> bool:
    """A 429, or API Gateway's throttling code on any status."""
    return http_status == 429 or error_code in THROTTLED_CODES


def parse_retry_after(value: str | None,
                      now: Callable[[], dt.datetime] | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 10.2.3), or None if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or (lambda: dt.datetime.now(dt.UTC)))()).total_seconds()
    if seconds != seconds or seconds <= 0:  # NaN, zero, negative, a date in the past
        return None
    return seconds


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait before a retry: full jitter, or a clamped Retry-After (see the module docstring)."""
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0

    def wait(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before retry number ``retry`` (1 for the first); see the module docstring."""
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self.retry_after_cap)
        return rng.uniform(0.0, min(self.cap, self.base * 2.0 ** (retry - 1)))


@dataclass(slots=True)
class RetryBudget:
    """Run-wide retry tokens: starts at ``initial``, +``ratio`` per finished image."""

    initial: float = 100.0
    ratio: float = 0.2
    tokens: float = 100.0
    spent: int = 0

    def __post_init__(self) -> None:
        self.tokens = self.initial

    def try_spend(self) -> bool:
        """Takes one retry from the budget; False when it is spent (one attempt per image then)."""
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        self.spent += 1
        return True

    def earn(self) -> None:
        """An image finished: the budget grows by ``ratio``."""
        self.tokens += self.ratio
