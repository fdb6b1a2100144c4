"""Settings: loaded from flags > environment (CPH_*) > --config TOML > defaults, validated.

Split by job: ``specs`` declares every setting once (type, allowed range, help, group), the
one source of the TOML file ``config/collector.toml``, the environment names, the CLI flags and
the README's table (rendered here); ``kinds`` parses each value; ``groups`` holds them as
frozen value objects (``settings.http``, ``.retry``, ``.auth``, ...). This module loads them
and checks the ones that are fine alone but not together. Secrets are not settings: they come
only from the environment or a file (see ``secrets``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from collector import proxy as proxies
from collector.errors import Refused, UsageError
from collector.groups import Settings
from collector.kinds import PROXY, REGIONS, Spec, check_url
from collector.shards import from_job_index
from collector.specs import AUTH_METHODS, INPUT_FORMATS, LOG_FORMATS, LOG_LEVELS, SPECS, env_name
from collector.store import BucketUrl

__all__ = ["AUTH_METHODS", "INPUT_FORMATS", "LOG_FORMATS", "LOG_LEVELS", "REGIONS", "SPECS",
           "Settings", "Spec", "check_url", "env_name", "load_settings", "render_table",
           "render_toml"]


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
            why = f" ({exc.reason})" if isinstance(exc, Refused) else ""
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
            values["shard"] = from_job_index(values["shards"], env)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    settings = Settings.of(**values)
    check_together(settings)
    for origin, given in (("--proxy", (flags or {}).get("proxy")),
                          (f"{config_file}: proxy", table.get("proxy"))):
        if isinstance(given, str) and proxies.has_credentials(given):
            raise UsageError(f"{origin}: a proxy user and password are secrets; give them in "
                             "CPH_PROXY or HTTPS_PROXY, not on the command line or in a file")
    if settings.http.proxy is not None:
        proxies.register_credentials(settings.http.proxy)
    check_proxy_variables(env)
    return settings


def check_proxy_variables(env: Mapping[str, str]) -> None:
    """HTTP(S)_PROXY and ALL_PROXY are URLs like the ``proxy`` setting; NO_PROXY is a list."""
    for name, value in env.items():
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy") and value.strip():
            try:
                check_url(value, path=False, userinfo=True)
            except Refused as exc:
                raise UsageError(f"{name}={proxies.shown(value)!r}: must be "
                                 f"{PROXY[1]} ({exc})") from None
            proxies.register_credentials(value)


def check_together(settings: Settings) -> None:
    """Settings that are fine alone but not together; ``UsageError`` naming both."""
    _check_regions(settings)
    shards = settings.shards
    if shards.shard is not None:
        if shards.count is not None and shards.count != shards.shard.count:
            raise UsageError(f"shard={shards.shard}: --shards says {shards.count} shards")
    elif shards.publish_when_staged:
        raise UsageError("publish_when_staged: only for a shard (--shard K/N or --shards N)")
    output = settings.output.location
    if isinstance(output, BucketUrl) and output.scheme == "obs" and not (
            settings.output.storage_endpoint or settings.http.regions):
        raise UsageError(f"output={output}: OBS's endpoint comes from region; give --region "
                         "or --storage-endpoint")
    retry, http = settings.retry, settings.http
    if retry.backoff_cap < retry.backoff_base:
        raise UsageError(f"backoff_cap={retry.backoff_cap:g}: must be >= backoff_base "
                         f"({retry.backoff_base:g})")
    for name, value in (("connect_timeout", http.connect_timeout),
                        ("read_timeout", http.read_timeout)):
        if value > http.request_timeout:
            raise UsageError(f"{name}={value:g}: must be <= request_timeout "
                             f"({http.request_timeout:g}), which bounds the whole request")


def _check_regions(settings: Settings) -> None:
    """Several regions: only with discover, projects from IAM, endpoints with ``{region}``."""
    if len(settings.http.regions) <= 1:
        return
    if not settings.source.discover:
        raise UsageError(f"region={settings.http.region}: several regions only with discover "
                         "(input rows do not say their region)")
    if settings.source.project_ids:
        raise UsageError(f"region={settings.http.region}: with several regions, the projects "
                         "come from IAM; drop --project-id or give one region")
    for name, value in (("endpoint", settings.http.endpoint),
                        ("iam_endpoint", settings.auth.iam_endpoint)):
        if value is not None and "{region}" not in value:
            raise UsageError(f"{name}={value}: with several regions it must contain "
                             "{region}, e.g. https://cph.{region}.example.com")


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
    defaults = Settings().flat()
    parts = [TOML_HEADER]
    for name, setting in SPECS.items():
        value = defaults[name]
        line = f'# {name} = ""' if value is None else f"{name} = {_toml_value(value)}"
        parts.append(f"\n# {setting.help} ({setting.allowed})\n{line}\n")
    return "".join(parts)


def render_table() -> str:
    """The README's settings table, from the same declarations."""
    defaults = Settings().flat()
    rows = ["| setting | flag | environment | default | allowed |", "|---|---|---|---|---|"]
    for name, setting in SPECS.items():
        value = defaults[name]
        shown = "—" if value is None else f"`{_toml_value(value).strip(chr(34))}`"
        rows.append(f"| {name} | `--{name.replace('_', '-')}` | `{env_name(name)}` | {shown} "
                    f"| {setting.allowed}: {setting.help} |")
    return "\n".join(rows) + "\n"
