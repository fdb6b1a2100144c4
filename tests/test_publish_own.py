"""A publish deletes and counts only the files the tool names (I15), and a publish a stopped
run left is recorded with the counts, files and verdict that run would have given."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.fake import Dataset, FakeCph
from tests.conftest import S3_ENV, S3Server
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
NIGHT1, NIGHT2, NIGHT3 = dt.date(2026, 11, 30), dt.date(2026, 12, 1), dt.date(2026, 12, 2)
PARTITION = f"image_status/snapshot_date={NIGHT1}"


def foreign_parquet() -> bytes:
    """Another tool's file that reads as statuses: counted, it would add five ``ok`` rows."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"status": ["ok"] * 5, "image_id": list("abcde")}), sink)
    return bytes(sink.getvalue())


def doc_of(output: Path, run_id: str) -> dict[str, Any]:
    return dict(orjson.loads((output / "runs" / f"{run_id}.json").read_bytes()))


def die_after_the_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's data becomes visible, then the process dies before its manifest says so."""
    import collector.sink

    real = collector.sink.finish_publish

    def swap_then_die(store: Any, staging: str, snapshot_date: dt.date) -> None:
        real(store, staging, snapshot_date)
        raise KeyboardInterrupt

    monkeypatch.setattr(collector.sink, "finish_publish", swap_then_die)


@pytest.mark.parametrize("where", ["disk", "bucket"])
async def test_a_republish_deletes_only_our_own_files_in_the_partition(
        fake_factory: Factory, collect: Collect, s3: S3Server, tmp_path: Path,
        where: str) -> None:
    dataset = Dataset(seed=71, images=40)
    fake = await fake_factory(dataset)
    ids = dataset.image_ids()
    foreign = {"export.parquet": foreign_parquet(), "_SUCCESS": b"", "notes.txt": b"theirs"}
    if where == "disk":
        output: Any = tmp_path / "out"
        settings: dict[str, Any] = {"output": output}
    else:
        output = s3.bucket()
        settings = {"output": output, "env": S3_ENV, "storage_endpoint": s3.endpoint}
    first = await collect(fake, ids, snapshot_date=NIGHT1, **settings)
    assert first.record.exit_code == 0, first.error
    fs = s3.filesystem()
    for name, data in foreign.items():
        if where == "disk":
            (output / PARTITION / name).write_bytes(data)
        else:
            with fs.open_output_stream(f"{output.base}/{PARTITION}/{name}") as stream:
                stream.write(data)
    again = await collect(fake, ids, snapshot_date=NIGHT1, **settings)  # a re-run of the date
    assert again.record.exit_code == 0, again.error

    def read(name: str) -> bytes:
        if where == "disk":
            return bytes((output / PARTITION / name).read_bytes())
        with fs.open_input_stream(f"{output.base}/{PARTITION}/{name}") as stream:
            return bytes(stream.read())

    assert {name: read(name) for name in foreign} == foreign  # untouched, byte for byte
    ours = [f for f in again.record.files if f.startswith(f"{PARTITION}/")]
    assert len(ours) == 1 and again.record.run_id in ours[0]  # the old run's files replaced
    if where == "disk":
        assert sorted(p.name for p in (output / PARTITION).iterdir()) == sorted(
            [*foreign, ours[0].rsplit("/", 1)[1]])
    else:
        assert sorted(k.removeprefix(f"{PARTITION}/") for k in s3.keys(output)
                      if k.startswith(f"{PARTITION}/")) == sorted(
            [*foreign, ours[0].rsplit("/", 1)[1]])


async def test_a_stopped_publish_is_recorded_from_our_own_files_only(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    dataset = Dataset(seed=72, images=40)
    fake = await fake_factory(dataset)
    ids = dataset.image_ids()
    die_after_the_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await collect(fake, ids, snapshot_date=NIGHT1)
    monkeypatch.undo()
    output = tmp_path / "out"
    (stopped,) = [p.stem for p in (output / "runs").glob("*.json")]
    (output / PARTITION / "export.parquet").write_bytes(foreign_parquet())  # another tool's
    later = await collect(fake, ids, snapshot_date=NIGHT2)  # records the stopped publish
    assert later.record.exit_code == 0, later.error
    doc = doc_of(output, stopped)
    assert (doc["status"], doc["exit_code"]) == ("finished", 0)
    assert (doc["counts"]["status_rows"], doc["counts"]["ok"]) == (40, 40)
    assert f"{PARTITION}/export.parquet" not in doc["files"]
    assert sorted(doc["files"]) == sorted(
        str(p.relative_to(output)) for p in output.glob(f"*/snapshot_date={NIGHT1}/part-*"))


async def test_a_stopped_publish_with_untrusted_shares_is_recorded_as_exit_4(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    before, after = (Dataset(seed=73, images=200, with_doc_example=False, day=d)
                     for d in (0, 1))
    first = await collect(await fake_factory(before), before.image_ids(),
                          snapshot_date=NIGHT1)
    assert first.record.exit_code == 0, first.error
    fake = await fake_factory(after)
    ids = sorted(set(before.image_ids()) | set(after.image_ids()))
    die_after_the_swap(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await collect(fake, ids, snapshot_date=NIGHT2, fail_on_untrusted=True)
    monkeypatch.undo()
    output = tmp_path / "out"
    (stopped,) = {p.stem for p in (output / "runs").glob("*.json")} - {first.record.run_id}
    later = await collect(fake, after.image_ids(), snapshot_date=NIGHT3)
    assert later.record.exit_code == 0, later.error
    doc = doc_of(output, stopped)
    assert (doc["status"], doc["exit_code"]) == ("finished", 4)  # as it would have ended
    changes = doc["changes"]
    added = sum(c == "added" for *_, c in after.changes())
    assert added and changes["added"] == changes["untrusted"]["added"] == added
    assert changes["previous_snapshot_date"] == str(NIGHT1)
