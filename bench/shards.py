"""The local proof of shards: N shard processes against the fake server (this process, on
loopback), one of them killed with SIGKILL mid-run and run again, then ``publish``; the result
must equal one unsharded run row for row, and the server must see at most ``--rate`` requests in
any second in all (each shard takes rate / N).

    python bench/shards.py [--images 3000] [--shards 3] [--rate 300] [--s3]

``--s3``: the output is a bucket in moto's S3 server (its own process on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs

from collector.fake import Dataset, FakeCph, ServerConfig

TOKEN = "bench-shards-token"
DAY = "2026-12-01"
KEYS = {"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
DROP = {"run_id", "collected_at", "request_id", "attempts"}


def rows(path: str, filesystem: Any = None) -> set[tuple[object, ...]]:
    table = ds.dataset(path, format="parquet", partitioning="hive",
                       filesystem=filesystem).to_table()
    keep = [c for c in table.column_names if c not in DROP]
    return {tuple(r[c] for c in keep) for r in table.select(keep).to_pylist()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)


async def finish(child: asyncio.subprocess.Process) -> tuple[int, str]:
    """Its exit code and the first line it printed (the summary)."""
    out, _ = await child.communicate()
    return child.returncode or 0, out.decode().strip().splitlines()[0] if out else ""


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    return await finish(await start(*args, env=env))


async def main(images: int, count: int, rate: float, s3: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="cph-shards-"))
    dataset = Dataset(seed=5, images=images)
    ids = work / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in dataset.image_ids()))
    env = {**os.environ, "CPH_AUTH_TOKEN": TOKEN, **KEYS}
    moto, fs, extra = None, None, []
    output = str(work / "sharded")
    if s3:
        port = free_port()
        moto = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        fs = pafs.S3FileSystem(access_key=KEYS["AWS_ACCESS_KEY_ID"],
                               secret_key=KEYS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                               endpoint_override=f"http://127.0.0.1:{port}",
                               allow_bucket_creation=True)
        for _ in range(100):
            try:
                fs.create_dir("shards")
                break
            except OSError:
                await asyncio.sleep(0.1)
        output, extra = "s3://shards/nightly", ["--storage-endpoint", f"http://127.0.0.1:{port}"]
    fake = FakeCph(dataset, ServerConfig(tokens=(TOKEN,), latency=0.01))
    await fake.start()
    try:
        common = ["--input", str(ids), "--project-id", dataset.project_ids[0], "--endpoint",
                  fake.url, "--snapshot-date", DAY, "--rate-limit", str(rate),
                  "--chunk-images", "100"]
        code, whole = await cli("run", *common, "--output", str(work / "whole"), env=env)
        assert code == 0, whole
        fake.log.clear()
        started = time.monotonic()

        def shard(k: int) -> Any:
            return start("run", *common, "--output", output, *extra, "--shard", f"{k}/{count}",
                         env=env)

        children = [await shard(k) for k in range(1, count + 1)]
        await asyncio.sleep(max(images / rate / 3, 0.5))  # a third of the way
        children[1].send_signal(signal.SIGKILL)
        results = [await finish(child) for child in children]
        again = await finish(await shard(2))
        arrivals = sorted(e.t for e in fake.log if e.t >= started)
        busiest = max((sum(1 for t in arrivals[i:i + int(rate * 2)] if t - arrivals[i] < 1.0)
                       for i in range(len(arrivals))), default=0)
        code, published = await cli("publish", "--output", output, *extra, "--shards",
                                    str(count), "--snapshot-date", DAY, env=env)
        base = "shards/nightly" if s3 else output
        equal = all(rows(f"{base}/{t}", fs) == rows(str(work / "whole" / t))
                    for t in ("members", "image_status"))
    finally:
        await fake.close()
        if moto is not None:
            moto.terminate()
            await moto.wait()
    print(f"unsharded: {whole}")
    for k, (shard_code, line) in enumerate(results, 1):
        print(f"shard {k}/{count} (exit {shard_code}{', killed' if k == 2 else ''}): {line}")
    print(f"shard 2/{count} again: {again[1]}")
    print(f"publish (exit {code}): {published}")
    print(f"| {images:,} images, {count} shards at {rate:g}/s in all, "
          f"{'bucket' if s3 else 'disk'} | equal to one run: {equal} | busiest second at the "
          f"server: {busiest} requests ({busiest / rate:.2f} of the limit) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--s3", action="store_true")
    options = parser.parse_args()
    asyncio.run(main(options.images, options.shards, options.rate, options.s3))
