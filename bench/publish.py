"""The publish step's cost: ``ParquetSink.publish`` of one night of --images images (3 members
each) committed in chunks of --chunk, on local disk; wall time, peak RSS, and the files and row
groups it leaves per table.

    python bench/publish.py [--images 200000] [--chunk 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from collector.api import Member
from collector.errors import Status
from collector.results import ImageResult
from collector.sink import TABLES, Chunk, ParquetSink, partition
from collector.store import LocalStore

DAY = dt.date(2026, 12, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sink = ParquetSink(LocalStore(root), DAY, "20261201T020000Z-bench1")
        sink.resume(None)
        chunk = Chunk()
        for n in range(args.images):
            image = f"{rng.getrandbits(128):032x}"
            members = [Member(f"{rng.getrandbits(128):032x}", 1_700_000_000_000,
                              1_700_000_000_000) for _ in range(3)]
            chunk.add(ImageResult(f"p{n % 7:031d}", image, Status.OK, 1, 200,
                                  members=members, collected_at_ms=1_700_000_000_000), 0)
            if chunk.images == args.chunk:
                sink.commit(chunk)
                chunk = Chunk()
        sink.commit(chunk)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        sink.publish()
        seconds = time.perf_counter() - started
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"publish: {seconds:.2f} s, peak RSS {before:.0f} MB before it, {rss:.0f} MB "
              f"after ({args.images} images)")
        for table in TABLES:
            files = sorted(partition(root, table, DAY).glob("*.parquet"))
            groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
            size = sum(f.stat().st_size for f in files) / 1e6
            print(f"  {table}: {len(files)} files, {sum(groups)} row groups, {size:.1f} MB")


if __name__ == "__main__":
    main()
