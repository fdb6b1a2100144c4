"""Credentials: the only module that holds a secret, behind one small interface.

    Auth
    ├── TokenAuth      a fixed X-Auth-Token (CPH_AUTH_TOKEN or token_file); cannot renew
    ├── IamTokenAuth   X-Auth-Token from IAM (POST /v3/auth/tokens), one per project, renewed
    │                  before it expires and once after a 401, by one request for all workers;
    │                  by password, or by assuming an agency with another token
    └── AkSkAuth       every request signed SDK-HMAC-SHA256 (see ``signer``), retries included

The fetcher asks ``headers(method, url, project)`` for each request and gets a generation
number with them; it reports an answer that was not a 401 (``accepted``), and after a 401 calls
``refresh(project, generation)``, which renews at most once per generation however many
workers saw the 401, and says whether a retry can help; ``rejection_hint`` adds what a 401
suggests (a skewed clock, for a signature). IAM requests go through the ``post`` callable the
builder gives (``PacedPost`` over the pool's ``AiohttpClient.post``), so they share its TLS
trust and proxy, and wait for IAM's rate limiter and are retried as every other call is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from yarl import URL

from collector import signer
from collector.api import parse_error
from collector.client import BodyTooLarge
from collector.config import Settings
from collector.errors import Blame, FatalRunError, UsageError
from collector.limiter import RateLimiter
from collector.retry import Action, Backoff, classify, is_throttled, parse_retry_after
from collector.secrets import Secret, check_credential, token_from

# POST (url, body, headers) -> (status, headers, body): ``client.AiohttpClient.post``
Post = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, Mapping[str, str], bytes]]]


@dataclass
class PacedPost:
    """IAM's POST (token requests) under the rules of every other call: each attempt waits
    for ``limiter`` (IAM's own rate), and what ``retry.classify`` calls retryable (429, 5xx,
    a reset, a timeout) is tried again after the same backoff, up to ``max_attempts``; the
    last answer, or the last transport error, is the caller's to judge."""

    post: Post
    limiter: RateLimiter
    backoff: Backoff
    max_attempts: int
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    retries: int = 0  # for the manifest's sake, as the fetchers count theirs
    throttled: int = 0

    async def __call__(self, url: str, body: bytes,
                       headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        attempt = 1
        while True:
            await self.limiter.acquire()
            try:
                status, answer_headers, payload = await self.post(url, body, headers)
            except (TimeoutError, OSError) as exc:
                if attempt >= self.max_attempts or \
                        classify(None, None, exc).action is not Action.RETRY:
                    raise
                retry_after = None
            else:
                error = parse_error(payload) if status >= 300 else None
                code = error.code if error is not None else None
                if is_throttled(status, code):
                    self.throttled += 1
                    self.limiter.on_throttled(error.message if error is not None else None)
                else:
                    self.limiter.on_accepted()
                if attempt >= self.max_attempts or \
                        classify(status, code).action is not Action.RETRY:
                    return status, answer_headers, payload
                retry_after = parse_retry_after(answer_headers.get("Retry-After"))
            self.retries += 1
            await self.sleep(self.backoff.wait(attempt, retry_after, self.rng))
            attempt += 1


class Auth(Protocol):
    """What the fetcher needs of credentials, whichever kind; only this module holds secrets."""

    name: str

    def static_headers(self) -> dict[str, str]:
        """Headers the pool sends on every request (a fixed token); empty when each request is
        signed or carries its own token."""

    async def headers(self, method: str, url: str,
                      project_id: str) -> tuple[dict[str, str], int]:
        """The headers of one request and the token generation they carry (for ``accepted``
        and ``refresh``)."""

    def accepted(self, project_id: str, generation: int) -> None:
        """The API took a request made with ``generation``: a later 401 is a new failure, not a
        strike against a renewal."""

    async def refresh(self, project_id: str, generation: int) -> bool:
        """After a 401: renew and say whether to try again (False: the credentials are wrong)."""

    def rejection_hint(self, server_date: str | None) -> str:
        """Words for the one line a rejected run prints: what to check besides the secret."""


@dataclass
class TokenAuth:
    """A fixed X-Auth-Token: the same header on every request, never renewed."""

    token: Secret
    name: str = "X-Auth-Token from CPH_AUTH_TOKEN or token_file"

    def static_headers(self) -> dict[str, str]:
        """The same on every request: the pool sends it, nothing is merged per request."""
        return {"X-Auth-Token": self.token.reveal()}

    async def headers(self, method: str, url: str, project_id: str) -> tuple[dict[str, str], int]:
        """Nothing per request: the token is in ``static_headers``."""
        return {}, 0

    def accepted(self, project_id: str, generation: int) -> None:
        """Nothing to remember: a fixed token has one generation."""
        pass

    async def refresh(self, project_id: str, generation: int) -> bool:
        """A fixed token cannot be renewed by us: a 401 is final."""
        return False

    def rejection_hint(self, server_date: str | None) -> str:
        """Nothing to add: the line already names the token."""
        return ""


@dataclass
class AkSkAuth:
    """Every request signed with the access key's secret (``signer``), retries included."""

    access_key: str  # not a secret: it names the key, like a user name
    secret_key: Secret
    security_token: Secret | None = None
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    name: str = "AK/SK signature (HUAWEICLOUD_SDK_AK/SK)"

    def static_headers(self) -> dict[str, str]:
        """Nothing fixed: every request is signed on its own (its date changes)."""
        return {}

    async def headers(self, method: str, url: str, project_id: str) -> tuple[dict[str, str], int]:
        """A fresh signature for this request (retries sign again)."""
        return self.sign(method, URL(url, encoded=True), project_id), 0

    def sign(self, method: str, url: URL, project_id: str) -> dict[str, str]:
        """The signed headers of one request (Host, X-Sdk-Date, X-Project-Id, Authorization)."""
        host = url.raw_host or ""
        if url.explicit_port and url.port != {"http": 80, "https": 443}.get(url.scheme):
            host = f"{host}:{url.port}"
        headers = {"Host": host, "X-Sdk-Date": signer.sdk_date(self.clock())}
        if project_id:  # IAM's calls belong to no project
            headers["X-Project-Id"] = project_id
        if self.security_token is not None:
            headers["X-Security-Token"] = self.security_token.reveal()
        headers["Authorization"] = signer.sign(
            self.access_key, self.secret_key.reveal(), method, url.raw_path,
            list(url.query.items()), headers)
        return headers

    def accepted(self, project_id: str, generation: int) -> None:
        """Nothing to remember: a signature has no generation."""
        pass

    async def refresh(self, project_id: str, generation: int) -> bool:
        return False  # a signature cannot be renewed: a 401 means the key or the clock is wrong

    def rejection_hint(self, server_date: str | None) -> str:
        """A signature fails when our clock is off; say so when the server's Date shows it."""
        if not server_date:
            return ""
        try:
            skew = self.clock() - email.utils.parsedate_to_datetime(server_date)
        except (TypeError, ValueError, IndexError):
            return ""
        minutes = abs(skew.total_seconds()) / 60
        if minutes < 5:
            return ""
        return (f"; this machine's clock is {minutes:.0f} minutes off the server's "
                "(fix it, e.g. NTP)")


@dataclass
class _Token:
    value: Secret
    renew_at: float  # monotonic time to renew at: before it expires
    generation: int
    strikes: int = 0  # renewals in a row whose tokens were rejected before any success
    accepted: bool = False  # the API took a request carrying it


MAX_STRIKES = 2  # renewed tokens rejected in a row before a 401 is final
DOMAIN_SCOPE = ""  # "project" of a token scoped to the user's own account (agency's base)


@dataclass
class IamTokenAuth:
    """IAM tokens, one per project: by ``password``, or by assuming ``agency`` (account, name)
    with a token of ``base`` (the delegated user's own, scoped to its account)."""

    iam_endpoint: str
    post: Post  # the pool's POST (see the module docstring)
    user: str | None = None
    domain: str | None = None
    password: Secret | None = None
    agency: tuple[str, str] | None = None
    base: IamTokenAuth | None = None
    clock: Callable[[], float] = time.monotonic
    name: str = "IAM token"
    requests: int = 0  # token requests made, for the manifest
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def static_headers(self) -> dict[str, str]:
        """Nothing fixed: tokens are per project and renewed."""
        return {}

    async def headers(self, method: str, url: str, project_id: str) -> tuple[dict[str, str], int]:
        """The project's token, renewed first when it is about to expire."""
        token = self._tokens.get(project_id)
        if token is None or self.clock() >= token.renew_at:
            token = await self._renew(project_id, token.generation if token else 0)
        return {"X-Auth-Token": token.value.reveal()}, token.generation

    def accepted(self, project_id: str, generation: int) -> None:
        """Marks the token as taken by the API, so a later 401 renews without a strike."""
        token = self._tokens.get(project_id)
        if token is not None and token.generation == generation:
            token.accepted = True

    async def refresh(self, project_id: str, generation: int) -> bool:
        """Every 401 gets one renewal (one IAM request for all workers); a renewed token that
        is rejected before any success, twice in a row, ends it: no refresh loop."""
        token = self._tokens.get(project_id)
        if token is not None and token.generation > generation:
            return True  # another worker already renewed it
        strikes = 0 if token is None or token.accepted else token.strikes + 1
        if strikes > MAX_STRIKES:
            return False
        await self._renew(project_id, generation, strikes)
        return True

    def rejection_hint(self, server_date: str | None) -> str:
        """Nothing to add: IAM's own answer already says what it refused."""
        return ""

    async def _renew(self, project_id: str, generation: int, strikes: int = 0) -> _Token:
        """One IAM request per project and generation, however many workers ask at once."""
        lock = self._locks.setdefault(project_id, asyncio.Lock())
        async with lock:
            current = self._tokens.get(project_id)
            if current is not None and current.generation > generation:
                return current
            value, lifetime = await self._request(project_id)
            renew_at = self.clock() + lifetime - min(300.0, lifetime * 0.1)
            token = _Token(value, renew_at, generation + 1, strikes)
            self._tokens[project_id] = token
            return token

    async def _request(self, project_id: str) -> tuple[Secret, float]:
        """POST /v3/auth/tokens scoped to the project; (token, seconds it is valid)."""
        headers = {"Content-Type": "application/json;charset=utf8"}
        identity: dict[str, object]
        if self.agency is not None:
            assert self.base is not None
            base_headers, _ = await self.base.headers("POST", self.iam_endpoint,
                                                      DOMAIN_SCOPE)
            headers.update(base_headers)
            identity = {"methods": ["assume_role"], "assume_role": {
                "domain_name": self.agency[0], "agency_name": self.agency[1]}}
            who = f"agency {self.agency[1]} of account {self.agency[0]}"
        else:
            assert self.password is not None
            identity = {"methods": ["password"], "password": {"user": {
                "name": self.user, "password": self.password.reveal(),
                "domain": {"name": self.domain}}}}
            who = f"user {self.user} of account {self.domain}"
        account = self.domain or (self.agency[0] if self.agency else None)
        scope = {"project": {"id": project_id}} if project_id != DOMAIN_SCOPE \
            else {"domain": {"name": account}}
        body = {"auth": {"identity": identity, "scope": scope}}
        url = f"{self.iam_endpoint}/v3/auth/tokens?nocatalog=true"
        self.requests += 1
        try:
            status, answer_headers, payload = await self.post(url, orjson.dumps(body), headers)
        except (TimeoutError, OSError, BodyTooLarge) as exc:  # OSError: ConnectFailed too
            raise FatalRunError(f"IAM endpoint {self.iam_endpoint}: unreachable "
                                f"({exc or type(exc).__name__}); check --iam-endpoint or "
                                "--region", Blame.ENDPOINT) from None
        subject = answer_headers.get("X-Subject-Token")
        if status != 201 or not subject:
            error = parse_error(payload)
            code = error.code if error.code != str(status) else None  # IAM repeats the status
            detail = " ".join(filter(None, (code, error.message))) or "no detail"
            hint = {401: f"check CPH_IAM_PASSWORD and that {who} exists",
                    403: f"{who} may not get a token for project {project_id}",
                    404: f"project {project_id} or the agency is unknown to IAM"}.get(
                        status, "check the IAM settings")
            raise FatalRunError(f"IAM refused a token for {who}, project {project_id}: "
                                f"HTTP {status} {detail}; {hint}")
        return Secret(subject), _lifetime(payload)


def _lifetime(payload: bytes) -> float:
    """Seconds until the token's ``expires_at`` (ISO 8601 UTC); 23 h if the body lacks it."""
    try:
        expires = orjson.loads(payload)["token"]["expires_at"]
        when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 1.0)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 23 * 3600.0


