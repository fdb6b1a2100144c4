"""The published tables as a warehouse loads them: typed dates in every reader, a file for every
date of every table, and manifests that say which files a date has."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path

import duckdb
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from collector.fake import Dataset, FakeCph
from collector.schemas import TABLES
from collector.tables import dataset
from tests.conftest import S3_ENV, S3Server
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
DISCOVERED, BACKFILLED, INPUT = dt.date(2026, 11, 29), dt.date(2026, 11, 30), dt.date(2026, 12, 1)
DATES = (DISCOVERED, BACKFILLED, INPUT)
# The README's pyarrow and pandas partitioning, as a reader without this package writes it
README_PARTITIONING = ds.partitioning(pa.schema([("snapshot_date", pa.date32())]),
                                      flavor="hive")


async def three_nights(fake_factory: Factory, collect: Collect) -> tuple[Run, list[Run]]:
    """A discovery night, an --input night, and a date between them collected twice (the
    second time a backfill, after the later date was published); the backfill and every run."""
    days = [Dataset(seed=61, images=120, with_doc_example=False, day=d) for d in (0, 1, 2)]
    fakes = [await fake_factory(d) for d in days]
    project = days[0].project_ids[0]
    runs = [await collect(fakes[0], discover=True, project_id=project,
                          snapshot_date=DISCOVERED, chunk_images=50)]
    runs.append(await collect(fakes[1], days[1].image_ids(), snapshot_date=BACKFILLED))
    runs.append(await collect(fakes[2], days[2].image_ids(), snapshot_date=INPUT,
                              trusted_projects="p-partner-1"))
    runs.append(await collect(fakes[2], days[2].image_ids(), snapshot_date=BACKFILLED,
                              chunk_images=50))
    assert all(r.record.exit_code == 0 for r in runs)
    return runs[-1], runs


def on_disk(output: Path, table: str) -> dict[dt.date, int]:
    """Rows per date of a table, from each file's footer."""
    counts: dict[dt.date, int] = {}
    for file in (output / table).glob("snapshot_date=*/*.parquet"):
        day = dt.date.fromisoformat(file.parent.name.removeprefix("snapshot_date="))
        counts[day] = counts.get(day, 0) + pq.ParquetFile(file).metadata.num_rows
    return counts


async def test_every_reader_gets_snapshot_date_as_a_date_with_equal_counts(
        fake_factory: Factory, collect: Collect) -> None:
    last, _ = await three_nights(fake_factory, collect)
    out = last.output
    for table in TABLES:
        truth = on_disk(out, table)
        assert set(truth) == set(DATES), table  # every date of every table has a file
        # pyarrow, through the package
        arrow = dataset(out, table).to_table()
        assert arrow.schema.field("snapshot_date").type == pa.date32()
        assert dict(pd.Series(arrow["snapshot_date"].to_pylist()).value_counts()) == {
            d: n for d, n in truth.items() if n}
        # DuckDB
        duck = duckdb.sql(
            f"SELECT snapshot_date, count(*) FROM read_parquet('{out}/{table}/*/*.parquet', "
            "hive_partitioning = true, hive_types = {'snapshot_date': DATE}) GROUP BY ALL")
        assert duck.types[0] == "DATE"
        assert dict(duck.fetchall()) == {d: n for d, n in truth.items() if n}
        # pandas: a comparison with a date finds the rows, http_status stays an integer
        frame = pd.read_parquet(out / table, partitioning=README_PARTITIONING,
                                dtype_backend="pyarrow")
        assert str(frame["snapshot_date"].dtype) == "date32[day][pyarrow]"
        for day in DATES:
            assert len(frame[frame.snapshot_date == day]) == truth[day], (table, day)
        if "http_status" in frame:
            assert str(frame["http_status"].dtype) == "int32[pyarrow]"
        # Polars
        lazy = pl.scan_parquet(f"{out}/{table}/*/*.parquet", hive_partitioning=True,
                               hive_schema={"snapshot_date": pl.Date})
        assert lazy.collect_schema()["snapshot_date"] == pl.Date
        for day in DATES:
            got = lazy.filter(pl.col("snapshot_date") == day).select(pl.len()).collect().item()
            assert got == truth[day], (table, day)


async def test_a_first_snapshots_change_table_is_one_empty_file_with_its_schema(
        fake: FakeCph, collect: Collect) -> None:
    out = await collect(fake, fake.dataset.image_ids(), snapshot_date=DISCOVERED)
    assert out.record.exit_code == 0
    files = list((out.output / "changes").glob("snapshot_date=*/*.parquet"))
    assert len(files) == 1 and pq.read_schema(files[0]).remove_metadata() == TABLES["changes"]
    assert [str(f.relative_to(out.output)) for f in files] == [
        f for f in out.record.files if f.startswith("changes/")]
    empty = [p for p in out.output.rglob("*") if p.is_dir() and not any(p.iterdir())
             and "_staging" not in p.parts]
    assert empty == []
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out.output}/changes/*/*.parquet', "
                      "hive_partitioning = true)").fetchall() == [(0,)]
    assert len(pd.read_parquet(out.output / "changes", dtype_backend="pyarrow")) == 0
    assert pl.scan_parquet(f"{out.output}/changes/*/*.parquet",
                           hive_partitioning=True).collect().height == 0
    assert dataset(out.output, "changes").count_rows() == 0


