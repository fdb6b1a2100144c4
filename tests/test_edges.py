"""A careless user's edges: each one line and the right exit code, never a raw Python message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from collector.store import reason
from tests.pushgateway import BadPushgateway
from tests.test_hostile import fake_server

TOKEN = "edges-token-123456"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "CPH_AUTH_TOKEN": TOKEN, **(env or {})})


def test_diff_from_a_date_later_than_to_is_exit_2(tmp_path: Path) -> None:
    done = cli("diff", "--output", str(tmp_path), "--from", "2026-12-02", "--to", "2026-12-01")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["cph-collector: error: --from=2026-12-02 is later than "
                                        "--to=2026-12-01: give the earlier snapshot as --from"]


def test_a_huge_trusted_projects_file_is_exit_2_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "partners.txt"
    with huge.open("wb") as handle:  # sparse: 99 MB that cost nothing to make
        handle.truncate(99 << 20)
    done = cli("diff", "--output", str(tmp_path), "--from", "2026-12-01", "--to", "2026-12-02",
               "--trusted-projects", f"@{huge}")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cph-collector: error: --trusted-projects='@{huge}': must be project IDs, "
        f"comma-separated, or @FILE with one a line (its file {huge} is over 16 MiB (a partner "
        "list of 200,000 projects is 7 MiB))"]


@pytest.mark.parametrize("index", ["²", "x", "7", "\x1b[2J"])
def test_a_job_completion_index_that_is_not_a_small_number_is_one_line_exit_2(
        tmp_path: Path, index: str) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("img-1\n")
    done = cli("run", "--input", str(ids), "--project-id", "p1", "--endpoint",
               "http://127.0.0.1:9", "--output", str(tmp_path / "out"), "--shards", "3",
               env={"JOB_COMPLETION_INDEX": index})
    assert done.returncode == 2
    shown = index.replace("\x1b", "\\x1b")
    assert done.stderr.splitlines() == [
        "cph-collector: error: --shards 3 takes the shard from JOB_COMPLETION_INDEX (0 to 2), "
        f"which is {shown}"]


@pytest.fixture
def silent_store() -> Iterator[int]:
    """A port that accepts connections and never answers (a store that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_store_that_times_out_is_called_a_timeout_not_cannot_connect(
        silent_store: int) -> None:
    def error(port: int) -> str:
        fs = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", region="us-east-1",
                               access_key="AKSTORETEST000000000", secret_key="s" * 40,
                               connect_timeout=0.5, request_timeout=0.5,
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        with pytest.raises(OSError, match="NETWORK_CONNECTION") as caught:
            fs.get_file_info("bucket/key")
        return reason(caught.value)

    assert error(silent_store) == "the store did not answer in time (timeout), in HeadObject"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert error(port) == "cannot connect to the store, in HeadObject"


def test_check_says_whether_the_metrics_file_and_the_pushgateway_would_work(
        tmp_path: Path) -> None:
    env = {"CPH_AUTH_TOKEN": TOKEN}
    with fake_server(tmp_path, env=env) as (url, project, ids), BadPushgateway("ok") as ready:
        common = ("check", "--input", str(ids), "--project-id", project, "--endpoint", url,
                  "--output", str(tmp_path / "out"))
        good = cli(*common, "--metrics-file", str(tmp_path / "m.prom"),
                   "--pushgateway", ready.url)
        bad = cli(*common, "--metrics-file", str(tmp_path / "nowhere" / "m.prom"),
                  "--pushgateway", "http://127.0.0.1:9")
    assert good.returncode == 0, good.stdout
    assert f"check metrics_file: ok ({tmp_path / 'm.prom'}: its folder is writable)" in \
        good.stdout.splitlines()
    assert f"check pushgateway: ok ({ready.url}: ready)" in good.stdout.splitlines()
    assert not ready.pushes[0]  # a GET of /-/ready: nothing pushed
    assert bad.returncode == 0, bad.stdout  # a run would only warn
    lines = bad.stdout.splitlines()
    assert f"check metrics_file: warning ({tmp_path / 'nowhere' / 'm.prom'}: its folder " \
           f"{tmp_path / 'nowhere'} does not exist; a run would warn and go on)" in lines
    assert any(line.startswith("check pushgateway: warning (http://127.0.0.1:9: not ready (")
               for line in lines), lines


def test_diff_in_json_logs_says_everything_in_json_lines(tmp_path: Path) -> None:
    import orjson

    done = cli("diff", "--output", str(tmp_path), "--from", "2026-12-02", "--to", "2026-12-01",
               env={"CPH_LOG_FORMAT": "json"})
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert orjson.loads(line)["message"].startswith("cph-collector: error: --from=2026-12-02 ")


def test_a_store_error_that_echoes_a_long_session_token_is_redacted_before_it_is_cut() -> None:
    import base64
    import secrets

    from collector.secrets import Secret

    token = "FwoG" + base64.b64encode(secrets.token_bytes(1_500)).decode()
    Secret(token)
    said = reason(OSError(f"Unexpected answer from the store: x-amz-security-token={token}\n"
                          "second line"))
    assert said == "Unexpected answer from the store: x-amz-security-token=***"


@pytest.mark.parametrize("read_timeout", [1.0, 4.0])
def test_a_silent_store_is_waited_for_as_long_as_read_timeout_says(
        silent_store: int, read_timeout: float) -> None:
    import time

    from collector.build import open_store
    from collector.config import Settings
    from collector.store import BucketUrl

    settings = Settings.of(storage_endpoint=f"http://127.0.0.1:{silent_store}", max_attempts=1,
                        connect_timeout=0.5, read_timeout=read_timeout)
    store = open_store(settings, BucketUrl("s3", "bucket", "nightly"), {
        "AWS_ACCESS_KEY_ID": "AKSTORETEST000000000", "AWS_SECRET_ACCESS_KEY": "s" * 40})
    began = time.monotonic()
    with pytest.raises(OSError, match="NETWORK_CONNECTION") as caught:
        store.exists("runs/x.json")
    waited = time.monotonic() - began
    assert reason(caught.value) == "the store did not answer in time (timeout), in HeadObject"
    assert read_timeout - 0.1 < waited < read_timeout + 0.9  # not the AWS SDK's own 3 s
