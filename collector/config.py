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
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector import proxy as proxies
from collector.errors import UsageError
from collector.ids import is_valid_id
from collector.shards import Shard, from_job_index, parse_shard
from collector.store import ADDRESSING, BucketUrl, parse_bucket_url

INPUT_FORMATS = ("auto", "text", "csv", "jsonl", "parquet")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
AUTH_METHODS = ("auto", "token", "password", "agency", "aksk")
# Regions of CPH, as the official SDK lists them (huaweicloudsdkcph/v1/region/cph_region.py).
REGIONS = ("cn-north-4", "cn-north-9", "cn-east-2", "cn-east-3", "cn-east-4", "cn-south-1",
           "cn-southwest-2", "ap-southeast-1", "ap-southeast-3", "ru-northwest-2", "la-south-2",
           "la-north-2", "af-north-1")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a run, validated and frozen (see ``SPECS`` for each one's rules)."""
    endpoint: str | None = None
    region: str | None = None
    project_id: str | None = None  # one project, or (for discover) a comma-separated list
    discover: bool = False
    trusted_projects: str | None = None  # comma-separated project IDs (see ``trusted``)
    fail_on_untrusted: bool = False
    output: Path | BucketUrl = Path("output")
    storage_endpoint: str | None = None
    storage_addressing: str = "auto"
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
    max_pages: int = 100
    max_members: int = 1_000
    proxy: str | None = None
    chunk_images: int = 10_000  # ~2 KB of Python buffers per image of chunk: ~20 MB
    fail_fast_after: int = 20
    max_failed_share: float = 0.1
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
    shard: str | None = None  # "K/N"; --shards N with JOB_COMPLETION_INDEX becomes this
    shards: int | None = None
    publish_when_staged: bool = False  # a shard publishes the night once all N are staged
    shard_rate: float | None = None
    log_format: str = "text"
    metrics_file: Path | None = None
    pushgateway: str | None = None
    report: bool = False

    @property
    def shard_spec(self) -> Shard | None:
        return parse_shard(self.shard) if self.shard else None

    @property
    def trusted(self) -> frozenset[str]:
        """The partner projects we expect to share with."""
        return frozenset(self.trusted_projects.split(",")) if self.trusted_projects \
            else frozenset()

    @property
    def regions(self) -> tuple[str, ...]:
        """``region`` as a list (discovery may cover several)."""
        return tuple(self.region.split(",")) if self.region else ()

    @property
    def cph_endpoint(self) -> str | None:
        """``endpoint``, else the (first) region's documented one."""
        return self.cph_endpoint_for(self.regions[0] if self.regions else None)

    def cph_endpoint_for(self, region: str | None) -> str | None:
        """The region's CPH endpoint: ``endpoint`` (its ``{region}`` filled in), else the
        documented one."""
        if self.endpoint is not None:
            return self.endpoint.replace("{region}", region or "")
        return f"https://cph.{region}.myhuaweicloud.com" if region else None

    def iam_url_for(self, region: str | None) -> str:
        """The region's IAM endpoint, as ``iam_url`` for that region."""
        if self.iam_endpoint is not None:
            return self.iam_endpoint.replace("{region}", region or "")
        return f"https://iam.{region}.myhuaweicloud.com" if region \
            else "https://iam.myhuaweicloud.com"

    @property
    def project_ids(self) -> tuple[str, ...]:
        """``project_id`` as a list (discovery may name several projects)."""
        return tuple(self.project_id.split(",")) if self.project_id else ()

    @property
    def iam_url(self) -> str:
        """``iam_endpoint``, else the (first) region's, else IAM's global endpoint."""
        return self.iam_url_for(self.regions[0] if self.regions else None)

    def public(self) -> dict[str, Any]:
        """The settings as JSON-ready values for the manifest (no secret is a setting)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = str(value) if isinstance(value, Path | dt.date | BucketUrl) \
                else value
        if self.proxy is not None:
            out["proxy"] = proxies.shown(self.proxy)
        return out


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: how to read it, what is allowed (said in errors, the TOML and the README,
    always from here), and one line of help."""

    parse: Callable[[Any], Any]
    allowed: str
    help: str


Kind = tuple[Callable[[Any], Any], str]  # a parser and the words for what it allows


def spec(kind: Kind, help: str) -> Spec:
    """A ``Spec`` from a kind (parser and its words) and a line of help."""
    return Spec(kind[0], kind[1], help)


def _checked_number(raw: Any, whole: bool) -> float:
    if isinstance(raw, bool):
        raise TypeError
    if whole and isinstance(raw, float) and not raw.is_integer():
        raise ValueError  # 5.7 connections is a mistake, not 5
    value = int(raw) if whole and not isinstance(raw, float) else float(raw)
    if not math.isfinite(value):
        raise ValueError
    return value


def whole(low: int, high: int) -> Kind:
    """A whole number in [low, high]; 5.7 is refused, not rounded."""
    def parse(raw: Any) -> int:
        value = int(_checked_number(raw, whole=True))
        if not low <= value <= high:
            raise ValueError
        return value

    return parse, f"a whole number from {low} to {high}"


def number(low: float, high: float) -> Kind:
    """A finite number in [low, high]."""
    def parse(raw: Any) -> float:
        value = _checked_number(raw, whole=False)
        if not low <= value <= high:
            raise ValueError
        return value

    return parse, f"a number from {low:g} to {high:g}"


def positive(high: float, unit: str = "a number") -> Kind:
    """A finite number in (0, high]."""
    def parse(raw: Any) -> float:
        value = _checked_number(raw, whole=False)
        if not 0 < value <= high:
            raise ValueError
        return value

    return parse, f"{unit} > 0 and <= {high:g}"


def choice(options: tuple[str, ...]) -> Kind:
    """One of ``options``, case-insensitive."""
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError
        return value

    return parse, "one of " + ", ".join(options)


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def check_url(raw: str, *, path: bool, userinfo: bool) -> str:
    """An http(s) URL and nothing else, or ValueError saying what else it is. Checked on the
    raw text: ``urlsplit`` silently drops tabs and line breaks, which would hide them."""
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise ValueError("it contains whitespace or a control character")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not raw.startswith(f"{parts.scheme}://"):
        raise ValueError("it does not start with http:// or https://")
    if "?" in raw:
        raise ValueError("it has a query")
    if "#" in raw:
        raise ValueError("it has a fragment")
    userinfo_given, _, hostport = parts.netloc.rpartition("@")
    if userinfo_given and not userinfo:
        raise ValueError("it has a user or password, which would end up in logs")
    host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") \
        else (hostport, "", "")
    if not colon:
        host = hostport
    if not _HOST.fullmatch(host):
        raise ValueError("its host is missing or malformed")
    if colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError("its port is not a number from 1 to 65535")
    if not path and parts.path not in ("", "/"):
        raise ValueError("a proxy URL has no path")
    if not _PATH.fullmatch(parts.path):
        raise ValueError("its path has characters a URL may not hold")
    return raw


def _endpoint(raw: Any) -> str:
    """A URL; ``{region}`` in it stands for each region of a run over several."""
    value = str(raw)
    check_url(value.replace("{region}", "cn-north-4"), path=True, userinfo=False)
    return value.rstrip("/")


def _regions(raw: Any) -> str:
    values = [str(v).strip().lower() for v in (raw if isinstance(raw, list)
                                               else str(raw).split(","))]
    if not values or not all(v in REGIONS for v in values) or len(set(values)) < len(values):
        raise ValueError
    return ",".join(values)


ENDPOINT: Kind = (_endpoint, "an http(s) URL without query, fragment or credentials")


def _proxy(raw: Any) -> str:
    return check_url(str(raw), path=False, userinfo=True)


PROXY: Kind = (_proxy, "an http:// or https:// proxy URL, e.g. http://proxy.example:3128")


def _project_id(raw: Any) -> str:
    parts = raw if isinstance(raw, list) else str(raw).split(",")
    values = [str(p).strip() for p in parts]
    if not values or not all(is_valid_id(v) for v in values) or len(set(values)) < len(values):
        raise ValueError
    return ",".join(values)


TRUSTED_FILE_BYTES = 16 << 20


def _trusted(raw: Any) -> str:
    """Project IDs: a list, a comma list, or ``@FILE`` with one a line (``#`` comments)."""
    if isinstance(raw, str) and raw.strip().startswith("@"):
        path = Path(raw.strip()[1:]).expanduser()
        try:
            if path.stat().st_size > TRUSTED_FILE_BYTES:  # a wrong file, not a partner list
                raise ValueError(f"its file {path} is over {TRUSTED_FILE_BYTES >> 20} MiB "
                                 "(a partner list of 200,000 projects is 7 MiB)")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"its file {path} cannot be read ({type(exc).__name__})") from None
        raw = [line.strip() for line in text.splitlines()
               if line.strip() and not line.strip().startswith("#")]
        if not raw:
            return ""
    return _project_id(raw)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _name(raw: Any) -> str:
    value = str(raw).strip()
    if not value or not value.isprintable():
        raise ValueError
    return value


