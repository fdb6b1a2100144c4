"""The change table's cost: a diff of two snapshots of --rows member rows each (default a million).

Writes two published snapshots with the declared schemas into a temporary output, in files of
a chunk each as a run writes them (night two: 2% of shares revoked, 2% added, 1% updated, 0.5%
of images deleted, 1% new images), then runs ``cph-collector diff --format csv`` on them and
reports its wall time (process start included) and peak RSS (target: under 10 s and 400 MB at
a million rows).

    python bench/diff.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from collector.schemas import MEMBERS_SCHEMA, STATUS_SCHEMA, partition

NIGHTS = (dt.date(2026, 11, 30), dt.date(2026, 12, 1))
MEASURE = """
import json, resource, subprocess, sys, time
t = time.monotonic()
done = subprocess.run([sys.executable, "-m", "collector", "diff", "--output", sys.argv[1],
                       "--from", "2026-11-30", "--to", "2026-12-01", "--format", "csv"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
print(json.dumps({"seconds": time.monotonic() - t, "summary": done.stderr.strip(),
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def night(rows: list[tuple[str, str, str, int, int]], images: list[str], output: Path,
          day: dt.date, project: str, gone: set[str] | None = None) -> None:
    """Publish one snapshot: every image ok, its shares as member rows; ``gone`` images
    answered not_found."""
    gone = gone or set()
    statuses = ["ok"] * len(images) + ["not_found"] * len(gone)
    images = images + sorted(gone)
    now = 1_764_547_200_000
    count: dict[str, int] = {}
    for _, image, *_ in rows:
        count[image] = count.get(image, 0) + 1
    members = pa.table({
        "run_id": ["bench"] * len(rows), "collected_at": [now] * len(rows),
        "project_id": [r[0] for r in rows], "image_id": [r[1] for r in rows],
        "member_id": [r[2] for r in rows], "create_time": [r[3] for r in rows],
        "update_time": [r[4] for r in rows]}, schema=MEMBERS_SCHEMA)
    status = pa.table({
        "run_id": ["bench"] * len(images), "collected_at": [now] * len(images),
        "project_id": [project] * len(images), "image_id": images,
        "status": statuses, "http_status": [200] * len(images),
        "error_code": [None] * len(images), "error_msg": [None] * len(images),
        "request_id": [None] * len(images), "attempts": [1] * len(images),
        "member_count": [count.get(i, 0) for i in images]}, schema=STATUS_SCHEMA)
    for name, table in (("members", members), ("image_status", status)):
        folder = partition(output, name, day)
        folder.mkdir(parents=True)
        # in files of about a chunk each, as a run writes them (chunk_images = 10,000)
        step = 25_000 if name == "members" else 10_000
        for n, start in enumerate(range(0, max(len(table), 1), step)):
            pq.write_table(table.slice(start, step), folder / f"part-bench-{n:05d}.parquet",
                           compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(1)
    project = f"{rng.getrandbits(128):032x}"
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(5000)]
    images = [f"{rng.getrandbits(128):032x}" for _ in range(args.rows * 2 // 5)]
    before = []
    for image in images:  # 1 to 4 shares an image, 2.5 on average
        stamp = rng.randrange(1_700_000_000_000, 1_760_000_000_000)
        before += [(project, image, member, stamp, stamp)
                   for member in rng.sample(pool, rng.randrange(1, 5))]
    before = before[: args.rows]
    gone = set(rng.sample(images, len(images) // 200))
    born = [f"{rng.getrandbits(128):032x}" for _ in range(len(images) // 100)]
    after = []
    for row in before:
        if row[1] in gone:
            continue
        draw = rng.random()
        if draw < 0.02:
            continue  # revoked
        after.append((*row[:4], row[4] + 1000) if draw < 0.03 else row)  # updated
        if draw > 0.98:
            after.append((project, row[1], f"{rng.getrandbits(128):032x}", row[3],
                          row[3]))  # added, to an account the image had not before
    after += [(project, image, rng.choice(pool), 1_761_000_000_000, 1_761_000_000_000)
              for image in born]
    work = Path(tempfile.mkdtemp(prefix="cph-diff-"))
    try:
        night(before, images, work, NIGHTS[0], project)
        night(after, [i for i in images if i not in gone] + born, work, NIGHTS[1], project,
              gone)
        done = subprocess.run([sys.executable, "-c", MEASURE, str(work)], capture_output=True,
                              text=True, check=True)
        figures = json.loads(done.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| cph-collector diff of {len(before):,} and {len(after):,} member rows (csv to "
          f"/dev/null) | {figures['seconds']:.1f} s | peak {figures['rss_mb']:,.0f} MB | "
          f"{figures['summary']} |")


if __name__ == "__main__":
    main()
