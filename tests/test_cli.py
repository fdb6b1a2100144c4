"""The command as a user runs it: subprocesses, exit codes, signals, and no secret anywhere."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.outdir import OutputLock

SECRET = "sEcReT-token/with+chars=="
pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str] | None = None,
        **kw: object) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CPH_AUTH_TOKEN": SECRET, **(env or {})}
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True,
                          text=True, env=full_env, timeout=120, **kw)  # type: ignore[call-overload]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A fake-server subprocess: (url, project_id, ids file)."""
    ids = tmp_path / "ids.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "300", "--seed", "4",
         "--latency", "0.01", "--ids-file", str(ids)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CPH_AUTH_TOKEN": SECRET})
    assert proc.stdout is not None
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    match = re.search(r"listening on (\S+) \(project (\w+);", "".join(lines))
    assert match, lines
    yield match.group(1), match.group(2), ids
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)


def test_a_run_writes_parquet_prints_one_summary_and_leaks_no_secret(
        server: tuple[str, str, Path], tmp_path: Path) -> None:
    url, project, ids = server
    out = tmp_path / "out"
    done = cli("run", "--input", str(ids), "--project-id", project, "--endpoint", url,
               "--output", str(out), "--log-level", "debug", "--rate-limit", "5000")
    assert done.returncode == 0, done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("run ")]
    assert len(summary) == 1
    assert re.search(r"finished: 300 images \(300 ok, .*exit 0$", summary[0])
    manifest = orjson.loads(next((out / "runs").glob("*.json")).read_bytes())
    assert manifest["status"] == "finished" and manifest["counts"]["ok"] == 300
    everything = done.stdout + done.stderr + "".join(
        p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
    for form in (SECRET, "sEcReT-token%2Fwith%2Bchars%3D%3D", "sEcReT-token"):
        assert form not in everything


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency='0': must be a whole number from 1 to 1024"),
    (["--rate-limit", "-1"], "--rate-limit='-1'"),
    (["--input", "/nonexistent/ids.txt"], "input /nonexistent/ids.txt: no such file"),
    (["--input", "/"], "input /: is a directory"),
    (["--input", "EMPTY"], "no image IDs"),
    (["--endpoint", ""], "endpoint: not set"),
    (["--output", "FILE/sub"], "not writable"),
    (["--discover", "true"], "--input FILE or --discover: give exactly one"),
    (["--input", "NONE"], "--input FILE or --discover: give exactly one"),
])
def test_bad_usage_is_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    (tmp_path / "file").write_text("x")
    base = {"--input": str(ids), "--project-id": "p1", "--endpoint": "http://127.0.0.1:9",
            "--output": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value.replace("EMPTY", str(tmp_path / "empty.txt")).replace(
            "FILE", str(tmp_path / "file"))
    if base["--input"] == "NONE":
        del base["--input"]
    done = cli("run", *[x for pair in base.items() for x in pair])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_discovery_from_the_command_line_lists_iams_projects_and_collects_every_image(
        server: tuple[str, str, Path], tmp_path: Path) -> None:
    url = server[0]
    out = tmp_path / "out"
    done = cli("run", "--discover", "--endpoint", url, "--iam-endpoint", url, "--region",
               "cn-north-4", "--output", str(out), "--rate-limit", "5000")
    # IAM lists a project these credentials may not read: two forbidden listings, exit 1
    assert done.returncode == 1, done.stderr
    assert re.search(r"finished: listed 307 images in 6 listings of 3 projects \(0 failed, "
                     r"2 forbidden\); 301 images \(301 ok,", done.stdout), done.stdout
    assert f"{out}/images, {out}/listing_status;" in done.stdout
    manifest = orjson.loads(next((out / "runs").glob("*.json")).read_bytes())
    assert (manifest["input"], manifest["counts"]["private_images_listed"]) == ("discover", 301)


def test_no_token_is_exit_2() -> None:
    done = subprocess.run([sys.executable, "-m", "collector", "run", "--input", "x.txt",
                           "--project-id", "p", "--endpoint", "http://127.0.0.1:9"],
                          capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "CPH_AUTH_TOKEN"})
    assert done.returncode == 2 and "CPH_AUTH_TOKEN: not set" in done.stderr


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        done = cli("run", "--input", str(ids), "--project-id", "p", "--endpoint",
                   "http://127.0.0.1:9", "--output", str(out))
    assert done.returncode == 2 and "another cph-collector run" in done.stderr


