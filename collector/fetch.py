"""One image, start to finish: pages, retries and the status row that says what happened.

Each HTTP attempt waits on the shared rate limiter first, retries included. ``collect`` never
raises for an image's own trouble; it raises ``FatalRunError`` only when the run as a whole
cannot go on (credentials rejected, or every request so far failed alike: wrong endpoint).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from collector.api import ApiError, BodyError, members_url, parse_error, parse_members
from collector.auth import Auth
from collector.client import (
    BodyTooLarge,
    BrokenBody,
    Client,
    ConnectFailed,
    ProxyRefused,
    Reply,
    UnsafeHeader,
)
from collector.endpoint import EndpointCheck, Sign, describe, sign_of
from collector.errors import Blame, ErrorCode, FatalRunError, Status, UsageError
from collector.intake import Target
from collector.limiter import RateLimiter
from collector.results import ImageResult
from collector.retry import (
    Action,
    Backoff,
    RetryBudget,
    Verdict,
    classify,
    is_throttled,
    parse_retry_after,
)
from collector.secrets import from_server

ACCEPTED = classify(200, None)
T = TypeVar("T")


class Row(Protocol):
    """What the attempts at one call leave for its status row (an image's, a listing's)."""

    status: Status
    attempts: int
    http_status: int | None
    error_code: str | None
    error_msg: str | None
    request_id: str | None


@dataclass(slots=True)
class Counters:
    """The run's request counts, as the manifest reports them."""
    requests: int = 0
    retries: int = 0
    throttled: int = 0


def _client_error(exc: BaseException) -> tuple[str, str]:
    """(error_code, error_msg) for a failure that produced no HTTP answer."""
    if isinstance(exc, asyncio.TimeoutError):
        return ErrorCode.TIMEOUT, "request timed out"
    if isinstance(exc, BodyTooLarge):
        return ErrorCode.BODY_TOO_LARGE, str(exc)
    if isinstance(exc, BodyError):
        return ErrorCode.BAD_BODY, str(exc)
    if isinstance(exc, ConnectFailed):
        return ErrorCode.CONNECT, f"cannot connect: {exc.reason}"
    if isinstance(exc, BrokenBody):
        return ErrorCode.BROKEN_BODY, str(exc)
    return ErrorCode.CONNECTION, f"{type(exc).__name__}: {from_server(str(exc), 200)}"


