"""Metrics for the machines that watch a nightly job, and logs for the ones that ship them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from collector.fake import Dataset, FakeCph
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
SECRET = "metrics-test-token-5b2d"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a metrics text, read by prometheus_client's own parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found[("cph_collector_" + name, frozenset(labels.items()))]


def manifest(out: Run) -> dict[str, object]:
    return orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())


async def test_the_metrics_file_says_what_the_manifest_says(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=71, images=90)
    fake = await fake_factory(dataset, script={dataset.image_ids()[0]: ["not_found"]})
    path = tmp_path / "cph.prom"
    out = await collect(fake, dataset.image_ids(), metrics_file=path)
    found = samples(path.read_text())
    counts = manifest(out)["counts"]
    assert isinstance(counts, dict)
    assert value(found, "images", status="ok") == counts["ok"] == 89
    assert value(found, "images", status="not_found") == counts["not_found"] == 1
    assert value(found, "images", status="failed") == 0
    assert value(found, "member_rows") == counts["member_rows"]
    assert value(found, "requests_total") == out.record.requests
    assert value(found, "retries_total") == out.record.retries
    assert value(found, "throttled_total") == out.record.throttled
    assert value(found, "exit_code") == 0 and value(found, "running") == 0
    assert value(found, "rate_limit_per_second", kind="configured") == 100_000
    assert out.record.ended_at is not None
    assert value(found, "last_success_timestamp_seconds") == out.record.ended_at.timestamp()
    assert value(found, "last_run_timestamp_seconds") == out.record.started_at.timestamp()
    assert not any("snapshot_date" in dict(labels) for _, labels in found)
    assert [n for n in os.listdir(tmp_path) if n.startswith("cph.prom")] == ["cph.prom"]


async def test_a_failed_run_leaves_a_valid_file_and_does_not_move_the_last_success(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=72, images=30)
    path = tmp_path / "cph.prom"
    good = await collect(await fake_factory(dataset), dataset.image_ids(), metrics_file=path)
    assert good.record.ended_at is not None
    success = good.record.ended_at.timestamp()
    bad = await collect(await fake_factory(dataset, script={
        i: ["unauthorized"] * 9 for i in dataset.image_ids()}), dataset.image_ids(),
        metrics_file=path, chunk_images=5)
    assert bad.record.exit_code == 3
    found = samples(path.read_text())
    assert value(found, "exit_code") == 3
    assert value(found, "last_success_timestamp_seconds") == success  # unmoved
    assert bad.record.started_at.timestamp() == value(found, "last_run_timestamp_seconds")


async def test_a_usage_error_still_writes_the_metrics_with_exit_2(
        fake: FakeCph, collect: Collect, tmp_path: Path) -> None:
    path = tmp_path / "cph.prom"
    (tmp_path / "out").write_text("a file where the output folder should be")
    out = await collect(fake, fake.dataset.image_ids(), metrics_file=path)
    assert out.error is not None and out.error.exit_code == 2
    found = samples(path.read_text())
    assert value(found, "exit_code") == 2
    assert value(found, "last_success_timestamp_seconds") == 0  # never yet


async def test_the_metrics_file_is_rewritten_at_every_progress_interval(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.metrics

    writes: list[str] = []
    real = collector.metrics.write_file

    def counted(path, registry):  # type: ignore[no-untyped-def]
        real(path, registry)
        writes.append(path.read_text())

    monkeypatch.setattr(collector.metrics, "write_file", counted)
    dataset = Dataset(seed=73, images=60)
    fake = await fake_factory(dataset)
    await collect(fake, dataset.image_ids(), metrics_file=tmp_path / "cph.prom",
                  rate_limit=150, progress_interval=0.1, concurrency=2)
    assert len(writes) >= 3  # a few intervals, then the end
    running = [samples(w) for w in writes[:-1]]
    assert all(value(s, "running") == 1 for s in running)
    done = [value(s, "images", status="ok") for s in running]
    assert done == sorted(done) and done[-1] < 60
    assert value(samples(writes[-1]), "images", status="ok") == 60


async def test_the_metrics_are_pushed_to_a_pushgateway_and_one_that_is_down_is_a_warning(
        fake: FakeCph, collect: Collect, caplog: pytest.LogCaptureFixture) -> None:
    pushed: list[tuple[str, str, bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        pushed.append((request.method, request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        out = await collect(fake, fake.dataset.image_ids(), region="cn-north-4",
                            pushgateway=f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert out.record.exit_code == 0
    ((method, path, body),) = pushed
    assert method == "PUT"
    assert path == "/metrics/job/cph_collector/region/cn-north-4"  # no host: the same nightly
    found = samples(body.decode())
    assert value(found, "images", status="ok") == out.record.counts["ok"]

    down = await collect(fake, fake.dataset.image_ids(), pushgateway=f"http://127.0.0.1:{port}")
    assert down.record.exit_code == 0  # still a good run
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith(f"pushgateway http://127.0.0.1:{port}: push failed (")
               for m in warnings), warnings


@pytest.mark.e2e
def test_an_interrupted_run_in_json_logs_leaves_metrics_and_one_json_object_a_line(
        tmp_path: Path) -> None:
    env = {**os.environ, "CPH_AUTH_TOKEN": SECRET}
    ids = tmp_path / "ids.txt"
    server = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "300", "--ids-file",
         str(ids)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        lines = server.stdout.readline() + server.stdout.readline()
        url, project = re.search(r"listening on (\S+) \(project (\w+);", lines).groups()  # type: ignore[union-attr]
        out, prom = tmp_path / "out", tmp_path / "cph.prom"
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id",
             project, "--endpoint", url, "--output", str(out), "--rate-limit", "40",
             "--progress-interval", "0.2", "--log-format", "json", "--metrics-file", str(prom)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(orjson.loads(line))
            if seen[-1].get("event") == "progress" and seen[-1]["images"] > 0:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)
    assert proc.returncode == 130
    records = seen + [orjson.loads(line) for line in stderr.splitlines()]
    doc = orjson.loads((next((out / "runs").glob("*.json"))).read_bytes())
    assert {r["run_id"] for r in records} == {doc["run_id"]}
    assert all({"time", "level"} <= r.keys() for r in records)
    assert any(r.get("message", "").startswith("SIGINT: stopping") for r in records)
    (summary,) = [orjson.loads(line) for line in stdout.splitlines()]
    assert (summary["event"], summary["status"], summary["exit_code"]) == \
        ("summary", "interrupted", 130)
    assert summary["counts"] == doc["counts"]
    assert SECRET not in stdout + stderr + prom.read_text()
    found = samples(prom.read_text())
    assert value(found, "exit_code") == 130 and value(found, "running") == 0
    assert value(found, "images", status="ok") == doc["counts"]["ok"]  # type: ignore[index]


async def test_the_metrics_file_has_no_created_series(fake: FakeCph, collect: Collect,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "cph.prom"
    await collect(fake, fake.dataset.image_ids(), metrics_file=path)
    text = path.read_text()
    assert "cph_collector_requests_total" in text and "_created" not in text


async def test_the_metrics_file_moves_during_a_discovery_listing_too(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.metrics

    dataset = Dataset(seed=74, projects=1, images=300, with_doc_example=False,
                      locked_project=False)
    fake = await fake_factory(dataset, latency=0.05)  # each listing page takes a while
    pages_at_write: list[int] = []  # listing pages answered when the file was written
    real = collector.metrics.write_file

    def counted(path, registry):  # type: ignore[no-untyped-def]
        real(path, registry)
        pages_at_write.append(sum(1 for e in fake.log if e.path.endswith("/cloud-phone/images")))

    monkeypatch.setattr(collector.metrics, "write_file", counted)
    out = await collect(fake, discover=True, metrics_file=tmp_path / "cph.prom",
                        progress_interval=0.02, project_id=dataset.project_ids[0])
    assert out.record.exit_code == 0
    pages = sum(1 for e in fake.log if e.path.endswith("/cloud-phone/images"))
    assert pages_at_write[0] < pages  # written while it listed
    assert pages_at_write[-1] == pages  # and at the end


@pytest.mark.parametrize(("mode", "reason"), [
    ("not_http", "BadStatusLine"), ("huge_header", "got more than 65536 bytes"),
    ("many_headers", "got more than 100 headers"), ("reason", "HTTP 500 Bad\\x1b[2J\\x07 things")])
async def test_a_pushgateway_that_answers_garbage_is_a_warning_and_the_run_stays_good(
        fake: FakeCph, collect: Collect, caplog: pytest.LogCaptureFixture, mode: str,
        reason: str) -> None:
    from tests.pushgateway import BadPushgateway

    with BadPushgateway(mode) as gateway:
        out = await collect(fake, fake.dataset.image_ids(), pushgateway=gateway.url)
    assert (out.error, out.record.exit_code, out.record.status) == (None, 0, "finished")
    assert len(gateway.pushes) == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"pushgateway {gateway.url}: push failed (")
    assert reason in warning, warning
    assert "\x1b" not in warning and "\x07" not in warning


async def test_a_pushgateway_that_trickles_cannot_hold_the_finished_night(
        fake: FakeCph, collect: Collect, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One header byte every 50 ms: each read is within urllib's timeout, so only an overall
    deadline ends it."""
    import time

    import collector.metrics
    from tests.pushgateway import BadPushgateway

    monkeypatch.setattr(collector.metrics, "PUSH_DEADLINE", 0.5)
    with BadPushgateway("trickle") as gateway:
        started = time.monotonic()
        out = await collect(fake, fake.dataset.image_ids(), pushgateway=gateway.url)
        took = time.monotonic() - started
    assert (out.record.exit_code, out.record.status) == (0, "finished")
    assert took < 5
    assert any(r.getMessage() == f"pushgateway {gateway.url}: push failed (no answer within "
                                 "0.5 s)" for r in caplog.records)


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_metrics_file_that_is_not_a_regular_file_is_exit_2_before_the_run(
        tmp_path: Path, kind: str) -> None:
    target = tmp_path / "m.prom"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target = tmp_path / "null.prom"
        target.symlink_to("/dev/null")
    ids = tmp_path / "ids.txt"
    ids.write_text("img-1\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id", "p1",
         "--endpoint", "http://127.0.0.1:9", "--output", str(tmp_path / "out"),
         "--metrics-file", str(target)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "CPH_AUTH_TOKEN": SECRET})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cph-collector: error: --metrics-file={str(target)!r}: must be a file path ending in "
        ".prom (it is a FIFO, a device or a folder, not a regular file)"], done.stderr
    assert not (tmp_path / "out").exists()


async def test_the_metrics_file_carries_every_listing_count_of_the_manifest(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=75, projects=1, images=150, with_doc_example=False)
    project = dataset.project_ids[0]
    listed = dataset.listed(project, "private")
    fake = await fake_factory(dataset, listing_lies={project: "overlap"}, listed_fields={
        listed[0]: {"create_time": "not a time"}, listed[1]: {"status": -1},
        listed[2]: {"image_size": 2**63}})
    path = tmp_path / "cph.prom"
    out = await collect(fake, discover=True, project_id=project, metrics_file=path,
                        snapshot_date=None)
    assert out.record.exit_code == 0, out.error
    found = samples(path.read_text())
    counts = manifest(out)["counts"]
    assert isinstance(counts, dict)
    assert (counts["unreadable_image_times"], counts["unfit_image_values"],
            counts["repeated_listed_images"]) == (1, 2, 1)
    for name in ("projects", "images_listed", "private_images_listed", "unreadable_image_times",
                 "unfit_image_values", "repeated_listed_images"):
        assert value(found, name) == counts[name], name
    for status in ("ok", "forbidden", "failed"):
        assert value(found, "listings", status=status) == counts[f"listings_{status}"], status
