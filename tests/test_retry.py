"""The retry policy as tables: what is retried, and how long each wait may be."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from collector.api import BodyError
from collector.client import BodyTooLarge, BrokenBody, ConnectFailed, ConnectionDropped
from collector.errors import Status
from collector.retry import Action, Backoff, RetryBudget, classify, parse_retry_after

A, S = Action, Status
TABLE = [
    ((200, None), (A.DONE, S.OK)),
    ((429, "APIGW.0308"), (A.RETRY, S.FAILED)),
    ((429, "APIG.0308"), (A.RETRY, S.FAILED)),
    ((429, None), (A.RETRY, S.FAILED)),
    ((400, "CPS.0003"), (A.RETRY, S.FAILED)),
    ((400, "CPS.0030"), (A.DONE, S.NOT_FOUND)),
    ((404, "APIGW.0101"), (A.DONE, S.NOT_FOUND)),
    ((404, None), (A.DONE, S.NOT_FOUND)),
    ((400, "CPS.0001"), (A.DONE, S.FORBIDDEN)),
    ((400, "CPS.0007"), (A.DONE, S.FORBIDDEN)),
    ((403, "APIGW.0302"), (A.DONE, S.FORBIDDEN)),
    ((401, "APIGW.0301"), (A.REFRESH_AUTH, S.FAILED)),
    ((400, "CPS.0002"), (A.GIVE_UP, S.FAILED)),
    ((400, None), (A.GIVE_UP, S.FAILED)),
    ((408, None), (A.RETRY, S.FAILED)),
    ((500, None), (A.RETRY, S.FAILED)),
    ((501, None), (A.GIVE_UP, S.FAILED)),
    ((502, "APIGW.0201"), (A.RETRY, S.FAILED)),
    ((503, None), (A.RETRY, S.FAILED)),
    ((504, None), (A.RETRY, S.FAILED)),
    ((302, None), (A.GIVE_UP, S.FAILED)),
]


@pytest.mark.parametrize(("answer", "expected"), TABLE, ids=[f"{s}-{c}" for (s, c), _ in TABLE])
def test_every_answer_is_classified(answer: tuple[int, str | None],
                                    expected: tuple[Action, Status]) -> None:
    verdict = classify(*answer)
    assert (verdict.action, verdict.status) == expected


@pytest.mark.parametrize(("exc", "action"), [
    (TimeoutError(), A.RETRY),
    (ConnectionDropped("closed before answering"), A.RETRY),
    (BrokenBody("short"), A.RETRY),
    (ConnectFailed("Connection refused"), A.RETRY),
    (ConnectionResetError(), A.RETRY),
    (BodyError("bad"), A.GIVE_UP),
    (BodyTooLarge("big"), A.GIVE_UP),
    (ValueError("bug"), A.GIVE_UP),
])
def test_exceptions_are_classified(exc: BaseException, action: Action) -> None:
    assert classify(None, None, exc).action is action


def test_full_jitter_waits_stay_within_their_bounds() -> None:
    backoff, rng = Backoff(base=0.5, cap=8.0), random.Random(1)
    for retry in range(1, 10):
        bound = min(8.0, 0.5 * 2 ** (retry - 1))
        waits = [backoff.wait(retry, None, rng) for _ in range(1000)]
        assert min(waits) >= 0 and max(waits) <= bound
        assert abs(sum(waits) / len(waits) - bound / 2) < bound * 0.1  # uniform: mean = bound/2


@pytest.mark.parametrize(("header", "expected"), [
    ("3", 3.0), ("0.5", 0.5), ("86400", 60.0),  # clamped to retry_after_cap
    ("0", None), ("-4", None), ("soon", None), ("nan", None), ("", None),
    ("Sat, 28 Nov 2026 12:00:10 GMT", 10.0), ("Sat, 28 Nov 2026 11:00:00 GMT", None),
])
def test_retry_after_seconds_or_date_is_clamped_and_never_a_hot_loop(
        header: str, expected: float | None) -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)
    seconds = parse_retry_after(header, now=lambda: now)
    wait = Backoff(base=0.5, cap=30, retry_after_cap=60).wait(1, seconds, random.Random(0))
    if expected is None:
        assert seconds is None and 0 <= wait <= 0.5  # falls back to full jitter
    else:
        assert wait == pytest.approx(expected)


def test_the_retry_budget_is_spent_and_earned() -> None:
    budget = RetryBudget(initial=2, ratio=0.5)
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()
    budget.earn()
    budget.earn()
    assert budget.try_spend() and budget.spent == 3
