"""Discovery: the projects from IAM, the images from ListImages, the inventory and the ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import pytest

from collector.api import BodyError
from collector.discover import list_images
from collector.errors import Status
from collector.fake import Dataset, FakeCph
from collector.fetch import Fetcher
from collector.listing import Listing, parse_image_page, parse_time, region_projects
from collector.pipeline import summary_line
from tests.conftest import Outcome as Run
from tests.invariants import check_published

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)


@pytest.mark.parametrize(("raw", "ms"), [
    ("2024-04-17T02:13:38Z", 1713320018000),
    ("2024-04-17T10:13:38+08:00", 1713320018000),
    ("2024-04-17T02:13:38", 1713320018000),  # no zone: UTC
    ("2024-04-17 02:13:38", 1713320018000),
    ("2024-04-17T02:13:38.058Z", 1713320018058),
    ("1713320018058", 1713320018058),  # epoch ms as digits
    ("1713320018", 1713320018000),  # epoch seconds as digits
    (1713320018058, 1713320018058),
    (1713320018, 1713320018000),  # a JSON number of epoch seconds, not 1970-01-20
    (1713320018.25, 1713320018250), (1713320018058.0, 1713320018058),
    ("1713320018.5", 1713320018500),
    ("9999999999999999", None), ("9" * 5000, None), (2**70, None), (float("nan"), None),
    (-1713320018, None), (0, None), ("4102444800000", None),  # 2100: no image's time
    ("0001-01-01T00:00:00+01:00", None), ("9999-12-31T23:59:59-01:00", None),
    ("yesterday", None), ("", None), (None, None), (True, None),
])
def test_listimages_times_in_any_documented_shape(raw: Any, ms: int | None) -> None:
    assert parse_time(raw) == ms


def test_the_regions_projects_are_the_one_named_like_it_and_its_sub_projects() -> None:
    projects = [{"id": "a" * 32, "name": "cn-north-4"}, {"id": "b" * 32, "name": "cn-north-4_x"},
                {"id": "c" * 32, "name": "cn-north-40"}, {"id": "d" * 32, "name": "cn-east-3"},
                {"id": "e" * 32, "name": "cn-north-4_off", "enabled": False},
                {"id": "../x", "name": "cn-north-4_evil"}]
    assert region_projects(projects, "cn-north-4") == ["a" * 32, "b" * 32]


@pytest.mark.parametrize("body", [b"<html>", b'{"images": []}', b'{"image_infos": [{}]}',
                                  b'{"image_infos": [], "total": "3"}'])
def test_a_listing_page_of_another_shape_is_a_body_error(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_image_page(body)


def inventory(out: Run) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for row in out.table("images").to_pylist():
        found.setdefault((row["project_id"], row["image_type"]), set()).add(row["image_id"])
    return found


async def test_discovery_lists_every_project_and_image_and_collects_the_private_ones(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=31, projects=2, images=120)
    fake = await fake_factory(dataset)
    out = await collect(fake, discover=True, region="cn-north-4", endpoint=fake.url,
                        iam_endpoint=fake.url, project_id=None, snapshot_date=DAY)
    ours = dataset.project_ids  # the region's project, its sub-projects (the doc example's too)
    assert inventory(out) == {(p, t): set(dataset.listed(p, t)) for p in ours
                              for t in ("private", "share") if dataset.listed(p, t)}
    rows = {r["image_id"]: r for r in out.table("images").to_pylist()}
    for p in ours:
        for image, created, updated in dataset.expected_inventory(p, "private"):
            stamp = rows[image]
            assert (int(stamp["create_time"].timestamp() * 1000),
                    int(stamp["update_time"].timestamp() * 1000)) == (created, updated)
            assert stamp["region"] == "cn-north-4" and stamp["image_name"].startswith("image-")
    private = {(p, i) for p in ours for i in dataset.listed(p, "private")}
    check_published(out, private, dataset, fake)  # one status row per listed private image
    ledger = {(r["project_id"], r["image_type"]): r for r in
              out.table("listing_status").to_pylist()}
    locked = next(p for p, n in dataset.other_projects.items() if n.endswith("_locked"))
    assert {k: v["status"] for k, v in ledger.items()} == {
        **{(p, t): "ok" for p in ours for t in ("private", "share")},
        (locked, "private"): "forbidden", (locked, "share"): "forbidden"}
    assert ledger[(locked, "private")]["error_code"] == "CPS.0001"
    assert out.record.exit_code == 1  # a listing the credentials may not read is not "no images"
    c = out.record.counts
    assert (c["projects"], c["listings"], c["listings_forbidden"], c["private_images_listed"],
            c["unreadable_image_times"]) == (4, 8, 2, len(private), 0)
    assert (f"listed {c['images_listed']:,} images in 8 listings of 4 projects (0 failed, "
            "2 forbidden); ") in summary_line(out.record)


async def test_a_listing_page_that_fails_for_good_is_exit_1_and_an_honest_row(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=32, projects=1, images=250, with_doc_example=False)
    project = dataset.project_ids[0]
    fake = await fake_factory(dataset, script={f"list:{project}:private:200": ["http_503"] * 9})
    out = await collect(fake, discover=True, project_id=project, max_attempts=3,
                        snapshot_date=DAY)
    ledger = {r["image_type"]: r for r in out.table("listing_status").to_pylist()}
    row = ledger["private"]
    assert (row["status"], row["http_status"], row["error_code"], row["attempts"],
            row["images"], row["pages"]) == ("failed", 503, "APIGW.0201", 3 + 2, 200, 2)
    assert ledger["share"]["status"] == "ok"
    assert out.record.exit_code == 1
    assert len(out.statuses()) == 200  # what was listed is collected; nothing invented


async def test_named_projects_are_listed_without_asking_iam(fake_factory: Factory,
                                                          collect: Collect) -> None:
    dataset = Dataset(seed=33, projects=2, images=30, with_doc_example=False)
    fake = await fake_factory(dataset)
    out = await collect(fake, discover=True, project_id=",".join(dataset.project_ids))
    assert out.record.exit_code == 0
    assert not [e for e in fake.log if e.path.startswith("/v3/")]
    assert len(out.statuses()) == 60


async def test_a_run_that_stopped_after_listing_does_not_list_again(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.sink

    dataset = Dataset(seed=34, projects=1, images=80, with_doc_example=False)
    project = dataset.project_ids[0]
    fake = await fake_factory(dataset)
    real, writes = collector.sink.write_parquet, []

    def disk_full_at_the_second_chunk(store, target, table):  # type: ignore[no-untyped-def]
        writes.append(target)
        if "image_status" in str(target) and sum("image_status" in str(w) for w in writes) > 1:
            raise OSError(28, "No space left on device")
        real(store, target, table)

    monkeypatch.setattr(collector.sink, "write_parquet", disk_full_at_the_second_chunk)
    first = await collect(fake, discover=True, project_id=project, chunk_images=20,
                          concurrency=1, snapshot_date=DAY)
    assert first.record.exit_code == 3
    monkeypatch.setattr(collector.sink, "write_parquet", real)
    listed_before = sum(e.outcome == "list" for e in fake.log)
    again = await collect(fake, discover=True, project_id=project, snapshot_date=DAY)
    assert again.record.exit_code == 0
    assert sum(e.outcome == "list" for e in fake.log) == listed_before  # no listing again
    assert again.record.counts["resumed"] == 20
    check_published(again, {(project, i) for i in dataset.listed(project, "private")}, dataset)
    assert inventory(again)[(project, "private")] == set(dataset.listed(project, "private"))
    manifest = orjson.loads((again.output / "runs" / f"{again.record.run_id}.json").read_bytes())
    assert manifest["input"] == "discover"


async def test_a_stop_ends_a_listing_between_pages_and_leaves_it_unfinished() -> None:
    stop = asyncio.Event()
    stop.set()

    async def write(listing: Listing, infos: list[dict[str, Any]]) -> None:
        raise AssertionError("nothing is listed after a stop")

    listing = await list_images(cast(Fetcher, None), "https://cph.example",
                                Listing("cn-north-4", "p1", "private"), write, stop)
    assert (listing.status, listing.pages, listing.error_msg) == (
        Status.FAILED, 0, "stopped before the listing ended")


async def test_several_regions_each_list_their_own_projects_at_their_own_endpoints(
        fake_factory: Factory, collect: Collect) -> None:
    north = Dataset(seed=35, projects=2, images=40, region="cn-north-4", locked_project=False)
    east = Dataset(seed=36, projects=1, images=30, region="cn-east-3", locked_project=False)
    fake = await fake_factory(Dataset(seed=1, images=1),
                              regions={"cn-north-4": north, "cn-east-3": east})
    out = await collect(fake, discover=True, region="cn-north-4,cn-east-3", project_id=None,
                        endpoint=fake.url + "/{region}", iam_endpoint=fake.url + "/{region}")
    assert out.record.exit_code == 0, out.error
    private = {(p, i) for data in (north, east) for p in data.project_ids
               for i in data.listed(p, "private")}
    check_published(out, private, None, None)
    regions = {(r["region"], r["project_id"]) for r in out.table("listing_status").to_pylist()}
    assert regions == {("cn-north-4", p) for p in north.project_ids} | \
        {("cn-east-3", p) for p in east.project_ids}
    members = {(m["project_id"], m["image_id"], m["member_id"])
               for m in out.table("members").to_pylist()}
    assert members == {(p, i, r[2]) for data in (north, east) for p, i in private
                       if data.owner(i) == p for r in data.expected_rows(p, i)}
    paths = {e.path.split("/")[1] for e in fake.log}
    assert paths == {"cn-north-4", "cn-east-3"}  # each region's calls went to its endpoint


@pytest.mark.parametrize(("settings", "message"), [
    ({"region": "cn-north-4,cn-east-3"}, "several regions only with discover"),
    ({"region": "cn-north-4,cn-east-3", "discover": True, "project_id": "p1"},
     "the projects come from IAM"),
    ({"region": "cn-north-4,cn-east-3", "discover": True, "endpoint": "http://127.0.0.1:1"},
     "it must contain {region}"),
])
def test_several_regions_need_discovery_iam_and_an_endpoint_per_region(
        settings: dict[str, Any], message: str) -> None:
    from collector.config import load_settings
    from collector.errors import UsageError

    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_settings(settings, {})


def test_an_unreadable_image_time_is_null_and_counted() -> None:
    from collector.listing import Inventory

    listing = Listing("cn-north-4", "p1", "private")
    inventory = Inventory()
    inventory.add(listing, [{"image_id": "i1", "create_time": "last tuesday",
                             "update_time": "2024-04-17T02:13:38Z"}], 0)
    assert inventory.columns["create_time"] == [None]
    assert inventory.columns["update_time"] == [1713320018000]
    assert (inventory.bad_times, listing.bad_times) == (1, 1)


async def test_a_listing_that_raises_cancels_the_listings_beside_it_at_once() -> None:
    """An internal error in one listing ends the discovery, and the listings running beside
    it end with it: none is left listing (and writing) unwatched after the run gave up."""
    from collector.build import Region
    from collector.discover import list_all
    from collector.sink import ParquetSink

    asked, cancelled = asyncio.Event(), asyncio.Event()

    class Stand:
        async def fetch(self, url: str, project: str, listing: Listing, parse: Any) -> Any:
            if project == "broken":
                await asyncio.wait_for(asked.wait(), 5)  # the other listing is in flight
                raise RuntimeError("a defect in one listing")
            asked.set()
            try:
                await asyncio.Event().wait()  # its page never comes
            except asyncio.CancelledError:
                cancelled.set()
                raise

    region = Region("cn-north-4", "https://cph.example", cast(Fetcher, Stand()), "",
                    cast(Fetcher, None))
    jobs = [(region, Listing("cn-north-4", p, "private")) for p in ("slow", "broken")]
    with pytest.raises(RuntimeError, match="a defect in one listing"):
        await list_all(jobs, cast(ParquetSink, None), 100)
    assert cancelled.is_set()
