"""Only our own files are read as ours: another tool's (or garbage) files in our partitions are
ignored with one warning each; a file of ours that cannot be read is one line and exit 3."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.fake import Dataset, FakeCph
from tests.conftest import Outcome as Run

Collect = Callable[..., Awaitable[Run]]
Factory = Callable[..., Awaitable[FakeCph]]
NIGHT1, NIGHT2 = dt.date(2026, 11, 30), dt.date(2026, 12, 1)


def manifest(out: Run) -> dict[str, object]:
    return orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())


def diff(output: Path, since: str, until: str,
         **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "diff", "--output", str(output),
                           "--from", since, "--to", until, "--format", "csv"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def plant_foreign_files(output: Path) -> list[Path]:
    """Another tool's and broken files where our readers look."""
    ours = next((output / "image_status" / f"snapshot_date={NIGHT1}").glob("*.parquet"))
    partition = ours.parent
    planted = [partition / "garbage.parquet", partition / "truncated.parquet",
               partition / "other-schema.parquet", output / "members" / "other-tool.parquet",
               output / "image_status" / "snapshot_date=2026-11-01" / "export.parquet"]
    planted[0].write_bytes(b"not parquet at all")
    planted[1].write_bytes(ours.read_bytes()[:200])
    pq.write_table(pa.table({"image_id": [1, 2], "colour": ["red", "blue"]}), planted[2])
    pq.write_table(pa.table({"x": [1]}), planted[3])
    planted[4].parent.mkdir()
    pq.write_table(pa.table({"project_id": ["p"], "image_id": ["i"], "status": [7]}), planted[4])
    return planted


async def test_foreign_files_in_an_earlier_partition_are_ignored_with_one_warning_each(
        fake_factory: Factory, collect: Collect, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    dataset = Dataset(seed=8, images=40)
    fake = await fake_factory(dataset)
    first = await collect(fake, dataset.image_ids(), snapshot_date=NIGHT1)
    assert first.record.exit_code == 0
    planted = plant_foreign_files(first.output)
    prom = tmp_path / "m.prom"
    second = await collect(fake, dataset.image_ids(), snapshot_date=NIGHT2, metrics_file=prom)
    assert (second.error, second.record.exit_code) == (None, 0)
    doc = manifest(second)
    assert doc["status"] == "finished"
    changes = doc["changes"]
    assert isinstance(changes, dict)
    assert changes["previous_snapshot_date"] == str(NIGHT1)  # compared with our own files
    assert changes["added"] == changes["removed"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for path in planted[:3] + planted[4:]:  # members/other-tool.parquet is in no partition
        key = path.relative_to(first.output)
        assert sum(f"/{key}: no manifest of ours" in w for w in warnings) == 1, (key, warnings)
    assert "cph_collector_exit_code 0.0" in prom.read_text()
    done = diff(first.output, str(NIGHT1), str(NIGHT2))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('"previous_snapshot_date"') and "Traceback" not in done.stderr
    assert "garbage.parquet: no manifest of ours" in done.stderr
    in_json = diff(first.output, str(NIGHT1), str(NIGHT2), CPH_LOG_FORMAT="json")
    said = [orjson.loads(line) for line in in_json.stderr.splitlines()]  # each line JSON
    assert said[-1]["event"] == "summary" and said[-1]["message"].startswith("changes from ")
    only_foreign = diff(first.output, "2026-11-01", str(NIGHT2))
    assert only_foreign.returncode == 2
    assert only_foreign.stderr.strip().endswith("snapshot 2026-11-01: no finished snapshot in "
                                                f"{first.output}")


async def test_a_file_of_ours_that_cannot_be_read_is_exit_3_naming_it_and_the_manifest_says_so(
        fake_factory: Factory, collect: Collect, tmp_path: Path) -> None:
    dataset = Dataset(seed=8, images=40)
    fake = await fake_factory(dataset)
    first = await collect(fake, dataset.image_ids(), snapshot_date=NIGHT1)
    ours = next((first.output / "image_status" / f"snapshot_date={NIGHT1}").glob("*.parquet"))
    ours.write_bytes(ours.read_bytes()[:100])
    key = ours.relative_to(first.output)
    prom = tmp_path / "m.prom"
    second = await collect(fake, dataset.image_ids(), snapshot_date=NIGHT2, metrics_file=prom)
    assert second.error is not None and second.record.exit_code == 3
    assert str(second.error).startswith(f"output {first.output}: {key} cannot be read (")
    assert "\n" not in str(second.error)
    doc = manifest(second)
    assert (doc["status"], doc["exit_code"]) == ("fatal", 3)
    metrics = prom.read_text()
    assert "cph_collector_running 0.0" in metrics and "cph_collector_exit_code 3.0" in metrics
    done = diff(first.output, str(NIGHT1), str(NIGHT1))  # the night 2 never published
    assert done.returncode == 3
    assert done.stderr.splitlines() == [f"cph-collector: error: {second.error}"]
