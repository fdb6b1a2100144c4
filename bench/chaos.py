"""The "nothing lost" drill: faults of every kind, a gateway limit at half our rate, kill -9.

1. a clean run against a fake CPH with ``--fault-share`` of requests faulty (every kind,
   equally) and a 429 limit at half the configured rate;
2. the same command on a second output, killed with SIGKILL halfway;
3. the same command again on that output, which resumes.

Each run gets a fresh server with the same seed on the same port (the real API keeps no
memory of our attempts), so both outputs met exactly the same faults. It then checks that every
ID is in image_status exactly once, that the two outputs hold the same rows (apart from run id,
collection time, request id and attempts), and that each manifest's counts match its files.

    python bench/chaos.py [--images 20000] [--rate 1000] [--fault-share 0.05]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.dataset as ds

from collector.fake import Dataset

TOKEN = "chaos-token"
KINDS = ["throttle", "http_500", "http_502", "http_503", "http_504", "cps_0003",
         "reset_before_headers", "reset_mid_body", "short_body", "truncated_json", "wrong_types",
         "html_200", "html_502", "trickle", "stall", "huge_body", "paging_loop", "not_found",
         "forbidden"]
ENV = {**os.environ, "CPH_AUTH_TOKEN": TOKEN}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server(port: int, args: argparse.Namespace, ids: Path) -> subprocess.Popen[str]:
    faults = [f"{kind}={args.fault_share / len(KINDS):.6f}" for kind in KINDS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "fake-server", "--port", str(port), "--images",
         str(args.images), "--seed", "42", "--rate-limit", str(args.rate // 2),
         "--latency", "0.005", "--stall-seconds", "5", "--ids-file", str(ids),
         *[x for f in faults for x in ("--fault", f)]],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    assert proc.stdout is not None
    while "listening" not in proc.stdout.readline():
        pass
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)


def collect(port: int, args: argparse.Namespace, ids: Path, out: Path,
            project: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector", "run", "--input", str(ids), "--project-id", project,
         "--endpoint", f"http://127.0.0.1:{port}", "--output", str(out), "--rate-limit",
         str(args.rate), "--read-timeout", "1", "--chunk-images", "1000", "--snapshot-date",
         "2026-11-28", "--progress-interval", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def rows(out: Path, table: str) -> Counter[tuple[object, ...]]:
    drop = {"run_id", "collected_at", "request_id", "attempts"}
    data = ds.dataset(out / table, format="parquet", partitioning="hive").to_table()
    keep = [c for c in data.column_names if c not in drop]
    return Counter(tuple(r.values()) for r in data.select(keep).to_pylist())


def check(out: Path, expected: set[str]) -> str:
    status = ds.dataset(out / "image_status", format="parquet").to_table().to_pylist()
    members = ds.dataset(out / "members", format="parquet").to_table().num_rows
    seen = Counter(r["image_id"] for r in status)
    assert set(seen) == expected, "an ID is missing, or one was invented"
    assert set(seen.values()) == {1}, "an ID appears twice"
    manifests = [orjson.loads(p.read_bytes()) for p in (out / "runs").glob("*.json")]
    [manifest] = [m for m in manifests if m["status"] == "finished"]
    counts, by_status = manifest["counts"], Counter(r["status"] for r in status)
    assert counts["status_rows"] == len(status), "manifest status_rows"
    assert counts["member_rows"] == members, "manifest member_rows"
    for name in ("ok", "not_found", "forbidden", "failed"):
        assert counts[name] == by_status.get(name, 0), f"manifest {name}"
    return f"{len(status):,} status rows, {members:,} member rows, {dict(by_status)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--fault-share", type=float, default=0.05)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    ids, port = work / "ids.txt", free_port()
    try:
        srv = server(port, args, ids)
        project_line = Dataset(seed=42, images=0).project_ids[0]  # the server's project
        started = time.monotonic()
        clean = collect(port, args, ids, work / "clean", project_line)
        out, _ = clean.communicate()
        stop(srv)
        print(f"clean run ({time.monotonic() - started:.0f} s): {out.strip().splitlines()[0]}")

        srv = server(port, args, ids)
        victim = collect(port, args, ids, work / "killed", project_line)
        staged = work / "killed" / "_staging" / "snapshot_date=2026-11-28" / "image_status"
        while len(list(staged.glob("*.parquet"))) < args.images // 2000:
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        stop(srv)
        print(f"killed with SIGKILL after {len(list(staged.glob('*.parquet')))} committed "
              "chunks")

        srv = server(port, args, ids)
        again = collect(port, args, ids, work / "killed", project_line)
        out, err = again.communicate()
        stop(srv)
        print(f"re-run: {out.strip().splitlines()[0]}")
        assert "resuming" in err, "the re-run did not resume"

        expected = set(ids.read_text().split())
        print(f"clean:   {check(work / 'clean', expected)}")
        print(f"resumed: {check(work / 'killed', expected)}")
        for table in ("members", "image_status"):
            assert rows(work / "clean", table) == rows(work / "killed", table), table
        print("identical rows in both outputs; every ID exactly once; manifests match files")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