def _date(raw: Any) -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw).strip())


def _output(raw: Any) -> Path | BucketUrl:
    """A folder, or ``s3://bucket/prefix`` / ``obs://bucket/prefix``."""
    if isinstance(raw, BucketUrl):
        return raw
    url = parse_bucket_url(str(raw).strip())
    return url if url is not None else _path(raw)


def _shard(raw: Any) -> str:
    return str(parse_shard(str(raw)))


def _prom(raw: Any) -> Path:
    """node_exporter's textfile collector reads ``*.prom`` files only."""
    path = _path(raw)
    if path.suffix != ".prom":
        raise ValueError("the textfile collector reads only files named *.prom")
    if path.exists() and not path.is_file():  # a FIFO would hold the run, a device take it
        raise ValueError("it is a FIFO, a device or a folder, not a regular file")
    return path


def _path(raw: Any) -> Path:
    value = str(raw)
    if not value.strip() or "\x00" in value:
        raise ValueError
    return Path(value).expanduser()


NAME: Kind = (_name, "a non-empty name")
SECONDS = "a number of seconds"

SPECS: dict[str, Spec] = {
    "endpoint": spec(ENDPOINT, "CPH endpoint, e.g. https://cph.cn-north-4.myhuaweicloud.com"),
    "region": spec((_regions, "one or more (comma-separated) of " + ", ".join(REGIONS)),
                   "region: gives the CPH and IAM endpoints unless they are set; several "
                   "only with discover"),
    "project_id": spec((_project_id, "IDs of letters, digits, - and _, at most 64, "
                                     "comma-separated"),
                       "project for input rows that have no project_id column; with discover, "
                       "the projects to list (else IAM's projects of the region)"),
    "discover": spec((_flag, "true or false"),
                     "list the images from the API (ListImages) instead of reading --input"),
    "trusted_projects": spec((_trusted, "project IDs, comma-separated, or @FILE with one a "
                                        "line"),
                             "partner projects we expect to share with: their changes are "
                             "trusted"),
    "fail_on_untrusted": spec((_flag, "true or false"),
                              "exit 4 (after publishing) when a share to an untrusted project "
                              "was added or updated"),
    "output": spec((_output, "a folder path, s3://bucket/prefix or obs://bucket/prefix"),
                   "output folder or bucket prefix (members/, image_status/, runs/)"),
    "storage_endpoint": spec(ENDPOINT, "object storage endpoint; obs:// defaults to "
                                       "https://obs.{region}.myhuaweicloud.com, s3:// to AWS"),
    "storage_addressing": spec(choice(ADDRESSING), "bucket addressing: virtual (bucket.host; "
                                                   "OBS needs it), path (host/bucket); auto = "
                                                   "virtual for obs://, path for s3://"),
    "snapshot_date": spec((_date, "a date YYYY-MM-DD"),
                          "partition date; empty = the UTC date the run starts"),
    "input_format": spec(choice(INPUT_FORMATS), "input format; auto = from the file extension"),
    "rate_limit": spec(positive(100_000),
                       "requests per second, at most, spread evenly (retries included)"),
    "concurrency": spec(whole(1, 1024), "requests in flight, at most"),
    "max_attempts": spec(whole(1, 20), "HTTP attempts per image page, the first included"),
    "backoff_base": spec(positive(60, SECONDS),
                         "first retry waits up to this long (full jitter, doubling)"),
    "backoff_cap": spec(positive(600, SECONDS), "no backoff wait is longer than this"),
    "retry_after_cap": spec(positive(600, SECONDS),
                            "a server's Retry-After is honoured up to this long"),
    "retry_budget": spec(number(0, 10),
                         "retries allowed in the run: 100, plus this many per image finished"),
    "connect_timeout": spec(positive(300, SECONDS), "seconds to open a connection"),
    "read_timeout": spec(positive(600, SECONDS),
                         "seconds to wait for an answer to begin, or between two parts of it"),
    "request_timeout": spec(positive(3600, SECONDS), "seconds for one whole request"),
    "max_body_bytes": spec(whole(1024, 104_857_600),
                           "a larger response body is a failure of that image"),
    "max_pages": spec(whole(1, 100_000), "more member pages than this fail the image "
                                         "(paging_limit); the API documents at most 10 members"),
    "max_members": spec(whole(1, 10_000_000), "more members than this fail the image "
                                             "(too_many_members)"),
    "proxy": spec(PROXY, "HTTP(S) proxy for every request; overrides HTTPS_PROXY/HTTP_PROXY "
                         "(NO_PROXY still applies)"),
    "chunk_images": spec(whole(1, 10_000_000), "images per committed Parquet chunk"),
    "fail_fast_after": spec(whole(1, 1_000_000),
                            "stop (exit 3) when, before any answer proved the endpoint, this many "
                            "requests got no answer, or 10 times as many no API answer"),
    "max_failed_share": spec(number(0, 1), "publish nothing (exit 3) when more than this share of "
                                           "the night's images, or of its listings, failed; a "
                                           "re-run retries them"),
    "progress_interval": spec(positive(3600, SECONDS),
                              "seconds between progress lines when not on a terminal"),
    "auth": spec(choice(AUTH_METHODS), "credentials: token, password (IAM), agency (IAM "
                                       "assume-role), aksk; auto = from the environment"),
    "token_file": spec((_path, "a file path"),
                       "file holding the X-Auth-Token (else CPH_AUTH_TOKEN)"),
    "iam_endpoint": spec(ENDPOINT, "IAM endpoint for password/agency tokens; default from "
                                   "region"),
    "iam_user": spec(NAME, "IAM user name (auth = password)"),
    "iam_domain": spec(NAME, "account (domain) name of the IAM user"),
    "agency_name": spec(NAME, "agency to assume (auth = agency)"),
    "agency_domain": spec(NAME, "account (domain) name that owns the agency"),
    "ca_bundle": spec((_path, "a file path"),
                      "extra CA certificates (PEM), trusted besides the system's; TLS stays on"),
    "log_level": spec(choice(LOG_LEVELS), "log verbosity"),
    "shard": spec((_shard, "K/N, e.g. 2/3"),
                  "collect only shard K of N of the images (a stable hash of project and image); "
                  "publish the N shards with cph-collector publish --shards N"),
    "shards": spec(whole(1, 10_000), "N shards, this one taken from JOB_COMPLETION_INDEX "
                                     "(Kubernetes Indexed Jobs, 0-based)"),
    "publish_when_staged": spec((_flag, "true or false"),
                                "a shard, once staged, publishes the night when it finds all "
                                "N shards staged (one does; the others say so and exit 0)"),
    "shard_rate": spec(positive(100_000), "requests per second for this shard; default "
                                          "rate_limit / N (the quota is the account's)"),
    "log_format": spec(choice(LOG_FORMATS), "text, or json: one JSON object a line on stderr "
                                            "(log records and progress), and the summary as "
                                            "one JSON object"),
    "metrics_file": spec((_prom, "a file path ending in .prom"),
                         "Prometheus textfile (node_exporter's textfile collector), rewritten "
                         "at every progress interval and at the end"),
    "pushgateway": spec(ENDPOINT, "Prometheus Pushgateway URL: the metrics are pushed at the "
                                  "end (a Pushgateway that is down is a warning)"),
    "report": spec((_flag, "true or false"),
                   "after publishing, write the morning report (one HTML page) to "
                   "report/snapshot_date=D/index.html in the output"),
}

