"""Discovery against a server that lies or races: what a night of listings must survive.

Each test runs the real pipeline against the fake server on a real socket and asserts what a
reader of the output finds: every listed image once, honest listing rows, honest counts.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
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
async def test_four_listings_committing_at_once_lose_no_image(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch,
        chunk: int) -> None:
    import collector.sink

    dataset = Dataset(seed=41, projects=4, images=600, with_doc_example=False,
                      shared_per_project=0, empty_share=0.5)
    fake = await fake_factory(dataset)
    projects = dataset.project_ids
    private = {(p, i) for p in projects for i in dataset.listed(p, "private")}
    real, together, held = collector.sink.write_parquet, threading.Barrier(2, timeout=10), [0]

    def two_inventory_writes_at_once(store: Any, key: str, table: Any) -> None:
        """The first two inventory chunks are written at the same moment, as two listings
        flushing side by side can be: deterministic, where the race is not."""
        if "/images/" in key and held[0] < 2:
            held[0] += 1
            together.wait()
        real(store, key, table)

    monkeypatch.setattr(collector.sink, "write_parquet", two_inventory_writes_at_once)
    out = await collect(fake, discover=True, project_id=",".join(projects), chunk_images=chunk,
                        concurrency=32, snapshot_date=DAY)
    assert out.error is None and out.record.exit_code == 0, out.error
    assert held[0] == 2
    listed = Counter((r["project_id"], r["image_id"]) for r in out.table("images").to_pylist())
    assert set(listed) == private and set(listed.values()) == {1}
    check_published(out, private, dataset)
    manifest_matches_files(out)
