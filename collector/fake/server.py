"""A fake CPH endpoint on aiohttp.web that behaves as the documentation says the real one does.

    gateway (every request)   X-Request-Id; 401 APIGW.0301 without a valid X-Auth-Token;
                              429 APIGW.0308 over a per-caller sliding-window limit;
                              404 APIGW.0101 for any path or method that is not an API
    ListImageMembers          GET /v1/{project_id}/cloud-phone/images/{image_id}/members
                              marker/limit paging with page_info.next_marker, or the older
                              shape without paging; unknown image: 400 CPS.0030 or 404 APIGW.0101;
                              a project the caller may not read: 400 CPS.0001
    ListImages                GET /v1/{project_id}/cloud-phone/images, offset/limit, total

Error bodies are exactly ``{"request_id", "error_code", "error_msg"}``. Faults, latency and
per-ID scripts come from ``ServerConfig``; every request is counted in ``requests`` and, when
``record`` is on, described in ``log`` for tests to assert on.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import struct
import time
from array import array
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson
from aiohttp import web

from collector.fake.dataset import Dataset
from collector.fake.faults import FaultPlan, Outcome

JSON = "application/json;charset=UTF-8"
MEMBERS_ROUTE = "/v1/{project_id}/cloud-phone/images/{image_id}/members"
IMAGES_ROUTE = "/v1/{project_id}/cloud-phone/images"
MSG = {
    "APIGW.0101": "The API does not exist or has not been published in the environment.",
    "APIGW.0301.missing": "Incorrect IAM authentication information: x-auth-token not found",
    "APIGW.0301.invalid": "Incorrect IAM authentication information: verify token failed",
    "APIGW.0301.expired": "Incorrect IAM authentication information: token expires",
    "CPS.0001": "No permission to request resources.",
    "CPS.0002": "Parameter: {} is invalid.",
    "CPS.0003": "Service internal error.",
    "CPS.0030": "Parameter: image_id is invalid.",
}
HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
             b"Gateway</h1></center><hr><center>nginx</center></body></html>")


@dataclass
class ServerConfig:
    tokens: tuple[str, ...] = ("fake-token",)
    token_ttl: float | None = None  # seconds a token stays valid after the server starts
    token_max_requests: int | None = None  # requests a token may make before it expires
    unknown_image: str = "cps"  # "cps": 400 CPS.0030; "404": 404 APIGW.0101
    paging: bool = True  # False: the older API without marker/limit/page_info
    rate_limit: int | None = None  # requests per caller per window; None: unlimited
    rate_window: float = 1.0
    retry_after: str | None = None  # Retry-After header value on 429s
    latency: float = 0.0  # seconds before each answer
    latency_p50: float | None = None  # with p99: a log-normal latency instead
    latency_p99: float | None = None
    fault_rates: dict[str, float] = field(default_factory=dict)
    script: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 0
    trickle_pieces: int = 8
    trickle_delay: float = 0.05
    stall_seconds: float = 30.0
    huge_body_bytes: int = 64 << 20
    record: bool = True  # keep a LogEntry per request (tests); counters are always kept


@dataclass(slots=True)
class Exchange:
    """What the gateway knows of one request while it is handled."""

    rid: str
    in_flight: int
    attempt: int = 0
    outcome: str = "normal"


EXCHANGE = web.RequestKey("exchange", Exchange)


@dataclass(frozen=True, slots=True)
class LogEntry:
    t: float  # time.monotonic() when the request arrived
    method: str
    path: str
    project_id: str | None
    image_id: str | None
    marker: str | None
    status: int  # 0 when the connection was cut before a status line
    outcome: str
    attempt: int  # this request's number among requests for the same image
    in_flight: int  # requests being handled when this one arrived, itself included


class FakeCph:
    """``async with FakeCph(Dataset(...), ServerConfig(...)) as fake: fake.url``."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None) -> None:
        self.dataset = dataset or Dataset()
        self.config = config or ServerConfig()
        self.faults = FaultPlan(self.config.fault_rates, self.config.script, self.config.seed)
        self.log: list[LogEntry] = []
        self.arrivals = array("d")  # monotonic time of every request the throttle admitted
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._rng = random.Random(self.config.seed + 1)
        self._attempts: Counter[str] = Counter()
        self._windows: dict[str, deque[float]] = {}
        self._token_uses: Counter[str] = Counter()
        self._tokens = set(self.config.tokens)
        self._started = time.monotonic()
        self._bodies: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._gateway])
        self.app.router.add_get(MEMBERS_ROUTE, self._members)
        self.app.router.add_get(IMAGES_ROUTE, self._images)
        self.app.router.add_route("*", "/{tail:.*}", self._no_such_api)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        assert server.sockets  # type: ignore[attr-defined]
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        self._started = time.monotonic()
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeCph:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_token(self, token: str) -> None:
        self._tokens.add(token)

    def attempts(self, image_id: str) -> int:
        return self._attempts[image_id]

    def requested_images(self) -> set[str]:
        return {e.image_id for e in self.log if e.image_id is not None}

    # -- gateway --------------------------------------------------------------------------------

    @web.middleware
    async def _gateway(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        arrived = time.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        ex = request[EXCHANGE] = Exchange(os.urandom(16).hex(), self.in_flight)
        status = 0  # stays 0 when the connection is cut before a status line
        try:
            token = request.headers.get("X-Auth-Token")
            problem = self._auth_problem(token, arrived)
            if problem is not None:
                ex.outcome = "unauthorized"
                response: web.StreamResponse = self._error(request, 401, "APIGW.0301",
                                                           MSG[problem])
            elif (limited := self._throttled(request, token or "", arrived)) is not None:
                ex.outcome = "throttle"
                response = limited
            else:
                self.arrivals.append(arrived)
                response = await handler(request)
            status = response.status
            return response
        finally:
            self.in_flight -= 1
            self.statuses[status] += 1
            if self.config.record:
                info = request.match_info
                self.log.append(LogEntry(arrived, request.method, request.path,
                                         info.get("project_id"), info.get("image_id"),
                                         request.query.get("marker"), status,
                                         ex.outcome, ex.attempt, ex.in_flight))

    def _auth_problem(self, token: str | None, now: float) -> str | None:
        if not token:
            return "APIGW.0301.missing"
        if token not in self._tokens:
            return "APIGW.0301.invalid"
        self._token_uses[token] += 1
        cfg = self.config
        if cfg.token_ttl is not None and now - self._started > cfg.token_ttl:
            return "APIGW.0301.expired"
        if cfg.token_max_requests is not None and self._token_uses[token] > cfg.token_max_requests:
            return "APIGW.0301.expired"
        return None

    def _throttled(self, request: web.Request, caller: str, now: float) -> web.Response | None:
        """A sliding window: at most ``rate_limit`` admitted requests in any ``rate_window``."""
        limit = self.config.rate_limit
        if limit is None:
            return None
        window = self._windows.setdefault(caller, deque())
        while window and window[0] <= now - self.config.rate_window:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return None
        return self._throttle_answer(request, limit)

    def _throttle_answer(self, request: web.Request, limit: int) -> web.Response:
        """429 APIGW.0308 in the gateway's words: "... policy user over ratelimit,limit:N,..."."""
        seconds = self.config.rate_window
        span = "1 minute" if seconds == 60 else f"{seconds:g} second"
        response = self._error(request, 429, "APIGW.0308",
                               "The throttling threshold has been reached: policy user over "
                               f"ratelimit,limit:{limit},time:{span}")
        if self.config.retry_after is not None:
            response.headers["Retry-After"] = self.config.retry_after
        return response

    def _error(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        body = orjson.dumps({"request_id": request[EXCHANGE].rid, "error_code": code,
                             "error_msg": message})
        return web.Response(status=status, body=body,
                            headers={"X-Request-Id": request[EXCHANGE].rid},
                            content_type="application/json")

    async def _no_such_api(self, request: web.Request) -> web.Response:
        return self._error(request, 404, "APIGW.0101", MSG["APIGW.0101"])

    # -- ListImageMembers -----------------------------------------------------------------------

    async def _members(self, request: web.Request) -> web.StreamResponse:
        project, image = request.match_info["project_id"], request.match_info["image_id"]
        self._attempts[image] += 1
        ex = request[EXCHANGE]
        attempt = ex.attempt = self._attempts[image]
        outcome = self.faults.outcome(image, attempt)
        ex.outcome = outcome.value
        await self._delay()
        if outcome is not Outcome.NORMAL:
            return await self._fault(request, outcome, image)
        if project not in self.dataset.project_ids:
            return self._error(request, 400, "CPS.0001", MSG["CPS.0001"])
        if self.dataset.owner(image) != project:
            ex.outcome = "not_found"
            return self._not_found(request)
        return self._members_page(request, image)

    def _not_found(self, request: web.Request) -> web.Response:
        if self.config.unknown_image == "404":
            return self._error(request, 404, "APIGW.0101", MSG["APIGW.0101"])
        return self._error(request, 400, "CPS.0030", MSG["CPS.0030"])

    def _members_page(self, request: web.Request, image: str) -> web.Response:
        query = request.query
        headers = {"X-Request-Id": request[EXCHANGE].rid}
        if not self.config.paging or ("marker" not in query and "limit" not in query):
            body = self._bodies.get(image)
            if body is None:
                doc: dict[str, Any] = {"members": self.dataset.members(image)}
                if self.config.paging:
                    doc["page_info"] = {}
                body = self._bodies[image] = orjson.dumps(doc)
            return web.Response(body=body, headers=headers, content_type="application/json")
        limit = _int_param(query.get("limit", "100"), 1, 100)
        if limit is None:
            return self._error(request, 400, "CPS.0002", MSG["CPS.0002"].format("limit"))
        members = self.dataset.members(image)
        start = 0
        if "marker" in query:
            ids = [str(m["member_id"]) for m in members]
            if query["marker"] not in ids:
                return self._error(request, 400, "CPS.0002", MSG["CPS.0002"].format("marker"))
            start = ids.index(query["marker"]) + 1
        page = members[start:start + limit]
        page_info: dict[str, str] = {}
        if start + limit < len(members):
            page_info["next_marker"] = str(page[-1]["member_id"])
        return web.Response(body=orjson.dumps({"members": page, "page_info": page_info}),
                            headers=headers, content_type="application/json")

    # -- ListImages -----------------------------------------------------------------------------

    async def _images(self, request: web.Request) -> web.Response:
        project = request.match_info["project_id"]
        await self._delay()
        if project not in self.dataset.project_ids:
            return self._error(request, 400, "CPS.0001", MSG["CPS.0001"])
        offset = _int_param(request.query.get("offset", "0"), 0, 2**31)
        limit = _int_param(request.query.get("limit", "100"), 1, 100)
        if offset is None or limit is None:
            return self._error(request, 400, "CPS.0002", "Parameter: offset or limit is invalid.")
        ids = self.dataset.image_ids(project)
        infos = [self.dataset.image_info(i, offset + n)
                 for n, i in enumerate(ids[offset:offset + limit])]
        body = {"request_id": request[EXCHANGE].rid, "total": len(ids), "image_infos": infos}
        return web.Response(body=orjson.dumps(body),
                            headers={"X-Request-Id": request[EXCHANGE].rid},
                            content_type="application/json")

    # -- latency and faults ---------------------------------------------------------------------

    async def _delay(self) -> None:
        cfg = self.config
        if cfg.latency_p50 is not None and cfg.latency_p99 is not None:
            sigma = max(math.log(cfg.latency_p99 / cfg.latency_p50), 0.0) / 2.326
            await asyncio.sleep(self._rng.lognormvariate(math.log(cfg.latency_p50), sigma))
        elif cfg.latency > 0:
            await asyncio.sleep(cfg.latency)

    async def _fault(self, request: web.Request, outcome: Outcome,
                     image: str) -> web.StreamResponse:
        rid = request[EXCHANGE].rid
        if outcome is Outcome.THROTTLE:
            return self._throttle_answer(request, self.config.rate_limit or 200)
        simple = {Outcome.HTTP_500: (500, "CPS.0003", MSG["CPS.0003"]),
                  Outcome.HTTP_502: (502, "APIGW.0201", "Backend unavailable."),
                  Outcome.HTTP_503: (503, "APIGW.0201", "Service unavailable."),
                  Outcome.HTTP_504: (504, "APIGW.0201", "Backend timeout."),
                  Outcome.CPS_0003: (400, "CPS.0003", MSG["CPS.0003"]),
                  Outcome.UNAUTHORIZED: (401, "APIGW.0301", MSG["APIGW.0301.expired"]),
                  Outcome.FORBIDDEN: (400, "CPS.0001", MSG["CPS.0001"])}
        if outcome in simple:
            return self._error(request, *simple[outcome])
        if outcome is Outcome.NOT_FOUND:
            return self._not_found(request)
        good = orjson.dumps({"members": self.dataset.members(image), "page_info": {}})
        headers = {"X-Request-Id": rid}
        if outcome is Outcome.RESET_BEFORE_HEADERS:
            return self._cut(request, rst=True)
        if outcome in (Outcome.RESET_MID_BODY, Outcome.SHORT_BODY):
            response = web.StreamResponse(headers=headers)
            response.content_type = "application/json"
            response.content_length = len(good) + 64
            await response.prepare(request)
            await response.write(good[: max(len(good) // 2, 1)])
            self._cut(request, rst=outcome is Outcome.RESET_MID_BODY)
            return response
        if outcome is Outcome.TRUNCATED_JSON:
            return web.Response(body=good[: max(len(good) - 5, 1)], headers=headers,
                                content_type="application/json")
        if outcome is Outcome.WRONG_TYPES:
            bad = {"members": [{"image_id": image, "member_id": 12345,
                                "create_time": "yesterday", "update_time": None}]}
            return web.Response(body=orjson.dumps(bad), headers=headers,
                                content_type="application/json")
        if outcome in (Outcome.HTML_200, Outcome.HTML_502):
            return web.Response(status=200 if outcome is Outcome.HTML_200 else 502,
                                body=HTML_PAGE, headers=headers, content_type="text/html")
        if outcome is Outcome.TRICKLE:
            response = web.StreamResponse(headers=headers)
            response.content_type = "application/json"
            response.content_length = len(good)
            await response.prepare(request)
            step = max(len(good) // self.config.trickle_pieces, 1)
            for start in range(0, len(good), step):
                await response.write(good[start:start + step])
                await asyncio.sleep(self.config.trickle_delay)
            await response.write_eof()
            return response
        if outcome is Outcome.STALL:
            await asyncio.sleep(self.config.stall_seconds)
            return web.Response(body=good, headers=headers, content_type="application/json")
        if outcome is Outcome.HUGE_BODY:
            response = web.StreamResponse(headers=headers)
            response.content_type = "application/json"
            response.enable_chunked_encoding()
            await response.prepare(request)
            piece = b'{"members":[' + b" " * 65_536
            sent = 0
            while sent < self.config.huge_body_bytes:
                await response.write(piece)
                sent += len(piece)
            await response.write_eof()
            return response
        if outcome is Outcome.PAGING_LOOP:
            members = self.dataset.members(image)[:1]
            body = {"members": members, "page_info": {"next_marker": "loop"}}
            return web.Response(body=orjson.dumps(body), headers=headers,
                                content_type="application/json")
        raise AssertionError(f"unhandled outcome {outcome}")

    def _cut(self, request: web.Request, *, rst: bool) -> NoReturn:
        """Drop the connection: an RST (SO_LINGER 0) or a plain FIN; the client sees no status."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if rst and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if rst:
                transport.abort()
            else:
                transport.close()
        # aiohttp treats a cancelled handler as a vanished client: no 500, no log noise.
        raise asyncio.CancelledError


def _int_param(raw: str, low: int, high: int) -> int | None:
    """A query integer within [low, high], or None (the API answers 400 CPS.0002)."""
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None
