"""``cph-collector demo``: the whole product in one minute, against a fake CPH on loopback.

A seeded account of two projects in cn-north-4 (and one in another region), a server that
throttles above 600 requests/s and fails a few per cent of requests (every one retryable),
and one per cent of images deleted between their listing and their member call; the real
collection discovers the projects from IAM and the images from ListImages, at 500 requests/s,
into ``output/``, then names the most shared images by joining ``members`` to ``images``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pyarrow as pa
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
from collector.sink import TABLES

FAULTS = {"http_500": 0.005, "http_503": 0.005, "reset_before_headers": 0.003,
          "short_body": 0.002, "cps_0003": 0.003, "throttle": 0.002}


def top_shared(output: Path, snapshot_date: str, limit: int = 5) -> list[tuple[str, str, int]]:
    """(image_name, image_id, projects) of the images shared with the most projects: the
    published ``members`` joined to the published ``images``."""
    def table(name: str) -> pa.Table:
        return ds.dataset(output / name / f"snapshot_date={snapshot_date}",
                          format="parquet").to_table()

    counts = table("members").group_by(["project_id", "image_id"]).aggregate(
        [("member_id", "count")])
    named = counts.join(table("images").select(["project_id", "image_id", "image_name"]),
                        keys=["project_id", "image_id"])
    order = pc.sort_indices(named, sort_keys=[("member_id_count", "descending"),
                                              ("image_name", "ascending")])
    return [(row["image_name"], row["image_id"], row["member_id_count"])
            for row in named.take(order[:limit]).to_pylist()]


async def _demo(output: Path, images: int, seed: int) -> int:
    dataset = Dataset(seed=seed, projects=2, images=max(images // 2, 1), locked_project=False)
    token = secrets.token_urlsafe(24)
    vanished = dataset.image_ids()[::100]  # deleted between their listing and their member call
    config = ServerConfig(tokens=(token,), rate_limit=600, latency=0.02, fault_rates=FAULTS,
                          script={image: ["not_found"] for image in vanished}, seed=seed,
                          record=False)
    async with FakeCph(dataset, config) as fake:
        print(f"demo: fake CPH and IAM on {fake.url}: {len(dataset.project_ids)} projects in "
              f"cn-north-4 with {len(dataset.image_ids()) + 1:,} images, one project in "
              "another region; throttled at 600 requests/s, ~2% of requests fail (retryable), "
              f"{len(vanished)} images deleted while the run goes")
        print("demo: discovering the projects (IAM) and their images (ListImages), then "
              "collecting members at 500 requests/s ...", flush=True)
        settings = Settings(endpoint=fake.url, iam_endpoint=fake.url, region="cn-north-4",
                            discover=True, output=output, rate_limit=500, concurrency=64,
                            backoff_base=0.2, progress_interval=5)
        parts = build(settings, {}, auth=lambda _: TokenAuth(Secret(token)))
        record = await Run(settings, None, parts).execute()
    print(summary_line(record))
    date = record.snapshot_date.isoformat()
    print(f"demo: wrote {', '.join(f'{output}/{t}/snapshot_date={date}/' for t in TABLES)} "
          f"and {output}/runs/{record.run_id}.json")
    print("demo: the images shared with the most projects:")
    for name, image, count in top_shared(output, date):
        print(f"  {name}  ({image})  {count} projects")
    glob = f"{output}/image_status/*/*.parquet"
    query = "SELECT status, count(*) FROM read_parquet('{}', hive_partitioning = true) " \
            "GROUP BY status"
    print(f"demo: query it yourself, e.g. duckdb -c \"{query.format(glob)}\"")
    assert record.exit_code is not None
    return record.exit_code


def demo(output: Path, images: int, seed: int) -> int:
    """Run the demo; its exit code is the collection's."""
    return loop.run(_demo(output, images, seed))