assert set(SPECS) == {f.name for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    """The environment variable of a setting: ``CPH_<NAME>``."""
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
        except (ValueError, TypeError) as exc:
            shown = proxies.shown(raw) if isinstance(raw, str) and "://" in raw else raw
            why = f" ({exc})" if isinstance(exc, ValueError) and str(exc).startswith(
                ("it ", "its ", "a proxy")) else ""
            raise UsageError(f"{where(name)}={shown!r}: must be {spec.allowed}{why}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the four sources and validate; raise ``UsageError`` naming the bad setting."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    table: dict[str, Any] = {}
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
    if values.get("shards") is not None and values.get("shard") is None:
        try:
            values["shard"] = str(from_job_index(values["shards"], env))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    settings = Settings(**values)
    check_together(settings)
    for origin, given in (("--proxy", (flags or {}).get("proxy")),
                          (f"{config_file}: proxy", table.get("proxy"))):
        if isinstance(given, str) and proxies.has_credentials(given):
            raise UsageError(f"{origin}: a proxy user and password are secrets; give them in "
                             "CPH_PROXY or HTTPS_PROXY, not on the command line or in a file")
    if settings.proxy is not None:
        proxies.register_credentials(settings.proxy)
    check_proxy_variables(env)
    return settings


def check_proxy_variables(env: Mapping[str, str]) -> None:
    """HTTP(S)_PROXY and ALL_PROXY are URLs like the ``proxy`` setting; NO_PROXY is a list."""
    for name, value in env.items():
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy") and value.strip():
            try:
                check_url(value, path=False, userinfo=True)
            except ValueError as exc:
                raise UsageError(f"{name}={proxies.shown(value)!r}: must be "
                                 f"{PROXY[1]} ({exc})") from None
            proxies.register_credentials(value)


def check_together(settings: Settings) -> None:
    """Settings that are fine alone but not together; ``UsageError`` naming both."""
    if len(settings.regions) > 1:
        if not settings.discover:
            raise UsageError(f"region={settings.region}: several regions only with discover "
                             "(input rows do not say their region)")
        if settings.project_id:
            raise UsageError(f"region={settings.region}: with several regions, the projects "
                             "come from IAM; drop --project-id or give one region")
        for name in ("endpoint", "iam_endpoint"):
            value = getattr(settings, name)
            if value is not None and "{region}" not in value:
                raise UsageError(f"{name}={value}: with several regions it must contain "
                                 "{region}, e.g. https://cph.{region}.example.com")
    if settings.shard is not None:
        shard = parse_shard(settings.shard)
        if settings.shards is not None and settings.shards != shard.count:
            raise UsageError(f"shard={settings.shard}: --shards says {settings.shards} shards")
    elif settings.publish_when_staged:
        raise UsageError("publish_when_staged: only for a shard (--shard K/N or --shards N)")
    output = settings.output
    if isinstance(output, BucketUrl) and output.scheme == "obs" and not (
            settings.storage_endpoint or settings.regions):
        raise UsageError(f"output={output}: OBS's endpoint comes from region; give --region "
                         "or --storage-endpoint")
    if settings.backoff_cap < settings.backoff_base:
        raise UsageError(f"backoff_cap={settings.backoff_cap:g}: must be >= backoff_base "
                         f"({settings.backoff_base:g})")
    for name in ("connect_timeout", "read_timeout"):
        value = getattr(settings, name)
        if value > settings.request_timeout:
            raise UsageError(f"{name}={value:g}: must be <= request_timeout "
                             f"({settings.request_timeout:g}), which bounds the whole request")


TOML_HEADER = """\
# cph-collector default settings. Every setting here can also be given as an environment
# variable CPH_<NAME> (e.g. CPH_RATE_LIMIT=50) or a flag --<name> (e.g. --rate-limit 50).
# Precedence: flags > environment > this file (--config FILE) > built-in defaults.
# Secrets are never settings: CPH_AUTH_TOKEN, CPH_IAM_PASSWORD and HUAWEICLOUD_SDK_SK (and
# _SECURITY_TOKEN) come from the environment only; a token may also come from token_file,
# and a proxy's user and password only from CPH_PROXY or HTTPS_PROXY / HTTP_PROXY.
# Commented-out settings have no default.
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    return repr(value)


def render_toml() -> str:
    """``config/collector.toml``: every setting, its default, its help and what is allowed."""
    defaults = Settings()
    parts = [TOML_HEADER]
    for name, setting in SPECS.items():
        value = getattr(defaults, name)
        line = f'# {name} = ""' if value is None else f"{name} = {_toml_value(value)}"
        parts.append(f"\n# {setting.help} ({setting.allowed})\n{line}\n")
    return "".join(parts)


def render_table() -> str:
    """The README's settings table, from the same declarations."""
    defaults = Settings()
    rows = ["| setting | flag | environment | default | allowed |", "|---|---|---|---|---|"]
    for name, setting in SPECS.items():
        value = getattr(defaults, name)
        shown = "—" if value is None else f"`{_toml_value(value).strip(chr(34))}`"
        rows.append(f"| {name} | `--{name.replace('_', '-')}` | `{env_name(name)}` | {shown} "
                    f"| {setting.allowed}: {setting.help} |")
    return "\n".join(rows) + "\n"
