"""Discovery against a server that lies or races: what a night of listings must survive.

Each test runs the real pipeline against the fake server on a real socket and asserts what a
reader of the output finds: every listed image once, honest listing rows, honest counts.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from collector.fake import Dataset, FakeCph
from tests.conftest import Outcome as Run
from tests.invariants import check_published

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)


def manifest(out: Run) -> dict[str, Any]:
    return dict(orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes()))


def manifest_matches_files(out: Run) -> None:
    """Every file the manifest names exists, and every published file is named."""
    named = sorted(manifest(out)["files"])
    found = sorted(str(p.relative_to(out.output)) for p in out.output.glob("*/*/*.parquet"))
    assert named == found
    rows = {t: sum(pq.ParquetFile(out.output / f).metadata.num_rows for f in named
                   if f.startswith(f"{t}/")) for t in ("images", "image_status", "members")}
    counts = manifest(out)["counts"]
    assert (rows["images"], rows["image_status"], rows["members"]) == (
        counts["images_listed"], counts["status_rows"], counts["member_rows"])


@pytest.mark.parametrize("chunk", [50, 150, 1000])
async def test_four_listings_paging_while_a_chunk_is_written_lose_no_image(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch,
        chunk: int) -> None:
    import collector.discover
    import collector.sink

    dataset = Dataset(seed=41, projects=4, images=600, with_doc_example=False,
                      shared_per_project=0, empty_share=0.5)
    fake = await fake_factory(dataset)
    projects = dataset.project_ids
    private = {(p, i) for p in projects for i in dataset.listed(p, "private")}
    real, real_listing = collector.sink.write_parquet, collector.discover.list_images
    listed_all, lock, finished = threading.Event(), threading.Lock(), [0]
    writing, most, writes = [0], [0], [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real_listing(*args, **kwargs)
        finally:
            finished[0] += 1
            if finished[0] == 2 * len(projects):
                listed_all.set()

    def inventory_writes_counted(store: Any, key: str, table: Any) -> None:
        """The first inventory chunk is written only once every listing has ended: the
        listings page on meanwhile, as fast as they can; a second chunk write beginning
        before the first ended would be two writers at once."""
        if "/images/" not in key:
            real(store, key, table)
            return
        with lock:
            writing[0] += 1
            writes[0] += 1
            most[0] = max(most[0], writing[0])
            first = writes[0] == 1
        try:
            if first:
                listed_all.wait(10)
            real(store, key, table)
        finally:
            with lock:
                writing[0] -= 1

    monkeypatch.setattr(collector.discover, "list_images", counted)
    monkeypatch.setattr(collector.sink, "write_parquet", inventory_writes_counted)
    out = await collect(fake, discover=True, project_id=",".join(projects), chunk_images=chunk,
                        concurrency=32, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    assert listed_all.is_set() and writes[0] >= 2 and most[0] == 1
    listed = Counter((r["project_id"], r["image_id"]) for r in out.table("images").to_pylist())
    assert set(listed) == private and set(listed.values()) == {1}
    check_published(out, private, dataset)
    manifest_matches_files(out)


async def test_a_listed_id_no_url_may_carry_is_one_invalid_id_row_and_the_night_goes_on(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=42, projects=1, images=60, with_doc_example=False)
    project = dataset.project_ids[0]
    odd = dataset.listed(project, "private")[:2]
    bad = {odd[0]: "../../v3/auth/tokens", odd[1]: "x" * 65}
    fake = await fake_factory(dataset, listed_fields={i: {"image_id": b} for i, b in bad.items()})
    out = await collect(fake, discover=True, project_id=project, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    rest = {(project, i) for i in dataset.listed(project, "private") if i not in bad}
    check_published(out, rest, dataset, fake, invalid=2)
    rows = {r["image_id"]: r for r in out.table("image_status").to_pylist()
            if r["status"] == "invalid_id"}
    assert set(rows) == set(bad.values())
    for row in rows.values():
        assert row["project_id"] == project and row["attempts"] == 0
        assert f"ListImages of project {project} (image_type private)" in row["error_msg"]
    assert not [e for e in fake.log if "v3/auth/tokens" in e.path or "x" * 65 in e.path]


async def test_iam_projects_whose_ids_no_url_may_carry_are_named_in_a_warning(
        fake_factory: Factory, collect: Collect, caplog: pytest.LogCaptureFixture) -> None:
    dataset = Dataset(seed=43, projects=1, images=5, with_doc_example=False,
                      locked_project=False)
    fake = await fake_factory(dataset, iam_extra_projects=[
        {"id": "../evil", "name": "cn-north-4_evil"}, {"id": 42, "name": "cn-north-4_num"},
        {"id": "a b", "name": "cn-east-3"}])  # another region's: not ours to warn about
    out = await collect(fake, discover=True, region="cn-north-4", endpoint=fake.url,
                        iam_endpoint=fake.url, project_id=None, snapshot_date=DAY)
    assert out.record.exit_code == 0, out.error
    warned = [r.getMessage() for r in caplog.records if "not valid project IDs" in r.message]
    assert warned == ["IAM lists 2 project(s) of cn-north-4 whose IDs are not valid project "
                      "IDs (only letters, digits, - and _): not listed: ../evil, 42"]


TIMES = [  # (create_time, update_time) as sent -> as stored (ms), None: null and counted
    ((1713320018, 1713320018058), (1713320018000, 1713320018058)),  # JSON numbers: s and ms
    ((1713320018.5, 1713320018058.0), (1713320018500, 1713320018058)),  # floats
    (("1713320018", "9999999999999999"), (1713320018000, None)),  # 16 digits: no image's time
    (("0001-01-01T00:00:00+01:00", -5), (None, None)),
    (("99999999999999999999999999", "1e400x"), (None, None)),
]
VALUES = [  # fields that do not fit their column -> null, counted
    {"status": 2**31}, {"image_size": 2**63}, {"status": -1}, {"image_name": 42},
]


async def test_times_and_values_that_do_not_fit_are_null_and_counted_and_a_resume_holds(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink

    dataset = Dataset(seed=44, projects=1, images=40, with_doc_example=False)
    project = dataset.project_ids[0]
    listed = dataset.listed(project, "private")
    fields: dict[str, dict[str, object]] = {
        i: {"create_time": c, "update_time": u}
        for i, ((c, u), _) in zip(listed, TIMES, strict=False)}
    fields.update({i: v for i, v in zip(listed[len(TIMES):], VALUES, strict=False)})
    fake = await fake_factory(dataset, listed_fields=fields)
    real, writes = collector.sink.write_parquet, []

    def disk_full_at_the_second_chunk(store: Any, key: str, table: Any) -> None:
        writes.append(key)
        if "image_status" in key and sum("image_status" in w for w in writes) > 1:
            raise OSError(28, "No space left on device")
        real(store, key, table)

    monkeypatch.setattr(collector.sink, "write_parquet", disk_full_at_the_second_chunk)
    first = await collect(fake, discover=True, project_id=project, chunk_images=10,
                          concurrency=1, snapshot_date=DAY)
    assert first.record.exit_code == 3 and "No space left" in str(first.error)
    monkeypatch.setattr(collector.sink, "write_parquet", real)
    for out in (first, await collect(fake, discover=True, project_id=project,
                                     snapshot_date=DAY)):
        counts = manifest(out)["counts"]
        assert (counts["unreadable_image_times"], counts["unfit_image_values"]) == (5, 4)
    again = out
    assert again.error is None and again.record.exit_code == 0, again.error
    assert manifest(again)["counts"]["resumed"] == 10
    check_published(again, {(project, i) for i in listed}, dataset)
    rows = {r["image_id"]: r for r in again.table("images").to_pylist()}

    def ms(value: dt.datetime | None) -> int | None:
        return None if value is None else round(value.timestamp() * 1000)

    for image, (_, stored) in zip(listed, TIMES, strict=False):
        assert (ms(rows[image]["create_time"]), ms(rows[image]["update_time"])) == stored
    for image, value in zip(listed[len(TIMES):], VALUES, strict=False):
        assert rows[image][next(iter(value))] is None


@pytest.mark.parametrize(("lie", "code", "message"), [
    ("empty", "empty_page", "the page at offset 0 is empty, but total says 1000000000 images"),
    ("first_page", "paging_loop", "the page at offset 100 shows only images of earlier pages"),
    ("alternate", "paging_loop", "the page at offset 200 shows only images of earlier pages"),
    ("reordered", "paging_loop", "the page at offset 100 shows only images of earlier pages"),
])
async def test_a_listing_that_lies_is_a_failed_listing(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch,
        lie: str, code: str, message: str) -> None:
    import collector.discover

    monkeypatch.setattr(collector.discover, "MAX_LISTING_PAGES", 20)  # a runaway ends fast
    dataset = Dataset(seed=45, projects=2, images=250, with_doc_example=False,
                      shared_per_project=0)
    liar, honest = dataset.project_ids
    fake = await fake_factory(dataset, listing_lies={liar: lie})
    out = await collect(fake, discover=True, project_id=f"{liar},{honest}", snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 1, out.error
    ledger = {(r["project_id"], r["image_type"]): r for r in
              out.table("listing_status").to_pylist()}
    row = ledger[(liar, "private")]
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert row["error_msg"].startswith(message)
    assert ledger[(honest, "private")]["status"] == "ok"
    counts = manifest(out)["counts"]
    assert counts["listings_failed"] == 1 + (lie == "empty")  # its share listing: empty too
    listed = Counter((r["project_id"], r["image_id"]) for r in out.table("images").to_pylist())
    assert set(listed.values()) == {1}
    assert counts["images_listed"] == len(listed)


async def test_a_night_whose_listing_lied_empty_reports_no_share_gone(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=46, projects=1, images=60, with_doc_example=False)
    project = dataset.project_ids[0]
    honest = await fake_factory(dataset)
    first = await collect(honest, discover=True, project_id=project, snapshot_date=DAY)
    assert first.record.exit_code == 0, first.error
    liar = await fake_factory(dataset, listing_lies={project: "empty"})
    second = await collect(liar, discover=True, project_id=project,
                           snapshot_date=DAY + dt.timedelta(days=1))
    assert second.record.exit_code == 1
    doc = manifest(second)["changes"]
    assert (doc["image_gone"], doc["removed"]) == (0, 0)


async def test_an_image_on_two_pages_is_kept_once_and_counted(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=47, projects=1, images=250, with_doc_example=False)
    project = dataset.project_ids[0]
    fake = await fake_factory(dataset, listing_lies={project: "overlap"})
    out = await collect(fake, discover=True, project_id=project, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    private = {(project, i) for i in dataset.listed(project, "private")}
    listed = Counter((r["project_id"], r["image_id"]) for r in out.table("images").to_pylist()
                     if r["image_type"] == "private")
    assert set(listed) == private and set(listed.values()) == {1}
    check_published(out, private, dataset, fake)
    counts = manifest(out)["counts"]
    assert (counts["repeated_listed_images"], counts["private_images_listed"]) == (1, 250)
    manifest_matches_files(out)


async def test_an_image_type_that_disagrees_with_its_listing_is_the_listings_and_counted(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=48, projects=1, images=30, with_doc_example=False,
                      shared_per_project=4)
    project = dataset.project_ids[0]
    private, shared = dataset.listed(project, "private"), dataset.listed(project, "share")
    odd = {private[0]: {"image_type": "share"}, private[1]: {"image_type": None},
           shared[0]: {"image_type": "private"}}
    fake = await fake_factory(dataset, listed_fields=odd)
    out = await collect(fake, discover=True, project_id=project, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    check_published(out, {(project, i) for i in private}, dataset, fake)
    kinds = {r["image_id"]: r["image_type"] for r in out.table("images").to_pylist()}
    assert kinds == {**dict.fromkeys(private, "private"), **dict.fromkeys(shared, "share")}
    counts = manifest(out)["counts"]
    assert (counts["private_images_listed"], counts["unfit_image_values"]) == (30, 2)


async def test_a_number_no_double_holds_is_one_null_counted_not_a_failed_listing(
        fake_factory: Factory, collect: Collect) -> None:
    from collector.fake.model import RawJson

    dataset = Dataset(seed=49, projects=1, images=30, with_doc_example=False)
    project = dataset.project_ids[0]
    private = dataset.listed(project, "private")
    fake = await fake_factory(dataset, listed_fields={
        private[0]: {"image_size": RawJson("1e400")},
        private[1]: {"create_time": RawJson("-1e400"), "status": RawJson("1" + "0" * 400)}})
    out = await collect(fake, discover=True, project_id=project, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    assert {r["status"] for r in out.table("listing_status").to_pylist()} == {"ok"}
    check_published(out, {(project, i) for i in private}, dataset, fake)
    rows = {r["image_id"]: r for r in out.table("images").to_pylist()}
    assert rows[private[0]]["image_size"] is None
    assert (rows[private[1]]["create_time"], rows[private[1]]["status"]) == (None, None)
    counts = manifest(out)["counts"]
    assert (counts["unfit_image_values"], counts["unreadable_image_times"]) == (2, 1)
