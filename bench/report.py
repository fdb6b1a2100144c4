"""The morning report's size and time: for the demo, and for a million images.

Writes two published nights of --images images (default a million; 0 to 3 shares each, 1.5 on
average, from 5,000 projects of which half are trusted; night two: 2% of shares revoked, 1%
added, 0.1% of images failed) with the declared schemas, in files of a chunk each, its change
table computed by ``diff``'s code and a manifest per night, as a run leaves them; then runs
``cph-collector report`` on it and on the demo's output, and prints the page's size, the wall
time (process start included) and the peak RSS.

    python bench/report.py [--images 1000000] [--demo-images 20000]
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

import orjson
import pyarrow as pa

from collector.diff import changes_between
from collector.report import report_key
from collector.schemas import MEMBERS_SCHEMA, STATUS_SCHEMA, partition_key, write_parquet
from collector.store import LocalStore

NIGHTS = (dt.date(2026, 11, 30), dt.date(2026, 12, 1))
MEASURE = """
import json, resource, subprocess, sys, time
t = time.monotonic()
subprocess.run([sys.executable, "-m", "collector", "report", "--output", sys.argv[1]],
               stdout=subprocess.DEVNULL, check=True)
print(json.dumps({"seconds": time.monotonic() - t,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def hexes(rng: random.Random, n: int) -> list[str]:
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


def publish(store: LocalStore, day: dt.date, project: str, images: list[str],
            shares: list[tuple[str, str, int]], failed: set[str],
            trusted: list[str]) -> None:
    """One night's members and image_status, in chunk-sized files, and its manifest."""
    now = 1_764_547_200_000
    per_image: dict[str, int] = {}
    for image, _, _ in shares:
        per_image[image] = per_image.get(image, 0) + 1
    members = pa.table({
        "run_id": ["bench"] * len(shares), "collected_at": [now] * len(shares),
        "project_id": [project] * len(shares), "image_id": [s[0] for s in shares],
        "member_id": [s[1] for s in shares], "create_time": [s[2] for s in shares],
        "update_time": [s[2] for s in shares]}, schema=MEMBERS_SCHEMA)
    bad = [i in failed for i in images]
    status = pa.table({
        "run_id": ["bench"] * len(images), "collected_at": [now] * len(images),
        "project_id": [project] * len(images), "image_id": images,
        "status": ["failed" if b else "ok" for b in bad],
        "http_status": [None if b else 200 for b in bad],
        "error_code": ["timeout" if b else None for b in bad],
        "error_msg": ["no answer in 30 s" if b else None for b in bad],
        "request_id": [None] * len(images), "attempts": [5 if b else 1 for b in bad],
        "member_count": [0 if b else per_image.get(i, 0) for i, b in zip(images, bad,
                                                                         strict=True)]},
        schema=STATUS_SCHEMA)
    for name, table, step in (("members", members, 15_000), ("image_status", status, 10_000)):
        for n, start in enumerate(range(0, max(len(table), 1), step)):
            write_parquet(store, f"{partition_key(name, day)}/part-bench-{n:05d}.parquet",
                          table.slice(start, step))
    run_id = f"{day:%Y%m%d}T020000Z-bench0"
    counts = {"ok": len(images) - len(failed), "failed": len(failed), "not_found": 0,
              "forbidden": 0, "invalid": 0, "status_rows": len(images),
              "member_rows": len(shares)}
    store.write(f"runs/{run_id}.json", orjson.dumps({
        "run_id": run_id, "status": "finished", "exit_code": 1 if failed else 0,
        "snapshot_date": day.isoformat(), "started_at": f"{day}T02:00:00+00:00",
        "ended_at": f"{day}T02:35:00+00:00", "seconds": 2100.0, "input": "ids.csv",
        "counts": counts, "requests": len(images), "retries": 0, "throttled_429": 0,
        "settings": {"trusted_projects": ",".join(trusted)}, "files": [], "changes": None}))


def build(work: Path, size: int) -> None:
    rng = random.Random(1)
    store = LocalStore(work)
    project = hexes(rng, 1)[0]
    pool = hexes(rng, 5000)
    trusted = pool[::2]
    images = hexes(rng, size)
    before = [(image, member, rng.randrange(1_600_000_000_000, 1_760_000_000_000))
              for n, image in enumerate(images) for member in rng.sample(pool, n % 4)]
    after = [row for row in before if rng.random() >= 0.02]
    after += [(image, rng.choice(pool), 1_761_000_000_000)
              for image in rng.sample(images, size // 100)]
    failed = set(rng.sample(images, size // 1000))
    publish(store, NIGHTS[0], project, images, before, set(), trusted)
    publish(store, NIGHTS[1], project, images,
            [row for row in after if row[0] not in failed], failed, trusted)
    table, _ = changes_between(store, NIGHTS[0], NIGHTS[1], frozenset(trusted))
    write_parquet(store, f"{partition_key('changes', NIGHTS[1])}/part-bench-00000.parquet",
                  table)


def measure(output: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(output)], capture_output=True,
                          text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout)
    figures["bytes"] = (output / report_key(NIGHTS[1])).stat().st_size
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--demo-images", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cph-report-"))
    try:
        subprocess.run([sys.executable, "-m", "collector", "demo", "--output",
                        str(work / "demo"), "--images", str(args.demo_images)],
                       stdout=subprocess.DEVNULL, check=True)
        demo = measure(work / "demo")
        build(work / "big", args.images)
        big = measure(work / "big")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for what, figures in ((f"the demo ({args.demo_images:,} images)", demo),
                          (f"{args.images:,} images, two nights", big)):
        print(f"| report of {what} | {figures['bytes'] / 1e6:.2f} MB | "
              f"{figures['seconds']:.1f} s | peak {figures['rss_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
