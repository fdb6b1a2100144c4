"""End to end over real sockets: IDs in, Parquet out, every ID exactly once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from collector.fake import Dataset, FakeCph
from collector.fake.dataset import DOC_EXAMPLE_IMAGE, DOC_EXAMPLE_PROJECT
from tests.conftest import Outcome
from tests.invariants import check_published, visible_files

Collect = Callable[..., Awaitable[Outcome]]


async def test_mixed_batch_gives_every_id_exactly_one_status_row(
        fake: FakeCph, collect: Collect) -> None:
    project = fake.dataset.project_ids[0]
    known = fake.dataset.image_ids(project)
    unknown = fake.dataset.unknown_ids(5)
    lines = [*known, *unknown, " " + known[0] + " ", known[1], "bad/id", "..", "a%2Fb", ""]
    out = await collect(fake, lines)

    assert out.record.exit_code == 0
    expected = {(project, i) for i in known + unknown}
    check_published(out, expected, fake.dataset, fake, invalid=3)
    rows = out.statuses()
    assert {rows[i]["status"] for i in unknown} == {"not_found"}
    assert rows[unknown[0]]["error_code"] == "CPS.0030"
    assert rows[unknown[0]]["http_status"] == 400
    assert rows[unknown[0]]["request_id"]
    assert out.record.counts["duplicates"] == 2
    assert rows["bad/id"]["error_msg"].startswith("line ")


async def test_the_documented_example_gives_exactly_its_two_rows(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect) -> None:
    fake = await fake_factory()
    out = await collect(fake, [DOC_EXAMPLE_IMAGE], project_id=DOC_EXAMPLE_PROJECT)
    members = out.table("members").sort_by("member_id").to_pylist()
    assert [(m["member_id"], m["create_time"], m["update_time"]) for m in members] == [
        ("6733a7ad58694af18c7ee4820052d63f",
         dt.datetime(2024, 4, 14, 8, 27, 45, 307000, tzinfo=dt.UTC),
         dt.datetime(2024, 4, 14, 8, 27, 45, 307000, tzinfo=dt.UTC)),
        ("87dc6af96095488d9205b6f31f314b16",
         dt.datetime(2024, 4, 17, 2, 13, 38, 58000, tzinfo=dt.UTC),
         dt.datetime(2024, 4, 17, 2, 13, 38, 58000, tzinfo=dt.UTC)),
    ]
    assert out.statuses()[DOC_EXAMPLE_IMAGE]["member_count"] == 2


async def test_duckdb_and_pandas_read_the_output_with_the_right_types(
        fake: FakeCph, collect: Collect) -> None:
    ids = fake.dataset.image_ids(fake.dataset.project_ids[0])
    out = await collect(fake, ids)
    members_glob = f"{out.output}/members/*/*.parquet"
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT count(*), count(DISTINCT image_id), min(snapshot_date) FROM read_parquet("
        f"'{members_glob}', hive_partitioning = true)").fetchone()
    assert rows is not None
    assert rows[0] == out.record.counts["member_rows"]
    types = {row[0]: row[1] for row in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{members_glob}', hive_partitioning = true)"
    ).fetchall()}
    assert types["create_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["member_id"] == "VARCHAR"

    status = pd.read_parquet(out.output / "image_status")
    assert len(status) == len(ids)
    assert str(status["collected_at"].dtype) == "datetime64[ms, UTC]"
    assert str(status["attempts"].dtype) == "int32"
    assert ds.dataset(out.output / "image_status", format="parquet",
                      partitioning="hive").schema.field("http_status").type == pa.int32()
    assert set(status["http_status"]) <= {200, 400, 404}  # every image was answered


async def test_a_second_run_for_the_same_date_replaces_the_first(
        fake: FakeCph, collect: Collect) -> None:
    ids = fake.dataset.image_ids(fake.dataset.project_ids[0])
    first = await collect(fake, ids)
    second = await collect(fake, ids)
    assert first.record.run_id != second.record.run_id
    status = second.table("image_status")
    assert status.num_rows == len(ids)
    assert set(status.column("run_id").to_pylist()) == {second.record.run_id}
    assert len(visible_files(second.output, "image_status")) == 1


async def test_snapshot_date_partitions_are_kept_apart(fake: FakeCph, collect: Collect) -> None:
    ids = fake.dataset.image_ids(fake.dataset.project_ids[0])[:5]
    await collect(fake, ids, snapshot_date=dt.date(2026, 1, 1))
    out = await collect(fake, ids, snapshot_date=dt.date(2026, 1, 2))
    dates = sorted(p.name for p in (out.output / "image_status").iterdir())
    assert dates == ["snapshot_date=2026-01-01", "snapshot_date=2026-01-02"]


async def test_chunks_are_committed_as_the_run_goes(fake: FakeCph, collect: Collect) -> None:
    ids = fake.dataset.image_ids(fake.dataset.project_ids[0])
    out = await collect(fake, ids, chunk_images=7)
    files = visible_files(out.output, "image_status")
    assert len(files) == -(-len(ids) // 7)
    check_published(out, {(fake.dataset.project_ids[0], i) for i in ids}, fake.dataset, fake)


async def test_an_image_shared_with_nobody_is_ok_with_zero_members(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect) -> None:
    fake = await fake_factory(Dataset(seed=5, images=20, empty_share=1.0))
    out = await collect(fake, fake.dataset.image_ids())
    assert {r["status"] for r in out.statuses().values()} == {"ok"}
    assert out.table("members").num_rows == 0
    assert visible_files(out.output, "members")  # an empty file still carries the schema


async def test_paging_is_followed_and_every_member_arrives_once(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that pages after 3 members: the collector follows next_marker to the end."""
    fake = await fake_factory(Dataset(seed=9, images=30, empty_share=0.0))
    original = fake.cph.members_page

    def three_per_page(ex, query, image):  # type: ignore[no-untyped-def]
        return original(ex, {"limit": "3", **query}, image)

    monkeypatch.setattr(fake.cph, "members_page", three_per_page)
    out = await collect(fake, fake.dataset.image_ids())
    check_published(out, {(fake.dataset.project_ids[0], i) for i in fake.dataset.image_ids()},
                    fake.dataset, fake)
    assert any(e.marker for e in fake.log)


