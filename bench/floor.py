"""The floor under our HTTP path: a bare aiohttp loop, and our client alone, per request.

Starts ``cph-collector fake-server --fast`` pinned to core 0, then, on this process's core,
sends the same GETs three ways and prints client CPU microseconds per request:

    bare-default   ``async with session.get(url)`` + ``read()``, aiohttp's default timeouts
    bare-no-timers the same with no per-request timeout objects (total and sock_read off)
    ours           ``collector.client.AiohttpClient.get`` (sweep timeouts, proxy, Reply)

    python bench/floor.py [--requests 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from yarl import URL

from collector import loop
from collector.auth import TokenAuth
from collector.client import AiohttpClient, Timeouts
from collector.secrets import Secret

TOKEN = "bench-token"


async def bare(urls: list[str], timers: aiohttp.ClientTimeout) -> None:
    async with aiohttp.ClientSession(headers={"X-Auth-Token": TOKEN}, timeout=timers,
                                     connector=aiohttp.TCPConnector(limit=64)) as session:
        feed = iter(urls)

        async def worker() -> None:
            for url in feed:
                async with session.get(URL(url, encoded=True)) as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(64)))


async def ours(urls: list[str], project: str) -> None:
    auth = TokenAuth(Secret(TOKEN))
    client = AiohttpClient(concurrency=64, timeouts=Timeouts(), max_body_bytes=1 << 20, env={})
    client.add_static_headers(auth.static_headers())
    async with client:
        feed = iter(urls)

        async def worker() -> None:
            for url in feed:
                headers, _ = await auth.headers("GET", url, project)
                await client.get(url, headers or None)

        await asyncio.gather(*(worker() for _ in range(64)))


def cpu_us(run: Callable[[], Awaitable[None]], n: int) -> float:
    started = time.process_time()
    loop.run(run())  # type: ignore[arg-type]
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cph-floor-"))
    ids = work / "ids.txt"
    pin = ["taskset", "-c", "0"] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]
    server = subprocess.Popen(
        [*pin, sys.executable, "-m", "collector", "fake-server", "--fast", "--port", "0",
         "--images", str(args.requests), "--max-members", "4", "--seed", "1", "--ids-file",
         str(ids)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "CPH_AUTH_TOKEN": TOKEN})
    assert server.stdout is not None
    try:
        found = None
        for _ in range(3):
            found = found or re.search(r"listening on (\S+) \(project (\w+)",
                                       server.stdout.readline())
        assert found, "the fake server did not start"
        endpoint, project = found.groups()
        urls = [f"{endpoint}/v1/{project}/cloud-phone/images/{i}/members"
                for i in ids.read_text().split()]
        if pin:
            os.sched_setaffinity(0, {1})
        ways: dict[str, Callable[[], Awaitable[None]]] = {
            "bare-default": lambda: bare(urls, aiohttp.ClientTimeout(total=300)),
            "bare-no-timers": lambda: bare(urls, aiohttp.ClientTimeout(total=None,
                                                                       sock_connect=10)),
            "ours": lambda: ours(urls, project),
        }
        seen: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):  # interleaved, so that noise hits every way alike
            for name, way in ways.items():
                seen[name].append(cpu_us(way, len(urls)))
        for name, values in seen.items():
            print(f"| {name} | min {min(values):.0f} us CPU/request | runs: "
                  + ", ".join(f"{v:.0f}" for v in values) + " |")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)


if __name__ == "__main__":
    main()
