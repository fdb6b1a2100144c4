"""Shards that publish their night (``--publish-when-staged``): exactly one publishes, once
every shard is staged; a retry gives the night's verdict again and collects nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from collector.config import Settings
from collector.errors import ExitCode, FatalRunError
from collector.fake import Dataset, FakeCph
from collector.night import output_lock
from collector.outdir import OutputLock
from collector.store import LocalStore
from tests.conftest import Outcome

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)


def manifests(out: Path) -> list[dict[str, object]]:
    return [orjson.loads(p.read_bytes()) for p in sorted((out / "runs").glob("*.json"))]


def test_the_output_lock_is_waited_for_while_another_shard_publishes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    other = OutputLock(tmp_path).__enter__()  # another shard, publishing
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        if len(slept) == 3:
            other.__exit__(None, None, None)  # its publish is done

    with output_lock(store, "run", wait=60, clock=lambda: now[0], sleep=sleep):
        assert len(slept) == 3  # taken as soon as it was free, not refused
    with OutputLock(tmp_path), pytest.raises(FatalRunError) as held, \
            output_lock(store, "run", wait=5, clock=lambda: now[0], sleep=sleep):
        pass
    assert held.value.exit_code == ExitCode.FATAL  # a retry finds the night published
    assert "another cph-collector run" in str(held.value) and "waited 5 s" in str(held.value)


async def test_the_last_shard_staged_publishes_the_night_and_a_retry_keeps_its_verdict(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=44, images=30)
    ids = dataset.image_ids()
    fake = await fake_factory(dataset, script={ids[0]: ["forbidden"]})
    first = await collect(fake, ids, shard="1/2", snapshot_date=DAY, publish_when_staged=True)
    assert (first.record.status, first.record.exit_code, first.night) == ("staged", 0, None)
    assert not (tmp_path / "out" / "image_status").exists()  # 1 of 2 staged: nothing yet
    last = await collect(fake, ids, shard="2/2", snapshot_date=DAY, publish_when_staged=True)
    assert last.record.status == "staged"
    assert last.night.exit_code == 1  # a forbidden image: the night's verdict, from this shard
    assert (last.night.record.status, last.night.record.counts["status_rows"]) == ("finished", 30)
    published = [d for d in manifests(tmp_path / "out") if d["status"] == "finished"]
    assert len(published) == 1 and published[0]["exit_code"] == 1
    asked = len(fake.log)
    for shard in ("1/2", "2/2"):  # a scheduler retrying either pod: the same verdict again
        again = await collect(fake, ids, shard=shard, snapshot_date=DAY, publish_when_staged=True)
        assert again.night.exit_code == 1
        assert again.night.record.run_id == published[0]["run_id"]
    assert len(fake.log) == asked  # nothing collected again
    assert len([d for d in manifests(tmp_path / "out") if d["status"] == "finished"]) == 1


async def test_a_shard_that_finds_its_share_published_by_another_says_so_and_exits_0(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    """Two shards staged at the same moment: the first under the lock publishes; the other,
    whose share it published, exits 0 (as its own run)."""
    from collector.night import publish_night

    dataset = Dataset(seed=45, images=20)
    fake = await fake_factory(dataset)
    parts = [await collect(fake, dataset.image_ids(), shard=f"{k}/2", snapshot_date=DAY)
             for k in (1, 2)]
    store = LocalStore(tmp_path / "out")
    settings = Settings.of(output=tmp_path / "out", shard="1/2", publish_when_staged=True)
    from collector.shards import Shard

    one = publish_night(store, settings, Shard(1, 2), DAY, parts[0].record.run_id,
                        "20261201T030000Z-aaaaaa")
    two = publish_night(store, settings, Shard(2, 2), DAY, parts[1].record.run_id,
                        "20261201T030001Z-bbbbbb")
    assert one is not None and two is not None
    assert (one.exit_code, one.record.run_id) == (0, "20261201T030000Z-aaaaaa")
    assert (two.exit_code, two.record.run_id) == (0, "20261201T030000Z-aaaaaa")  # the same
    assert [d["run_id"] for d in manifests(tmp_path / "out") if d["status"] == "finished"] == \
        ["20261201T030000Z-aaaaaa"]


async def test_a_staged_shard_says_staged_in_its_metrics_with_the_outputs_last_success(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def values(path: Path) -> dict[str, float]:
        return {s.name: s.value for f in text_string_to_metric_families(path.read_text())
                for s in f.samples if not s.labels}

    dataset = Dataset(seed=46, images=20)
    fake = await fake_factory(dataset)
    night = await collect(fake, dataset.image_ids(), snapshot_date=DAY - dt.timedelta(days=1))
    assert night.record.ended_at is not None
    prom = tmp_path / "shard.prom"  # a new pod: no file of its own from last night
    await collect(fake, dataset.image_ids(), shard="1/2", snapshot_date=DAY, metrics_file=prom)
    found = values(prom)
    assert found["cph_collector_staged"] == 1 and found["cph_collector_exit_code"] == 0
    assert found["cph_collector_last_success_timestamp_seconds"] == pytest.approx(
        night.record.ended_at.timestamp())


async def test_the_publish_commands_json_log_lines_name_its_run(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from collector.cli import main

    dataset = Dataset(seed=47, images=10)
    fake = await fake_factory(dataset)
    for k in (1, 2):
        await collect(fake, dataset.image_ids(), shard=f"{k}/2", snapshot_date=DAY)
    capsys.readouterr()
    code = main(["publish", "--output", str(tmp_path / "out"), "--snapshot-date", str(DAY),
                 "--shards", "2", "--log-format", "json"])
    captured = capsys.readouterr()
    summary = orjson.loads(captured.out.splitlines()[-1])
    logged = [orjson.loads(line) for line in captured.err.splitlines()]
    assert code == 0 and logged
    assert {line["run_id"] for line in logged} == {summary["run_id"]}


async def test_publish_writes_the_nights_metrics_and_last_success_moves_only_then(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from collector.cli import main

    def values(path: Path) -> dict[str, float]:
        return {s.name: s.value for f in text_string_to_metric_families(path.read_text())
                for s in f.samples if not s.labels}

    dataset = Dataset(seed=48, images=10)
    fake = await fake_factory(dataset)
    for k in (1, 2):
        await collect(fake, dataset.image_ids(), shard=f"{k}/2", snapshot_date=DAY,
                      metrics_file=tmp_path / f"shard-{k}.prom")
    assert values(tmp_path / "shard-2.prom")["cph_collector_last_success_timestamp_seconds"] == 0
    night = tmp_path / "night.prom"
    code = main(["publish", "--output", str(tmp_path / "out"), "--snapshot-date", str(DAY),
                 "--shards", "2", "--log-format", "json", "--metrics-file", str(night)])
    summary = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    (doc,) = [d for d in manifests(tmp_path / "out") if d["run_id"] == summary["run_id"]]
    found = values(night)
    assert code == 0 and found["cph_collector_exit_code"] == 0
    assert found["cph_collector_last_success_timestamp_seconds"] == pytest.approx(
        dt.datetime.fromisoformat(str(doc["ended_at"])).timestamp())
    assert found["cph_collector_staged"] == 0


async def test_a_shards_progress_counts_its_share_not_the_whole_input(
        fake_factory: Factory, collect: Collect) -> None:
    import re

    dataset = Dataset(seed=49, images=150)
    fake = await fake_factory(dataset, latency=0.01)
    out = await collect(fake, dataset.image_ids(), shard="1/3", snapshot_date=DAY,
                        progress_interval=0.1, rate_limit=150, concurrency=4)
    shares = [int(p) for p in re.findall(r"^progress: (\d+)% ", out.stderr, re.MULTILINE)]
    assert shares and max(shares) > 60  # of its ~50 images; of all 150 it would stay <= 34%
