"""Shards: N processes (or pods) collect their share, one publish makes it one snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from collector.config import load_settings
from collector.errors import FatalRunError, UsageError
from collector.fake import Dataset, FakeCph
from collector.merge import publish_shards
from collector.shards import Shard, parse_shard, place
from collector.store import LocalStore, Store
from tests.conftest import S3_ENV, S3Server
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)
DROP = {"run_id", "collected_at", "request_id", "attempts"}


def rows(out: Run, table: str) -> set[tuple[object, ...]]:
    data = out.table(table)
    keep = [c for c in data.column_names if c not in DROP]
    return {tuple(r[c] for c in keep) for r in data.select(keep).to_pylist()}


def test_the_split_is_the_same_everywhere_and_even() -> None:
    assert place("p" * 32, "a" * 32, 3) == place("p" * 32, "a" * 32, 3)  # no per-process seed
    assert place("0c4a57e3e7c04c3ab2a6d07fe49b8a96", "4d8f2a6a5e3c4b1e9f7a0c2d4e6f8a1b", 3) == 1
    spread = [0, 0, 0]
    for n in range(3000):
        spread[place("p", f"{n:032x}", 3)] += 1
    assert all(900 < share < 1100 for share in spread)
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("0/3", "4/3", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match=r"K"):
            parse_shard(bad)


def test_shards_n_takes_the_index_from_a_kubernetes_indexed_job() -> None:
    settings = load_settings({"shards": "3"}, {"JOB_COMPLETION_INDEX": "1"})
    assert settings.shards.label == "2/3"
    with pytest.raises(UsageError, match=r"^--shards 3 takes the shard from JOB_COMPLETION_INDEX "
                                         r"\(0 to 2\), which is 3$"):
        load_settings({"shards": "3"}, {"JOB_COMPLETION_INDEX": "3"})


async def shards(collect: Collect, fake: FakeCph, ids: list[str], count: int,
                 **settings: Any) -> list[Run]:
    """``count`` shard runs side by side, as pods of one Indexed Job."""
    return list(await asyncio.gather(*(
        collect(fake, ids, shard=f"{k}/{count}", snapshot_date=DAY, chunk_images=10, **settings)
        for k in range(1, count + 1))))


def published(store: Store, count: int) -> Any:
    return publish_shards(store, DAY, count, "20261201T050000Z-pub000", frozenset(), {})


async def test_three_shards_and_a_publish_equal_one_run_within_the_accounts_rate(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=81, images=240)
    ids = [*dataset.image_ids(), "not-an-id", dataset.image_ids()[0]]  # a bad line, a repeat
    whole = await collect(await fake_factory(dataset), ids, output=tmp_path / "whole",
                          snapshot_date=DAY)
    fake = await fake_factory(dataset)
    parts = await shards(collect, fake, ids, 3, rate_limit=300, output=tmp_path / "out")
    assert [p.record.status for p in parts] == ["staged"] * 3
    assert [p.record.exit_code for p in parts] == [0, 0, 0]
    assert not (tmp_path / "out" / "image_status").exists()  # a shard publishes nothing
    assert sum(p.record.counts["status_rows"] for p in parts) == 241
    arrivals = sorted(e.t for e in fake.log)
    busiest = max(sum(1 for t in arrivals[i:] if t - start < 1.0)
                  for i, start in enumerate(arrivals))
    assert busiest <= 300 * 1.05  # three shards at 100/s each: the account's 300/s in all

    record = published(LocalStore(tmp_path / "out"), 3)
    assert (record.status, record.exit_code) == ("finished", 0)
    assert record.counts["status_rows"] == 241 and record.counts["shards"] == 3
    merged = Run(record, tmp_path / "out", "")
    for table in ("members", "image_status"):
        assert rows(merged, table) == rows(whole, table), table
    assert not (tmp_path / "out" / "_staging" / f"snapshot_date={DAY}").exists()
    again = published(LocalStore(tmp_path / "out"), 3)  # publishing twice is harmless
    assert (again.run_id, again.exit_code, again.counts) == (record.run_id, 0, record.counts)
    assert rows(merged, "image_status") == rows(whole, "image_status")


async def test_a_missing_or_different_shard_publishes_nothing_and_says_which(
        fake: FakeCph, collect: Collect, tmp_path: Path) -> None:
    ids = fake.dataset.image_ids()
    for k in (1, 3):
        await collect(fake, ids, shard=f"{k}/3", snapshot_date=DAY)
    store = LocalStore(tmp_path / "out")
    with pytest.raises(FatalRunError, match=r"^publish 2026-12-01: shard 2/3 has not finished "
                                            r"\(run it again with the same arguments\); "
                                            r"nothing published$") as missing:
        published(store, 3)
    assert missing.value.exit_code == 3
    assert not (tmp_path / "out" / "image_status").exists()
    await collect(fake, ids[:-1], shard="2/3", snapshot_date=DAY)  # another input
    with pytest.raises(FatalRunError, match=r"shard 2/3 ran with another input or settings"):
        published(store, 3)
    with pytest.raises(FatalRunError, match=r"shard-1-of-3 is staged, but --shards says 2"):
        published(store, 2)
    assert not (tmp_path / "out" / "image_status").exists()


async def test_a_shard_that_died_is_run_again_and_the_publish_still_equals_one_run(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=82, images=90)
    ids = dataset.image_ids()
    whole = await collect(await fake_factory(dataset), ids, output=tmp_path / "whole",
                          snapshot_date=DAY)
    victim = [i for i in ids if place(dataset.project_ids[0], i, 3) == 1][15]
    fake = await fake_factory(dataset, script={victim: ["unauthorized"]})
    parts = await shards(collect, fake, ids, 3, concurrency=1)  # shard 2 dies after a chunk
    assert [p.record.exit_code for p in parts] == [0, 3, 0]  # shard 2 died
    again = await collect(fake, ids, shard="2/3", snapshot_date=DAY, chunk_images=10)
    assert again.record.status == "staged"
    assert again.record.counts["resumed"] == parts[1].record.counts["status_rows"] > 0
    record = published(LocalStore(tmp_path / "out"), 3)
    merged = Run(record, tmp_path / "out", "")
    for table in ("members", "image_status"):
        assert rows(merged, table) == rows(whole, table), table


async def test_shards_meet_in_a_bucket(fake_factory: Factory, collect: Collect, s3: S3Server,
                                       tmp_path: Path) -> None:
    dataset = Dataset(seed=83, images=90)
    ids = dataset.image_ids()
    whole = await collect(await fake_factory(dataset), ids, output=tmp_path / "whole",
                          snapshot_date=DAY)
    url = s3.bucket()
    fake = await fake_factory(dataset)
    parts = await shards(collect, fake, ids, 3, output=url, env=S3_ENV,
                         storage_endpoint=s3.endpoint)
    assert [p.record.status for p in parts] == ["staged"] * 3
    record = published(_bucket(url, s3), 3)
    merged = Run(record, url, "", filesystem=s3.filesystem())
    for table in ("members", "image_status"):
        assert rows(merged, table) == rows(whole, table), table
    assert not [k for k in s3.keys(url) if k.startswith("_staging/snapshot_date=")]


def _bucket(url: Any, s3: S3Server) -> Store:
    from collector.build import open_store
    from collector.config import Settings

    return open_store(Settings.of(storage_endpoint=s3.endpoint), url, S3_ENV)


async def test_a_discovery_run_is_planned_once_then_sharded_and_published_as_one(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    from collector.build import build
    from collector.config import Settings
    from collector.pipeline import Run as Pipeline
    from tests.conftest import TOKEN

    dataset = Dataset(seed=84, projects=2, images=60, with_doc_example=False,
                      locked_project=False)
    fake = await fake_factory(dataset)
    common = {"discover": True, "project_id": ",".join(dataset.project_ids)}
    whole = await collect(fake, output=tmp_path / "whole", snapshot_date=DAY, **common)
    before = await collect(fake, output=tmp_path / "out", shard="1/2", snapshot_date=DAY,
                           **common)
    assert before.error is not None and before.error.exit_code == 2
    assert "run cph-collector plan with the same settings first" in str(before.error)

    from collector.auth import TokenAuth
    from collector.secrets import Secret

    settings = Settings.of(endpoint=fake.url, output=tmp_path / "out", snapshot_date=DAY,
                        rate_limit=100_000, progress_interval=3600, **common)  # type: ignore[arg-type]
    parts = build(settings, {}, auth=lambda _: TokenAuth(Secret(TOKEN)))
    planned = await Pipeline(settings, None, parts, plan=True).execute()
    assert planned.status == "staged"
    listed = len(fake.log)
    halves = [await collect(fake, output=tmp_path / "out", shard=f"{k}/2", snapshot_date=DAY,
                            **common) for k in (1, 2)]
    assert [h.record.status for h in halves] == ["staged", "staged"]
    assert not [e for e in fake.log[listed:] if "/cloud-phone/images?" in e.path]  # no listing
    record = published(LocalStore(tmp_path / "out"), 2)
    merged = Run(record, tmp_path / "out", "")
    for table in ("members", "image_status", "images", "listing_status"):
        assert rows(merged, table) == rows(whole, table), table


async def test_a_publish_that_fails_on_the_way_is_one_line_and_exit_3(
        fake: FakeCph, collect: Collect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import collector.merge
    from collector.cli import main

    for k in (1, 2):
        await collect(fake, fake.dataset.image_ids(), shard=f"{k}/2", snapshot_date=DAY)

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(collector.merge, "gather", full)
    code = await asyncio.to_thread(main, ["publish", "--output", str(tmp_path / "out"),
                                          "--snapshot-date", str(DAY), "--shards", "2"])
    assert code == 3
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"cph-collector: error: output {tmp_path / 'out'}: publish failed (No space left on "
        "device); run it again to finish it")
    monkeypatch.undo()
    assert await asyncio.to_thread(main, ["publish", "--output", str(tmp_path / "out"),
                                          "--snapshot-date", str(DAY), "--shards", "2"]) == 0


async def plan(fake: FakeCph, output: Any, day: dt.date, env: dict[str, str],
               storage_endpoint: str | None) -> Any:
    """``cph-collector plan --discover`` of ``day``."""
    from collector.auth import TokenAuth
    from collector.build import build
    from collector.config import Settings
    from collector.pipeline import Run as Pipeline
    from collector.secrets import Secret
    from tests.conftest import TOKEN

    settings = Settings.of(endpoint=fake.url, output=output, snapshot_date=day, discover=True,
                        project_id=fake.dataset.project_ids[0], rate_limit=100_000,
                        progress_interval=3600, storage_endpoint=storage_endpoint)
    parts = build(settings, env, auth=lambda _: TokenAuth(Secret(TOKEN)))
    return await Pipeline(settings, None, parts, plan=True).execute()


@pytest.mark.parametrize("where", ["disk", "bucket"])
async def test_a_live_shard_keeps_its_work_through_another_dates_run_and_a_premature_publish(
        where: str, fake_factory: Factory, collect: Collect, s3: S3Server,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 2 is still collecting while a run and a plan of other dates mend the output and a
    publish comes too early; then it finishes, and the publish (re-running any shard it names, as it
    says) equals one unsharded run — or refuses with exit 3, never fewer rows with exit 0."""
    import re
    import threading

    from collector.sink import ParquetSink

    dataset = Dataset(seed=85, images=120)
    ids = dataset.image_ids()
    whole = await collect(await fake_factory(dataset), ids, output=tmp_path / "whole",
                          snapshot_date=DAY)
    fake = await fake_factory(dataset)
    target: Any = tmp_path / "out"
    options: dict[str, Any] = {}
    if where == "bucket":
        target = s3.bucket()
        options = {"env": S3_ENV, "storage_endpoint": s3.endpoint}
    store = _bucket(target, s3) if where == "bucket" else LocalStore(target)
    committed, go_on = threading.Event(), threading.Event()
    real = ParquetSink.commit

    def commit(sink: ParquetSink, chunk: Any) -> None:
        """Shard 2 commits a chunk, then is still at work until the test lets it go on."""
        if sink.staging.endswith("shard-2-of-2") and committed.is_set():
            assert go_on.wait(60)
        real(sink, chunk)
        committed.set()

    monkeypatch.setattr(ParquetSink, "commit", commit)

    def shard(k: int) -> Awaitable[Run]:
        return collect(fake, ids, output=target, shard=f"{k}/2", snapshot_date=DAY,
                       chunk_images=5, concurrency=1, **options)

    assert (await shard(1)).record.status == "staged"
    committed.clear()
    second = asyncio.ensure_future(shard(2))
    assert await asyncio.to_thread(committed.wait, 60)
    other = await collect(fake, ids[:5], output=target, snapshot_date=DAY - dt.timedelta(1),
                          **options)
    assert other.record.exit_code == 0
    planned = await plan(fake, target, DAY - dt.timedelta(2), options.get("env", {}),
                         s3.endpoint if where == "bucket" else None)
    assert planned.status == "staged"  # a plan of a third date mended the output too
    with pytest.raises(FatalRunError, match=r"^publish 2026-12-01: ") as early:
        await asyncio.to_thread(published, store, 2)
    assert early.value.exit_code == 3
    assert re.fullmatch(r"publish 2026-12-01: shard-2-of-2 is still running \(run \d{8}T\d{6}Z-"
                        r"\w+\); nothing published", str(early.value)), early.value
    assert not second.done()  # the premature publish came while it ran
    go_on.set()
    done = await second
    assert (done.record.status, done.record.exit_code) == ("staged", 0)
    for _ in range(3):
        try:
            record = await asyncio.to_thread(published, store, 2)
            break
        except FatalRunError as exc:  # do as it says: run the shard it names again
            named = re.search(r"shard (\d)/2 has not finished", str(exc))
            if named is None:
                raise
            await shard(int(named.group(1)))
    assert (record.status, record.exit_code) == ("finished", 0)
    merged = Run(record, target, "", filesystem=s3.filesystem() if where == "bucket" else None)
    for table in ("members", "image_status"):
        day = {r for r in rows(merged, table) if r[-1] == str(DAY)}  # not the other date's
        assert day == rows(whole, table), table


