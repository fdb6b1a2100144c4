"""The output in a bucket: the same contract as on disk, against moto's S3 server on loopback."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from collector.fake import Dataset, FakeCph
from collector.pipeline import summary_line
from collector.schemas import TABLES
from collector.store import BucketStore
from tests.conftest import S3_ENV, S3Server
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY, NEXT = dt.date(2026, 11, 30), dt.date(2026, 12, 1)
DROP = {"run_id", "collected_at", "request_id", "attempts"}


def rows(out: Run, table: str) -> set[tuple[object, ...]]:
    """A table's rows without what differs between runs by design."""
    data = out.table(table)
    keep = [c for c in data.column_names if c not in DROP]
    return {tuple(r[c] for c in keep) for r in data.select(keep).to_pylist()}


def layout(keys: list[str]) -> set[str]:
    """The folders a reader globs, with their file names' shape (``part-*.parquet``)."""
    return {key.rsplit("/", 1)[0] + "/part-*.parquet" if key.endswith(".parquet")
            else key.split("/", 1)[0] + "/*.json" for key in keys}


def local_keys(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and not p.name.startswith("."))


async def bucket_run(collect: Collect, s3: S3Server, fake: FakeCph, url: Any,
                     ids: list[str] | None = None, **settings: Any) -> Run:
    return await collect(fake, ids if ids is not None else fake.dataset.image_ids(), output=url,
                         env=S3_ENV, storage_endpoint=s3.endpoint, **settings)


async def test_a_bucket_run_writes_exactly_what_a_local_run_writes(
        fake_factory: Factory, collect: Collect, s3: S3Server, tmp_path: Path) -> None:
    dataset = Dataset(seed=61, images=120)
    fake = await fake_factory(dataset, script={dataset.image_ids()[3]: ["not_found"] * 2})
    local = await collect(fake, dataset.image_ids(), output=tmp_path / "local",
                          snapshot_date=DAY, chunk_images=25)
    url = s3.bucket()
    bucket = await bucket_run(collect, s3, fake, url, snapshot_date=DAY, chunk_images=25)
    assert bucket.record.exit_code == local.record.exit_code == 0
    for table in TABLES:
        if table in ("images", "listing_status", "changes"):
            continue  # input runs: empty tables, compared by schema below
        assert rows(bucket, table) == rows(local, table), table
        assert bucket.table(table).schema == local.table(table).schema, table
    keys = s3.keys(url)
    assert layout(keys) == layout(local_keys(tmp_path / "local"))
    assert not [k for k in keys if k.startswith("_staging/")]  # a finished run leaves none
    assert bucket.record.counts == local.record.counts
    assert sorted(bucket.record.files) == sorted(k for k in keys if k.endswith(".parquet"))
    assert summary_line(bucket.record).startswith(f"run {bucket.record.run_id} finished: 120 "
                                                  "images (119 ok, 1 not_found")
    manifest = s3.filesystem().open_input_stream(
        f"{url.base}/runs/{bucket.record.run_id}.json").read()
    assert b'"status": "finished"' in manifest and S3_ENV["AWS_SECRET_ACCESS_KEY"].encode() \
        not in manifest

    # what readers do: pyarrow with the bucket's filesystem, and pandas through it
    fs = s3.filesystem()
    members = ds.dataset(f"{url.base}/members", filesystem=fs, partitioning="hive").to_table()
    assert members.num_rows == sum(len(dataset.members(i)) for i in dataset.image_ids()
                                   if i != dataset.image_ids()[3])
    frame = pd.read_parquet(f"{url.base}/image_status", filesystem=fs)
    assert (frame["status"] == "not_found").sum() == 1
    for key in keys:
        if key.endswith(".parquet"):
            with fs.open_input_file(f"{url.base}/{key}") as handle:
                table = key.split("/", 1)[0]
                assert pq.ParquetFile(handle).schema_arrow.remove_metadata() == TABLES[table]