class Fetcher:
    """Collects one image at a time for a worker: pages, retries, the limiter, the endpoint
    check; one instance is shared by all workers (its counters are the run's)."""

    def __init__(self, client: Client, auth: Auth, limiter: RateLimiter, *, endpoint: str,
                 max_attempts: int, backoff: Backoff, budget: RetryBudget, fail_fast_after: int,
                 max_pages: int = 100, max_members: int = 1_000,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self._client = client
        self._auth = auth
        self._limiter = limiter
        self._endpoint = endpoint
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._budget = budget
        self._max_pages = max_pages
        self._max_members = max_members
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.counters = Counters()
        self.endpoint = EndpointCheck(endpoint, fail_fast_after)

    async def collect(self, target: Target) -> ImageResult:
        """The image's status row and members, following pages; never raises for the image's
        own trouble (see the module docstring)."""
        result = ImageResult(target.project_id, target.image_id, Status.FAILED)
        marker: str | None = None
        markers_seen: set[str] = set()
        parse = partial(parse_members, image_id=target.image_id)
        for _ in range(self._max_pages):
            url = members_url(self._endpoint, target.project_id, target.image_id, marker)
            page = await self.fetch(url, target.project_id, result, parse)
            if page is None:
                break
            result.members.extend(page.members)
            if len(result.members) > self._max_members:
                result.error_code = ErrorCode.TOO_MANY_MEMBERS
                result.error_msg = f"more than {self._max_members} members (max_members)"
                break
            if page.next_marker is None:
                result.status = Status.OK
                break
            if page.next_marker in markers_seen:
                result.error_code = ErrorCode.PAGING_LOOP
                result.error_msg = "server repeated page_info.next_marker"
                break
            markers_seen.add(page.next_marker)
            marker = page.next_marker
        else:
            result.error_code = ErrorCode.PAGING_LIMIT
            result.error_msg = f"more than {self._max_pages} pages (max_pages)"
        if result.status is not Status.OK:
            result.members.clear()  # member rows exist only for ok images
        result.collected_at_ms = time.time_ns() // 1_000_000
        self._budget.earn()
        return result

    async def fetch(self, url: str, project_id: str, result: Row,
                    parse: Callable[[bytes], T]) -> T | None:
        """One GET, retried as the policy says, its 200 body parsed by ``parse`` (which raises
        ``BodyError`` for a body of another shape); None when ``result`` says why not.
        Every call goes through the limiter, the retry policy, the auth and the endpoint check:
        member pages and listing pages alike."""
        retry_after: float | None = None
        throttled = False
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                # 429s are answered by the shared limiter slowing down; the budget guards
                # against an API that fails (5xx, timeouts, resets), so only those spend it.
                if not throttled and not self._budget.try_spend():
                    result.error_msg = f"{result.error_msg} (retry budget exhausted)"
                    return None
                self.counters.retries += 1
                await self._sleep(self._backoff.wait(attempt - 1, retry_after, self._rng))
                retry_after = None
            try:
                reply = await self._send(url, project_id, result)
            except (TimeoutError, BodyTooLarge, OSError) as exc:  # OSError: ConnectionError too
                result.http_status, result.request_id = None, None
                result.error_code, result.error_msg = _client_error(exc)
                what = f"cannot connect ({exc.reason})" if isinstance(exc, ConnectFailed) \
                    else result.error_msg
                self._note(Sign.NO_ANSWER, what, exc)
                verdict, throttled = classify(None, None, exc), False
            else:
                verdict, retry_after, throttled = self._judge(reply, result)
                if verdict.action is Action.DONE and verdict.status is Status.OK:
                    try:
                        page = parse(reply.body)
                    except BodyError as exc:
                        self._note(Sign.UNRECOGNISED, describe(200, None, None))
                        result.error_code, result.error_msg = _client_error(exc)
                        result.status = Status.FAILED
                        return None
                    self._note(Sign.PROOF)
                    result.error_code = result.error_msg = None
                    return page
            if verdict.action is Action.DONE:
                result.status = verdict.status
                return None
            if verdict.action is Action.REFRESH_AUTH:
                detail = " ".join(filter(None, (result.error_code, result.error_msg)))
                raise FatalRunError(f"credentials rejected: HTTP 401 {detail}; check the "
                                    f"{self._auth.name}{self._auth.rejection_hint(reply.date)}")
            if verdict.action is Action.GIVE_UP:
                return None
        return None

    async def _send(self, url: str, project_id: str, result: Row) -> Reply:
        """One request through the limiter; after a 401, once more with renewed credentials
        if the credentials can be renewed (the renewal is shared by all workers)."""
        for _ in range(2):
            await self._limiter.acquire()
            result.attempts += 1
            self.counters.requests += 1
            try:  # signed after the limiter's wait, so the signature's date is fresh
                headers, generation = await self._auth.headers("GET", url, project_id)
                reply = await self._client.get(url, headers or None)
            except UnsafeHeader as exc:  # credentials that became unusable: the user's to fix
                raise UsageError(str(exc)) from None
            except ProxyRefused as exc:  # no retry will change the proxy's mind
                raise FatalRunError(str(exc)) from None
            if reply.status != 401:
                self._auth.accepted(project_id, generation)
                break
            if not await self._auth.refresh(project_id, generation):
                break
        return reply

    def _judge(self, reply: Reply, result: Row) -> tuple[Verdict, float | None, bool]:
        """(verdict, Retry-After seconds, throttled); fills the row and tells the limiter."""
        result.http_status = reply.status
        result.request_id = reply.request_id
        if reply.status == 200:
            self._limiter.on_accepted()
            return ACCEPTED, None, False  # the body decides what it proves
        error = parse_error(reply.body) if reply.body else ApiError(None, None, None)
        result.request_id = reply.request_id or error.request_id
        result.error_code = error.code
        result.error_msg = error.message or f"HTTP {reply.status} without an error body"
        if 300 <= reply.status < 400:
            result.error_code = ErrorCode.REDIRECT
            result.error_msg = f"HTTP {reply.status} redirect to {(reply.location or '-')[:200]}"
        self._note(sign_of(reply.status, error.code, False),
                   describe(reply.status, error.code, reply.location))
        throttled = is_throttled(reply.status, error.code)
        if throttled:
            self.counters.throttled += 1
            self._limiter.on_throttled(error.message)
        else:
            self._limiter.on_accepted()
        return (classify(reply.status, error.code), parse_retry_after(reply.retry_after),
                throttled)

    def endpoint_unproven(self) -> bool:
        """True when requests were made and no answer proved the endpoint is the CPH API."""
        return not self.endpoint.proven and self.counters.requests > 0

    def _note(self, sign: Sign, what: str = "", exc: BaseException | None = None) -> None:
        """Fail fast while nothing has proved the endpoint and the evidence says it is wrong."""
        error = self.endpoint.note(sign, what)
        if error is None:
            return
        if isinstance(exc, ConnectFailed) and exc.proxy is not None:
            raise FatalRunError(f"{exc.reason} for the first {self.endpoint.no_answer} "
                                "requests; check the proxy (--proxy, CPH_PROXY, "
                                "HTTPS_PROXY/HTTP_PROXY, NO_PROXY)")
        raise FatalRunError(error, Blame.ENDPOINT)
