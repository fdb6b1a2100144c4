"""Settings: precedence, one clear line for a bad value, and the shipped TOML = the defaults."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from pathlib import Path

import pytest

from collector.config import SPECS, Settings, load_settings
from collector.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_config_file_lists_every_setting_with_the_builtin_default() -> None:
    text = (ROOT / "config" / "collector.toml").read_text()
    for name in SPECS:
        assert f"{name} = " in text, name
    assert load_settings({}, {}, ROOT / "config" / "collector.toml") == Settings()
    assert "token" not in tomllib.loads(text)  # no secret has a place there


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rate_limit = 10\nconcurrency = 8\nmax_attempts = 3\n")
    env = {"CPH_RATE_LIMIT": "20", "CPH_CONCURRENCY": "9"}
    settings = load_settings({"rate_limit": "30"}, env, config)
    assert (settings.http.rate_limit, settings.http.concurrency,
            settings.retry.max_attempts) == (30.0, 9, 3)
    assert settings.http.read_timeout == Settings().http.read_timeout


@pytest.mark.parametrize(("flags", "message"), [
    ({"concurrency": "0"}, "--concurrency='0': must be a whole number from 1 to 1024"),
    ({"rate_limit": "-5"}, "--rate-limit='-5': must be a number > 0"),
    ({"rate_limit": "nan"}, "--rate-limit='nan'"),
    ({"read_timeout": "0"}, "--read-timeout='0'"),
    ({"endpoint": "ftp://x"}, "--endpoint='ftp://x': must be an http(s) URL"),
    ({"endpoint": "https://user:pw@host"}, "--endpoint="),
    ({"project_id": "a/b"}, "--project-id='a/b'"),
    ({"snapshot_date": "yesterday"}, "--snapshot-date='yesterday': must be a date"),
    ({"input_format": "xml"}, "--input-format='xml'"),
])
def test_a_bad_setting_names_itself_and_what_is_allowed(flags: dict[str, str],
                                                       message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(flags, {})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(UsageError, match=r"^CPH_MAX_ATTEMPTS='99'"):
        load_settings({}, {"CPH_MAX_ATTEMPTS": "99"})


def test_an_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rate_limt = 10\n")
    with pytest.raises(UsageError, match="rate_limt: unknown setting"):
        load_settings({}, {}, config)


def test_a_broken_toml_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rate_limit = = 3\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings({}, {}, config)


def test_settings_are_frozen_and_typed() -> None:
    settings = load_settings({"snapshot_date": "2026-01-02", "output": "x"}, {})
    assert settings.output.snapshot_date == dt.date(2026, 1, 2)
    assert settings.output.location == Path("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.http.rate_limit = 1  # type: ignore[misc]


def test_backoff_cap_below_base_is_rejected() -> None:
    with pytest.raises(UsageError, match="backoff_cap"):
        load_settings({"backoff_base": "10", "backoff_cap": "5"}, {})


@pytest.mark.parametrize(("flags", "message"), [
    ({"concurrency": 5.7}, "--concurrency=5.7: must be a whole number from 1 to 1024"),
    ({"concurrency": "5.7"}, "--concurrency='5.7': must be a whole number from 1 to 1024"),
    ({"read_timeout": "90"}, "read_timeout=90: must be <= request_timeout (60)"),
    ({"connect_timeout": "61"}, "connect_timeout=61: must be <= request_timeout (60)"),
    ({"proxy": "socks5://127.0.0.1:1080"}, "--proxy='socks5://127.0.0.1:1080': must be an "
                                           "http:// or https:// proxy URL"),
    ({"proxy": "http://proxy:99999"}, "--proxy='http://proxy:99999'"),
    ({"proxy": "http://u:p@proxy:3128"}, "--proxy: a proxy user and password are secrets"),
])
def test_settings_that_would_be_silently_wrong_are_refused(flags: dict[str, object],
                                                           message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(flags, {})
    assert str(caught.value).startswith(message)


def test_a_whole_number_in_toml_may_be_written_as_a_float_only_when_it_is_whole(
        tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrency = 8.0\n")
    assert load_settings({}, {}, config).http.concurrency == 8
    config.write_text("concurrency = 5.7\n")
    with pytest.raises(UsageError, match=r"c.toml: concurrency=5.7: must be a whole number"):
        load_settings({}, {}, config)


def test_proxy_credentials_may_come_from_the_environment_and_are_redacted() -> None:
    settings = load_settings({}, {"CPH_PROXY": "http://job:s3cret-pw@proxy.example:3128"})
    assert settings.http.proxy == "http://job:s3cret-pw@proxy.example:3128"
    assert settings.public()["proxy"] == "http://***@proxy.example:3128"


def test_the_shipped_toml_and_the_readme_table_come_from_the_declarations() -> None:
    from collector.config import render_table, render_toml

    assert (ROOT / "config" / "collector.toml").read_text() == render_toml()
    assert render_table() in (ROOT / "README.md").read_text()


URL_PROBLEMS = [
    ("http://cph.example\r\nX-Smuggled: 1", "it contains whitespace or a control character"),
    ("http://cph.example/v1 ", "it contains whitespace or a control character"),
    ("http://cph.example\t", "it contains whitespace or a control character"),
    ("http://cph.example#top", "it has a fragment"),
    ("http://cph.example?", "it has a query"),
    ("http://cph.example/?a=1", "it has a query"),
    ("https://user:pw@cph.example", "it has a user or password"),
    ("http://cph.example:0", "its port is not a number from 1 to 65535"),
    ("http://cph.example:65536", "its port is not a number from 1 to 65535"),
    ("http://cph.example:", "its port is not a number from 1 to 65535"),
    ("http://cph.example:80a", "its port is not a number from 1 to 65535"),
    ("http://", "its host is missing or malformed"),
    ("http://cph_example%2F", "its host is missing or malformed"),
    ("http:/cph.example", "it does not start with http:// or https://"),
]


@pytest.mark.parametrize(("value", "why"), URL_PROBLEMS, ids=[v for v, _ in URL_PROBLEMS])
@pytest.mark.parametrize("setting", ["endpoint", "iam_endpoint"])
def test_an_endpoint_is_a_url_and_nothing_else(setting: str, value: str, why: str) -> None:
    flag = "--" + setting.replace("_", "-")
    with pytest.raises(UsageError) as caught:
        load_settings({setting: value}, {})
    message = str(caught.value)
    assert message.startswith(f"{flag}=")
    assert message.endswith(f"({why})") or f"({why}," in message
    assert "\n" not in message and "pw@" not in message


@pytest.mark.parametrize("value", ["http://proxy.example:3128\r\n", "http://proxy:99999",
                                   "http://proxy.example:3128/path", "http://proxy#x"])
@pytest.mark.parametrize("where", ["CPH_PROXY", "HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_is_a_url_and_its_password_never_shows_in_the_error(where: str,
                                                                    value: str) -> None:
    secret_value = value.replace("://", "://job:pr0xy-pw@")
    with pytest.raises(UsageError) as caught:
        load_settings({}, {where: secret_value})
    message = str(caught.value)
    assert message.startswith(f"{where}='http://***@proxy")
    assert "pr0xy-pw" not in message and "job" not in message and "\n" not in message


def test_good_urls_pass_as_given() -> None:
    settings = load_settings({"endpoint": "https://[::1]:8443/cph/", "proxy": "http://p:3128"},
                             {"HTTPS_PROXY": "http://u:pw@proxy.example:8080/"})
    assert (settings.http.endpoint, settings.http.proxy) == ("https://[::1]:8443/cph", "http://p:3128")


def test_a_refused_value_shows_its_reason_whatever_its_first_words(tmp_path: Path) -> None:
    """The reason is shown because the parser gave one (``Refused``), not because its
    wording starts with "it": the .prom rule's reason used to be dropped."""
    with pytest.raises(UsageError) as caught:
        load_settings({"metrics_file": str(tmp_path / "m.txt")}, {})
    assert str(caught.value) == (f"--metrics-file={str(tmp_path / 'm.txt')!r}: must be a file "
                                 "path ending in .prom (the textfile collector reads only files "
                                 "named *.prom)")
