"""What changed since last night: the change table against the fake's ground truth."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Awaitable, Callable

import duckdb
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.changes import CHANGES_SCHEMA
from collector.fake import Dataset, FakeCph
from collector.pipeline import summary_line
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
NIGHT1, NIGHT2 = dt.date(2026, 11, 30), dt.date(2026, 12, 1)


def changes(out: Run) -> set[tuple[str, str, str, str]]:
    table = out.table("changes")
    return {(r["project_id"], r["image_id"], r["member_id"], r["change"])
            for r in table.to_pylist()}


def manifest(out: Run) -> dict[str, object]:
    return orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())


async def two_nights(fake_factory: Factory, collect: Collect, seed: int, *,
                     script: dict[str, list[str]] | None = None,
                     **settings: object) -> tuple[Dataset, Run, Run]:
    """Night one on day 0, night two on day 1 (the input: both days' images)."""
    before, after = (Dataset(seed=seed, images=300, with_doc_example=False, day=d)
                     for d in (0, 1))
    first = await collect(await fake_factory(before), before.image_ids(), snapshot_date=NIGHT1,
                          **settings)
    ids = sorted(set(before.image_ids()) | set(after.image_ids()))  # yesterday's too
    second = await collect(await fake_factory(after, script=script or {}), ids,
                           snapshot_date=NIGHT2, max_attempts=2, **settings)
    return after, first, second


async def test_two_nights_give_exactly_the_ground_truth_of_changes(
        fake_factory: Factory, collect: Collect) -> None:
    after, first, second = await two_nights(fake_factory, collect, 41)
    assert manifest(first)["changes"] == {"previous_snapshot_date": None,
                                          "first_snapshot": True}
    first_changes = list((first.output / "changes").glob("snapshot_date=2026-11-30/*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in first_changes] == [0]  # schema only
    truth = after.changes()
    assert {c for *_, c in truth} == {"added", "removed", "updated", "image_gone"}
    assert changes(second) == truth
    doc = manifest(second)["changes"]
    assert isinstance(doc, dict)
    assert doc["previous_snapshot_date"] == "2026-11-30" and doc["uncomparable_images"] == 0
    assert {k: doc[k] for k in ("added", "removed", "updated", "image_gone")} == {
        kind: sum(c == kind for *_, c in truth) for kind in ("added", "removed", "updated",
                                                             "image_gone")}
    assert "changes since 2026-11-30: " in summary_line(second.record)


async def test_an_image_that_failed_tonight_is_not_compared_and_never_looks_revoked(
        fake_factory: Factory, collect: Collect) -> None:
    after = Dataset(seed=42, images=300, with_doc_example=False, day=1)
    victims = [i for i in after.image_ids() if after.members(i)][:5]
    _, _, second = await two_nights(fake_factory, collect, 42,
                                    script={v: ["http_503"] * 9 for v in victims})
    got = changes(second)
    assert not {i for _, i, _, _ in got} & set(victims)  # no "removed" for a failed image
    assert got == {c for c in after.changes() if c[1] not in victims}
    assert manifest(second)["changes"]["uncomparable_images"] == 5  # type: ignore[index]
    assert second.record.exit_code == 1


async def test_fail_on_untrusted_exits_4_after_publishing_unless_every_new_share_is_trusted(
        fake_factory: Factory, collect: Collect) -> None:
    after, _, second = await two_nights(fake_factory, collect, 43, fail_on_untrusted=True)
    assert second.record.exit_code == 4
    assert second.record.status == "finished" and second.table("changes").num_rows
    partners = sorted({m for _, _, m, c in after.changes() if c in ("added", "updated")})
    trusted_night = await collect(await fake_factory(after), after.image_ids(),
                                  snapshot_date=dt.date(2026, 12, 2), fail_on_untrusted=True,
                                  trusted_projects=",".join(partners))
    assert trusted_night.record.exit_code == 0  # nothing changed since, and nothing untrusted


async def test_the_change_table_has_its_declared_types_in_duckdb_arrow_and_pandas(
        fake_factory: Factory, collect: Collect) -> None:
    _, _, second = await two_nights(fake_factory, collect, 44)
    files = sorted((second.output / "changes").glob("*/*.parquet"))
    assert files and all(pq.read_schema(f).remove_metadata() == CHANGES_SCHEMA
                         for f in files)
    kinds = duckdb.sql(f"SELECT change, count(*) FROM read_parquet('{second.output}/changes/*/"
                       "*.parquet', hive_partitioning = true) GROUP BY change").fetchall()
    assert {k for k, _ in kinds} == {"added", "removed", "updated", "image_gone"}
    row = second.table("changes").to_pylist()[0]
    assert isinstance(row["previous_snapshot_date"], dt.date) and isinstance(row["trusted"], bool)
    frame = pd.read_parquet(second.output / "changes")
    assert str(frame["create_time"].dtype) == "datetime64[ms, UTC]"
    assert frame["trusted"].dtype == bool and frame["change"].notna().all()


async def test_discovery_nights_see_deleted_images_gone_but_not_behind_a_failed_listing(
        fake_factory: Factory, collect: Collect) -> None:
    before, after = (Dataset(seed=45, projects=2, images=200, with_doc_example=False,
                             locked_project=False, day=d) for d in (0, 1))
    lost = after.project_ids[1]  # its listing fails for good on night two
    common = {"discover": True, "region": "cn-north-4", "project_id": None}
    first_fake = await fake_factory(before)
    await collect(first_fake, snapshot_date=NIGHT1, iam_endpoint=first_fake.url, **common)
    second_fake = await fake_factory(after, script={f"list:{lost}:private:0": ["http_503"] * 9})
    second = await collect(second_fake, snapshot_date=NIGHT2, iam_endpoint=second_fake.url,
                           max_attempts=2, **common)
    got = changes(second)
    truth = after.changes()
    assert got == {c for c in truth if c[0] != lost}  # deleted images of the listed project: gone
    assert any(c == "image_gone" for *_, c in got)
    unlisted = len(before.image_ids(lost))
    assert manifest(second)["changes"]["uncomparable_images"] == unlisted  # type: ignore[index]
    assert second.record.exit_code == 1


async def test_two_nights_of_an_account_with_no_images_publish_no_changes(
        fake_factory: Factory, collect: Collect) -> None:
    """The change step used to crash (``int - None``) when neither night had an image."""
    empty = Dataset(seed=46, projects=1, images=0, with_doc_example=False, locked_project=False)
    common = {"discover": True, "region": "cn-north-4", "project_id": None}
    fake = await fake_factory(empty)
    await collect(fake, snapshot_date=NIGHT1, iam_endpoint=fake.url, **common)
    second = await collect(fake, snapshot_date=NIGHT2, iam_endpoint=fake.url, **common)
    assert second.record.exit_code == 0
    assert "changes since 2026-11-30: 0 added" in summary_line(second.record)
    assert manifest(second)["changes"]["uncomparable_images"] == 0  # type: ignore[index]


async def test_a_backfill_recomputes_the_next_dates_changes(fake_factory: Factory,
                                                            collect: Collect) -> None:
    after, _, second = await two_nights(fake_factory, collect, 46)
    assert second.table("changes").num_rows
    # Night one is collected again, from the account as it is on day 1: it now equals night two
    again = await collect(await fake_factory(after), after.image_ids(), snapshot_date=NIGHT1)
    assert again.record.exit_code == 0
    later = pq.read_table(sorted((again.output / "changes" / "snapshot_date=2026-12-01")
                                         .glob("*.parquet"))[0])
    assert later.num_rows == 0 and later.schema.remove_metadata() == CHANGES_SCHEMA
    assert "changes/snapshot_date=2026-12-01/" in " ".join(again.record.files)
    first = list((again.output / "changes").glob("snapshot_date=2026-11-30/*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in first] == [0]  # still a first snapshot


async def diff_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cph-collector diff ARGS`` in a subprocess (off the event loop)."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "collector", "diff",
                                                    *args], capture_output=True, text=True)


@pytest.mark.e2e
async def test_the_diff_command_prints_the_same_changes_in_every_format(
        fake_factory: Factory, collect: Collect) -> None:
    after, _, second = await two_nights(fake_factory, collect, 47)
    base = ["--output", str(second.output), "--from", "2026-11-30", "--to", "2026-12-01"]
    lines = await diff_cli(*base, "--format", "jsonl")
    rows = [orjson.loads(line) for line in lines.stdout.splitlines()]
    assert {(r["project_id"], r["image_id"], r["member_id"], r["change"]) for r in rows} == \
        after.changes()
    assert lines.stderr.startswith("changes from 2026-11-30 to 2026-12-01: ")
    csv = await diff_cli(*base, "--format", "csv")
    assert len(csv.stdout.splitlines()) == len(rows) + 1 and csv.stdout.startswith(
        '"previous_snapshot_date","project_id","image_id","member_id","change"')
    table = await diff_cli(*base, "--format", "table", "--fail-on-untrusted")
    assert table.returncode == 4
    first_row = table.stdout.splitlines()[1]
    assert first_row.startswith("! ")
    assert first_row.split()[1] in ("added", "updated", "removed", "image_gone")
    missing = await diff_cli(*base[:-1], "2026-12-09")
    assert missing.returncode == 2
    assert missing.stderr == ("cph-collector: error: snapshot 2026-12-09: no finished "
                              f"snapshot in {second.output}\n")


def test_a_share_listed_twice_on_a_night_is_still_compared_right() -> None:
    from collector.changes import Night, compare

    ts = pa.timestamp("ms", tz="UTC")

    def night(rows: list[tuple[str, str, int]]) -> Night:
        status = pa.table({"project_id": ["p"] * 2, "image_id": ["i1", "i2"],
                           "status": ["ok", "ok"]})
        members = pa.table({"project_id": ["p"] * len(rows), "image_id": [r[0] for r in rows],
                            "member_id": [r[1] for r in rows],
                            "create_time": pa.array([1] * len(rows), ts),
                            "update_time": pa.array([r[2] for r in rows], ts)})
        return Night(status, members)

    before = night([("i1", "m1", 1), ("i1", "m2", 1), ("i2", "m3", 1)])
    after = night([("i1", "m1", 5), ("i1", "m1", 5), ("i2", "m3", 1), ("i2", "m4", 2)])
    table, summary = compare(before, after, NIGHT1, "r", frozenset({"m4"}))
    got = {(r["image_id"], r["member_id"], r["change"], r["trusted"]) for r in table.to_pylist()}
    assert got == {("i1", "m1", "updated", False), ("i1", "m2", "removed", False),
                   ("i2", "m4", "added", True)}
    assert summary.untrusted_alerts == 1


def _reference(before: tuple[dict[str, str], dict[tuple[str, str], int]],
               after: tuple[dict[str, str], dict[tuple[str, str], int]]) -> set[tuple[str, ...]]:
    """The change rules of the README, row by row in Python (input mode: no listings)."""
    (p_status, p_shares), (d_status, d_shares) = before, after
    out = set()
    for image in set(p_status) | set(d_status):
        p, d = p_status.get(image), d_status.get(image)
        old = {m: t for (i, m), t in p_shares.items() if i == image}
        new = {m: t for (i, m), t in d_shares.items() if i == image}
        if p == d == "ok":
            out |= {(image, m, "added") for m in new.keys() - old.keys()}
            out |= {(image, m, "removed") for m in old.keys() - new.keys()}
            out |= {(image, m, "updated") for m in old.keys() & new.keys() if old[m] != new[m]}
        elif p == "ok" and d == "not_found":
            out |= {(image, m, "image_gone") for m in old}
        elif p in (None, "not_found") and d == "ok":
            out |= {(image, m, "added") for m in new}
    return out


def _night_table(status: dict[str, str], shares: dict[tuple[str, str], int],
                 form: str, chunk: int) -> tuple[pa.Table, pa.Table]:
    ts = pa.timestamp("ms", tz="UTC")
    images = sorted(status)
    rows = sorted(shares.items())
    text = pa.string()
    status_table = pa.table({"project_id": pa.array(["p"] * len(images), text),
                             "image_id": pa.array(images, text),
                             "status": pa.array([status[i] for i in images], text)})
    members = pa.table({"project_id": pa.array(["p"] * len(rows), text),
                        "image_id": pa.array([r[0][0] for r in rows], text),
                        "member_id": pa.array([r[0][1] for r in rows], text),
                        "create_time": pa.array([1] * len(rows), ts),
                        "update_time": pa.array([r[1] for r in rows], ts)})
    if form == "strings":
        return status_table, members
    ids = ["project_id", "image_id", "member_id"]

    def per_file(table: pa.Table) -> pa.Table:  # as Parquet files read one by one give them
        slices = [table.slice(s, chunk) for s in range(0, len(table), chunk)] or [table]
        for name in ids:
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, pa.chunked_array(
                    [piece[name].combine_chunks().dictionary_encode() for piece in slices],
                    pa.dictionary(pa.int32(), pa.string())))
        return table

    status_table, members = per_file(status_table), per_file(members)
    if form == "shared":
        from collector.changes import share_dictionaries
        status_table, members = share_dictionaries([status_table, members], ids)
    return status_table, members


NIGHTS_OF_IMAGES = st.tuples(
    st.dictionaries(st.sampled_from([f"i{n}" for n in range(6)]),
                    st.sampled_from(["ok", "ok", "not_found", "failed"])),
    st.dictionaries(st.tuples(st.sampled_from([f"i{n}" for n in range(6)]),
                              st.sampled_from([f"m{n}" for n in range(5)])),
                    st.integers(1, 3)))


@settings(max_examples=150, deadline=None)
@given(NIGHTS_OF_IMAGES, NIGHTS_OF_IMAGES, st.sampled_from(["strings", "files", "shared"]),
       st.sampled_from(["strings", "files", "shared"]), st.integers(1, 4))
def test_the_changes_are_the_rules_whatever_form_each_night_is_read_in(
        before: tuple[dict[str, str], dict[tuple[str, str], int]],
        after: tuple[dict[str, str], dict[tuple[str, str], int]],
        form_before: str, form_after: str, chunk: int) -> None:
    """Strings, a dictionary a file, or dictionaries the night shares: the same changes."""
    from collector.changes import Night, compare

    def shares_of(night: tuple[dict[str, str], dict[tuple[str, str], int]]
                  ) -> tuple[dict[str, str], dict[tuple[str, str], int]]:
        status, shares = night  # an image's shares are collected only when it answered ok
        return status, {k: v for k, v in shares.items() if status.get(k[0]) == "ok"}

    before, after = shares_of(before), shares_of(after)
    table, _ = compare(Night(*_night_table(*before, form_before, chunk)),
                       Night(*_night_table(*after, form_after, chunk)), NIGHT1, "r", frozenset())
    got = {(r["image_id"], r["member_id"], r["change"]) for r in table.to_pylist()}
    assert got == _reference(before, after)
    assert len(table) == len(got)


async def test_a_first_snapshot_is_not_read_back_at_publish(
        fake: FakeCph, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading tonight's snapshot back costs memory in proportion to it (a million images:
    300 MB more); with nothing to compare it against, it is not read."""
    import collector.sink

    reads = []
    real = collector.sink.ParquetSink.night

    def counted(sink, snapshot_date=None):  # type: ignore[no-untyped-def]
        reads.append(snapshot_date)
        return real(sink, snapshot_date)

    monkeypatch.setattr(collector.sink.ParquetSink, "night", counted)
    first = await collect(fake, fake.dataset.image_ids(), snapshot_date=NIGHT1)
    assert first.record.exit_code == 0 and reads == []
    second = await collect(fake, fake.dataset.image_ids(), snapshot_date=NIGHT2)
    assert second.record.exit_code == 0 and reads == [None, NIGHT1]


@pytest.mark.e2e
async def test_diff_without_trusted_projects_uses_the_later_nights_and_says_so(
        fake_factory: Factory, collect: Collect) -> None:
    """``diff`` marked every change untrusted when not given the set the night ran with."""
    after = Dataset(seed=48, images=300, with_doc_example=False, day=1)
    partner = sorted(m for _, _, m, kind in after.changes() if kind == "added")[0]
    _, _, second = await two_nights(fake_factory, collect, 48, trusted_projects=partner)
    base = ["--output", str(second.output), "--from", "2026-11-30", "--to", "2026-12-01",
            "--format", "jsonl"]
    remembered = await diff_cli(*base)
    rows = [orjson.loads(line) for line in remembered.stdout.splitlines()]
    assert {r["member_id"] for r in rows if r["trusted"]} == {partner}
    assert sum(r["trusted"] for r in rows) == sum(r["trusted"] for r in
                                                  second.table("changes").to_pylist()
                                                  if r["previous_snapshot_date"] == NIGHT1)
    assert remembered.stderr.splitlines()[-1] == (
        f"trusted projects: 1, those the 2026-12-01 run {second.record.run_id} had")
    given = await diff_cli(*base, "--trusted-projects", "p-nobody")
    assert not any(orjson.loads(line)["trusted"] for line in given.stdout.splitlines())
    assert given.stderr.splitlines()[-1] == "trusted projects: 1, from --trusted-projects"
