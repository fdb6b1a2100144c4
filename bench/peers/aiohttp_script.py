"""Peer: what a capable engineer writes by hand in an afternoon (see shared PERFORMANCE.md).

``asyncio.gather`` over every ID, ``Semaphore(64)``, orjson, one Arrow table at the end. No
status rows, no retries, no checkpoints: the floor our collector is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import aiohttp
import orjson
import pyarrow as pa
import pyarrow.parquet as pq


async def main(args: argparse.Namespace) -> None:
    ids = Path(args.input).read_text().split()  # noqa: ASYNC240 - once, before any request
    token = os.environ["CPH_AUTH_TOKEN"]
    rows: list[dict[str, object]] = []
    semaphore = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(headers={"X-Auth-Token": token},
                                     connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(image_id: str) -> None:
            url = f"{args.endpoint}/v1/{args.project_id}/cloud-phone/images/{image_id}/members"
            async with semaphore, session.get(url) as resp:
                if resp.status == 200:
                    rows.extend(orjson.loads(await resp.read())["members"])

        await asyncio.gather(*(one(i) for i in ids))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, args.output, compression="zstd")
    print(f"script: {len(ids)} images, {table.num_rows} member rows")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--input", "--project-id", "--endpoint", "--output"):
        parser.add_argument(name, required=True)
    asyncio.run(main(parser.parse_args()))