async def test_the_older_api_without_paging_works_too(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect) -> None:
    fake = await fake_factory(paging=False)
    ids = fake.dataset.image_ids()
    out = await collect(fake, ids)
    check_published(out, {(fake.dataset.project_ids[0], i) for i in ids}, fake.dataset, fake)


async def test_csv_input_spans_several_projects(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect, tmp_path: Path) -> None:
    fake = await fake_factory(Dataset(seed=11, projects=3, images=10))
    rows = [(p, i) for p in fake.dataset.project_ids[:3] for i in fake.dataset.image_ids(p)]
    path = tmp_path / "ids.csv"
    path.write_text("project_id,image_id\n" + "".join(f"{p},{i}\n" for p, i in rows))
    out = await collect(fake, input_path=path, project_id=None)
    check_published(out, set(rows), fake.dataset, fake)


async def test_a_project_the_caller_may_not_read_is_forbidden_and_exit_1(
        fake: FakeCph, collect: Collect) -> None:
    out = await collect(fake, ["abc", "def"], project_id="someoneelse")
    assert {r["status"] for r in out.statuses().values()} == {"forbidden"}
    assert {r["error_code"] for r in out.statuses().values()} == {"CPS.0001"}
    assert out.record.exit_code == 1


async def test_a_404_for_unknown_images_is_not_found_when_the_api_answers_otherwise(
        fake_factory: Callable[..., Awaitable[FakeCph]], collect: Collect) -> None:
    fake = await fake_factory(unknown_image="404")
    ids = fake.dataset.image_ids()[:3] + fake.dataset.unknown_ids(3)
    out = await collect(fake, ids)
    assert out.record.exit_code == 0
    assert [out.statuses()[i]["status"] for i in ids] == ["ok"] * 3 + ["not_found"] * 3
