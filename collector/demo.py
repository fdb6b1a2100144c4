"""``cph-collector demo``: the whole product in one minute, against a fake CPH on loopback.

A seeded dataset of two projects, an input CSV with a few per cent of unknown, malformed and
duplicate IDs, a server that throttles above 600 requests/s and fails a few per cent of requests
(every one of them retryable), and the real collection at 500 requests/s into ``output/``.
"""

from __future__ import annotations

import csv
import secrets
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

from collector import loop
from collector.auth import TokenAuth
from collector.build import build
from collector.config import Settings
from collector.fake.dataset import Dataset
from collector.fake.server import FakeCph, ServerConfig
from collector.pipeline import Run, summary_line
from collector.secrets import Secret

FAULTS = {"http_500": 0.005, "http_503": 0.005, "reset_before_headers": 0.003,
          "short_body": 0.002, "cps_0003": 0.003, "throttle": 0.002}


def write_demo_input(dataset: Dataset, path: Path) -> int:
    """All images, plus 2% unknown IDs, a handful of malformed lines and some duplicates."""
    rows = [(p, i) for p in dataset.project_ids[: dataset.projects] for i in dataset.image_ids(p)]
    unknown = dataset.unknown_ids(max(len(rows) // 50, 1))
    rows += [(dataset.project_ids[0], i) for i in unknown]
    rows += [(dataset.project_ids[0], bad) for bad in
             ("../../etc/passwd", "img%2F01", "has space", "ünïcode", "x" * 80)]
    rows += rows[:25]  # duplicates
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["project_id", "image_id"])
        writer.writerows(rows)
    return len(rows)


def top_shared(output: Path, snapshot_date: str, limit: int = 5) -> list[tuple[str, int]]:
    """The images shared with the most projects, read back from the published Parquet."""
    members = ds.dataset(output / "members" / f"snapshot_date={snapshot_date}", format="parquet")
    counts = members.to_table(columns=["image_id"]).group_by("image_id").aggregate(
        [("image_id", "count")])
    order = pc.sort_indices(counts, sort_keys=[("image_id_count", "descending"),
                                               ("image_id", "ascending")])
    top = counts.take(order[:limit]).to_pylist()
    return [(row["image_id"], row["image_id_count"]) for row in top]


async def _demo(output: Path, images: int, seed: int) -> int:
    dataset = Dataset(seed=seed, projects=2, images=max(images // 2, 1))
    token = secrets.token_urlsafe(24)
    config = ServerConfig(tokens=(token,), rate_limit=600, latency=0.02, fault_rates=FAULTS,
                          seed=seed, record=False)
    input_path = output / "demo-input.csv"
    lines = write_demo_input(dataset, input_path)
    async with FakeCph(dataset, config) as fake:
        print(f"demo: fake CPH on {fake.url}: {dataset.projects} projects x {dataset.images:,} "
              f"images, throttled at 600 requests/s, ~2% of requests fail (retryable)")
        print(f"demo: input {input_path}: {lines:,} lines (2% unknown IDs, 5 malformed, "
              "25 duplicates); collecting at 500 requests/s ...", flush=True)
        settings = Settings(endpoint=fake.url, output=output, rate_limit=500, concurrency=64,
                            backoff_base=0.2, progress_interval=5)
        parts = build(settings, {}, auth=lambda _: TokenAuth(Secret(token)))
        run = Run(settings, str(input_path), parts)
        record = await run.execute()
    print(summary_line(record))
    date = record.snapshot_date.isoformat()
    print(f"demo: wrote {output}/members/snapshot_date={date}/, "
          f"{output}/image_status/snapshot_date={date}/ and {output}/runs/{record.run_id}.json")
    print("demo: the images shared with the most projects:")
    for image, count in top_shared(output, date):
        print(f"  {image}  {count} projects")
    glob = f"{output}/image_status/*/*.parquet"
    query = "SELECT status, count(*) FROM read_parquet('{}', hive_partitioning = true) " \
            "GROUP BY status"
    print(f"demo: query it yourself, e.g. duckdb -c \"{query.format(glob)}\"")
    assert record.exit_code is not None
    return record.exit_code


def demo(output: Path, images: int, seed: int) -> int:
    """Run the demo; its exit code is the collection's."""
    return loop.run(_demo(output, images, seed))