async def test_a_bucket_output_reads_the_same_way_and_has_a_file_for_every_table(
        fake: FakeCph, collect: Collect, s3: S3Server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.bucket()
    out = await collect(fake, fake.dataset.image_ids(), output=url, snapshot_date=DISCOVERED,
                        env=S3_ENV, storage_endpoint=s3.endpoint)
    assert out.record.exit_code == 0
    keys = s3.keys(url)
    for table in TABLES:
        assert [k for k in keys if k.startswith(f"{table}/")] == [
            f"{table}/snapshot_date=2026-11-29/part-{out.record.run_id}-00000.parquet"]
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    members = dataset(str(url), "members", storage_endpoint=s3.endpoint).to_table()
    assert members.schema.field("snapshot_date").type == pa.date32()
    assert set(members["snapshot_date"].to_pylist()) == {DISCOVERED}
    assert members.num_rows == out.record.counts["member_rows"]
    assert dataset(str(url), "changes", storage_endpoint=s3.endpoint).count_rows() == 0


def current_manifests(output: Path) -> dict[dt.date, dict[str, object]]:
    """What a loader follows: per date, the finished manifest no later run superseded."""
    found: dict[dt.date, dict[str, object]] = {}
    for file in (output / "runs").glob("*.json"):
        doc = orjson.loads(file.read_bytes())
        if doc["status"] == "finished" and not doc.get("superseded_by"):
            day = dt.date.fromisoformat(doc["snapshot_date"])
            assert day not in found, f"two current manifests for {day}"
            found[day] = doc
    return found


async def test_after_a_backfill_each_dates_manifest_lists_exactly_its_files(
        fake_factory: Factory, collect: Collect) -> None:
    backfill, runs = await three_nights(fake_factory, collect)
    out = backfill.output
    current = current_manifests(out)
    assert set(current) == set(DATES)
    assert current[BACKFILLED]["run_id"] == backfill.record.run_id
    replaced = orjson.loads((out / "runs" / f"{runs[1].record.run_id}.json").read_bytes())
    assert replaced["superseded_by"] == backfill.record.run_id
    for day, doc in current.items():
        listed = doc["files"]
        assert isinstance(listed, list)
        on_its_folders = sorted(str(f.relative_to(out)) for table in TABLES
                                for f in (out / table).glob(f"snapshot_date={day}/*.parquet"))
        assert sorted(listed) == on_its_folders, day
        for table in TABLES:  # loaded by the manifest alone: exactly the rows on disk
            keys = [out / k for k in listed if k.startswith(f"{table}/")]
            assert sum(pq.ParquetFile(k).metadata.num_rows for k in keys) == \
                on_disk(out, table)[day], (day, table)
    later = current[INPUT]
    assert later["changes_recomputed_by"] == backfill.record.run_id
    own = orjson.loads((out / "runs" / f"{backfill.record.run_id}.json").read_bytes())
    assert own["recomputed_changes"] == [f for f in later["files"]  # type: ignore[attr-defined]
                                         if f.startswith("changes/")]


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_columns(table: str) -> list[str]:
    """The column names of the README's table for ``table``, in its order."""
    lines = README.read_text(encoding="utf-8").split(f"\n**{table}**", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| column"))
    names: list[str] = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names += [n.strip() for n in line.split("|")[1].split(",")]
    return names


def readme_sql(words: str) -> str:
    """The README's SQL block that contains ``words``."""
    blocks = README.read_text(encoding="utf-8").split("```sql\n")[1:]
    return next(b.split("```", 1)[0] for b in blocks if words in b)


async def test_the_readmes_tables_and_queries_are_the_files(fake: FakeCph,
                                                            collect: Collect) -> None:
    project = fake.dataset.project_ids[0]
    out = await collect(fake, discover=True, project_id=project, snapshot_date=DISCOVERED)
    for table in TABLES:  # a loader that maps columns by position reads what the README says
        file = next((out.output / table).glob("*/*.parquet"))
        assert readme_columns(table) == pq.read_schema(file).names, table
    sql = readme_sql("with the most projects").replace("'output/", f"'{out.output}/")
    rows = duckdb.sql(sql.replace("2026-11-28", DISCOVERED.isoformat())).fetchall()
    shared = {r["image_id"]: r["member_count"] for r in out.statuses().values()}
    assert rows and all(projects == shared[image] for image, _, _, projects in rows)
    assert rows[0][3] == max(shared.values())
