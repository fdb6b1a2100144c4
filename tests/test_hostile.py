"""A server that echoes our credentials, or sends control characters, against every output.

The fake server runs as its own process (as a user would run it) with faults that echo the
request's credential headers in ``error_msg``, ``X-Request-Id`` and ``Location``; the collector
runs through its CLI. Every output is then searched for any 24-character window of a secret in
plain, URL-encoded, base64 and JSON-escaped form.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import orjson
import pyarrow.parquet as pq
import pytest

from collector.fake.dataset import Dataset
from tests.proxy import ForwardingProxy
from tests.test_faults import Collect, Factory

pytestmark = pytest.mark.e2e
WINDOW = 24
# A real IAM/STS token is 1.5-6 KB of base64: its '+', '/' and '=' change when URL-encoded.
TOKEN = "MIIT" + base64.b64encode(secrets.token_bytes(4_500)).decode()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


@contextmanager
def fake_server(tmp_path: Path, *faults: str, env: dict[str, str],
                extra: tuple[str, ...] = ()) -> Iterator[tuple[str, str, Path]]:
    """The fake CPH as a process, with these ``KIND=RATE`` faults: (url, project, ids file)."""
    ids = tmp_path / "ids.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "60", "--seed", "5",
         "--ids-file", str(ids), *extra, *(a for f in faults for a in ("--fault", f))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    match = re.search(r"listening on (\S+) \(project (\w+);", "".join(lines))
    assert match, lines
    try:
        yield match.group(1), match.group(2), ids
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def windows(secret: str) -> set[str]:
    """Every 24-character window of the secret's forms."""
    found = set()
    for form in (secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                 json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode()):
        found |= {form[i:i + WINDOW] for i in range(len(form) - WINDOW + 1)}
    return found


def leaks(text: str, secret: str) -> list[str]:
    """The 24-character windows of ``secret`` found in ``text`` (none, we hope)."""
    wanted = windows(secret)
    return [text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)
            if text[i:i + WINDOW] in wanted][:3]


def everything(out: Path, done: subprocess.CompletedProcess[str]) -> str:
    """stdout, stderr, every file of the output (Parquet read column by column)."""
    texts = [done.stdout, done.stderr]
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            texts.append(str(pq.read_table(path).to_pylist()))
        else:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_six_kb_tokens_echoed_in_every_place_never_reach_any_output(
        tmp_path: Path, log_format: str) -> None:
    env = {"CPH_AUTH_TOKEN": TOKEN}
    with fake_server(tmp_path, "echo_400=0.3", "echo_redirect=0.2", env=env) as (url, project,
                                                                                 ids):
        out, prom = tmp_path / "out", tmp_path / "m.prom"
        done = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
                   "--output", str(out), "--metrics-file", str(prom), "--log-level", "debug",
                   "--log-format", log_format, "--rate-limit", "5000", "--fail-fast-after",
                   "10000", "--max-failed-share", "1", env=env)
    assert done.returncode == 1, done.stderr  # failed images: the echoing answers (published)
    text = everything(out, done) + prom.read_text()
    assert leaks(text, TOKEN) == []
    assert "***" in text  # the echoes were there, and redacted


@pytest.mark.parametrize(("fault", "code"), [("echo_400", 0), ("echo_401", 3),
                                             ("echo_redirect", 3)])
def test_check_redacts_what_the_server_echoes(tmp_path: Path, fault: str, code: int) -> None:
    env = {"CPH_AUTH_TOKEN": TOKEN}
    with fake_server(tmp_path, f"{fault}=1", env=env) as (url, project, ids):
        done = cli("check", "--input", str(ids), "--project-id", project, "--endpoint", url,
                   "--output", str(tmp_path / "out"), env=env)
    assert done.returncode == code, done.stdout + done.stderr  # a 400 CPS.0001 proves both
    assert leaks(done.stdout + done.stderr, TOKEN) == []
    assert "***" in done.stdout


