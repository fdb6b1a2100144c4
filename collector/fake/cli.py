"""``cph-collector fake-server``: the fake CPH on loopback, for trying the collector by hand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import os
import signal
import sys
from pathlib import Path

import orjson

from collector import loop
from collector.errors import UsageError
from collector.fake.core import ServerConfig
from collector.fake.dataset import Dataset
from collector.fake.fast import FastFakeCph
from collector.fake.faults import Outcome
from collector.fake.server import FakeCph

DEFAULT_TOKEN = "fake-token"  # noqa: S105 - the fake server's documented default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fake-server`` command's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback default)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--projects", type=int, default=1, help="projects in the dataset")
    parser.add_argument("--images", type=int, default=1000, help="images per project")
    parser.add_argument("--max-members", type=int, default=10, help="members per image, at most")
    parser.add_argument("--seed", type=int, default=1, help="dataset and fault seed")
    parser.add_argument("--day", type=int, default=0,
                        help="serve the account as it is on this day: each day some shares are "
                             "added, revoked or updated, some images deleted, some created")
    parser.add_argument("--rate-limit", type=int, default=None,
                        help="429 APIGW.0308 above this many requests per caller per second")
    parser.add_argument("--retry-after", default=None, help="Retry-After value on 429s")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--latency-p50", type=float, default=None,
                        help="log-normal latency median (with --latency-p99)")
    parser.add_argument("--latency-p99", type=float, default=None)
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE",
                        help="inject a fault at a rate, e.g. http_503=0.02; kinds: "
                             + ", ".join(o.value for o in Outcome if o is not Outcome.NORMAL))
    parser.add_argument("--stall-seconds", type=float, default=30.0,
                        help="how long a 'stall' fault waits before answering")
    parser.add_argument("--unknown-image", choices=("cps", "404"), default="cps",
                        help="unknown image: 400 CPS.0030 (cps) or 404 APIGW.0101")
    parser.add_argument("--no-paging", action="store_true",
                        help="answer in the older shape, without marker/limit/page_info")
    parser.add_argument("--token-ttl", type=float, default=None,
                        help="seconds before the token expires (401 APIGW.0301)")
    parser.add_argument("--aksk", action="store_true",
                        help="also accept requests signed with HUAWEICLOUD_SDK_AK/SK (from the "
                             "environment)")
    parser.add_argument("--iam-user", default=None, metavar="ACCOUNT/USER",
                        help="serve /v3/auth/tokens for this user, password CPH_IAM_PASSWORD")
    parser.add_argument("--iam-token-ttl", type=float, default=86_400.0,
                        help="seconds an IAM token from this server is valid")
    parser.add_argument("--stats-file", type=Path, default=None,
                        help="on exit, write what the server saw (rates, busiest windows) as JSON")
    parser.add_argument("--fast", action="store_true",
                        help="serve with the lean HTTP/1.1 front (same answers, for benchmarks)")
    parser.add_argument("--ids-file", type=Path, default=None,
                        help="write the dataset's IDs here (.csv: project_id,image_id; "
                             "else one ID per line)")


def parse_faults(items: list[str]) -> dict[str, float]:
    """``KIND=RATE`` options as fault rates; UsageError naming a bad one."""
    rates: dict[str, float] = {}
    for item in items:
        kind, _, rate = item.partition("=")
        try:
            Outcome(kind)
            rates[kind] = float(rate)
        except ValueError:
            raise UsageError(f"--fault {item}: must be KIND=RATE with a known kind") from None
    return rates


def write_ids(dataset: Dataset, path: Path) -> None:
    """Write the dataset's image IDs (and some unknown ones) for a run to read."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            writer = csv.writer(handle)
            writer.writerow(["project_id", "image_id"])
            for project in dataset.project_ids[: dataset.projects]:
                writer.writerows((project, image) for image in dataset.image_ids(project))
        else:
            handle.writelines(f"{image}\n" for image in dataset.image_ids())


def credentials(args: argparse.Namespace) -> dict[str, object]:
    """AK/SK and IAM users for the fake gateway, from the same variables the collector reads."""
    found: dict[str, object] = {}
    if args.aksk:
        ak, sk = os.environ.get("HUAWEICLOUD_SDK_AK"), os.environ.get("HUAWEICLOUD_SDK_SK")
        if not (ak and sk):
            raise UsageError("--aksk: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK")
        found["access_keys"] = {ak: sk}
    if args.iam_user:
        password = os.environ.get("CPH_IAM_PASSWORD")
        if "/" not in args.iam_user or not password:
            raise UsageError("--iam-user: give ACCOUNT/USER and set CPH_IAM_PASSWORD")
        found["iam_users"] = {args.iam_user: password}
    return found


def build(args: argparse.Namespace) -> FakeCph | FastFakeCph:
    """The fake server the options describe, on the chosen front."""
    dataset = Dataset(seed=args.seed, projects=args.projects, images=args.images, day=args.day,
                      max_members=args.max_members)
    config = ServerConfig(
        tokens=(os.environ.get("CPH_AUTH_TOKEN") or DEFAULT_TOKEN,),
        token_ttl=args.token_ttl, unknown_image=args.unknown_image, paging=not args.no_paging,
        rate_limit=args.rate_limit, retry_after=args.retry_after, latency=args.latency,
        latency_p50=args.latency_p50, latency_p99=args.latency_p99,
        fault_rates=parse_faults(args.fault), seed=args.seed, stall_seconds=args.stall_seconds,
        iam_token_ttl=args.iam_token_ttl, record=False, **credentials(args))  # type: ignore[arg-type]
    return (FastFakeCph if args.fast else FakeCph)(dataset, config)


async def _serve(fake: FakeCph | FastFakeCph, host: str, port: int,
                 stats_file: Path | None) -> None:
    url = await fake.start(host, port)
    # The server is also the benchmarks' instrument. Full collections over the dataset and its
    # request records stalled it up to 75 ms, and the requests it then read at once looked like
    # client bursts. Objects frozen every second are never rescanned (nor ever freed: fine for
    # a fake server's lifetime).
    gc.freeze()
    freezer = asyncio.create_task(_freeze_every_second())
    projects = ", ".join(fake.dataset.project_ids[: fake.dataset.projects])
    kind = "lean front" if isinstance(fake, FastFakeCph) else "aiohttp.web"
    print(f"fake CPH listening on {url} (project {projects}; "
          f"{fake.dataset.images} images each; {kind}); Ctrl-C stops it", flush=True)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        running.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        freezer.cancel()
        await fake.close()
        if stats_file is not None:  # once, after the server has stopped
            stats_file.write_bytes(orjson.dumps(fake.traffic()))  # noqa: ASYNC240
        print(f"fake CPH stopped after {sum(fake.statuses.values()):,} requests "
              f"({dict(sorted(fake.statuses.items()))})", file=sys.stderr, flush=True)


async def _freeze_every_second() -> None:
    while True:
        await asyncio.sleep(1.0)
        gc.freeze()


def serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM, then print what was served."""
    fake = build(args)
    if args.ids_file is not None:
        write_ids(fake.dataset, args.ids_file)
        print(f"wrote {len(fake.dataset.image_ids()):,} image IDs to {args.ids_file}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        loop.run(_serve(fake, args.host, args.port, args.stats_file))
    return 0
