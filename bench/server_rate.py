"""How many requests per second can the fake CPH server answer on one core?

The server must never be the bottleneck of our own benchmarks. This starts
``cph-collector fake-server`` in its own process (pinned to core 0 where ``taskset`` exists), then
drives it from this process (pinned to core 1) with a lean keep-alive client: raw asyncio
streams, N connections, one request in flight on each, for a fixed time. It prints requests/s
and the server's CPU per request.

    python bench/server_rate.py [--seconds 10] [--connections 64] [--images 10000] [--fast]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from collector import loop

TOKEN = "bench-token"


def start_server(images: int, ids_file: Path, fast: bool) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "collector", "fake-server", "--images", str(images),
               "--seed", "1", "--ids-file", str(ids_file), *(["--fast"] if fast else [])]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "CPH_AUTH_TOKEN": TOKEN})
    assert proc.stdout is not None
    for _ in range(3):
        line = proc.stdout.readline()
        found = re.search(r"listening on (\S+) \(project (\w+)", line)
        if found:
            return proc, f"{found.group(1)}|{found.group(2)}"
    proc.kill()
    raise SystemExit("fake server did not start")


async def drive(host: str, port: int, project: str, ids: list[str], connections: int,
                seconds: float) -> int:
    requests = [(f"GET /v1/{project}/cloud-phone/images/{image}/members HTTP/1.1\r\n"
                 f"Host: {host}:{port}\r\nX-Auth-Token: {TOKEN}\r\n\r\n").encode()
                for image in ids]
    end = time.monotonic() + seconds
    done = 0

    async def one(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        while time.monotonic() < end:
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer: {head[:40]!r}")
            done += 1
            i += connections
        writer.close()

    await asyncio.gather(*(one(n) for n in range(connections)))
    return done


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--fast", action="store_true", help="the lean front (fake-server --fast)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    ids_file = Path(tempfile.mkdtemp()) / "ids.txt"
    proc, where = start_server(args.images, ids_file, args.fast)
    try:
        url, project = where.split("|")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        ids = ids_file.read_text().split()
        asyncio.run(drive(host, int(port), project, ids, args.connections, 1.0))  # warm-up
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        count = asyncio.run(drive(host, int(port), project, ids, args.connections, args.seconds))
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        shutil.rmtree(ids_file.parent, ignore_errors=True)
    front = "lean front" if args.fast else "aiohttp.web"
    print(f"fake server ({front}, {loop.name()}, one core): {count / elapsed:,.0f} requests/s over "
          f"{elapsed:.1f} s with {args.connections} keep-alive connections; "
          f"server CPU {cpu / elapsed:.0%} of a core, {cpu / count * 1e6:,.0f} us per request")


if __name__ == "__main__":
    main()
