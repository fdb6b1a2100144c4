"""What the fake CPH answers, decided once, with no I/O: the gateway, the two APIs, the faults.

    gateway (every request)   X-Request-Id; 401 APIGW.0301 without a valid X-Auth-Token;
                              429 APIGW.0308 over a per-caller sliding-window limit;
                              404 APIGW.0101 for any path or method that is not an API
    ListImageMembers          GET /v1/{project_id}/cloud-phone/images/{image_id}/members
                              marker/limit paging with page_info.next_marker, or the older
                              shape without paging; unknown image: 400 CPS.0030 or 404 APIGW.0101;
                              a project the caller may not read: 400 CPS.0001
    ListImages                GET /v1/{project_id}/cloud-phone/images, offset/limit, total

Error bodies are exactly ``{"request_id", "error_code", "error_msg"}``. Two fronts serve these
answers: ``server.FakeCph`` on aiohttp.web, and ``fast.FastFakeCph``, a lean HTTP/1.1 protocol
for benchmarks. Each acts out the transport faults (resets, short or slow bodies) itself.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hmac
import math
import os
import random
import ssl
import time
from array import array
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

import orjson

from collector import signer
from collector.fake.dataset import Dataset
from collector.fake.faults import FaultPlan, Outcome

JSON = "application/json"
MSG = {
    "APIGW.0101": "The API does not exist or has not been published in the environment.",
    "APIGW.0301.missing": "Incorrect IAM authentication information: x-auth-token not found",
    "APIGW.0301.invalid": "Incorrect IAM authentication information: verify token failed",
    "APIGW.0301.expired": "Incorrect IAM authentication information: token expires",
    "APIGW.0301.signature": "Incorrect IAM authentication information: verify aksk signature fail",
    "APIGW.0301.access_key": "Incorrect IAM authentication information: ak not exist",
    "APIGW.0301.date": "Incorrect IAM authentication information: the request has expired, "
                       "check x-sdk-date",
    "CPS.0001": "No permission to request resources.",
    "CPS.0002": "Parameter: {} is invalid.",
    "CPS.0003": "Service internal error.",
    "CPS.0030": "Parameter: image_id is invalid.",
}
HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
             b"Gateway</h1></center><hr><center>nginx</center></body></html>")
SIMPLE_FAULTS = {
    Outcome.HTTP_500: (500, "CPS.0003", MSG["CPS.0003"]),
    Outcome.HTTP_502: (502, "APIGW.0201", "Backend unavailable."),
    Outcome.HTTP_503: (503, "APIGW.0201", "Service unavailable."),
    Outcome.HTTP_504: (504, "APIGW.0201", "Backend timeout."),
    Outcome.CPS_0003: (400, "CPS.0003", MSG["CPS.0003"]),
    Outcome.UNAUTHORIZED: (401, "APIGW.0301", MSG["APIGW.0301.expired"]),
    Outcome.FORBIDDEN: (400, "CPS.0001", MSG["CPS.0001"]),
}
IAM_TOKENS = "/v3/auth/tokens"
SIGNATURE_SKEW = 15 * 60  # seconds an X-Sdk-Date may differ from the gateway's clock
# Faults a front acts out on the connection itself; the answer carries the good body.
TRANSPORT_FAULTS = frozenset({Outcome.RESET_BEFORE_HEADERS, Outcome.RESET_MID_BODY,
                              Outcome.SHORT_BODY, Outcome.TRICKLE, Outcome.STALL,
                              Outcome.HUGE_BODY, Outcome.INTERIM, Outcome.HUGE_HEADER,
                              Outcome.ENDLESS_HEADER})
# What the fronts write for INTERIM before the real answer, on the same connection.
INTERIM_HEADS = (b"HTTP/1.1 100 Continue\r\n\r\n"
                 b"HTTP/1.1 102 Processing\r\n\r\n"
                 b"HTTP/1.1 103 Early Hints\r\nLink: </members.json>; rel=preload\r\n\r\n")
HUGE_HEADER_BYTES = 1 << 20
LOGIN_PAGE = "https://auth.example.invalid/login?service=cph"


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
    access_keys: dict[str, str] = field(default_factory=dict)  # AK -> SK, for signatures
    iam_users: dict[str, str] = field(default_factory=dict)  # "account/user" -> password
    agencies: set[str] = field(default_factory=set)  # "account/agency" any IAM user may assume
    iam_token_ttl: float = 86_400.0  # seconds an IAM-issued token is valid
    record: bool = True  # keep a LogEntry per request (tests); counters are always kept


@dataclass(slots=True)
class Exchange:
    """One request while it is handled."""

    arrived: float
    method: str
    path: str
    rid: str
    in_flight: int
    project_id: str | None = None
    image_id: str | None = None
    marker: str | None = None
    attempt: int = 0
    outcome: str = "normal"


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


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = JSON
    retry_after: str | None = None
    fault: Outcome | None = None  # act this out on the connection instead of answering
    backend: bool = True  # it passed the gateway, so the configured latency applies
    subject_token: str | None = None  # X-Subject-Token of an IAM answer
    location: str | None = None  # Location of a redirect


class FakeApiCore:
    """State and decisions shared by both fronts; subclasses add the sockets."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None) -> None:
        self.dataset = dataset or Dataset()
        self.config = config or ServerConfig()
        self.faults = FaultPlan(self.config.fault_rates, self.config.script, self.config.seed)
        self.log: list[LogEntry] = []
        self.arrivals = array("d")  # monotonic time of every request the throttle admitted
        self.received = array("d")  # monotonic time of every request
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
        self._issued: dict[str, float] = {}  # IAM-issued token -> monotonic deadline
        self._projects = frozenset(self.dataset.project_ids)

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> str:
        """Listen on ``host:port`` (0: a free port); returns the base URL."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def attempts(self, image_id: str) -> int:
        return self._attempts[image_id]

    def requested_images(self) -> set[str]:
        return {e.image_id for e in self.log if e.image_id is not None}

    def traffic(self) -> dict[str, float]:
        """What a gateway would see of the client: rates and the busiest windows."""
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

    @property
    def has_latency(self) -> bool:
        return self.config.latency > 0 or self.config.latency_p50 is not None

    # -- one request ----------------------------------------------------------------------------

    def begin(self, method: str, path: str) -> Exchange:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        now = time.monotonic()
        self.received.append(now)
        return Exchange(now, method, path, os.urandom(16).hex(), self.in_flight)

    def finish(self, ex: Exchange, status: int) -> None:
        """``status`` is 0 when the connection was cut before a status line."""
        self.in_flight -= 1
        self.statuses[status] += 1
        if self.config.record:
            self.log.append(LogEntry(ex.arrived, ex.method, ex.path, ex.project_id, ex.image_id,
                                     ex.marker, status, ex.outcome, ex.attempt, ex.in_flight))

    def answer(self, ex: Exchange, query: Mapping[str, str], headers: Mapping[str, str],
               body: bytes = b"") -> Answer:
        """``headers`` must look up lowercase names (aiohttp's are case-insensitive)."""
        if ex.path == IAM_TOKENS:
            return self._iam_token(ex, headers, body)
        token = headers.get("x-auth-token")
        authorization = headers.get("authorization")
        if authorization and not token:
            caller, problem = self._signature_problem(ex, query, headers, authorization, body)
        else:
            caller, problem = token or "", self._auth_problem(token, ex.arrived)
        if problem is not None:
            ex.outcome = "unauthorized"
            return self._error(ex, 401, "APIGW.0301", MSG[problem], backend=False)
        limit = self.config.rate_limit
        if limit is not None and not self._admit(caller, ex.arrived, limit):
            ex.outcome = "throttle"
            return self._throttle_answer(ex, limit, backend=False)
        self.arrivals.append(ex.arrived)
        parts = ex.path.split("/")
        if (ex.method != "GET" or len(parts) not in (5, 7) or parts[:2] != ["", "v1"]
                or parts[3:5] != ["cloud-phone", "images"] or not all(parts[2:])
                or (len(parts) == 7 and parts[6] != "members")):
            return self._error(ex, 404, "APIGW.0101", MSG["APIGW.0101"], backend=False)
        ex.project_id = parts[2]
        if len(parts) == 5:
            return self._images(ex, query)
        ex.image_id, ex.marker = parts[5], query.get("marker")
        return self._members(ex, query)

    # -- gateway --------------------------------------------------------------------------------

    def _auth_problem(self, token: str | None, now: float) -> str | None:
        if not token:
            return "APIGW.0301.missing"
        if token not in self._tokens:
            return "APIGW.0301.invalid"
        self._token_uses[token] += 1
        cfg = self.config
        deadline = self._issued.get(token)
        if deadline is None and cfg.token_ttl is not None:
            deadline = self._started + cfg.token_ttl
        if deadline is not None and now > deadline:
            return "APIGW.0301.expired"
        if cfg.token_max_requests is not None and self._token_uses[token] > cfg.token_max_requests:
            return "APIGW.0301.expired"
        return None

    def _signature_problem(self, ex: Exchange, query: Mapping[str, str],
                           headers: Mapping[str, str], authorization: str,
                           body: bytes) -> tuple[str, str | None]:
        """(caller, problem): an SDK-HMAC-SHA256 signature checked as API Gateway does."""
        parsed = signer.parse_authorization(authorization)
        if parsed is None:
            return "", "APIGW.0301.signature"
        access_key, signed, given = parsed
        secret = self.config.access_keys.get(access_key)
        if secret is None:
            return access_key, "APIGW.0301.access_key"
        date = headers.get("x-sdk-date", "")
        try:
            sent = dt.datetime.strptime(date, signer.DATE_FORMAT).replace(tzinfo=dt.UTC)
        except ValueError:
            return access_key, "APIGW.0301.signature"
        if abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) > SIGNATURE_SKEW:
            return access_key, "APIGW.0301.date"
        if "host" not in signed or "x-sdk-date" not in signed or any(
                headers.get(name) is None for name in signed):
            return access_key, "APIGW.0301.signature"
        values = {name: headers[name] for name in signed}
        canonical = signer.canonical_request(ex.method, ex.path, list(query.items()), values,
                                             signed, body)
        expected = signer.signature(secret, date, canonical)
        if not hmac.compare_digest(expected, given):
            return access_key, "APIGW.0301.signature"
        return access_key, None

    def _admit(self, caller: str, now: float, limit: int) -> bool:
        """A sliding window: at most ``limit`` admitted requests in any ``rate_window``."""
        window = self._windows.setdefault(caller, deque())
        while window and window[0] <= now - self.config.rate_window:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return True
        return False

    def _throttle_answer(self, ex: Exchange, limit: int, backend: bool = True) -> Answer:
        """429 APIGW.0308 in the gateway's words: "... policy user over ratelimit,limit:N,..."."""
        seconds = self.config.rate_window
        span = "1 minute" if seconds == 60 else f"{seconds:g} second"
        answer = self._error(ex, 429, "APIGW.0308",
                             "The throttling threshold has been reached: policy user over "
                             f"ratelimit,limit:{limit},time:{span}", backend=backend)
        answer.retry_after = self.config.retry_after
        return answer

    def _error(self, ex: Exchange, status: int, code: str, message: str,
               backend: bool = True) -> Answer:
        body = orjson.dumps({"request_id": ex.rid, "error_code": code, "error_msg": message})
        return Answer(status, body, backend=backend)

    # -- IAM: POST /v3/auth/tokens ------------------------------------------------------------

    def _iam_token(self, ex: Exchange, headers: Mapping[str, str], body: bytes) -> Answer:
        """A project-scoped token by password or by assume_role, as IAM issues it (201)."""
        ex.outcome = "iam_token"
        if ex.method != "POST":
            return self._error(ex, 404, "APIGW.0101", MSG["APIGW.0101"], backend=False)
        try:
            auth = orjson.loads(body)["auth"]
            methods, scope = auth["identity"]["methods"], auth["scope"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _iam_error(400, "The request body is invalid.")
        if methods == ["password"]:
            user = auth["identity"]["password"]["user"]
            key = f"{user.get('domain', {}).get('name')}/{user.get('name')}"
            if self.config.iam_users.get(key) != user.get("password"):
                return _iam_error(401, "The username or password is wrong.")
        elif methods == ["assume_role"]:
            role = auth["identity"]["assume_role"]
            if self._auth_problem(headers.get("x-auth-token"), ex.arrived) is not None:
                return _iam_error(401, "The request you have made requires authentication.")
            if f"{role.get('domain_name')}/{role.get('agency_name')}" not in self.config.agencies:
                return _iam_error(404, "Could not find agency.")
        else:
            return _iam_error(400, "The identity method is not supported.")
        project = scope.get("project", {}).get("id") if isinstance(scope, dict) else None
        if project is not None and project not in self._projects:
            return _iam_error(400, f"Could not find project: {project}.")
        token = "MII" + os.urandom(24).hex()
        self._tokens.add(token)
        self._issued[token] = ex.arrived + self.config.iam_token_ttl
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(seconds=self.config.iam_token_ttl)
        doc = {"token": {"methods": methods, "issued_at": _iso(now), "expires_at": _iso(expires),
                         **({"project": {"id": project}} if project else {})}}
        answer = Answer(201, orjson.dumps(doc), backend=False)
        answer.subject_token = token
        return answer

    # -- ListImageMembers -----------------------------------------------------------------------

    def _members(self, ex: Exchange, query: Mapping[str, str]) -> Answer:
        image = ex.image_id
        assert image is not None
        self._attempts[image] += 1
        ex.attempt = self._attempts[image]
        outcome = self.faults.outcome(image, ex.attempt)
        ex.outcome = outcome.value
        if outcome is not Outcome.NORMAL:
            return self._fault(ex, outcome, image)
        if ex.project_id not in self._projects:
            return self._error(ex, 400, "CPS.0001", MSG["CPS.0001"])
        if self.dataset.owner(image) != ex.project_id:
            ex.outcome = "not_found"
            return self._not_found(ex)
        return self._members_page(ex, query, image)

    def _not_found(self, ex: Exchange) -> Answer:
        if self.config.unknown_image == "404":
            return self._error(ex, 404, "APIGW.0101", MSG["APIGW.0101"])
        return self._error(ex, 400, "CPS.0030", MSG["CPS.0030"])

    def _members_page(self, ex: Exchange, query: Mapping[str, str], image: str) -> Answer:
        if not self.config.paging or ("marker" not in query and "limit" not in query):
            body = self._bodies.get(image)
            if body is None:
                doc: dict[str, Any] = {"members": self.dataset.members(image)}
                if self.config.paging:
                    doc["page_info"] = {}
                body = self._bodies[image] = orjson.dumps(doc)
            return Answer(200, body)
        limit = _int_param(query.get("limit", "100"), 1, 100)
        if limit is None:
            return self._error(ex, 400, "CPS.0002", MSG["CPS.0002"].format("limit"))
        members = self.dataset.members(image)
        start = 0
        if "marker" in query:
            ids = [str(m["member_id"]) for m in members]
            if query["marker"] not in ids:
                return self._error(ex, 400, "CPS.0002", MSG["CPS.0002"].format("marker"))
            start = ids.index(query["marker"]) + 1
        page = members[start:start + limit]
        page_info: dict[str, str] = {}
        if start + limit < len(members):
            page_info["next_marker"] = str(page[-1]["member_id"])
        return Answer(200, orjson.dumps({"members": page, "page_info": page_info}))

    # -- ListImages -----------------------------------------------------------------------------

    def _images(self, ex: Exchange, query: Mapping[str, str]) -> Answer:
        if ex.project_id not in self._projects:
            return self._error(ex, 400, "CPS.0001", MSG["CPS.0001"])
        offset = _int_param(query.get("offset", "0"), 0, 2**31)
        limit = _int_param(query.get("limit", "100"), 1, 100)
        if offset is None or limit is None:
            return self._error(ex, 400, "CPS.0002", "Parameter: offset or limit is invalid.")
        ids = self.dataset.image_ids(ex.project_id)
        infos = [self.dataset.image_info(i, offset + n)
                 for n, i in enumerate(ids[offset:offset + limit])]
        return Answer(200, orjson.dumps({"request_id": ex.rid, "total": len(ids),
                                         "image_infos": infos}))

    # -- latency and faults ---------------------------------------------------------------------

    def latency_sample(self) -> float:
        """Seconds for one answer: fixed, or log-normal through the given p50 and p99."""
        cfg = self.config
        if cfg.latency_p50 is not None and cfg.latency_p99 is not None:
            sigma = max(math.log(cfg.latency_p99 / cfg.latency_p50), 0.0) / 2.326  # z(0.99)
            return self._rng.lognormvariate(math.log(cfg.latency_p50), sigma)
        return cfg.latency

    async def delay(self) -> None:
        seconds = self.latency_sample()
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _fault(self, ex: Exchange, outcome: Outcome, image: str) -> Answer:
        if outcome is Outcome.THROTTLE:
            return self._throttle_answer(ex, self.config.rate_limit or 200)
        if outcome in SIMPLE_FAULTS:
            return self._error(ex, *SIMPLE_FAULTS[outcome])
        if outcome is Outcome.NOT_FOUND:
            return self._not_found(ex)
        good = orjson.dumps({"members": self.dataset.members(image), "page_info": {}})
        if outcome in TRANSPORT_FAULTS:
            return Answer(200, good, fault=outcome)
        if outcome is Outcome.TRUNCATED_JSON:
            return Answer(200, good[: max(len(good) - 5, 1)])
        if outcome is Outcome.WRONG_TYPES:
            return Answer(200, orjson.dumps({"members": [
                {"image_id": image, "member_id": 12345, "create_time": "yesterday",
                 "update_time": None}]}))
        if outcome in (Outcome.HTML_200, Outcome.HTML_502):
            return Answer(200 if outcome is Outcome.HTML_200 else 502, HTML_PAGE, "text/html")
        if outcome is Outcome.REDIRECT:
            return Answer(302, HTML_PAGE, "text/html", location=LOGIN_PAGE)
        if outcome is Outcome.ENDLESS_PAGING:  # ten new members a page, and always a next page
            members = [{"image_id": image, "member_id": f"{ex.attempt:06d}{n:02d}" * 2,
                        "create_time": 1_700_000_000_000, "update_time": 1_700_000_000_000}
                       for n in range(10)]
            return Answer(200, orjson.dumps({"members": members,
                                             "page_info": {"next_marker": f"m{ex.attempt}"}}))
        if outcome is Outcome.PAGING_LOOP:
            members = self.dataset.members(image)[:1]
            return Answer(200, orjson.dumps({"members": members,
                                             "page_info": {"next_marker": "loop"}}))
        raise AssertionError(f"unhandled outcome {outcome}")


def _iam_error(status: int, message: str) -> Answer:
    """IAM's own error shape: {"error": {"code", "message", "title"}}."""
    body = {"error": {"code": status, "message": message, "title": HTTPStatus(status).phrase}}
    return Answer(status, orjson.dumps(body), backend=False)


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def url_of(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _int_param(raw: str, low: int, high: int) -> int | None:
    """A query integer within [low, high], or None (the API answers 400 CPS.0002)."""
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None