def test_a_refused_endpoint_is_exit_3(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"img{i}\n" for i in range(50)))
    done = cli("run", "--input", str(ids), "--project-id", "p", "--endpoint",
               "http://127.0.0.1:9", "--output", str(tmp_path / "out"), "--backoff-base", "0.01",
               "--rate-limit", "5000")
    assert done.returncode == 3, done.stderr
    assert "cannot connect" in done.stderr and "check --endpoint" in done.stderr


def wait_for_progress(proc: subprocess.Popen[str]) -> str:
    """Read the run's stderr until a progress line shows images done; returns that line."""
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.match(r"progress: (?:\d+% )?([\d,]+) images", line)
        if found and int(found.group(1).replace(",", "")) > 0:
            return line
    raise AssertionError(f"no progress line before the run ended (exit {proc.wait()})")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_commits_and_publishes_nothing(
        server: tuple[str, str, Path], tmp_path: Path, signum: int, code: int) -> None:
    url, project, ids = server
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id", project,
         "--endpoint", url, "--output", str(out), "--rate-limit", "40",
         "--progress-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CPH_AUTH_TOKEN": SECRET})
    wait_for_progress(proc)  # mid-run: some images done, most not
    started = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert time.monotonic() - started < 8
    assert re.search(r"interrupted: .*exit " + str(code), stdout)
    manifest = orjson.loads(next((out / "runs").glob("*.json")).read_bytes())
    assert manifest["status"] == "interrupted" and manifest["exit_code"] == code
    assert 0 < manifest["counts"]["status_rows"] < 300
    assert not list((out / "image_status").glob("*/*.parquet"))


def test_a_stop_while_reading_a_pipe_that_never_ends_returns_within_the_grace(
        server: tuple[str, str, Path], tmp_path: Path) -> None:
    url, project, ids = server
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "run", "--input", "-", "--project-id", project,
         "--endpoint", url, "--output", str(tmp_path / "out"), "--progress-interval", "0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CPH_AUTH_TOKEN": SECRET})
    assert proc.stdin is not None
    proc.stdin.write(ids.read_text().split()[0] + "\n")  # one ID, and the pipe stays open
    proc.stdin.flush()
    runs = tmp_path / "out" / "runs"
    deadline = time.monotonic() + 30
    while not (runs.is_dir() and any(runs.glob("*.json"))):  # the run has begun: its reader
        assert proc.poll() is None and time.monotonic() < deadline  # waits on the pipe
        time.sleep(0.05)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)  # stdin stays open: communicate() would close it
    finally:
        proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 143, stderr
    assert time.monotonic() - started < 5 + 2  # GRACE, and start-up slack
    assert "generator already executing" not in stderr and "Traceback" not in stderr
    assert re.search(r"^run \S+ interrupted: .*exit 143$", stdout, re.M)


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = cli("demo", "--output", str(tmp_path / "out"), "--images", "600")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^run \S+ finished: .*exit 0$", done.stdout, re.M)
    assert "the images shared with the most projects" in done.stdout


def test_the_demo_writes_to_an_s3_server_it_starts_itself() -> None:
    done = cli("demo", "--output", "s3://demo-bucket/nightly", "--with-s3", "--images", "400")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^demo: an S3 server \(moto\) on http://127\.0\.0\.1:\d+, bucket "
                     r"demo-bucket$", done.stdout, re.M)
    assert len(re.findall(r"^run \S+ finished: .*exit 0$", done.stdout, re.M)) == 2
    assert re.search(r"^demo: read back from the bucket with pyarrow: image_status has [\d,]+ "
                     r"rows over 2 snapshot dates; ", done.stdout, re.M)
    assert "demo: wrote s3://demo-bucket/nightly/images/" in done.stdout


@pytest.mark.parametrize("method", ["aksk", "password"])
def test_signed_and_iam_runs_from_the_command_line_leak_no_secret(
        tmp_path: Path, method: str) -> None:
    ak, sk, password = "AKCLITEST01", "Sk-cli/Secret+9==", "Pw-cli/Secret+7=="
    env = {**os.environ, "HUAWEICLOUD_SDK_AK": ak, "HUAWEICLOUD_SDK_SK": sk,
           "CPH_IAM_PASSWORD": password}
    env.pop("CPH_AUTH_TOKEN", None)
    ids = tmp_path / "ids.txt"
    server = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "50", "--aksk",
         "--iam-user", "acct/alice", "--ids-file", str(ids)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        lines = server.stdout.readline() + server.stdout.readline()
        url, project = re.search(r"listening on (\S+) \(project (\w+);", lines).groups()  # type: ignore[union-attr]
        if method == "password":
            env = {k: v for k, v in env.items() if not k.startswith("HUAWEICLOUD_SDK")}
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id",
             project, "--endpoint", url, "--iam-endpoint", url, "--iam-user", "alice",
             "--iam-domain", "acct", "--output", str(out), "--log-level", "debug",
             "--rate-limit", "5000"],
            capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        manifest = orjson.loads(next((out / "runs").glob("*.json")).read_bytes())
        assert manifest["auth"]["method"].startswith("AK/SK" if method == "aksk" else "IAM")
        written = done.stdout + done.stderr + "".join(
            p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
        for secret in (sk, password, "Sk-cli%2FSecret", "Pw-cli%2FSecret"):
            assert secret not in written
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)


