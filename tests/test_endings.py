"""How a night ends: what a re-run retries, when a night is too broken to publish, and what a
publish that ends any way leaves behind (manifest, exit code, one line)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest

from collector.fake import Dataset, FakeCph
from collector.shards import place
from tests.conftest import Outcome
from tests.invariants import check_published, visible_files

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)


def manifest(output: Path, run_id: str) -> dict[str, object]:
    doc = orjson.loads((output / "runs" / f"{run_id}.json").read_bytes())
    assert isinstance(doc, dict)
    return doc


async def test_a_rerun_after_a_fatal_stop_retries_the_failed_images(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=41, images=40)
    ids = dataset.image_ids()
    flaky = ids[:5]  # one 503 each, and one attempt allowed: failed
    script = {i: ["http_503"] for i in flaky} | {ids[30]: ["unauthorized"]}  # then a fatal stop
    fake = await fake_factory(dataset, script=script)
    first = await collect(fake, ids, chunk_images=10, concurrency=1, max_attempts=1,
                          snapshot_date=DAY)
    assert (first.record.status, first.record.exit_code) == ("fatal", 3)
    assert first.record.counts["failed"] == 5

    asked = len(fake.log)
    second = await collect(fake, ids, chunk_images=10, concurrency=1, max_attempts=1,
                           snapshot_date=DAY, max_failed_share=0.1)
    assert (second.record.status, second.record.exit_code) == ("finished", 0)
    assert set(flaky) <= {e.image_id for e in fake.log[asked:]}  # asked again
    check_published(second, {(dataset.project_ids[0], i) for i in ids}, dataset, fake)
    assert second.record.counts["ok"] == 40 and second.record.counts["failed"] == 0
    assert second.record.counts["resumed"] == first.record.counts["status_rows"] - 5


async def test_a_night_too_broken_to_publish_keeps_the_previous_snapshot_and_a_rerun_mends_it(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=42, images=30)
    ids = dataset.image_ids()
    good = await collect(await fake_factory(dataset), ids, snapshot_date=DAY)
    assert good.record.exit_code == 0
    before = {p: p.read_bytes() for p in visible_files(good.output, "image_status")}

    down = await fake_factory(dataset, fault_rates={"http_503": 1.0})  # APIGW.0201, every time
    sick = await collect(down, ids, snapshot_date=DAY, max_attempts=2, chunk_images=10,
                         max_failed_share=0.1)
    assert sick.record.status == "fatal" and sick.error is not None
    assert sick.error.exit_code == 3
    assert str(sick.error) == (
        "30 of 30 images failed (100%): more than max_failed_share 0.1; nothing published; "
        "the previous snapshot stays; a re-run resumes and retries the failed images")
    assert manifest(sick.output, sick.record.run_id)["status"] == "fatal"
    assert {p: p.read_bytes() for p in visible_files(good.output, "image_status")} == before

    healthy = await fake_factory(dataset)
    mended = await collect(healthy, ids, snapshot_date=DAY, chunk_images=10)
    assert (mended.record.status, mended.record.exit_code) == ("finished", 0)
    assert {e.image_id for e in healthy.log} == set(ids)  # every failed image asked again
    check_published(mended, {(dataset.project_ids[0], i) for i in ids}, dataset, healthy)


async def test_a_few_failed_images_still_publish_with_exit_1(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=43, images=30)
    ids = dataset.image_ids()
    fake = await fake_factory(dataset, script={i: ["http_503"] for i in ids[:4]})
    out = await collect(fake, ids, max_attempts=1, max_failed_share=0.1)  # 4 of 30: more
    # than 0.1, allowed at 0.2
    assert out.error is not None and out.error.exit_code == 3
    out = await collect(await fake_factory(dataset, script={i: ["http_503"] for i in ids[:4]}),
                        ids, max_attempts=1, max_failed_share=0.2, snapshot_date=DAY)
    assert (out.record.status, out.record.exit_code) == ("finished", 1)


async def test_staging_that_cannot_be_removed_after_publishing_is_a_warning_not_a_failure(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.sink import ParquetSink

    def stuck(self: ParquetSink, *held: object) -> None:  # publish passes the locks it holds
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ParquetSink, "discard", stuck)
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is None and (out.record.status, out.record.exit_code) == ("finished", 0)
    assert manifest(out.output, out.record.run_id)["exit_code"] == 0
    monkeypatch.undo()
    again = await collect(fake, fake.dataset.image_ids())  # the leftover is mended
    assert again.record.exit_code == 0
    assert not (out.output / "_staging" / f"snapshot_date={again.record.snapshot_date}").exists()


async def test_any_failure_while_publishing_leaves_a_fatal_manifest_and_one_line(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.pipeline

    def broken(*args: object) -> None:
        raise ValueError("a column of another type")

    monkeypatch.setattr(collector.pipeline, "stage_changes", broken)
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is not None and out.error.exit_code == 3
    line = (f"output {out.output}: publish failed (internal error: ValueError: a column of "
            "another type); the next run finishes it")
    assert str(out.error) == line
    doc = manifest(out.output, out.record.run_id)
    assert (doc["status"], doc["exit_code"], doc["error"]) == ("fatal", 3, line)


async def test_a_publish_repeated_after_success_gives_the_same_verdict_and_summary(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from collector.cli import main

    dataset = Dataset(seed=44, images=30)
    ids = dataset.image_ids()
    fake = await fake_factory(dataset, script={ids[0]: ["forbidden"]})
    for k in (1, 2):
        part = await collect(fake, ids, shard=f"{k}/2", snapshot_date=DAY)
        assert (part.record.status, part.record.exit_code) == ("staged", 0)  # the task's success
    args = ["publish", "--output", str(tmp_path / "out"), "--snapshot-date", str(DAY),
            "--shards", "2", "--log-format", "json"]
    capsys.readouterr()
    assert await asyncio.to_thread(main, args) == 1  # a forbidden image: the night's verdict
    first = capsys.readouterr().out.splitlines()[-1]
    assert await asyncio.to_thread(main, args) == 1  # a retry does not launder it
    again = capsys.readouterr().out.splitlines()[-1]
    summary = orjson.loads(first)
    assert {**orjson.loads(again), "time": None} == {**summary, "time": None}
    assert summary["run_id"] is not None and summary["exit_code"] == 1
    doc = manifest(tmp_path / "out", summary["run_id"])
    assert (doc["status"], doc["exit_code"]) == ("finished", 1)
    assert summary["manifest"] == f"runs/{summary['run_id']}.json"


async def test_a_shard_rerun_retries_its_failed_images_and_the_publish_counts_one_night(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    from collector.merge import publish_shards
    from collector.store import LocalStore

    dataset = Dataset(seed=45, images=40)
    ids = dataset.image_ids()
    project = dataset.project_ids[0]
    flaky = [i for i in ids if place(project, i, 2) == 0][:2]
    fake = await fake_factory(dataset, script={i: ["http_503"] for i in flaky})
    lines = [*ids, ids[3], "not-an-id"]  # a duplicate and a bad line
    whole = await collect(await fake_factory(dataset), lines, output=tmp_path / "whole",
                          snapshot_date=DAY)
    for k in (1, 2):
        part = await collect(fake, lines, shard=f"{k}/2", snapshot_date=DAY, max_attempts=1)
        assert part.record.exit_code == 0
    again = await collect(fake, lines, shard="1/2", snapshot_date=DAY, max_attempts=1)
    assert again.record.counts["failed"] == 0 and again.record.counts["ok"] >= 2
    record = publish_shards(LocalStore(tmp_path / "out"), DAY, 2, "20261201T050000Z-pub001",
                            frozenset(), {})
    assert (record.status, record.exit_code) == ("finished", 0)
    for name in ("input_lines", "unique_ids", "duplicates", "ok", "invalid", "failed",
                 "status_rows", "member_rows"):
        assert record.counts[name] == whole.record.counts[name], name
    rows = Outcome(record, tmp_path / "out", "").table("image_status").to_pylist()
    assert Counter(r["status"] for r in rows) == Counter(
        r["status"] for r in whole.table("image_status").to_pylist())
    assert len({(r["project_id"], r["image_id"]) for r in rows}) == len(rows)


async def _plan(fake: FakeCph, output: Path, **common: object) -> None:
    """``cph-collector plan`` with ``common``'s settings, as the shards of a discovery run
    need first."""
    from collector.auth import TokenAuth
    from collector.build import build
    from collector.config import Settings
    from collector.pipeline import Run
    from collector.secrets import Secret
    from tests.conftest import TOKEN

    settings = Settings.of(endpoint=fake.url, output=output, snapshot_date=DAY, rate_limit=100_000,
                        progress_interval=3600, **common)  # type: ignore[arg-type]
    parts = build(settings, {}, auth=lambda _: TokenAuth(Secret(TOKEN)))
    planned = await Run(settings, None, parts, plan=True).execute()
    assert (planned.status, planned.exit_code) == ("staged", 0)  # forbidden listings: still 0


async def test_a_planned_sharded_night_ends_as_one_run_would_listings_included(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    from collector.merge import publish_shards
    from collector.store import LocalStore

    dataset = Dataset(seed=46, projects=2, images=30)  # IAM lists a project CPH refuses
    fake = await fake_factory(dataset)
    common: dict[str, object] = {"discover": True, "region": "cn-north-4",
                                 "iam_endpoint": fake.url, "project_id": None}
    whole = await collect(fake, output=tmp_path / "whole", snapshot_date=DAY, **common)
    assert whole.record.exit_code == 1 and whole.record.counts["listings_forbidden"] == 2
    await _plan(fake, tmp_path / "out", **common)
    for k in (1, 2):
        part = await collect(fake, output=tmp_path / "out", shard=f"{k}/2", snapshot_date=DAY,
                             **common)
        assert (part.record.status, part.record.exit_code) == ("staged", 0)
    record = publish_shards(LocalStore(tmp_path / "out"), DAY, 2, "20261201T050000Z-pub002",
                            frozenset(), {})
    assert (record.status, record.exit_code) == ("finished", 1)
    for name, value in whole.record.counts.items():
        if name not in ("resumed",):
            assert record.counts[name] == value, name


async def _two_shards(fake: FakeCph, collect: Collect, output: Path, **settings: object) -> None:
    for k in (1, 2):
        part = await collect(fake, fake.dataset.image_ids(), output=output, shard=f"{k}/2",
                             snapshot_date=DAY, chunk_images=5, **settings)
        assert (part.record.status, part.record.exit_code) == ("staged", 0)


def _publish_cli(output: Path, capsys: pytest.CaptureFixture[str],
                 warnings: list[str] | None = None) -> tuple[int, str]:
    """The exit code and the last line on stderr (``warnings``: its warning lines)."""
    from collector.cli import main

    capsys.readouterr()
    code = main(["publish", "--output", str(output), "--snapshot-date", str(DAY),
                 "--shards", "2"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if warnings is not None:
        warnings += [line for line in err.splitlines() if " WARNING " in line]
    return code, err.splitlines()[-1] if err else ""


MARK = "_staging/snapshot_date=2026-12-01/shard-2-of-2/shard.json"


@pytest.mark.parametrize(("tamper", "why"), [
    (lambda doc: b"{not json", "not JSON"),
    (lambda doc: b"", "empty"),
    (lambda doc: orjson.dumps({k: v for k, v in doc.items() if k != "run_id"}), "no run_id"),
    (lambda doc: orjson.dumps({**doc, "exit_code": "0"}), "exit_code is not a whole number"),
    (lambda doc: orjson.dumps({**doc, "run_id": "20261201T000000Z-000000"}),
     None),  # a run that never staged
    (lambda doc: orjson.dumps({**doc, "counts": {**doc["counts"], "ok": doc["counts"]["ok"] + 1}}),
     None),  # counts that are not the folder's
])
async def test_a_tampered_mark_is_exit_3_naming_the_shard_and_nothing_is_published(
        fake: FakeCph, collect: Collect, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        tamper: Callable[[dict[str, object]], bytes], why: str | None) -> None:
    out = tmp_path / "out"
    await _two_shards(fake, collect, out)
    mark = out / MARK
    mark.write_bytes(tamper(orjson.loads(mark.read_bytes())))
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert code == 3
    assert line.startswith("cph-collector: error: publish 2026-12-01: shard 2/2: ")
    assert line.endswith("; nothing published")
    if why is not None:
        assert f"its shard.json is not valid ({why}); run it again" in line
    assert not (out / "image_status").exists()


async def test_a_shard_folder_copied_over_another_is_exit_3_and_nothing_is_published(
        fake: FakeCph, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "out"
    await _two_shards(fake, collect, out)
    staging = out / "_staging" / "snapshot_date=2026-12-01"
    for table in ("image_status", "members"):  # the data, not the mark
        shutil.rmtree(staging / "shard-2-of-2" / table)
        shutil.copytree(staging / "shard-1-of-2" / table, staging / "shard-2-of-2" / table)
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert (code, line) == (3, "cph-collector: error: publish 2026-12-01: shard 2/2: its folder "
                               "holds rows of shard 1/2 (copied or changed after it finished); "
                               "nothing published")
    shutil.rmtree(staging / "shard-2-of-2")
    shutil.copytree(staging / "shard-1-of-2", staging / "shard-2-of-2")  # the mark too
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert code == 3 and "shard 2/2: its shard.json is not valid (it is the mark of '1/2')" in line
    assert not (out / "image_status").exists()


async def test_a_lost_chunk_is_exit_3_and_nothing_is_published(
        fake: FakeCph, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    await _two_shards(fake, collect, out)
    folder = out / "_staging" / "snapshot_date=2026-12-01" / "shard-1-of-2" / "image_status"
    lost = sorted(folder.glob("*.parquet"))[0]
    lost.unlink()
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert code == 3
    assert line.startswith("cph-collector: error: publish 2026-12-01: shard 1/2: its folder "
                           "holds ")
    assert "status rows, its mark says" in line or "its mark says" in line
    assert not (out / "image_status").exists()


async def test_sharded_night_too_broken_publishes_nothing_until_the_shards_are_run_again(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dataset = Dataset(seed=47, images=30)
    out = tmp_path / "out"
    good = await collect(await fake_factory(dataset), dataset.image_ids(), output=out,
                         snapshot_date=DAY)
    assert good.record.exit_code == 0
    before = {p: p.read_bytes() for p in visible_files(out, "image_status")}
    await _two_shards(await fake_factory(dataset, fault_rates={"http_503": 1.0}), collect, out,
                      max_attempts=1)
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert (code, line) == (3, "cph-collector: error: publish 2026-12-01: 30 of 30 images "
                               "failed (100%): more than max_failed_share 0.1; nothing "
                               "published; the previous snapshot stays; a re-run resumes and "
                               "retries the failed images")
    assert {p: p.read_bytes() for p in visible_files(out, "image_status")} == before
    assert (await asyncio.to_thread(_publish_cli, out, capsys))[0] == 3  # a retry: the same
    healthy = await fake_factory(dataset)
    await _two_shards(healthy, collect, out)
    assert {e.image_id for e in healthy.log} == set(dataset.image_ids())  # all asked again
    assert (await asyncio.to_thread(_publish_cli, out, capsys))[0] == 0


async def test_a_publish_of_shards_ends_with_a_true_manifest_and_one_line_however_it_ends(
        fake: FakeCph, collect: Collect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import collector.merge
    from collector.sink import ParquetSink

    out = tmp_path / "out"
    await _two_shards(fake, collect, out)

    def broken(*args: object) -> None:
        raise ValueError("a column of another type")

    monkeypatch.setattr(collector.merge, "stage_changes", broken)
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert (code, line) == (3, f"cph-collector: error: output {out}: publish failed (internal "
                               "error: ValueError: a column of another type); run it again "
                               "to finish it")
    docs = [orjson.loads(p.read_bytes()) for p in (out / "runs").glob("*.json")]
    assert [(d["status"], d["error"]) for d in docs if d["input"].startswith("2 shards")] == [
        ("fatal", line.removeprefix("cph-collector: error: "))]
    monkeypatch.undo()

    def stuck(self: ParquetSink, *held: object) -> None:  # publish passes the locks it holds
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ParquetSink, "discard", stuck)
    warned: list[str] = []
    code, _ = await asyncio.to_thread(_publish_cli, out, capsys, warned)
    assert code == 0  # published: the night's verdict, not the clean-up's
    assert len(warned) == 1 and warned[0].endswith(
        "2026-12-01 is published, but its staging could not be removed (Permission denied); "
        "the next run removes it")
    finished = [orjson.loads(p.read_bytes()) for p in (out / "runs").glob("*.json")]
    assert sorted(d["status"] for d in finished if d["input"].startswith("2 shards")) == [
        "fatal", "finished"]
    monkeypatch.undo()
    staging = out / "_staging" / "snapshot_date=2026-12-01"
    (staging / "publishing").unlink()  # a clean-up that got that far, and no further
    assert (staging / "shard-1-of-2" / "shard.json").exists()
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert code == 0 and "nothing published" not in line  # the same verdict, not a refusal
    assert not staging.exists()


async def test_a_discovery_night_with_a_failed_listing_is_listed_again_by_the_rerun(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=48, projects=1, images=250, with_doc_example=False)
    project = dataset.project_ids[0]
    fake = await fake_factory(dataset, script={f"list:{project}:private:200": ["http_503"] * 2})
    common = {"discover": True, "project_id": project, "max_attempts": 2, "snapshot_date": DAY,
              "max_failed_share": 0.1}
    first = await collect(fake, **common)
    assert first.error is not None and str(first.error) == (
        "1 of 2 listings failed (50%): more than max_failed_share 0.1; nothing published; the "
        "previous snapshot stays; a re-run resumes and lists again")
    assert not visible_files(first.output, "image_status")
    second = await collect(fake, **common)
    assert (second.record.status, second.record.exit_code) == ("finished", 0)
    assert second.record.counts["listings_failed"] == 0
    assert second.record.counts["resumed"] == first.record.counts["status_rows"] > 0
    check_published(second, {(project, i) for i in dataset.listed(project, "private")},
                    dataset, fake)


def test_max_failed_share_is_a_share() -> None:
    from collector.config import load_settings
    from collector.errors import UsageError

    assert load_settings({}, {}).limits.max_failed_share == 0.1
    assert load_settings({}, {"CPH_MAX_FAILED_SHARE": "0.5"}).limits.max_failed_share == 0.5
    with pytest.raises(UsageError, match=r"^--max-failed-share=1.5: must be a number from 0 "
                                         r"to 1$"):
        load_settings({"max_failed_share": 1.5}, {})


async def test_our_own_error_while_publishing_keeps_its_words_and_the_manifest_says_fatal(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.pipeline
    from collector.errors import FatalRunError

    def unreadable(*args: object) -> None:
        raise FatalRunError("output x: image_status/snapshot_date=2026-11-30/part-1.parquet "
                            "cannot be read")

    monkeypatch.setattr(collector.pipeline, "stage_changes", unreadable)
    out = await collect(fake, fake.dataset.image_ids())
    assert out.error is not None and out.error.exit_code == 3
    doc = manifest(out.output, out.record.run_id)
    assert (doc["status"], doc["exit_code"], doc["error"]) == ("fatal", 3, str(out.error))
    assert str(out.error).endswith("part-1.parquet cannot be read")


async def test_a_publish_stopped_while_gathering_is_finished_by_the_next_one(
        fake: FakeCph, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "out"
    await _two_shards(fake, collect, out)
    staging = out / "_staging" / "snapshot_date=2026-12-01"
    for table in ("image_status", "members"):  # one chunk moved, one copied but not deleted
        (staging / table).mkdir()
        first, second = sorted((staging / "shard-1-of-2" / table).glob("*.parquet"))[:2]
        first.rename(staging / table / first.name)
        shutil.copy(second, staging / table / second.name)
    code, _ = await asyncio.to_thread(_publish_cli, out, capsys)
    assert code == 0
    rows = ds.dataset(out / "image_status", format="parquet").to_table().to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(fake.dataset.image_ids())


async def test_a_shard_run_again_after_its_date_was_published_is_never_taken_for_a_leftover(
        fake_factory: Factory, collect: Collect, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dataset = Dataset(seed=49, images=30)
    out = tmp_path / "out"
    await _two_shards(await fake_factory(dataset), collect, out)
    assert (await asyncio.to_thread(_publish_cli, out, capsys))[0] == 0
    ours = [i for i in dataset.image_ids() if place(dataset.project_ids[0], i, 2) == 0]
    dying = await fake_factory(dataset, script={ours[7]: ["unauthorized"]})
    rerun = await collect(dying, dataset.image_ids(), output=out, shard="1/2",
                          snapshot_date=DAY, chunk_images=5, concurrency=1)
    assert rerun.record.status == "fatal"  # stopped part-way: its folder has no mark
    folder = out / "_staging" / "snapshot_date=2026-12-01" / "shard-1-of-2"
    code, line = await asyncio.to_thread(_publish_cli, out, capsys)
    assert (code, line) == (3, "cph-collector: error: publish 2026-12-01: shard 1/2 has not "
                               "finished (run it again with the same arguments); nothing "
                               "published")
    assert list((folder / "image_status").glob("*.parquet"))  # its work is still there


def test_the_listing_counts_a_run_gives_are_the_ones_publish_carries_over() -> None:
    """``publish --shards`` copies the plan's listing counts by name: a count a run adds must
    be in that list, or a sharded night's manifest silently lacks it."""
    from collector.collect import Tally
    from collector.intake import Intake
    from collector.manifest import LISTING_COUNTS
    from collector.pipeline import run_counts

    without = run_counts(Intake(None), Tally(), None)
    with_listings = run_counts(Intake(None), Tally(), [])
    assert set(with_listings) - set(without) == set(LISTING_COUNTS)