async def test_obs_is_addressed_virtual_hosted_with_the_api_keys_unless_told_otherwise(
        fake: FakeCph, collect: Collect, s3: S3Server) -> None:
    """OBS refuses path-style requests on its domains: the Host the store sees is bucket.host."""
    from tests.proxy import ForwardingProxy

    port = int(s3.endpoint.rsplit(":", 1)[1])
    keys = {"HUAWEICLOUD_SDK_AK": "OBSACCESSKEY1", "HUAWEICLOUD_SDK_SK": "obs-secret-7d1e0c",
            "NO_PROXY": "127.0.0.1"}  # the fake API direct, the store through the proxy
    for addressing, host in (("auto", "{bucket}.obs-test"), ("path", "obs-test")):
        url = s3.bucket(scheme="obs")
        async with ForwardingProxy(upstream=("127.0.0.1", port)) as proxy:
            out = await collect(fake, fake.dataset.image_ids(), output=url, env=keys,
                                region="cn-north-4", storage_endpoint=f"http://obs-test:{port}",
                                storage_addressing=addressing, proxy=proxy.url)
        assert out.record.exit_code == 0, out.error
        assert proxy.hosts and set(proxy.hosts) == {f"{host.format(bucket=url.bucket)}:{port}"}
        assert any(k.startswith("members/") for k in s3.keys(url))
        manifest = s3.filesystem().open_input_stream(
            f"{url.base}/runs/{out.record.run_id}.json").read().decode()
        assert keys["HUAWEICLOUD_SDK_SK"] not in manifest + out.stderr
        assert f'"output": "{url}"' in manifest


async def test_a_missing_bucket_is_exit_2_before_any_request(
        fake: FakeCph, collect: Collect, s3: S3Server) -> None:
    from collector.store import BucketUrl

    url = BucketUrl("s3", "no-such-bucket", "nightly")
    out = await bucket_run(collect, s3, fake, url)
    assert out.error is not None and out.error.exit_code == 2
    assert str(out.error).startswith(
        "output s3://no-such-bucket/nightly: not writable (the bucket does not exist")
    assert len(str(out.error)) < 160 and not fake.log


async def test_obs_without_keys_is_exit_2_naming_them(fake: FakeCph, collect: Collect) -> None:
    from collector.errors import UsageError
    from collector.store import BucketUrl

    with pytest.raises(UsageError, match=r"^output obs://b-1/x: OBS needs credentials: set "
                                         r"HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK"):
        await collect(fake, ["x"], output=BucketUrl("obs", "b-1", "x"), region="cn-north-4")


async def test_the_store_going_away_mid_run_is_exit_3_and_a_rerun_resumes_from_the_bucket(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink
    from tests.conftest import start_moto

    server = start_moto()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}", server)
    url = s3.bucket()
    dataset = Dataset(seed=62, images=60)
    fake = await fake_factory(dataset)
    real, commits = collector.sink.ParquetSink.commit, []

    def commit_then_vanish(sink, chunk):  # type: ignore[no-untyped-def]
        real(sink, chunk)
        commits.append(chunk.images)
        if len(commits) == 2:
            server.stop()  # the store goes away after two committed chunks

    monkeypatch.setattr(collector.sink.ParquetSink, "commit", commit_then_vanish)
    try:
        first = await bucket_run(collect, s3, fake, url, chunk_images=10, concurrency=1,
                                 max_attempts=2, snapshot_date=DAY)
        assert first.error is not None and first.error.exit_code == 3
        assert str(first.error).startswith(f"output {url}: write failed (cannot connect to "
                                           "the store")
        monkeypatch.setattr(collector.sink.ParquetSink, "commit", real)
        s3.server = server = start_moto(port)  # back, with what it held
        assert not [k for k in s3.keys(url) if k.startswith("image_status/")]  # nothing published
        requests = len(fake.log)
        second = await bucket_run(collect, s3, fake, url, chunk_images=10, snapshot_date=DAY)
        assert second.record.exit_code == 0
        assert second.record.counts["resumed"] == 20  # the two chunks committed before
        assert len(fake.log) - requests == 40
        assert {r["image_id"] for r in second.table("image_status").to_pylist()} == set(
            dataset.image_ids())
        assert second.table("image_status").num_rows == 60
    finally:
        server.stop()


