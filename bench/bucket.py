"""What a bucket costs: staging and publishing a snapshot of --images images (default a million)
in moto's S3 server (its own process on loopback), beside the same on local disk.

The staged chunks are written as a run writes them (10,000 images a chunk, 2.5 member rows an
image), then ``ParquetSink.publish`` is timed: in a bucket it packs each table into one object
(read every chunk back, write one Parquet file) and copies it in; on disk it renames folders.

    python bench/bucket.py [--images 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from collector.schemas import MEMBERS_SCHEMA, STATUS_SCHEMA, write_parquet
from collector.sink import ParquetSink
from collector.store import BucketUrl, Credentials, LocalStore, Store, open_bucket

DAY = dt.date(2026, 12, 1)
CHUNK = 10_000
KEYS = Credentials("bench-access-key", "bench-secret-key")


def chunks(images: int, seed: int = 1) -> list[tuple[pa.Table, pa.Table]]:
    """(members, image_status) of each chunk, as a run commits them."""
    rng = random.Random(seed)
    project = f"{rng.getrandbits(128):032x}"
    pool = [f"{rng.getrandbits(128):032x}" for _ in range(5000)]
    now = 1_764_547_200_000
    out = []
    for start in range(0, images, CHUNK):
        ids = [f"{rng.getrandbits(128):032x}" for _ in range(min(CHUNK, images - start))]
        shares = [(i, m) for i in ids for m in rng.sample(pool, rng.randrange(1, 5))]
        n, k = len(shares), len(ids)
        members = pa.table({
            "run_id": ["bench"] * n, "collected_at": [now] * n, "project_id": [project] * n,
            "image_id": [s[0] for s in shares], "member_id": [s[1] for s in shares],
            "create_time": [now] * n, "update_time": [now] * n}, schema=MEMBERS_SCHEMA)
        status = pa.table({
            "run_id": ["bench"] * k, "collected_at": [now] * k, "project_id": [project] * k,
            "image_id": ids, "status": ["ok"] * k, "http_status": [200] * k,
            "error_code": [None] * k, "error_msg": [None] * k, "request_id": [None] * k,
            "attempts": [1] * k, "member_count": [1] * k}, schema=STATUS_SCHEMA)
        out.append((members, status))
    return out


def stage_and_publish(store: Store, data: list[tuple[pa.Table, pa.Table]]) -> tuple[float, float]:
    """Seconds to stage the chunks, and to publish them."""
    sink = ParquetSink(store, DAY, "20261201T020000Z-bench0")
    sink.resume(None)
    started = time.monotonic()
    for n, (members, status) in enumerate(data):
        name = f"part-{sink.run_id}-{n:05d}.parquet"
        write_parquet(store, f"{sink.staging}/members/{name}", members)
        write_parquet(store, f"{sink.staging}/image_status/{name}", status)
    staged = time.monotonic()
    sink.publish()
    return staged - started, time.monotonic() - staged


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    args = parser.parse_args()
    data = chunks(args.images)
    rows = sum(m.num_rows for m, _ in data)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        admin = pafs.S3FileSystem(access_key=KEYS.access_key, secret_key=KEYS.secret_key,
                                  endpoint_override=endpoint, region="us-east-1",
                                  allow_bucket_creation=True)
        for _ in range(100):
            try:
                admin.create_dir("bench")
                break
            except OSError:
                time.sleep(0.1)
        bucket = open_bucket(BucketUrl("s3", "bench", "nightly"), endpoint=endpoint,
                             region="us-east-1", addressing="auto", credentials=KEYS,
                             ca_file=None, proxy=None, connect_timeout=10, max_attempts=3)
        in_bucket = stage_and_publish(bucket, data)
        with tempfile.TemporaryDirectory(prefix="cph-bench-") as folder:
            on_disk = stage_and_publish(LocalStore(Path(folder)), data)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"| {args.images:,} images, {rows:,} member rows, {len(data)} chunks | bucket: stage "
          f"{in_bucket[0]:.1f} s, publish {in_bucket[1]:.1f} s | disk: stage {on_disk[0]:.1f} s, "
          f"publish {on_disk[1]:.2f} s |")


if __name__ == "__main__":
    main()
