"""One image through the client and the retry policy, with aioresponses standing in for HTTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import orjson
import pytest
from aioresponses import aioresponses

from collector.auth import TokenAuth
from collector.client import AiohttpClient, Timeouts
from collector.clock import FakeClock
from collector.errors import FatalRunError, Status
from collector.fetch import Fetcher
from collector.intake import Target
from collector.limiter import RateLimiter
from collector.retry import Backoff, RetryBudget
from collector.secrets import Secret
from tests.conftest import no_sleep

URL = "https://cph.test/v1/p1/cloud-phone/images/img1/members"


def error(code: str, msg: str = "m") -> bytes:
    return orjson.dumps({"request_id": "rid-body", "error_code": code, "error_msg": msg})


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    auth = TokenAuth(Secret("tok-123456"))
    client = AiohttpClient(concurrency=4, timeouts=Timeouts(), max_body_bytes=10_000)
    client.add_static_headers(auth.static_headers())
    async with client:
        yield Fetcher(client, auth, RateLimiter(10_000),
                      endpoint="https://cph.test", max_attempts=3,
                      backoff=Backoff(), budget=RetryBudget(), fail_fast_after=50,
                      sleep=no_sleep, rng=random.Random(0))


STATUS_ROWS = [
    (400, error("CPS.0030"), Status.NOT_FOUND, 1),
    (404, error("APIGW.0101"), Status.NOT_FOUND, 1),
    (400, error("CPS.0001"), Status.FORBIDDEN, 1),
    (403, error("APIGW.0302"), Status.FORBIDDEN, 1),
    (400, error("CPS.0002"), Status.FAILED, 1),
    (429, error("APIGW.0308"), Status.FAILED, 3),
    (500, error("CPS.0003"), Status.FAILED, 3),
    (502, b"<html>bad gateway</html>", Status.FAILED, 3),
    (503, b"", Status.FAILED, 3),
]


@pytest.mark.parametrize(("status", "body", "expected", "attempts"), STATUS_ROWS)
async def test_each_error_answer_becomes_its_status_row(
        fetcher: Fetcher, mock_http: aioresponses, status: int, body: bytes, expected: Status,
        attempts: int) -> None:
    mock_http.get(URL, status=status, body=body, headers={"X-Request-Id": "rid-hdr"},
                  repeat=True)
    result = await fetcher.collect(Target("p1", "img1"))
    assert (result.status, result.attempts, result.http_status) == (expected, attempts, status)
    assert result.request_id == "rid-hdr"
    if body.startswith(b"{"):
        assert result.error_code == orjson.loads(body)["error_code"]
    else:
        assert result.error_code is None
        assert result.error_msg == f"HTTP {status} without an error body"
    assert result.members == []


async def test_a_429_then_200_succeeds_on_the_second_attempt(
        fetcher: Fetcher, mock_http: aioresponses) -> None:
    body = orjson.dumps({"members": [{"image_id": "img1", "member_id": "m1",
                                      "create_time": 1, "update_time": 2}]})
    mock_http.get(URL, status=429, body=error("APIGW.0308"))
    mock_http.get(URL, status=200, body=body)
    result = await fetcher.collect(Target("p1", "img1"))
    assert (result.status, result.attempts, len(result.members)) == (Status.OK, 2, 1)
    assert result.error_code is None and fetcher.counters.throttled == 1


async def test_a_401_stops_the_run(fetcher: Fetcher, mock_http: aioresponses) -> None:
    mock_http.get(URL, status=401, body=error("APIGW.0301", "token expires"))
    with pytest.raises(FatalRunError, match=r"credentials rejected: HTTP 401 APIGW\.0301"):
        await fetcher.collect(Target("p1", "img1"))


async def test_a_body_over_the_limit_fails_the_image(
        fetcher: Fetcher, mock_http: aioresponses) -> None:
    mock_http.get(URL, status=200, body=b'{"members": []}' + b" " * 20_000)
    result = await fetcher.collect(Target("p1", "img1"))
    assert (result.status, result.error_code) == (Status.FAILED, "body_too_large")


async def test_next_marker_is_followed_with_the_marker_in_the_query(
        fetcher: Fetcher, mock_http: aioresponses) -> None:
    def page(member: str, marker: str | None) -> bytes:
        info = {"next_marker": marker} if marker else {}
        return orjson.dumps({"members": [{"image_id": "img1", "member_id": member,
                                          "create_time": 1, "update_time": 1}],
                             "page_info": info})

    mock_http.get(URL, body=page("m1", "m1"))
    mock_http.get(URL + "?marker=m1", body=page("m2", None))
    result = await fetcher.collect(Target("p1", "img1"))
    assert [m.member_id for m in result.members] == ["m1", "m2"]
    assert result.attempts == 2


async def test_a_minute_of_backoff_is_waited_on_the_clock_exactly(
        mock_http: aioresponses) -> None:
    """Retry-After: 90 twice, clamped to 60: two minutes of waiting, in no time."""
    clock = FakeClock()
    start = clock.time
    mock_http.get(URL, status=429, body=error("APIGW.0308"), headers={"Retry-After": "90"},
                  repeat=2)
    mock_http.get(URL, status=200, body=b'{"members": []}')
    async with AiohttpClient(concurrency=1, timeouts=Timeouts(), max_body_bytes=10_000) as client:
        fetcher = Fetcher(client, TokenAuth(Secret("tok-123456")),
                          RateLimiter(10_000, clock=clock.now), endpoint="https://cph.test",
                          max_attempts=3, backoff=Backoff(retry_after_cap=60),
                          budget=RetryBudget(), fail_fast_after=50, sleep=clock.sleep)
        result = await fetcher.collect(Target("p1", "img1"))
    assert (result.status, result.attempts) == (Status.OK, 3)
    assert clock.time - start == 120.0
