"""A run that stopped is resumed by the next run for the same date: nothing twice, nothing lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from collector.fake import Dataset, FakeCph
from tests.conftest import TOKEN, Outcome
from tests.invariants import check_published, visible_files

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]


def comparable(output: Path, table: str) -> set[tuple[object, ...]]:
    """Rows without what differs between runs by design: run, time, request id, and attempts
    (the server's faults are random)."""
    drop = {"run_id", "collected_at", "request_id", "attempts"}
    rows = ds.dataset(output / table, format="parquet", partitioning="hive").to_table()
    keep = [c for c in rows.column_names if c not in drop]
    return {tuple(r[c] for c in keep) for r in rows.select(keep).to_pylist()}


async def test_a_fatal_run_is_resumed_without_requesting_committed_ids_again(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=31, images=60)
    ids = dataset.image_ids()
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(f"{i}\n" for i in [*ids, "bad/one"]))
    fake = await fake_factory(dataset, script={ids[40]: ["unauthorized"]})  # once, then fine
    first = await collect(fake, input_path=ids_file, chunk_images=10, concurrency=1)
    assert first.record.exit_code == 3 and first.record.status == "fatal"
    assert not visible_files(first.output, "image_status")
    committed = first.record.counts["status_rows"]  # the writer commits what is done
    committed_ids = committed - first.record.counts["invalid"]
    assert committed_ids >= 30

    seen_before = len(fake.log)
    second = await collect(fake, input_path=ids_file, chunk_images=10, concurrency=1)
    assert second.record.exit_code == 0
    check_published(second, {(dataset.project_ids[0], i) for i in ids}, dataset, fake,
                    invalid=1)
    assert second.record.counts["resumed"] == committed
    asked_again = {e.image_id for e in fake.log[seen_before:]}
    assert len(asked_again) == len(ids) - committed_ids
    assert not asked_again & set(ids[:30])  # committed IDs are never requested again


async def test_another_input_for_the_same_date_starts_over(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=32, images=30)
    ids = dataset.image_ids()
    fake = await fake_factory(dataset, script={ids[25]: ["unauthorized"]})
    first = await collect(fake, ids, chunk_images=5, concurrency=1)
    assert first.record.status == "fatal"
    second = await collect(fake, ids[:20], chunk_images=5)
    assert second.record.counts["resumed"] == 0
    check_published(second, {(dataset.project_ids[0], i) for i in ids[:20]}, dataset, fake)


@pytest.mark.e2e
def test_kill_9_then_rerun_equals_one_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "CPH_AUTH_TOKEN": TOKEN}
    ids = tmp_path / "ids.txt"
    server = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "400", "--seed", "9",
         "--ids-file", str(ids), "--fault", "http_503=0.05", "--fault", "reset_mid_body=0.02"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline() + server.stdout.readline()
        url = line.split("listening on ")[1].split()[0]
        project = line.split("(project ")[1].split(";")[0]

        def run(output: Path, rate: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id",
                 project, "--endpoint", url, "--output", str(output), "--rate-limit", rate,
                 "--chunk-images", "25", "--backoff-base", "0.01", "--snapshot-date",
                 "2026-11-28"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=env)

        clean = run(tmp_path / "clean", "2000")
        assert clean.communicate(timeout=60)[0] and clean.returncode == 0

        victim_out = tmp_path / "killed"
        victim = run(victim_out, "100")
        staged = victim_out / "_staging" / "snapshot_date=2026-11-28" / "image_status"
        deadline = time.monotonic() + 30
        while len(list(staged.glob("*.parquet"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)
        assert not visible_files(victim_out, "image_status")

        again = run(victim_out, "2000")
        _, stderr = again.communicate(timeout=60)
        assert again.returncode == 0, stderr
        assert "resuming" in stderr
        statuses = sorted(orjson.loads(p.read_bytes())["status"]
                          for p in (victim_out / "runs").glob("*.json"))
        assert statuses == ["crashed", "finished"]
        for table in ("members", "image_status"):
            assert comparable(victim_out, table) == comparable(tmp_path / "clean", table)
        assert not (victim_out / "_staging" / "snapshot_date=2026-11-28").exists()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)


@pytest.mark.e2e
def test_kill_9_after_a_discovery_listing_then_rerun_equals_one_uninterrupted_run(
        tmp_path: Path) -> None:
    env = {**os.environ, "CPH_AUTH_TOKEN": TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--images", "400", "--seed", "19",
         "--fault", "http_503=0.03"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "fake CPH listening on URL (project P; ..."
        url = line.split("listening on ")[1].split()[0]
        project = line.split("(project ")[1].split(";")[0].split(",")[0]

        def run(output: Path, rate: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, "-m", "collector", "run", "--discover", "--project-id",
                 project, "--endpoint", url, "--output", str(output), "--rate-limit", rate,
                 "--chunk-images", "25", "--backoff-base", "0.01", "--snapshot-date",
                 "2026-11-28"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=env)

        clean = run(tmp_path / "clean", "2000")
        assert clean.communicate(timeout=60)[0] and clean.returncode == 0

        victim_out = tmp_path / "killed"
        victim = run(victim_out, "100")
        staging = victim_out / "_staging" / "snapshot_date=2026-11-28"
        deadline = time.monotonic() + 30
        while (not (staging / "listed.json").exists()
               or len(list((staging / "image_status").glob("*.parquet"))) < 2) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)

        again = run(victim_out, "2000")
        _, stderr = again.communicate(timeout=60)
        assert again.returncode == 0, stderr
        assert "is committed (403 images); not listing again" in stderr
        for table in ("images", "listing_status", "members", "image_status"):
            assert comparable(victim_out, table) == comparable(tmp_path / "clean", table), table
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)


