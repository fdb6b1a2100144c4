"""Every object a run uses, built from the settings in one place.

    settings + environment ─> AiohttpClient (the pool) ─post─> Auth ─┐
                              RateLimiter ────────────────────────────┴─> Fetcher

``build`` checks what can be checked before anything is sent (the endpoint is set, the CA
bundle reads, the credentials are complete and clean) and raises ``UsageError`` naming it.
Tests and the demo pass their own credentials (``auth``) and a backoff that takes no time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from collector import proxy as proxies
from collector.auth import Auth, PacedPost, Post, build_auth
from collector.client import AiohttpClient, Timeouts, tls_context
from collector.clock import SYSTEM, Clock, Sleep
from collector.config import Settings
from collector.errors import UsageError
from collector.fetch import Fetcher
from collector.limiter import RateLimiter
from collector.manifest import RunRecord
from collector.retry import Backoff, RetryBudget
from collector.secrets import Secret, check_credential
from collector.store import (
    BucketUrl,
    Credentials,
    LocalStore,
    Store,
    obs_endpoint,
    open_bucket,
)

RETRY_BUDGET_START = 100.0  # retries any run may spend before it has earned any
IAM_RATE = 10.0  # requests per second to IAM: a few project listings a run


@dataclass(frozen=True, slots=True)
class Region:
    """What a run needs for one region: its CPH endpoint and fetcher, its IAM's."""

    name: str  # "" when the endpoint is given without a region
    endpoint: str
    fetcher: Fetcher
    iam_url: str
    iam_fetcher: Fetcher  # IAM's project listing: its own quota and its own endpoint check


@dataclass(frozen=True, slots=True)
class Parts:
    """What ``pipeline.Run`` runs with. The regions share the pool, the credentials and the
    limiter (the rate is the run's, whatever the regions); each has its own endpoint check."""

    client: AiohttpClient
    auth: Auth
    limiter: RateLimiter
    clock: Clock
    regions: list[Region]
    store: Store  # the output: a folder or a bucket prefix
    stores: Callable[[BucketUrl], Store]  # another bucket prefix (an input's), same settings
    iam_post: PacedPost | None = None  # IAM's token requests: their retries count as the run's

    @property
    def endpoint(self) -> str:
        """The first region's CPH endpoint."""
        return self.regions[0].endpoint

    @property
    def fetcher(self) -> Fetcher:
        """The first region's (the only one unless discovery covers several)."""
        return self.regions[0].fetcher

    @property
    def fetchers(self) -> list[Fetcher]:
        """Every fetcher: each region's CPH and IAM ones."""
        return [f for r in self.regions for f in (r.fetcher, r.iam_fetcher)]

    def count_requests(self, record: RunRecord, configured: float) -> None:
        """``record``'s requests, retries, 429s, rates and auth, from what the parts counted
        (IAM's token requests are ``token_requests``; their retries count as the run's)."""
        counters = [f.counters for f in self.fetchers]
        iam = self.iam_post
        record.requests = sum(c.requests for c in counters)
        record.retries = sum(c.retries for c in counters) + (iam.retries if iam else 0)
        record.throttled = sum(c.throttled for c in counters) + (iam.throttled if iam else 0)
        record.rate = {"configured": configured, "lowest": round(self.limiter.lowest, 1),
                       "final": round(self.limiter.rate, 1)}
        record.auth = {"method": self.auth.name,
                       "token_requests": getattr(self.auth, "requests", 0)}