def test_a_fatal_401_that_echoes_the_token_is_one_redacted_line(tmp_path: Path) -> None:
    env = {"CPH_AUTH_TOKEN": TOKEN}
    with fake_server(tmp_path, "echo_401=1", env=env) as (url, project, ids):
        out = tmp_path / "out"
        done = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
                   "--output", str(out), env=env)
    assert done.returncode == 3
    assert "cph-collector: error: credentials rejected: HTTP 401 APIGW.0301 request with *** " \
           "refused" in done.stderr
    assert leaks(everything(out, done), TOKEN) == []


def test_an_aksk_security_token_and_signature_echoed_are_not_stored(tmp_path: Path) -> None:
    security = "STS" + base64.b64encode(secrets.token_bytes(3_000)).decode()
    env = {"HUAWEICLOUD_SDK_AK": "AKTESTHOSTILE0000001", "HUAWEICLOUD_SDK_SK": "sk-" + "s" * 37,
           "HUAWEICLOUD_SDK_SECURITY_TOKEN": security, "CPH_AUTH_TOKEN": ""}
    with fake_server(tmp_path, "echo_400=1", env=env, extra=("--aksk",)) as (url, project, ids):
        out = tmp_path / "out"
        done = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
                   "--output", str(out), "--rate-limit", "5000", env=env)
    text = everything(out, done)
    assert done.returncode == 1, done.stderr
    assert leaks(text, security) == []
    assert "Signature=***" in text
    assert not re.search(r"Signature=[0-9a-f]{16}", text)
    request_ids = pq.read_table(next((out / "image_status").rglob("*.parquet")),
                                columns=["request_id"]).column(0).to_pylist()
    assert all(len(rid) <= 200 and security[:WINDOW] not in rid for rid in request_ids)


async def test_a_proxy_user_name_is_not_scrubbed_from_paths_and_an_echoed_basic_is(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    """Issue 22: user ``collector`` turned ``/srv/collector/ids.csv`` into ``/srv/***/ids.csv``;
    and a proxy that forwards ``Proxy-Authorization`` to a server that echoes it."""
    dataset = Dataset(seed=3, images=6)
    ids = dataset.image_ids()
    fake = await fake_factory(dataset, script={i: ["echo_400"] for i in ids[:3]})
    folder = tmp_path / "collector"
    folder.mkdir()
    (folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    password = "pr0xy-pass/word+long"
    async with ForwardingProxy(credentials=("collector", password),
                               leak_credentials=True) as proxy:
        url = proxy.url.replace("http://", f"http://collector:{quote(password, safe='')}@")
        out = await collect(fake, input_path=folder / "ids.txt", proxy=url)
    assert out.record.exit_code == 1, out.stderr  # forbidden images: the echoing answers
    manifest = orjson.loads(next((out.output / "runs").glob("*.json")).read_bytes())
    assert manifest["input"] == str(folder / "ids.txt")
    rows = out.statuses()
    assert rows[ids[0]]["error_msg"].endswith(" Basic *** refused")
    basic = base64.b64encode(f"collector:{password}".encode()).decode()
    text = out.stderr + "".join(str(pq.read_table(p).to_pylist()) if p.suffix == ".parquet"
                                else p.read_text() for p in out.output.rglob("*") if p.is_file())
    for form in (password, quote(password, safe=""), basic):
        assert form not in text


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202e]")  # what may steer a terminal


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_from_a_server_never_reach_the_terminal(
        tmp_path: Path, log_format: str) -> None:
    env = {"CPH_AUTH_TOKEN": "hostile-token-1"}
    with fake_server(tmp_path, "hostile_400=0.5", env=env) as (url, project, ids):
        run = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
                  "--output", str(tmp_path / "out"), "--log-format", log_format,
                  "--log-level", "debug", env=env)
    with fake_server(tmp_path, "hostile_401=1", env=env) as (url, project, ids):
        fatal = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
                    "--output", str(tmp_path / "out2"), "--log-format", log_format, env=env)
        check = cli("check", "--input", str(ids), "--project-id", project, "--endpoint", url,
                    "--output", str(tmp_path / "out3"), "--log-format", log_format, env=env)
    assert (run.returncode, fatal.returncode, check.returncode) == (1, 3, 3)
    for done in (run, fatal, check):
        assert not CONTROL.search(done.stdout + done.stderr)
        assert not re.search(r"^run \S+ finished: 0 images; exit 0", done.stdout + done.stderr,
                             re.MULTILINE)
        if log_format == "json":
            assert all(orjson.loads(line) for line in done.stderr.splitlines())
    last = fatal.stderr.splitlines()[-1]
    said = orjson.loads(last)["message"] if log_format == "json" else last
    assert said.startswith("cph-collector: error: credentials rejected: HTTP 401 APIGW.0301 "
                           "denied")
    assert "\\x1b[2J" in check.stdout  # escaped, not dropped: the user sees what was sent


