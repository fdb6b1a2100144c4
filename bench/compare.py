"""Our collector beside what users would otherwise pick, measured as ratios in one run.

Each scenario starts ``cph-collector fake-server --fast`` in its own process (pinned to core 0
where ``taskset`` exists) and runs each contender on core 1 against the same generated IDs:

    throughput   unthrottled, zero latency: images/s, CPU us per image, peak RSS
    memory       ours alone at --images and at 10x that (peak RSS must stay flat)
    rate         ours at R = 500/s and 2,000/s with 50 ms latency, as the server saw it
    tail         ours at R = 1,000/s with a long-tailed latency (p50 200 ms, p99 2 s)
    limit        ours configured at 1,000/s against an unannounced server limit of 300/s
    exact        ours at 19/s and 105/s for 30 s: the rate the server saw is the rate configured
    discovery    ours with --input and with --discover of the same images: peak RSS and time

Peers (the ``bench`` extra installs them): ``script`` (bench/peers/aiohttp_script.py),
``sdk`` (the official SDK, 32 threads), ``dlt`` (dlt's rest_api source, bench/peers/dlt_rest.py).
A peer that is not installed is skipped, and said so.

    python bench/compare.py [--images 100000] [--scenarios throughput,memory,rate,tail,limit]
                            [--peers ours,script,sdk,dlt] [--profile]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
ENV = {**os.environ, "CPH_AUTH_TOKEN": TOKEN}
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
MEASURE = ("import json, resource, subprocess, sys, time; t = time.monotonic(); "
           "code = subprocess.run(sys.argv[1:]).returncode; "
           "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print(json.dumps({'code': code, 'wall': time.monotonic() - t, "
           "'cpu': r.ru_utime + r.ru_stime, 'rss_mb': r.ru_maxrss / 1024}), file=sys.stderr)")


@dataclass
class Result:
    name: str
    images: int
    wall: float
    cpu: float
    rss_mb: float
    server: dict[str, float]

    @property
    def rate(self) -> float:
        return self.images / self.wall


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *command] if PIN else command


class Server:
    """A fresh lean fake server for one contender; ``stop()`` returns what it saw."""

    def __init__(self, images: int, work: Path, *extra: str) -> None:
        self.ids, self.stats = work / "ids.txt", work / f"stats-{time.monotonic_ns()}.json"
        self.port = free_port()
        self.proc = subprocess.Popen(
            pinned(0, [sys.executable, "-m", "collector", "fake-server", "--fast", "--port",
                       str(self.port), "--images", str(images), "--max-members", "4",
                       "--seed", "1", "--ids-file", str(self.ids), "--stats-file",
                       str(self.stats), *extra]),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        assert self.proc.stdout is not None
        for _ in range(3):
            found = re.search(r"listening on (\S+) \(project (\w+)", self.proc.stdout.readline())
            if found:
                self.url, self.project = found.group(1), found.group(2)
                return
        raise SystemExit("the fake server did not start")

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=30)
        return json.loads(self.stats.read_text()) if self.stats.exists() else {}


def contender(name: str, server: Server, out: Path, rate: int, concurrency: int,
              profile: bool) -> list[str]:
    common = ["--input", str(server.ids), "--project-id", server.project, "--endpoint",
              server.url]
    if name == "discover":  # ours, listing the project's images instead of reading the file
        common = ["--discover", "--project-id", server.project, "--endpoint", server.url]
        name = "ours"
    if name == "ours":
        run = [sys.executable, "-m", "collector", "run", *common, "--output", str(out),
               "--rate-limit", str(rate), "--concurrency", str(concurrency),
               "--progress-interval", "3600"]
        if profile:
            run[1:1] = ["-m", "cProfile", "-o", str(out) + ".prof"]
        return run
    script = {"script": "aiohttp_script.py", "sdk": "sdk_threads.py", "dlt": "dlt_rest.py"}[name]
    return [sys.executable, str(HERE / "peers" / script), *common, "--output",
            str(out) + ".parquet"]


def measure(name: str, images: int, work: Path, rate: int = 100_000,
            server_args: tuple[str, ...] = (), profile: bool = False,
            concurrency: int = 64) -> Result:
    """Little's law: to sustain R requests/s at latency L, give at least R * L in flight."""
    server = Server(images, work, *server_args)
    out = work / f"out-{name}-{time.monotonic_ns()}"
    command = pinned(1, [sys.executable, "-c", MEASURE,
                         *contender(name, server, out, rate, concurrency, profile)])
    done = subprocess.run(command, capture_output=True, text=True, env=ENV)
    seen = server.stop()
    figures = json.loads(done.stderr.strip().splitlines()[-1])
    allowed = (0, 1) if name in ("ours", "discover") else (0,)  # ours: 1 when an image failed
    if figures["code"] not in allowed or seen.get("requests", 0) < images:
        raise SystemExit(f"{name} failed (exit {figures['code']}, {seen.get('requests')} "
                         f"requests for {images} images): {done.stderr[-2000:]}")
    if profile and name in ("ours", "discover"):
        import pstats

        pstats.Stats(str(out) + ".prof").sort_stats("tottime").print_stats(25)
    shutil.rmtree(out, ignore_errors=True)
    return Result(name, images, figures["wall"], figures["cpu"], figures["rss_mb"], seen)