async def test_a_staged_shard_and_the_plan_survive_another_dates_run(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    """Found by the whole-run checker (seed 9): shard 1 staged, then an ordinary run of
    another date mended the output and removed the date's staging — the staged share and
    the plan — though no writer of it was dead by accident: they were waiting for the
    publish. Shard 2 then found no plan, and publish said shard 1 had not finished."""
    dataset = Dataset(seed=83, images=60)
    ids = dataset.image_ids()
    whole = await collect(await fake_factory(dataset), ids, output=tmp_path / "whole",
                          snapshot_date=DAY)
    fake = await fake_factory(dataset)
    out = tmp_path / "out"
    first = await collect(fake, ids, shard="1/2", snapshot_date=DAY, output=out)
    assert first.record.status == "staged"
    other = await collect(fake, ids[:5], snapshot_date=DAY + dt.timedelta(days=40), output=out)
    assert other.record.status == "finished"
    second = await collect(fake, ids, shard="2/2", snapshot_date=DAY, output=out)
    assert second.record.status == "staged"
    assert second.record.counts["resumed"] == 0
    record = published(LocalStore(out), 2)
    assert (record.status, record.exit_code) == ("finished", 0)
    merged = Run(record, out, "")
    for table in ("members", "image_status"):
        night = {r for r in rows(merged, table) if DAY.isoformat() in r}  # not the other date
        assert night == rows(whole, table), table


@pytest.mark.parametrize("where", ["disk", "bucket"])
async def test_a_shard_started_while_publish_runs_is_refused_and_the_publish_stands(
        where: str, fake: FakeCph, collect: Collect, s3: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish holds every shard's lock from its check to its clean-up: a shard run again in
    the middle (its scheduler's retry) is refused (exit 2) instead of losing its folder."""
    from collector import merge
    from collector.lease import BucketLock, lock
    from collector.store import BucketStore

    ids = fake.dataset.image_ids()
    target: Any = tmp_path / "out"
    options: dict[str, Any] = {}
    if where == "bucket":
        target = s3.bucket()
        options = {"env": S3_ENV, "storage_endpoint": s3.endpoint}
    await shards(collect, fake, ids, 2, output=target, **options)
    refused: list[UsageError] = []
    real = merge.verify

    def verify(store: Store, *args: Any) -> Any:
        """Shard 1 of 2 starts again while the publish checks the shards."""
        other = _bucket(target, s3) if where == "bucket" else LocalStore(target)
        name = f"_staging/snapshot_date={DAY}/shard-1-of-2.lock"
        taking = (BucketLock(other, "20261201T060000Z-again0", name, fence=True, wait=False)
                  if isinstance(other, BucketStore) else lock(other, "20261201T060000Z-again0",
                                                             name=name))
        try:
            with taking:
                pass
        except UsageError as exc:
            refused.append(exc)
        return real(store, *args)

    monkeypatch.setattr(merge, "verify", verify)
    store = _bucket(target, s3) if where == "bucket" else LocalStore(target)
    record = await asyncio.to_thread(published, store, 2)
    assert (record.status, record.exit_code) == ("finished", 0)
    assert len(refused) == 1 and refused[0].exit_code == 2
    assert "20261201T050000Z-pub000" in str(refused[0])  # the publish holds it
    assert record.counts["status_rows"] == len(ids)