def test_python_warnings_and_the_last_error_line_are_json_lines(tmp_path: Path) -> None:
    done = cli("run", "--input", str(tmp_path / "none.txt"), "--project-id", "p",
               "--endpoint", "http://127.0.0.1:9", "--output", str(tmp_path / "out"),
               "--log-format", "json", env={"CPH_AUTH_TOKEN": "token-12345678",
                                            "PYTHONWARNINGS": "always"})
    assert done.returncode == 2
    lines = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert lines[-1]["level"] == "error"
    assert lines[-1]["message"].startswith("cph-collector: error: input ")


def test_python_warnings_become_log_records(capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from collector.logs import setup_logging

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # not pytest's "error": as a run sees them
        setup_logging("info", "json")
        warnings.warn("a library's warning\x1b[2J", UserWarning, stacklevel=1)
        logging.captureWarnings(False)
    line = capsys.readouterr().err.strip()
    assert orjson.loads(line)["logger"] == "py.warnings"
    assert "\x1b" not in line


def test_warnings_are_log_records_in_a_second_run_of_one_process(
        capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier run's hook taken back by a ``catch_warnings`` block (the demo, a notebook,
    the tests) left logging believing warnings were captured: they went out as plain text."""
    import warnings

    from collector.logs import setup_logging

    with warnings.catch_warnings():
        setup_logging("info", "json")  # the first run; the block puts the old hook back
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging("info", "json")
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        logging.captureWarnings(False)
    assert orjson.loads(capsys.readouterr().err.strip())["logger"] == "py.warnings"


def test_diff_table_escapes_control_characters_in_ids() -> None:
    import datetime as dt
    import io

    import pyarrow as pa

    from collector.diff import render

    table = pa.table({"change": ["added"], "update_time": [dt.datetime(2026, 12, 1)],
                      "project_id": ["p\x1b[2J"], "image_id": ["i\r\nforged"],
                      "member_id": ["m\x07"], "trusted": [False], "run_id": ["r"]})
    stream = io.BytesIO()
    render(table, "table", stream)
    text = stream.getvalue().decode()
    assert not CONTROL.search(text) and text.count("\n") == 2
    assert "p\\x1b[2J" in text and "i\\r\\nforged" in text and "m\\x07" in text


def test_a_token_a_server_cut_before_echoing_it_leaves_no_piece() -> None:
    from collector.secrets import Secret, from_server

    token = "MIIT" + base64.b64encode(secrets.token_bytes(3_000)).decode()
    Secret(token)
    said = from_server(f"bad token {token[1000:1300]}... and {quote(token[:90], safe='')}", 500)
    assert said is not None and said.startswith("bad token ***... and ***")
    assert leaks(said, token) == []
    assert from_server("0f3c2b1a-9d8e-4c7b-a6f5-e4d3c2b1a098", 200) == \
        "0f3c2b1a-9d8e-4c7b-a6f5-e4d3c2b1a098"
