"""The invariants of RELIABILITY.md, checked on what a reader of the output would find."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from collector.fake import Dataset, FakeCph
from collector.schemas import MEMBERS_SCHEMA, STATUS_SCHEMA
from tests.conftest import Outcome


def visible_files(output: Path, table: str) -> list[Path]:
    """What the README's glob ``OUTPUT/<table>/*/*.parquet`` finds."""
    return sorted((output / table).glob("*/*.parquet"))


def check_published(outcome: Outcome, expected: set[tuple[str, str]],
                    dataset: Dataset | None = None, fake: FakeCph | None = None,
                    invalid: int = 0) -> None:
    """I1 exactly once, I2 rejected never sent, I3/I10 schema, I4 marked, I5 manifest = data."""
    output = outcome.output
    for table, schema in (("members", MEMBERS_SCHEMA), ("image_status", STATUS_SCHEMA)):
        files = visible_files(output, table)
        assert files, f"no {table} files"
        for path in files:
            assert pq.read_schema(path).remove_metadata() == schema, path  # I3, I10
        assert not list((output / table).rglob("*.tmp"))

    status = outcome.table("image_status").to_pylist()
    members = outcome.table("members").to_pylist()
    keyed = Counter((r["project_id"], r["image_id"]) for r in status
                    if r["status"] != "invalid_id")
    assert all(n == 1 for n in keyed.values()), "an ID appears twice"  # I1
    assert set(keyed) == expected, "IDs missing or invented"
    assert sum(r["status"] == "invalid_id" for r in status) == invalid

    per_image = Counter((m["project_id"], m["image_id"]) for m in members)
    for row in status:
        key = (row["project_id"], row["image_id"])
        if row["status"] == "ok":
            assert per_image.get(key, 0) == row["member_count"], key
        else:
            assert key not in per_image and row["member_count"] == 0, key
    if dataset is not None:  # nothing invented: every member row is the dataset's
        truth = {(p, i, m, c, u) for (p, i) in per_image
                 for (p, i, m, c, u) in dataset.expected_rows(p, i)}
        got = {(m["project_id"], m["image_id"], m["member_id"],
                int(m["create_time"].timestamp() * 1000), int(m["update_time"].timestamp() * 1000))
               for m in members}
        assert got == truth
        assert len(got) == len(members)
    if fake is not None:  # I2
        invalid_ids = {r["image_id"] for r in status if r["status"] == "invalid_id"}
        assert not invalid_ids & fake.requested_images()

    manifest = orjson.loads((output / "runs" / f"{outcome.record.run_id}.json").read_bytes())
    assert manifest["status"] == "finished"  # I4
    counts = manifest["counts"]  # I5
    assert counts["status_rows"] == len(status)
    assert counts["member_rows"] == len(members)
    by_status = Counter(r["status"] for r in status)
    for name in ("ok", "not_found", "forbidden", "failed"):
        assert counts[name] == by_status.get(name, 0), name
    assert counts["invalid"] == by_status.get("invalid_id", 0)
    assert not (output / "_staging" / outcome.record.run_id).exists()
