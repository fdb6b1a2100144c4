"""``cph-collector demo``: the whole product in a minute, against a fake CPH on loopback.

Two nights of a seeded account of two projects in cn-north-4 (and one in another region) that
changes in between (shares added, revoked and updated, images deleted and created); a server
that throttles above 600 requests/s and fails a few per cent of requests (every one
retryable), and one per cent of images deleted between their listing and their member call.
Each night discovers the projects from IAM and the images from ListImages and collects at 500
requests/s into ``output/``; then the demo names the most shared images (``members`` joined to
``images``) and prints what changed, partners (the first night's projects) and others apart.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from collector import loop
from collector.auth import TokenAuth
from collector.build import build
from collector.config import Settings
from collector.diff import changes_between, render
from collector.fake.dataset import Dataset
from collector.fake.server import FakeCph, ServerConfig
from collector.manifest import RunRecord
from collector.pipeline import Run, summary_line
from collector.secrets import Secret
from collector.sink import TABLES
from collector.store import LocalStore

DIFF_LINES = 12  # rows of the diff the demo prints
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


async def _night(output: Path, dataset: Dataset, day: dt.date, seed: int,
                 trusted: frozenset[str]) -> RunRecord:
    """One night's discovery run against the account as it is on ``dataset.day``."""
    token = secrets.token_urlsafe(24)
    vanished = dataset.image_ids()[::100]  # deleted between their listing and their member call
    config = ServerConfig(tokens=(token,), rate_limit=600, latency=0.02, fault_rates=FAULTS,
                          script={image: ["not_found"] for image in vanished}, seed=seed,
                          record=False)
    async with FakeCph(dataset, config) as fake:
        print(f"demo: night of {day}: fake CPH and IAM on {fake.url} (day {dataset.day}): "
              f"{len(dataset.project_ids)} projects in cn-north-4 with "
              f"{len(dataset.image_ids()) + 1:,} images; throttled at 600 requests/s, ~2% of "
              f"requests fail (retryable), {len(vanished)} images deleted while the run goes")
        settings = Settings(endpoint=fake.url, iam_endpoint=fake.url, region="cn-north-4",
                            discover=True, output=output, rate_limit=500, concurrency=64,
                            backoff_base=0.2, progress_interval=5, snapshot_date=day,
                            trusted_projects=",".join(sorted(trusted)) or None)
        parts = build(settings, {}, auth=lambda _: TokenAuth(Secret(token)))
        record = await Run(settings, None, parts).execute()
    print(summary_line(record), flush=True)
    return record


async def _demo(output: Path, images: int, seed: int) -> int:
    first, second = (Dataset(seed=seed, projects=2, images=max(images // 4, 1),
                             locked_project=False, day=d) for d in (0, 1))
    nights = (dt.date(2026, 11, 30), dt.date(2026, 12, 1))
    print("demo: two nights of discovery (IAM's projects, ListImages' images, then members at "
          "500 requests/s), the account changing in between ...", flush=True)
    await _night(output, first, nights[0], seed, frozenset())
    # the partners are the projects we shared with on the first night; new ones are untrusted
    partners = frozenset(str(m["member_id"]) for i in first.image_ids()
                         for m in first.members(i))
    record = await _night(output, second, nights[1], seed, partners)
    date = record.snapshot_date.isoformat()
    print(f"demo: wrote {', '.join(f'{output}/{t}/' for t in TABLES)} and {output}/runs/")
    print("demo: the images shared with the most projects:")
    for name, image, count in top_shared(output, date):
        print(f"  {name}  ({image})  {count} projects")
    table, summary = changes_between(LocalStore(output), nights[0], nights[1], partners)
    print(f"demo: cph-collector diff --output {output} --from {nights[0]} --to {nights[1]} "
          "(newest first, ! = not a partner):")
    text = io.BytesIO()
    render(table, "table", text)
    lines = text.getvalue().decode().splitlines()
    print("\n".join(lines[:DIFF_LINES + 1]))
    if len(lines) > DIFF_LINES + 1:
        print(f"  ... and {len(lines) - DIFF_LINES - 1:,} more")
    print(f"demo: {summary.line()}")
    glob = f"{output}/changes/*/*.parquet"
    query = "SELECT change, trusted, count(*) FROM read_parquet('{}', hive_partitioning = true) " \
            "GROUP BY ALL"
    print(f"demo: query it yourself, e.g. duckdb -c \"{query.format(glob)}\"")
    assert record.exit_code is not None
    return record.exit_code


def demo(output: Path, images: int, seed: int) -> int:
    """Run the demo; its exit code is the collection's."""
    return loop.run(_demo(output, images, seed))