def test_an_unreadable_ca_bundle_is_exit_2(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    (tmp_path / "ca.pem").write_text("not a certificate")
    done = cli("run", "--input", str(ids), "--project-id", "p", "--region", "cn-north-4",
               "--output", str(tmp_path / "out"), "--ca-bundle", str(tmp_path / "ca.pem"))
    assert done.returncode == 2
    assert done.stderr.startswith("cph-collector: error: ca_bundle ") and "PEM" in done.stderr


def test_ids_can_come_from_stdin(server: tuple[str, str, Path], tmp_path: Path) -> None:
    url, project, ids = server
    done = cli("run", "--input", "-", "--project-id", project, "--endpoint", url,
               "--output", str(tmp_path / "out"), "--rate-limit", "5000",
               input=ids.read_text() + "bad/id\n")
    assert done.returncode == 0, done.stderr
    assert re.search(r"finished: 301 images \(300 ok, .*1 invalid_id\)", done.stdout)


def test_a_closed_stdin_is_exit_2_naming_it(tmp_path: Path) -> None:
    """As cron or a careless ``<&-`` leaves it."""
    done = cli("run", "--input", "-", "--project-id", "p", "--endpoint", "http://127.0.0.1:9",
               "--output", str(tmp_path / "out"), preexec_fn=lambda: os.close(0))
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("cph-collector: error: input -: standard input is closed; pipe the "
                           "IDs in, or give --input FILE\n")


def test_a_run_never_loads_pandas(server: tuple[str, str, Path], tmp_path: Path) -> None:
    """pyarrow would import pandas (when installed) to convert lists: 49 MB for nothing.
    (``-X importtime`` lists the refused ``import pandas`` too, but none of its modules.)"""
    url, project, ids = server
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "collector", "run", "--input", str(ids),
         "--project-id", project, "--endpoint", url, "--output", str(tmp_path / "out"),
         "--rate-limit", "5000"],
        capture_output=True, text=True, env={**os.environ, "CPH_AUTH_TOKEN": SECRET}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "pyarrow.lib" in imported
    assert not [name for name in imported if name.startswith("pandas.")]


def test_check_from_the_command_line_passes_then_names_a_wrong_token(
        server: tuple[str, str, Path], tmp_path: Path) -> None:
    url, project, ids = server
    args = ("check", "--input", str(ids), "--project-id", project, "--endpoint", url,
            "--output", str(tmp_path / "out"))
    good = cli(*args)
    assert good.returncode == 0, good.stderr
    assert re.findall(r"^check (\w+): ok ", good.stdout, re.M) == [
        "settings", "input", "ca_bundle", "proxy", "output", "credentials", "endpoint"]
    assert good.stdout.endswith("check: 7 of 7 passed\n")
    wrong = cli(*args, env={"CPH_AUTH_TOKEN": "a-wrong-token-1234"})
    assert wrong.returncode == 3
    assert re.search(r"^check credentials: failed \(credentials rejected: HTTP 401 ",
                     wrong.stdout, re.M)
    assert "a-wrong-token-1234" not in wrong.stdout + wrong.stderr
    assert not (tmp_path / "out" / "runs").exists()  # nothing written


def test_a_publish_refused_by_a_held_lock_says_to_run_the_publish_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out, run_id="20261202T040000Z-abcdef"):
        done = cli("publish", "--output", str(out), "--snapshot-date", "2026-12-01",
                   "--shards", "3")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"cph-collector: error: publish of 2026-12-01 refused: another cph-collector run "
        f"(run 20261202T040000Z-abcdef, pid {os.getpid()}) is writing to the output {out}; "
        "nothing was published: run this publish again after it ends (it then publishes the "
        "night, or gives the verdict of the publish that did)")