def build(settings: Settings, env: Mapping[str, str] | None = None, *,
          auth: Callable[[Post], Auth] | None = None, clock: Clock = SYSTEM,
          backoff_sleep: Sleep | None = None) -> Parts:
    """The run's objects; ``env`` gives credentials and HTTP(S)_PROXY/NO_PROXY."""
    env = os.environ if env is None else env
    s = settings
    if s.cph_endpoint is None:
        raise UsageError("endpoint: not set; give --region (e.g. cn-north-4) or --endpoint "
                         "(e.g. https://cph.cn-north-4.myhuaweicloud.com)")
    try:
        tls_context(s.http.ca_bundle)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    client = AiohttpClient(concurrency=s.http.concurrency,
                           timeouts=Timeouts(s.http.connect_timeout, s.http.read_timeout,
                                             s.http.request_timeout),
                           max_body_bytes=s.http.max_body_bytes, ca_bundle=s.http.ca_bundle,
                           proxy=s.http.proxy, env=env, clock=clock.now)
    iam_limiters: dict[str, RateLimiter] = {}  # one per IAM endpoint: its own quota

    def iam_limiter(url: str) -> RateLimiter:
        """IAM endpoint ``url``'s own limiter (its quota is not CPH's)."""
        return iam_limiters.setdefault(url, RateLimiter(min(s.http.rate_limit, IAM_RATE),
                                                        clock=clock.now))

    backoff = Backoff(s.retry.backoff_base, s.retry.backoff_cap, s.retry.retry_after_cap)
    post = PacedPost(client.post, iam_limiter(s.iam_url), backoff, s.retry.max_attempts,
                     backoff_sleep or clock.sleep)  # token requests: IAM's limiter, retried
    credentials = auth(post) if auth is not None else build_auth(s, env, post)
    client.add_static_headers(credentials.static_headers())
    limiter = RateLimiter(shard_rate(s), clock=clock.now)

    def fetcher(endpoint: str, rate: RateLimiter) -> Fetcher:
        """A fetcher of ``endpoint``, paced by ``rate``, with the run's retry rules."""
        return Fetcher(client, credentials, rate, endpoint=endpoint,
                       max_attempts=s.retry.max_attempts,
                       backoff=backoff,
                       budget=RetryBudget(RETRY_BUDGET_START, s.retry.retry_budget),
                       fail_fast_after=s.limits.fail_fast_after, max_pages=s.limits.max_pages,
                       max_members=s.limits.max_members, sleep=backoff_sleep or clock.sleep)

    regions = []
    for name in s.http.regions or ("",):
        endpoint = s.cph_endpoint_for(name or None)
        assert endpoint is not None
        iam_url = s.iam_url_for(name or None)
        regions.append(Region(name, endpoint, fetcher(endpoint, limiter), iam_url,
                              fetcher(iam_url, iam_limiter(iam_url))))
    store = open_store(s, s.output.location, env)
    return Parts(client, credentials, limiter, clock, regions, store,
                 lambda url: open_store(s, url, env), post)


def shard_rate(settings: Settings) -> float:
    """The run's requests per second: ``rate_limit`` is the account's, so each of N shards
    takes ``rate_limit / N`` unless ``shard_rate`` says otherwise."""
    shard = settings.shards.shard
    if shard is None:
        return settings.http.rate_limit
    return settings.shards.shard_rate or settings.http.rate_limit / shard.count


def open_store(settings: Settings, where: Path | BucketUrl,
               env: Mapping[str, str] | None = None) -> Store:
    """The output (or an input's folder) ``where``: a folder, or a bucket through
    ``pyarrow.fs.S3FileSystem`` with the storage settings and the scheme's credentials."""
    if isinstance(where, Path):
        return LocalStore(where)
    env = os.environ if env is None else env
    s = settings
    region = (s.http.regions[0] if s.http.regions else "") if where.scheme == "obs" else (
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")
    endpoint = s.output.storage_endpoint or (
        obs_endpoint(region) if where.scheme == "obs" else None)
    proxy = proxies.choose(endpoint or f"https://s3.{region}.amazonaws.com", s.http.proxy, env)
    return open_bucket(where, endpoint=endpoint, region=region,
                       addressing=s.output.storage_addressing,
                       credentials=storage_credentials(where, env), ca_file=s.http.ca_bundle,
                       proxy=proxy, connect_timeout=s.http.connect_timeout,
                       read_timeout=s.http.read_timeout,
                       max_attempts=s.retry.max_attempts)


AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
HUAWEI_VARIABLES = ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN")


def storage_credentials(url: BucketUrl, env: Mapping[str, str]) -> Credentials | None:
    """``s3://``: the AWS variables (else None: the AWS SDK's own chain, its config files
    included). ``obs://``: the AWS variables when set, else the AK/SK that sign the API calls;
    UsageError when neither is set. Each is checked by name and registered as a secret."""
    for name in (*AWS_VARIABLES, *HUAWEI_VARIABLES):
        check_credential(name, env.get(name, ""))
    for key, secret, token in (AWS_VARIABLES, HUAWEI_VARIABLES):
        if env.get(key, "").strip() and env.get(secret, "").strip():
            found = Credentials(env[key].strip(), Secret(env[secret].strip()).reveal(),
                                Secret(env[token].strip()).reveal()
                                if env.get(token, "").strip() else None)
            return found
        if url.scheme == "s3":
            return None
    raise UsageError(f"output {url}: OBS needs credentials: set HUAWEICLOUD_SDK_AK and "
                     "HUAWEICLOUD_SDK_SK (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