async def test_a_reader_of_the_bucket_sees_the_old_table_none_or_the_new_never_a_mix(
        fake_factory: Factory, collect: Collect, s3: S3Server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish in a bucket has no rename: per table it deletes the old object, then copies
    in the one packed object. After every step a reader lists each table of the date."""
    import collector.store

    url = s3.bucket()
    fake = await fake_factory(Dataset(seed=63, images=80))
    first = await bucket_run(collect, s3, fake, url, chunk_images=20, snapshot_date=DAY)
    tables = ("members", "image_status")

    def seen() -> dict[str, frozenset[str]]:
        return {t: frozenset(k for k in s3.keys(url)
                             if k.startswith(f"{t}/snapshot_date={DAY}/")) for t in tables}

    old, views = seen(), []
    for name in ("copy", "delete"):
        real = getattr(collector.store.BucketStore, name)

        def watched(store, *args, real=real):  # type: ignore[no-untyped-def]
            real(store, *args)
            views.append(seen())

        monkeypatch.setattr(collector.store.BucketStore, name, watched)
    second = await bucket_run(collect, s3, fake, url, chunk_images=20, snapshot_date=DAY)
    monkeypatch.undo()
    new = seen()
    assert first.record.exit_code == second.record.exit_code == 0
    for table in tables:
        assert len(old[table]) == len(new[table]) == 1 and old[table] != new[table]
        assert {v[table] for v in views} <= {old[table], frozenset(), new[table]}, table
        assert frozenset() in {v[table] for v in views}  # the moment of none was looked at
    assert second.table("image_status").num_rows == 80


@pytest.mark.parametrize("crash_at", [1, 2, 4])
async def test_a_crash_at_any_step_of_a_bucket_publish_is_finished_by_the_next_run(
        fake_factory: Factory, collect: Collect, s3: S3Server,
        monkeypatch: pytest.MonkeyPatch, crash_at: int) -> None:
    import collector.store

    url = s3.bucket()
    dataset = Dataset(seed=64, images=50)
    fake = await fake_factory(dataset)
    await bucket_run(collect, s3, fake, url, chunk_images=20, snapshot_date=DAY)
    real, calls = collector.store.BucketStore.copy, []

    def crashing_copy(store, source, target):  # type: ignore[no-untyped-def]
        calls.append(target)
        if len(calls) == crash_at:
            raise KeyboardInterrupt  # the process dies here
        real(store, source, target)

    monkeypatch.setattr(collector.store.BucketStore, "copy", crashing_copy)
    with pytest.raises(KeyboardInterrupt):
        await bucket_run(collect, s3, fake, url, chunk_images=20, snapshot_date=DAY)
    monkeypatch.undo()
    again = await bucket_run(collect, s3, fake, url, chunk_images=20, snapshot_date=DAY)
    assert again.record.exit_code == 0
    keys = s3.keys(url)
    for table in TABLES:
        if table != "changes":
            assert len([k for k in keys if k.startswith(f"{table}/")]) == 1, table  # one copy
    statuses = again.table("image_status")
    assert sorted(statuses["image_id"].to_pylist()) == sorted(dataset.image_ids())
    assert again.table("members").num_rows == sum(len(dataset.members(i))
                                                  for i in dataset.image_ids())


async def test_a_second_writer_waits_for_a_live_lease_then_refuses_and_takes_a_dead_one(
        fake: FakeCph, collect: Collect, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alive is renewed: a lease another run keeps renewing refuses us (exit 2, naming it)
    after waiting a lease's time; once its renewals stop, the next run waits it out and runs."""
    import threading
    import time

    import orjson

    import collector.lease_bucket

    monkeypatch.setattr(collector.lease_bucket, "TIMING",
                        collector.lease_bucket.Timing(2.0, 0.2, 0.2))
    url = s3.bucket()
    fs = s3.filesystem()
    stop = threading.Event()

    def holder() -> None:  # another host's run, renewing on time
        while not stop.is_set():
            lease = {"run_id": "20261130T020000Z-aaaaaa", "token": "theirs", "host": "pod-7",
                     "pid": 1, "renewed": time.time()}
            with fs.open_output_stream(f"{url.base}/.cph-collector.lock") as handle:
                handle.write(orjson.dumps(lease))
            stop.wait(0.1)

    renewing = threading.Thread(target=holder)
    renewing.start()
    try:
        out = await bucket_run(collect, s3, fake, url)
    finally:
        stop.set()
        renewing.join()
    assert out.error is not None and out.error.exit_code == 2
    assert re.fullmatch(r"output s3://bucket-\S+/nightly: another cph-collector run "
                        r"\(20261130T020000Z-aaaaaa on pod-7, pid 1, seen 0 s ago\) is writing "
                        r"to it; wait for it or use another --output", str(out.error)), out.error
    assert not fake.log and not [k for k in s3.keys(url) if k.startswith("runs/")]

    began = time.monotonic()
    again = await bucket_run(collect, s3, fake, url)  # its holder is gone: waited out
    assert again.record.exit_code == 0
    assert time.monotonic() - began < 30  # a lease of 2 s here
    assert ".cph-collector.lock" not in s3.keys(url)  # released at the end


class Far(BucketStore):
    """The same bucket from a host ``delay`` s further away: every request takes longer."""

    def __init__(self, near: BucketStore, delay: float) -> None:
        super().__init__(near.fs, near.url, near.base)
        self.delay = delay

    def write_stream(self, key: str, fill: Callable[[Any], None]) -> None:
        time.sleep(self.delay)
        super().write_stream(key, fill)

    def read(self, key: str) -> bytes:
        time.sleep(self.delay)
        return super().read(key)

    def files(self, folder: str) -> list[str]:
        time.sleep(self.delay)
        return super().files(folder)

    def folders(self, folder: str) -> list[str]:
        time.sleep(self.delay)
        return super().folders(folder)

    def exists(self, key: str) -> bool:
        time.sleep(self.delay)
        return super().exists(key)

    def copy(self, source: str, target: str) -> None:
        time.sleep(self.delay)
        super().copy(source, target)

    def delete(self, key: str) -> None:
        time.sleep(self.delay)
        super().delete(key)


async def far_run(fake: FakeCph, s3: S3Server, url: Any, ids: Path, delay: float,
                  after: float) -> Run:
    """A run of DAY from a host ``delay`` s from the store, started ``after`` s from now."""
    import asyncio
    import dataclasses
    import io

    from collector.auth import TokenAuth
    from collector.build import build
    from collector.config import Settings
    from collector.errors import CollectorError
    from collector.pipeline import Run as Pipeline
    from collector.secrets import Secret
    from tests.conftest import TOKEN, no_sleep

    await asyncio.sleep(after)
    settings = Settings.of(endpoint=fake.url, output=url, project_id=fake.dataset.project_ids[0],
                        storage_endpoint=s3.endpoint, snapshot_date=DAY, chunk_images=10,
                        rate_limit=100_000, progress_interval=3600)
    parts = build(settings, S3_ENV, auth=lambda _: TokenAuth(Secret(TOKEN)),
                  backoff_sleep=no_sleep)
    assert isinstance(parts.store, BucketStore)
    parts = dataclasses.replace(parts, store=Far(parts.store, delay))
    stderr = io.StringIO()
    run = Pipeline(settings, str(ids), parts, stderr=stderr)
    try:
        return Run(await run.execute(), url, stderr.getvalue())
    except CollectorError as exc:
        return Run(run.record, url, stderr.getvalue(), exc)


@pytest.mark.parametrize("far_after", [0.0, 0.3, 1.0, -0.3])
async def test_two_runs_of_a_date_from_a_near_and_a_far_host_never_publish_less_than_one(
        far_after: float, fake: FakeCph, s3: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 23: a host 20 ms from the store and one 100 ms away start together (or the far
    one up to 1 s later, or earlier): one refuses or waits for the other; the snapshot has
    every image once, and one finished manifest names what is published."""
    import asyncio

    import orjson

    import collector.lease_bucket

    monkeypatch.setattr(collector.lease_bucket, "TIMING",
                        collector.lease_bucket.Timing(6.0, 0.3, 1.0))
    url = s3.bucket()
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in fake.dataset.image_ids()))
    near, far = await asyncio.gather(far_run(fake, s3, url, ids, 0.02, max(-far_after, 0)),
                                     far_run(fake, s3, url, ids, 0.1, max(far_after, 0)))
    codes = sorted(r.record.exit_code or 0 if r.error is None else r.error.exit_code
                   for r in (near, far))
    assert codes in ([0, 0], [0, 2]), (near.error, far.error)
    fs = s3.filesystem()
    status = ds.dataset(f"{url.base}/image_status", filesystem=fs).to_table()
    assert sorted(status["image_id"].to_pylist()) == sorted(fake.dataset.image_ids())
    members = ds.dataset(f"{url.base}/members", filesystem=fs).to_table()
    assert members.num_rows == sum(len(fake.dataset.members(i))
                                   for i in fake.dataset.image_ids())
    keys = s3.keys(url)
    published = {k for k in keys if k.startswith(("image_status/", "members/"))}
    finished = [doc for k in keys if k.startswith("runs/")
                if (doc := orjson.loads(fs.open_input_stream(f"{url.base}/{k}").read()))
                ["status"] == "finished"]
    assert len([d for d in finished if published <= set(d["files"])]) == 1
    assert ".cph-collector.lock" not in keys


async def test_a_run_that_lost_its_lease_stops_with_exit_3_and_publishes_nothing(
        fake: FakeCph, collect: Collect, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import orjson

    import collector.pipeline

    url = s3.bucket()
    fs = s3.filesystem()
    real = collector.pipeline.stage_changes

    def taken_over(*args: Any) -> Any:  # another run takes the lease just before publishing
        with fs.open_output_stream(f"{url.base}/.cph-collector.lock") as handle:
            handle.write(orjson.dumps({"run_id": "20261130T020000Z-thief0", "token": "t",
                                       "host": "pod-0", "pid": 1, "renewed": time.time()}))
        return real(*args)

    monkeypatch.setattr(collector.pipeline, "stage_changes", taken_over)
    out = await bucket_run(collect, s3, fake, url, snapshot_date=DAY)
    assert out.error is not None and out.error.exit_code == 3
    assert str(out.error) == (f"output {url}: lost the lock .cph-collector.lock to run "
                              "20261130T020000Z-thief0; this run stops and publishes nothing")
    assert "\n" not in str(out.error)
    assert not [k for k in s3.keys(url) if k.startswith(("image_status/", "members/"))]
    manifest = orjson.loads(fs.open_input_stream(
        f"{url.base}/runs/{out.record.run_id}.json").read())
    assert (manifest["status"], manifest["exit_code"]) == ("fatal", 3)
    assert s3.keys(url).count(".cph-collector.lock") == 1  # the thief's, left to it


async def test_another_runs_mending_keeps_a_live_shards_staging_and_temporary_uploads(
        fake: FakeCph, collect: Collect, s3: S3Server) -> None:
    """Shard 1/2 of 2026-11-29 is alive (its lease renewed) on another host: a run of another
    date removes only the dead writers' temporary uploads, and leaves the shard's work."""
    import threading

    import orjson

    url = s3.bucket()
    fs = s3.filesystem()
    live, dead = "20261129T020000Z-live00", "20261128T020000Z-dead00"
    shard = "_staging/snapshot_date=2026-11-29/shard-1-of-2"
    kept = [f"_staging/.tmp/{live}/4f2a", f"{shard}/image_status/part-{live}-00000.parquet"]
    for key in [*kept, f"_staging/.tmp/{dead}/77b1", "_staging/.tmp/0c9d"]:
        with fs.open_output_stream(f"{url.base}/{key}") as handle:
            handle.write(b"in flight")
    stop = threading.Event()

    def holder() -> None:
        while not stop.is_set():
            with fs.open_output_stream(f"{url.base}/{shard}.lock") as handle:
                handle.write(orjson.dumps({"run_id": live, "token": "x", "host": "cph-collector-0",
                                           "pid": 1, "renewed": time.time()}))
            stop.wait(0.1)

    renewing = threading.Thread(target=holder)
    renewing.start()
    try:
        out = await bucket_run(collect, s3, fake, url, snapshot_date=DAY)
    finally:
        stop.set()
        renewing.join()
    assert out.record.exit_code == 0
    left = [k for k in s3.keys(url) if k.startswith("_staging/")]
    assert sorted(left) == sorted([*kept, f"{shard}.lock"])


async def test_the_input_can_be_an_object_in_a_bucket_in_every_format(
        fake: FakeCph, collect: Collect, s3: S3Server, tmp_path: Path) -> None:
    import pyarrow as pa

    from collector.store import BucketUrl

    ids = fake.dataset.image_ids()
    url = s3.bucket("inputs")
    fs = s3.filesystem()
    with fs.open_output_stream(f"{url.base}/ids.csv") as handle:
        handle.write(("image_id\n" + "".join(f"{i}\n" for i in ids)).encode())
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_id": ids[:7]}), buffer)
    with fs.open_output_stream(f"{url.base}/ids.parquet") as handle:
        handle.write(buffer.getvalue())
    for name, count in (("ids.csv", len(ids)), ("ids.parquet", 7)):
        out = await collect(fake, input_path=f"{url}/{name}", output=tmp_path / name,
                            env=S3_ENV, storage_endpoint=s3.endpoint)
        assert out.record.exit_code == 0, out.error
        assert out.table("image_status").num_rows == count
        assert out.record.input == f"{url}/{name}"
    missing = BucketUrl("s3", url.bucket, "inputs/nope.txt")
    out = await collect(fake, input_path=str(missing), output=tmp_path / "x", env=S3_ENV,
                        storage_endpoint=s3.endpoint)
    assert out.error is not None and out.error.exit_code == 2
    assert str(out.error).startswith(f"input {missing}: cannot be read (")


async def test_the_change_table_in_a_bucket_is_the_ground_truth_and_diff_reads_it(
        fake_factory: Factory, collect: Collect, s3: S3Server) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    url = s3.bucket()
    before, after = (Dataset(seed=65, images=200, with_doc_example=False, day=d) for d in (0, 1))
    first = await bucket_run(collect, s3, await fake_factory(before), url, before.image_ids(),
                             snapshot_date=DAY)
    ids = sorted(set(before.image_ids()) | set(after.image_ids()))
    second = await bucket_run(collect, s3, await fake_factory(after), url, ids,
                              snapshot_date=NEXT)
    assert first.record.exit_code == second.record.exit_code == 0
    got = {(r["project_id"], r["image_id"], r["member_id"], r["change"])
           for r in second.table("changes").to_pylist()}
    assert got == after.changes() and got
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "collector", "diff", "--output", str(url), "--from", str(DAY),
         "--to", str(NEXT), "--format", "jsonl", "--storage-endpoint", s3.endpoint],
        capture_output=True, text=True, env={**os.environ, **S3_ENV}, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(got)
    assert done.stderr.startswith(f"changes from {DAY} to {NEXT}: ")


@pytest.mark.e2e
async def test_kill_9_in_the_middle_of_a_bucket_publish_then_rerun_leaves_one_complete_copy(
        fake: FakeCph, s3: S3Server, tmp_path: Path) -> None:
    """The store's traffic goes through a proxy that holds the copy of ``members`` into its
    partition: the collector is killed there, with the old members deleted and the new not in."""
    import asyncio
    import os
    import signal
    import sys

    import orjson

    from tests.proxy import ForwardingProxy

    url = s3.bucket()
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in fake.dataset.image_ids()))
    port = int(s3.endpoint.rsplit(":", 1)[1])
    env = {**os.environ, **S3_ENV, "CPH_AUTH_TOKEN": "test-token-4f1c9a7e2b",
           "NO_PROXY": "127.0.0.1"}  # the API direct; the store (s3-test) through the proxy

    async def start(proxy: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id",
            fake.dataset.project_ids[0], "--endpoint", fake.url, "--output", str(url),
            "--storage-endpoint", f"http://s3-test:{port}", "--proxy", proxy,
            "--snapshot-date", str(DAY), "--chunk-images", "10", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def run(proxy: str) -> tuple[int, str]:
        child = await start(proxy)
        _, err = await asyncio.wait_for(child.communicate(), 60)
        return child.returncode or 0, err.decode()

    def members_copy(request: str, headers: dict[str, str]) -> bool:
        from urllib.parse import unquote

        return request.startswith("PUT ") and f"/members/snapshot_date={DAY}/" in unquote(request) \
            and any(k.lower() == "x-amz-copy-source" for k in headers)

    async with ForwardingProxy(upstream=("127.0.0.1", port)) as plain:
        assert (await run(plain.url))[0] == 0  # an earlier, published run of the date
    async with ForwardingProxy(upstream=("127.0.0.1", port), hold=members_copy) as holding:
        victim = await start(holding.url)
        await asyncio.wait_for(holding.held.wait(), 60)
        victim.send_signal(signal.SIGKILL)
        await victim.communicate()
        assert victim.returncode == -signal.SIGKILL
    assert not [k for k in s3.keys(url) if k.startswith(f"members/snapshot_date={DAY}/")]
    async with ForwardingProxy(upstream=("127.0.0.1", port)) as plain:
        code, err = await run(plain.url)
    assert code == 0, err
    assert f"finished publishing {DAY}" in err
    keys = s3.keys(url)
    for table in ("images", "listing_status", "members", "image_status"):
        assert len([k for k in keys if k.startswith(f"{table}/snapshot_date={DAY}/")]) == 1
    fs = s3.filesystem()
    status = ds.dataset(f"{url.base}/image_status", filesystem=fs).to_table()
    assert sorted(status["image_id"].to_pylist()) == sorted(fake.dataset.image_ids())
    runs = [orjson.loads(fs.open_input_stream(f"{url.base}/{k}").read())
            for k in keys if k.startswith("runs/")]
    assert sorted(r["status"] for r in runs) == ["finished"] * 3  # the killed one's data is
    assert [r for r in runs if r.get("recorded_by")]  # visible: the next run said so


async def test_credentials_the_store_refuses_are_exit_2_before_any_request_and_never_shown(
        fake: FakeCph, collect: Collect, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    url = s3.bucket()
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys
    wrong = {"AWS_ACCESS_KEY_ID": "AKIAWRONGKEY0000", "AWS_SECRET_ACCESS_KEY": "wrong-secret-5a"}
    out = await collect(fake, fake.dataset.image_ids(), output=url, env=wrong,
                        storage_endpoint=s3.endpoint)
    assert out.error is not None and out.error.exit_code == 2
    assert str(out.error).startswith(f"output {url}: not writable (the store refused the "
                                     "credentials")
    assert wrong["AWS_SECRET_ACCESS_KEY"] not in str(out.error) + out.stderr
    assert not fake.log