async def test_an_output_that_fails_mid_run_is_exit_3_and_earlier_chunks_survive(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink

    real, writes = collector.sink.write_parquet, []

    def disk_full_after_two(store, target, table):  # type: ignore[no-untyped-def]
        writes.append(target)
        if len(writes) > 2:  # the first chunk (members + status) fits, then the disk is full
            raise OSError(28, "No space left on device")
        real(store, target, table)

    monkeypatch.setattr(collector.sink, "write_parquet", disk_full_after_two)
    ids = fake.dataset.image_ids()
    first = await collect(fake, ids, chunk_images=10, concurrency=1)
    assert first.error is not None and first.record.exit_code == 3
    assert "write failed (No space left on device)" in str(first.error)
    assert not visible_files(first.output, "image_status")

    monkeypatch.setattr(collector.sink, "write_parquet", real)
    second = await collect(fake, ids, chunk_images=10)
    assert second.record.counts["resumed"] == 10
    check_published(second, {(fake.dataset.project_ids[0], i) for i in ids}, fake.dataset)


@pytest.mark.parametrize("crash_at", [1, 2, 3])
async def test_a_crash_in_the_middle_of_publishing_never_leaves_a_date_without_data(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    """The swap is four renames; whichever one a crash stops at, the next run finishes it."""
    import collector.store

    ids = fake.dataset.image_ids()
    expected = {(fake.dataset.project_ids[0], i) for i in ids}
    earlier = await collect(fake, ids)  # an earlier, published run of the same date
    real, calls = collector.store.os.rename, []

    def crashing_rename(src, dst):  # type: ignore[no-untyped-def]
        calls.append(src)
        if len(calls) == crash_at:
            raise KeyboardInterrupt  # the process dies here
        real(src, dst)

    monkeypatch.setattr(collector.store.os, "rename", crashing_rename)
    with pytest.raises(KeyboardInterrupt):
        await collect(fake, ids)
    monkeypatch.setattr(collector.store.os, "rename", real)

    again = await collect(fake, ids)
    check_published(again, expected, fake.dataset, fake)
    runs = {p.stem for p in (again.output / "runs").glob("*.json")}
    (stopped,) = runs - {earlier.record.run_id, again.record.run_id}  # died mid-publish
    doc = orjson.loads((again.output / "runs" / f"{stopped}.json").read_bytes())
    assert (doc["status"], doc["exit_code"], doc["recorded_by"]) == \
        ("finished", 0, again.record.run_id)  # its data became visible: it finished
    assert doc["counts"]["status_rows"] == len(ids)
    assert doc["counts"]["member_rows"] == sum(len(fake.dataset.members(i)) for i in ids)


async def test_an_interrupted_publish_of_another_date_is_finished_before_cleaning_up(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    import collector.store

    ids = fake.dataset.image_ids()
    day1, day2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    real, calls = collector.store.os.rename, []

    def crashing_rename(src, dst):  # type: ignore[no-untyped-def]
        calls.append(src)
        if len(calls) == 2:  # members' old partition moved aside, the new one not yet in
            raise KeyboardInterrupt
        real(src, dst)

    await collect(fake, ids, snapshot_date=day1)
    monkeypatch.setattr(collector.store.os, "rename", crashing_rename)
    with pytest.raises(KeyboardInterrupt):
        await collect(fake, ids, snapshot_date=day1)
    monkeypatch.setattr(collector.store.os, "rename", real)
    out = await collect(fake, ids, snapshot_date=day2)
    for day in (day1, day2):
        members = ds.dataset(out.output / "members" / f"snapshot_date={day}").to_table()
        assert members.num_rows == sum(len(fake.dataset.members(i)) for i in ids)


async def test_a_writer_that_dies_mid_run_stops_the_run_instead_of_hanging_it(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    """More results than the queue holds must not wait forever for a dead writer."""
    import collector.sink

    dataset = Dataset(seed=51, images=6000, empty_share=1.0)
    fake = await fake_factory(dataset)
    real, writes = collector.sink.write_parquet, []

    def disk_full_after_two(store, target, table):  # type: ignore[no-untyped-def]
        writes.append(target)
        if len(writes) > 2:
            raise OSError(28, "No space left on device")
        real(store, target, table)

    monkeypatch.setattr(collector.sink, "write_parquet", disk_full_after_two)
    out = await collect(fake, dataset.image_ids(), chunk_images=100, rate_limit=50_000,
                        concurrency=64)
    assert out.record.exit_code == 3 and "No space left" in str(out.error)


class DiskFull:
    """fsync fails with ENOSPC once ``full`` is set, as on a disk that has just filled up."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import collector.files

        self.full = False
        real = collector.files.os.fsync

        def fsync(fd: int) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd)

        monkeypatch.setattr(collector.files.os, "fsync", fsync)


def leftovers(output: Path) -> list[Path]:
    return list(output.rglob("*.tmp"))


async def test_a_full_disk_before_the_run_starts_is_one_line_and_exit_3(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFull(monkeypatch)
    disk.full = True
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is not None and out.error.exit_code == 3
    assert str(out.error) == f"output {out.output}: write failed (No space left on device)"
    assert not leftovers(out.output) and not fake.log


async def test_a_full_disk_at_the_first_manifest_is_one_line_and_exit_3(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.store

    disk = DiskFull(monkeypatch)
    real = collector.store.LocalStore.write

    def full_for_manifests(store, key, data):  # type: ignore[no-untyped-def]
        disk.full = key.startswith("runs/")
        try:
            real(store, key, data)
        finally:
            disk.full = False

    monkeypatch.setattr(collector.store.LocalStore, "write", full_for_manifests)
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is not None and out.record.exit_code == 3
    assert str(out.error) == (f"output {out.output}: cannot write the manifest "
                              f"runs/{out.record.run_id}.json (No space left on device)")
    assert not leftovers(out.output) and not fake.log


async def test_a_full_disk_while_writing_a_chunk_is_exit_3_and_the_manifest_says_fatal(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink

    disk = DiskFull(monkeypatch)
    real = collector.sink.write_parquet

    def fill_up(store, target, table):  # type: ignore[no-untyped-def]
        disk.full = "image_status" in str(target)  # the first status file fills the disk
        try:
            real(store, target, table)
        finally:
            disk.full = False  # there is room for the manifest again

    monkeypatch.setattr(collector.sink, "write_parquet", fill_up)
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is not None and out.record.exit_code == 3
    doc = orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())
    assert (doc["status"], doc["exit_code"]) == ("fatal", 3)
    assert doc["error"] == f"output {out.output}: write failed (No space left on device)"
    assert not leftovers(out.output)


async def test_a_manifest_that_cannot_be_written_after_publishing_is_recorded_by_the_next_run(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink

    disk = DiskFull(monkeypatch)
    real = collector.sink.ParquetSink.publish

    def publish_then_fill_up(self: collector.sink.ParquetSink,
                             changes: dict[str, object] | None = None) -> None:
        real(self, changes)
        disk.full = True

    monkeypatch.setattr(collector.sink.ParquetSink, "publish", publish_then_fill_up)
    ids = fake.dataset.image_ids()
    first = await collect(fake, ids)
    assert first.error is not None and first.record.exit_code == 3
    assert str(first.error).startswith(f"output {first.output}: {first.record.snapshot_date} is "
                                       "published, but its manifest could not be written")
    assert not leftovers(first.output)
    path = first.output / "runs" / f"{first.record.run_id}.json"
    assert orjson.loads(path.read_bytes())["status"] == "running"  # as the disk left it

    disk.full = False
    monkeypatch.setattr(collector.sink.ParquetSink, "publish", real)
    second = await collect(fake, ids)
    assert second.record.exit_code == 0
    doc = orjson.loads(path.read_bytes())
    assert (doc["status"], doc["exit_code"]) == ("finished", 0)
    assert doc["counts"]["status_rows"] == len(ids)
    assert doc["files"] and all(f.startswith(("members/", "image_status/", "images/",
                                              "listing_status/", "changes/"))
                                for f in doc["files"])


@pytest.mark.e2e
async def test_the_progress_line_counts_failures_as_they_happen(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=52, images=30)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, latency=0.03, script={victim: ["http_500"]})
    out = await collect(fake, dataset.image_ids(), concurrency=1, max_attempts=1,
                        progress_interval=0.1)
    lines = [line for line in out.stderr.splitlines() if line.startswith("progress: ")]
    assert lines and all(line.endswith("| 1 failed") for line in lines)  # none chunk-behind
