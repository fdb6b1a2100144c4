"""The settings of a run as small frozen value objects, one per concern, holding parsed values.

``settings.http`` (how we talk to the API), ``retry``, ``auth``, ``output``, ``shards``,
``observe`` (logs, metrics, report), ``source`` (where the images come from), ``limits``
(when a run stops or fails) and ``trust`` (the partner projects). Lists are tuples and a shard
is a ``Shard``: nothing is re-parsed on access. The flat, user-facing names (TOML keys,
``CPH_*``, flags, the manifest's ``settings``) map onto them through ``FIELDS``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector import proxy as proxies
from collector.shards import Shard, parse_shard
from collector.specs import SPECS
from collector.store import BucketUrl


@dataclass(frozen=True, slots=True)
class Http:
    """How requests go out: where, how fast, how long they may take, through what."""

    endpoint: str | None = None
    regions: tuple[str, ...] = ()
    rate_limit: float = 100.0
    concurrency: int = 64
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 60.0
    max_body_bytes: int = 1_048_576
    proxy: str | None = None
    ca_bundle: Path | None = None

    @property
    def region(self) -> str | None:
        """The regions as the user wrote them (comma-separated), for messages and keys."""
        return ",".join(self.regions) or None


@dataclass(frozen=True, slots=True)
class Retry:
    """The retry policy's numbers."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    retry_budget: float = 0.2


@dataclass(frozen=True, slots=True)
class Auth:
    """Which credentials, and the names (never the secrets) they need."""

    method: str = "auto"
    token_file: Path | None = None
    iam_endpoint: str | None = None
    iam_user: str | None = None
    iam_domain: str | None = None
    agency_name: str | None = None
    agency_domain: str | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """Where the snapshot goes and how it is cut."""

    location: Path | BucketUrl = Path("output")
    storage_endpoint: str | None = None
    storage_addressing: str = "auto"
    snapshot_date: dt.date | None = None
    chunk_images: int = 10_000  # ~2 KB of Python buffers per image of chunk: ~20 MB


@dataclass(frozen=True, slots=True)
class Shards:
    """This run's share of a sharded night (``--shards N`` with JOB_COMPLETION_INDEX becomes
    ``shard``)."""

    shard: Shard | None = None
    count: int | None = None
    shard_rate: float | None = None
    publish_when_staged: bool = False  # a shard publishes the night once all N are staged

    @property
    def label(self) -> str | None:
        """The shard as ``K/N``, for messages and keys."""
        return str(self.shard) if self.shard is not None else None


@dataclass(frozen=True, slots=True)
class Observe:
    """What the run tells: logs, progress, metrics, the morning report."""

    log_level: str = "info"
    log_format: str = "text"
    metrics_file: Path | None = None
    pushgateway: str | None = None
    progress_interval: float = 10.0
    report: bool = False


@dataclass(frozen=True, slots=True)
class Source:
    """Where the images come from: the input file's format, or discovery over projects."""

    discover: bool = False
    project_ids: tuple[str, ...] = ()  # one project, or (for discover) several
    input_format: str = "auto"

    @property
    def project_id(self) -> str | None:
        """The projects as the user wrote them (comma-separated), for messages and keys."""
        return ",".join(self.project_ids) or None


@dataclass(frozen=True, slots=True)
class Limits:
    """When an image fails, and when the run stops or publishes nothing."""

    max_pages: int = 100
    max_members: int = 1_000
    fail_fast_after: int = 20
    max_failed_share: float = 0.1


@dataclass(frozen=True, slots=True)
class Trust:
    """The partner projects we expect to share with (``None``: not given)."""

    projects: tuple[str, ...] | None = None
    fail_on_untrusted: bool = False

    @property
    def trusted(self) -> frozenset[str]:
        """The partner projects as a set."""
        return frozenset(self.projects or ())

    @property
    def listed(self) -> str | None:
        """The partner projects as the manifest keeps them (comma-separated)."""
        return None if self.projects is None else ",".join(self.projects)


# A flat setting name -> (group, attribute), in the declarations' order.
FIELDS: dict[str, tuple[str, str]] = {name: (spec.group, spec.attr)
                                      for name, spec in SPECS.items()}


def _as_parsed(name: str, value: Any) -> Any:
    """An old-style text value (``"a,b"``, ``"2/3"``) of a flat name as its parsed value."""
    if value is None and name in ("region", "project_id"):
        return ()  # not given: no regions, no projects
    if isinstance(value, str):
        if name in ("region", "project_id", "trusted_projects"):
            return tuple(p for p in value.split(",") if p)
        if name == "shard":
            return parse_shard(value)
    return value


def _as_text(name: str, value: Any) -> Any:
    """The flat name's value as the manifest and the TOML have always shown it."""
    if name in ("region", "project_id"):
        return ",".join(value) or None
    if name == "trusted_projects":
        return None if value is None else ",".join(value)
    if name == "shard":
        return None if value is None else str(value)
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a run, validated, parsed and frozen, grouped by concern (see ``specs``
    for each one's rules)."""

    http: Http = Http()
    retry: Retry = Retry()
    auth: Auth = Auth()
    output: Output = Output()
    shards: Shards = Shards()
    observe: Observe = Observe()
    source: Source = Source()
    limits: Limits = Limits()
    trust: Trust = Trust()

    @classmethod
    def of(cls, **flat: Any) -> Settings:
        """Settings from flat names (``rate_limit=50``, ``region="cn-north-4"``): the rest
        default."""
        return cls().revise(**flat)

    def revise(self, **flat: Any) -> Settings:
        """These settings with some changed, by flat name (``dataclasses.replace`` by name)."""
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            group, attr = FIELDS[name]
            changes.setdefault(group, {})[attr] = _as_parsed(name, value)
        return dataclasses.replace(self, **{
            group: dataclasses.replace(getattr(self, group), **values)
            for group, values in changes.items()})

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name, as the user gives and the manifest shows it."""
        return {name: _as_text(name, getattr(getattr(self, group), attr))
                for name, (group, attr) in FIELDS.items()}

    @property
    def cph_endpoint(self) -> str | None:
        """``endpoint``, else the (first) region's documented one."""
        return self.cph_endpoint_for(self.http.regions[0] if self.http.regions else None)

    def cph_endpoint_for(self, region: str | None) -> str | None:
        """The region's CPH endpoint: ``endpoint`` (its ``{region}`` filled in), else the
        documented one."""
        if self.http.endpoint is not None:
            return self.http.endpoint.replace("{region}", region or "")
        return f"https://cph.{region}.myhuaweicloud.com" if region else None

    def iam_url_for(self, region: str | None) -> str:
        """The region's IAM endpoint, as ``iam_url`` for that region."""
        if self.auth.iam_endpoint is not None:
            return self.auth.iam_endpoint.replace("{region}", region or "")
        return f"https://iam.{region}.myhuaweicloud.com" if region \
            else "https://iam.myhuaweicloud.com"

    @property
    def iam_url(self) -> str:
        """``iam_endpoint``, else the (first) region's, else IAM's global endpoint."""
        return self.iam_url_for(self.http.regions[0] if self.http.regions else None)

    def public(self) -> dict[str, Any]:
        """The settings as JSON-ready values for the manifest (no secret is a setting)."""
        out: dict[str, Any] = {}
        for name, value in self.flat().items():
            out[name] = str(value) if isinstance(value, Path | dt.date | BucketUrl) else value
        if self.http.proxy is not None:
            out["proxy"] = proxies.shown(self.http.proxy)
        return out
