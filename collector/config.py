"""Settings: frozen, validated values, from flags > environment (CPH_*) > --config TOML > defaults.

Every setting is declared once in ``SPECS`` (type, default, allowed range, one-line help); the
TOML file ``config/collector.toml``, the environment names and the CLI flags all derive from it.
Secrets are not settings: they come only from the environment or a file (see ``secrets``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.errors import UsageError
from collector.ids import is_valid_id

INPUT_FORMATS = ("auto", "text", "csv", "jsonl", "parquet")
LOG_LEVELS = ("debug", "info", "warning", "error")
AUTH_METHODS = ("auto", "token", "password", "agency", "aksk")
HTTP_CLIENTS = ("lean", "aiohttp")
# Regions of CPH, as the official SDK lists them (huaweicloudsdkcph/v1/region/cph_region.py).
REGIONS = ("cn-north-4", "cn-north-9", "cn-east-2", "cn-east-3", "cn-east-4", "cn-south-1",
           "cn-southwest-2", "ap-southeast-1", "ap-southeast-3", "ru-northwest-2", "la-south-2",
           "la-north-2", "af-north-1")


@dataclass(frozen=True, slots=True)
class Settings:
    endpoint: str | None = None
    region: str | None = None
    project_id: str | None = None
    output: Path = Path("output")
    snapshot_date: dt.date | None = None
    input_format: str = "auto"
    rate_limit: float = 100.0
    concurrency: int = 64
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    retry_budget: float = 0.2
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 60.0
    max_body_bytes: int = 1_048_576
    http_client: str = "lean"
    chunk_images: int = 10_000  # ~2 KB of Python buffers per image of chunk: ~20 MB
    fail_fast_after: int = 20
    progress_interval: float = 10.0
    auth: str = "auto"
    token_file: Path | None = None
    iam_endpoint: str | None = None
    iam_user: str | None = None
    iam_domain: str | None = None
    agency_name: str | None = None
    agency_domain: str | None = None
    ca_bundle: Path | None = None
    log_level: str = "info"

    @property
    def cph_endpoint(self) -> str | None:
        """``endpoint``, else the region's documented one."""
        if self.endpoint is not None:
            return self.endpoint
        return f"https://cph.{self.region}.myhuaweicloud.com" if self.region else None

    @property
    def iam_url(self) -> str:
        if self.iam_endpoint is not None:
            return self.iam_endpoint
        return f"https://iam.{self.region}.myhuaweicloud.com" if self.region \
            else "https://iam.myhuaweicloud.com"

    def public(self) -> dict[str, Any]:
        """The settings as JSON-ready values for the manifest (no secret is a setting)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = str(value) if isinstance(value, Path | dt.date) else value
        return out


@dataclass(frozen=True, slots=True)
class Spec:
    parse: Callable[[Any], Any]
    allowed: str
    help: str


def _number(kind: type, low: float, high: float) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        if isinstance(raw, bool):
            raise TypeError
        value = kind(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError
        if not low <= value <= high:
            raise ValueError
        return value

    return parse


def _positive(high: float) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        value = _number(float, 0.0, high)(raw)
        if value <= 0:
            raise ValueError
        return float(value)

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError
        return value

    return parse


def _endpoint(raw: Any) -> str:
    value = str(raw).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError
    if parts.username or parts.password:
        raise ValueError  # credentials in a URL would end up in logs
    return value


def _project_id(raw: Any) -> str:
    value = str(raw).strip()
    if not is_valid_id(value):
        raise ValueError
    return value


def _name(raw: Any) -> str:
    value = str(raw).strip()
    if not value or not value.isprintable():
        raise ValueError
    return value


def _date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw).strip())


def _path(raw: Any) -> Path:
    value = str(raw)
    if not value.strip() or "\x00" in value:
        raise ValueError
    return Path(value).expanduser()


SPECS: dict[str, Spec] = {
    "endpoint": Spec(_endpoint, "an http(s) URL without query or credentials",
                     "CPH endpoint, e.g. https://cph.cn-north-4.myhuaweicloud.com"),
    "region": Spec(_choice(REGIONS), "one of " + ", ".join(REGIONS),
                   "region: gives the CPH and IAM endpoints unless they are set"),
    "project_id": Spec(_project_id, "letters, digits, - and _, at most 64",
                       "project for input rows that have no project_id column"),
    "output": Spec(_path, "a folder path", "output folder (members/, image_status/, runs/)"),
    "snapshot_date": Spec(_date, "a date YYYY-MM-DD",
                          "partition date; empty = the UTC date the run starts"),
    "input_format": Spec(_choice(INPUT_FORMATS), "one of " + ", ".join(INPUT_FORMATS),
                         "input format; auto = from the file extension"),
    "rate_limit": Spec(_positive(100_000), "a number > 0 and <= 100000",
                       "requests per second, at most, spread evenly (retries included)"),
    "concurrency": Spec(_number(int, 1, 1024), "a whole number from 1 to 1024",
                        "requests in flight, at most"),
    "max_attempts": Spec(_number(int, 1, 20), "a whole number from 1 to 20",
                         "HTTP attempts per image page, the first included"),
    "backoff_base": Spec(_positive(60), "a number of seconds > 0 and <= 60",
                         "first retry waits up to this long (full jitter, doubling)"),
    "backoff_cap": Spec(_positive(600), "a number of seconds > 0 and <= 600",
                        "no backoff wait is longer than this"),
    "retry_after_cap": Spec(_positive(600), "a number of seconds > 0 and <= 600",
                            "a server's Retry-After is honoured up to this long"),
    "retry_budget": Spec(_number(float, 0.0, 10.0), "a number from 0 to 10",
                         "retries allowed in the run: 100, plus this many per image finished"),
    "connect_timeout": Spec(_positive(300), "a number of seconds > 0 and <= 300",
                            "seconds to open a connection"),
    "read_timeout": Spec(_positive(600), "a number of seconds > 0 and <= 600",
                         "seconds between two reads of a response"),
    "request_timeout": Spec(_positive(3600), "a number of seconds > 0 and <= 3600",
                            "seconds for one whole request"),
    "max_body_bytes": Spec(_number(int, 1024, 104_857_600), "bytes from 1024 to 104857600",
                           "a larger response body is a failure of that image"),
    "http_client": Spec(_choice(HTTP_CLIENTS), "one of " + ", ".join(HTTP_CLIENTS),
                        "lean = our keep-alive HTTP/1.1 client (5x less CPU per request); "
                        "aiohttp = aiohttp's ClientSession"),
    "chunk_images": Spec(_number(int, 1, 10_000_000), "a whole number from 1 to 10000000",
                         "images per committed Parquet chunk"),
    "fail_fast_after": Spec(_number(int, 1, 1_000_000), "a whole number >= 1",
                            "stop (exit 3) when this many requests fail alike (refused, "
                            "gateway 404) before any answer"),
    "progress_interval": Spec(_positive(3600), "a number of seconds > 0",
                              "seconds between progress lines when not on a terminal"),
    "auth": Spec(_choice(AUTH_METHODS), "one of " + ", ".join(AUTH_METHODS),
                 "credentials: token, password (IAM), agency (IAM assume-role), aksk; "
                 "auto = from the environment"),
    "token_file": Spec(_path, "a file path", "file holding the X-Auth-Token (else CPH_AUTH_TOKEN)"),
    "iam_endpoint": Spec(_endpoint, "an http(s) URL without query or credentials",
                         "IAM endpoint for password/agency tokens; default from region"),
    "iam_user": Spec(_name, "a non-empty name", "IAM user name (auth = password)"),
    "iam_domain": Spec(_name, "a non-empty name", "account (domain) name of the IAM user"),
    "agency_name": Spec(_name, "a non-empty name", "agency to assume (auth = agency)"),
    "agency_domain": Spec(_name, "a non-empty name", "account (domain) name that owns the agency"),
    "ca_bundle": Spec(_path, "a file path", "extra CA certificates (PEM) to trust; TLS stays on"),
    "log_level": Spec(_choice(LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS), "log verbosity"),
}

assert set(SPECS) == {f.name for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    return "CPH_" + name.upper()


def _apply(values: dict[str, Any], source: Mapping[str, Any], where: Callable[[str], str]) -> None:
    for name, raw in source.items():
        spec = SPECS.get(name)
        if spec is None:
            raise UsageError(f"{where(name)}: unknown setting")
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            values.pop(name, None)  # empty means "the default"
            continue
        try:
            values[name] = spec.parse(raw)
        except (ValueError, TypeError):
            raise UsageError(f"{where(name)}={raw!r}: must be {spec.allowed}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the four sources and validate; raise ``UsageError`` naming the bad setting."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--config {config_file}: cannot read it ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--config {config_file}: not valid TOML ({exc})") from None
        _apply(values, table, lambda n: f"{config_file}: {n}")
    from_env = {n: env[env_name(n)] for n in SPECS if env_name(n) in env}
    _apply(values, from_env, env_name)
    _apply(values, {k: v for k, v in (flags or {}).items() if v is not None},
           lambda n: "--" + n.replace("_", "-"))
    settings = Settings(**values)
    if settings.backoff_cap < settings.backoff_base:
        raise UsageError(f"backoff_cap={settings.backoff_cap}: must be >= backoff_base "
                         f"({settings.backoff_base})")
    return settings
