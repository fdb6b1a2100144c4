"""API Gateway, as the fake plays it: who the caller is, and whether the quota lets it in.

    X-Auth-Token   a configured token, or one IAM issued (until it expires)
    AK/SK          SDK-HMAC-SHA256 checked as the gateway checks it (``collector.signer``),
                   with the request's X-Sdk-Date no more than 15 minutes off
    throttle       at most ``rate_limit`` admitted requests per caller in any ``rate_window``:
                   429 APIGW.0308 "... policy user over ratelimit,limit:N,time:1 second"

Error bodies are exactly ``{"request_id", "error_code", "error_msg"}`` (``error``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from array import array
from collections import Counter, deque
from collections.abc import Mapping

import orjson

from collector import signer
from collector.fake.model import Answer, Exchange, ServerConfig

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
SIGNATURE_SKEW = 15 * 60  # seconds an X-Sdk-Date may differ from the gateway's clock


def error(ex: Exchange, status: int, code: str, message: str, backend: bool = True) -> Answer:
    """An error in the gateway's and CPS's shape."""
    body = orjson.dumps({"request_id": ex.rid, "error_code": code, "error_msg": message})
    return Answer(status, body, backend=backend)


class Gateway:
    """The caller checks and the throttle; ``admit`` answers None to let a request through."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.tokens = set(config.tokens)
        self.issued: dict[str, float] = {}  # IAM-issued token -> monotonic deadline
        self.arrivals = array("d")  # monotonic time of every request the throttle admitted
        self._uses: Counter[str] = Counter()
        self._windows: dict[str, deque[float]] = {}
        self._started = time.monotonic()

    def admit(self, ex: Exchange, query: Mapping[str, str], headers: Mapping[str, str],
              body: bytes) -> Answer | None:
        """401 for a caller it does not know, 429 over the quota, else None."""
        token = headers.get("x-auth-token")
        authorization = headers.get("authorization")
        if authorization and not token:
            caller, problem = self._signature_problem(ex, query, headers, authorization, body)
        else:
            caller, problem = token or "", self.token_problem(token, ex.arrived)
        if problem is not None:
            ex.outcome = "unauthorized"
            return error(ex, 401, "APIGW.0301", MSG[problem], backend=False)
        limit = self.config.rate_limit
        if limit is not None and not self._within_quota(caller, ex.arrived, limit):
            ex.outcome = "throttle"
            return self.throttled(ex, limit, backend=False)
        self.arrivals.append(ex.arrived)
        return None

    def token_problem(self, token: str | None, now: float) -> str | None:
        """Why an X-Auth-Token is refused (a key of ``MSG``), or None."""
        if not token:
            return "APIGW.0301.missing"
        if token not in self.tokens:
            return "APIGW.0301.invalid"
        self._uses[token] += 1
        cfg = self.config
        deadline = self.issued.get(token)
        if deadline is None and cfg.token_ttl is not None:
            deadline = self._started + cfg.token_ttl
        if deadline is not None and now > deadline:
            return "APIGW.0301.expired"
        if cfg.token_max_requests is not None and self._uses[token] > cfg.token_max_requests:
            return "APIGW.0301.expired"
        return None

    def throttled(self, ex: Exchange, limit: int, backend: bool = True) -> Answer:
        """429 APIGW.0308 in the gateway's words: "... policy user over ratelimit,limit:N,..."."""
        seconds = self.config.rate_window
        span = "1 minute" if seconds == 60 else f"{seconds:g} second"
        answer = error(ex, 429, "APIGW.0308", "The throttling threshold has been reached: policy "
                       f"user over ratelimit,limit:{limit},time:{span}", backend=backend)
        answer.retry_after = self.config.retry_after
        return answer

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

    def _within_quota(self, caller: str, now: float, limit: int) -> bool:
        """A sliding window: at most ``limit`` admitted requests in any ``rate_window``."""
        window = self._windows.setdefault(caller, deque())
        while window and window[0] <= now - self.config.rate_window:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return True
        return False