SECRET_VARIABLES = ("CPH_AUTH_TOKEN", "CPH_IAM_PASSWORD", "HUAWEICLOUD_SDK_SK",
                    "HUAWEICLOUD_SDK_SECURITY_TOKEN")


def build_auth(settings: Settings, env: Mapping[str, str], post: Post) -> Auth:
    """The credentials the settings and environment ask for; ``UsageError`` if incomplete.
    ``post`` carries IAM's token requests (the pool's ``AiohttpClient.post``).

    ``auth = auto`` picks AK/SK when HUAWEICLOUD_SDK_AK and _SK are set, else an IAM password
    token when CPH_IAM_PASSWORD is, else the X-Auth-Token of CPH_AUTH_TOKEN or ``token_file``.
    """
    for name in (*SECRET_VARIABLES, "HUAWEICLOUD_SDK_AK"):
        check_credential(name, env.get(name, ""), spaces=name == "CPH_IAM_PASSWORD")
    method = settings.auth.method
    if method == "auto":
        if env.get("HUAWEICLOUD_SDK_AK") and env.get("HUAWEICLOUD_SDK_SK"):
            method = "aksk"
        elif env.get("CPH_IAM_PASSWORD"):
            method = "agency" if settings.auth.agency_name else "password"
        else:
            method = "token"
    if method == "aksk":
        ak, sk = env.get("HUAWEICLOUD_SDK_AK", "").strip(), env.get("HUAWEICLOUD_SDK_SK", "")
        if not ak or not sk:
            raise UsageError("auth=aksk: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK")
        security = env.get("HUAWEICLOUD_SDK_SECURITY_TOKEN")
        return AkSkAuth(ak, Secret(sk.strip()), Secret(security.strip()) if security else None)
    if method in ("password", "agency"):
        password = env.get("CPH_IAM_PASSWORD", "")
        if not (password and settings.auth.iam_user and settings.auth.iam_domain):
            raise UsageError(f"auth={method}: set CPH_IAM_PASSWORD, --iam-user and --iam-domain")
        auth = IamTokenAuth(settings.iam_url, post, user=settings.auth.iam_user,
                            domain=settings.auth.iam_domain,
                            password=Secret(password),
                            name=f"IAM password of user {settings.auth.iam_user}")
        if method == "agency":
            if not (settings.auth.agency_name and settings.auth.agency_domain):
                raise UsageError("auth=agency: set --agency-name and --agency-domain")
            return IamTokenAuth(settings.iam_url, post, agency=(settings.auth.agency_domain,
                                                                settings.auth.agency_name),
                                base=auth,
                                name=f"IAM agency {settings.auth.agency_name} via user "
                                     f"{settings.auth.iam_user}")
        return auth
    token = token_from(env, settings.auth.token_file)
    if token is None:
        raise UsageError("CPH_AUTH_TOKEN: not set; export an X-Auth-Token, name a file with "
                         "--token-file, or use --auth password/aksk (see README)")
    return TokenAuth(token)