def available(name: str) -> bool:
    module = {"ours": "collector", "script": "aiohttp", "sdk": "huaweicloudsdkcph",
              "dlt": "dlt"}[name]
    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--scenarios",
                        default="throughput,memory,rate,tail,limit,exact,discovery")
    parser.add_argument("--peers", default="ours,script,sdk,dlt")
    parser.add_argument("--profile", action="store_true", help="where our CPU goes")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    work = Path(tempfile.mkdtemp(prefix="cph-bench-"))
    rows: list[str] = []
    try:
        if "throughput" in scenarios:
            results = []
            for name in args.peers.split(","):
                if not available(name):
                    rows.append(f"| throughput | {name} | not installed: .[bench] extra |")
                    continue
                results.append(measure(name, args.images, work, profile=args.profile))
            ours = next((r for r in results if r.name == "ours"), None)
            for r in results:
                ratio = f"{ours.rate / r.rate:.2f}x" if ours and r is not ours else "1.00x"
                rows.append(f"| throughput {args.images:,} | {r.name} | {r.rate:,.0f} images/s | "
                            f"{r.cpu / r.images * 1e6:,.0f} us CPU/image | {r.rss_mb:,.0f} MB "
                            f"| ours vs this: {ratio} |")
        if "memory" in scenarios:
            small = measure("ours", args.images, work)
            large = measure("ours", args.images * 10, work)
            rows.append(f"| memory | ours | {args.images:,}: {small.rss_mb:,.0f} MB | "
                        f"{args.images * 10:,}: {large.rss_mb:,.0f} MB | "
                        f"ratio {large.rss_mb / small.rss_mb:.2f} |")
        if "discovery" in scenarios:
            given = measure("ours", args.images, work)
            found = measure("discover", args.images, work)
            rows.append(f"| discovery {args.images:,} | ours | --input: {given.rss_mb:,.0f} MB, "
                        f"{given.wall:,.0f} s | --discover: {found.rss_mb:,.0f} MB, "
                        f"{found.wall:,.0f} s | memory ratio {found.rss_mb / given.rss_mb:.2f} |")
        if "rate" in scenarios:
            for rate in (500, 2000):
                r = measure("ours", min(args.images, rate * 30), work, rate,
                            ("--latency", "0.05"), concurrency=max(64, rate // 10))
                s = r.server
                rows.append(f"| rate {rate}/s, 50 ms | ours | sustained "
                            f"{s['sustained_per_s'] / rate:.1%} of R | busiest 1 s "
                            f"{s['busiest_1s'] / rate:.2f} R | busiest 100 ms "
                            f"{s['busiest_100ms'] / rate:.2f} R |")
        if "tail" in scenarios:
            r = measure("ours", min(args.images, 30_000), work, 1000,
                        ("--latency-p50", "0.2", "--latency-p99", "2"), concurrency=1024)
            rows.append(f"| long tail 1000/s | ours | sustained "
                        f"{r.server['sustained_per_s'] / 1000:.1%} of R | | |")
        if "limit" in scenarios:
            r = measure("ours", min(args.images, 30_000), work, 1000,
                        ("--rate-limit", "300", "--latency", "0.01"))
            s = r.server
            rows.append(f"| unknown limit 300/s | ours | sustained "
                        f"{s['sustained_per_s'] / 300:.1%} of 300/s | "
                        f"{s['throttled'] / s['requests']:.2%} answered 429 | |")
        if "exact" in scenarios:
            for rate in (19, 105):
                r = measure("ours", rate * 30, work, rate, ("--latency", "0.05"))
                s = r.server
                rows.append(f"| exact rate {rate}/s, 30 s | ours | server saw "
                            f"{s['sustained_per_s']:.2f}/s = {s['sustained_per_s'] / rate:.1%} "
                            f"of R | busiest 1 s {s['busiest_1s']:.0f} | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{'pinned' if PIN else 'not pinned'}")
    print("| scenario | contender | | | | |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
