"""``cph-collector demo``: the whole product in a minute, against a fake CPH on loopback.

Two nights of a seeded account of two projects in cn-north-4 (and one in another region) that
changes in between (shares added, revoked and updated, images deleted and created); a server
that throttles above 600 requests/s and fails a few per cent of requests (every one
retryable), and one per cent of images deleted between their listing and their member call.
Each night discovers the projects from IAM and the images from ListImages and collects at 500
requests/s into ``output/``; then the demo names the most shared images (``members`` joined to
``images``) and prints what changed, partners (the first night's projects) and others apart,
and ends with the morning report of the second night (``report``) and its path.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from collector import loop
from collector.auth import TokenAuth
from collector.build import build, open_store
from collector.config import Settings
from collector.diff import changes_between, render
from collector.errors import UsageError
from collector.fake.dataset import Dataset
from collector.fake.server import FakeCph, ServerConfig
from collector.manifest import RunRecord
from collector.pipeline import Run, summary_line
from collector.report import write_report
from collector.schemas import TABLES
from collector.secrets import Secret
from collector.store import BucketStore, BucketUrl, LocalStore, Store

DIFF_LINES = 12  # rows of the diff the demo prints
DEMO_KEYS = {"AWS_ACCESS_KEY_ID": "demo-access-key", "AWS_SECRET_ACCESS_KEY": "demo-secret-key"}
FAULTS = {"http_500": 0.005, "http_503": 0.005, "reset_before_headers": 0.003,
          "short_body": 0.002, "cps_0003": 0.003, "throttle": 0.002}


def read_table(store: Store, name: str, snapshot_date: str | None = None) -> pa.Table:
    """A published table as a reader reads it: pyarrow's dataset over the folder, or over the
    bucket through the store's own ``S3FileSystem``."""
    folder = name if snapshot_date is None else f"{name}/snapshot_date={snapshot_date}"
    if isinstance(store, BucketStore):
        return ds.dataset(f"{store.base}/{folder}", format="parquet", partitioning="hive",
                          filesystem=store.fs).to_table()
    assert isinstance(store, LocalStore)
    return ds.dataset(store.path(folder), format="parquet", partitioning="hive").to_table()


def top_shared(store: Store, snapshot_date: str, limit: int = 5) -> list[tuple[str, str, int]]:
    """(image_name, image_id, projects) of the images shared with the most projects: the
    published ``members`` joined to the published ``images``."""
    def table(name: str) -> pa.Table:
        """A published table of the demo's date."""
        return read_table(store, name, snapshot_date)

    counts = table("members").group_by(["project_id", "image_id"]).aggregate(
        [("member_id", "count")])
    named = counts.join(table("images").select(["project_id", "image_id", "image_name"]),
                        keys=["project_id", "image_id"])
    order = pc.sort_indices(named, sort_keys=[("member_id_count", "descending"),
                                              ("image_name", "ascending")])
    return [(row["image_name"], row["image_id"], row["member_id_count"])
            for row in named.take(order[:limit]).to_pylist()]


async def _night(output: Path | BucketUrl, dataset: Dataset, day: dt.date, seed: int,
                 trusted: frozenset[str], storage: dict[str, str]) -> RunRecord:
    """One night's discovery run against the account as it is on ``dataset.day``."""
    token = secrets.token_urlsafe(24)
    vanished = dataset.image_ids()[::100]  # deleted between their listing and their member call
    config = ServerConfig(tokens=(token,), rate_limit=600, latency=0.02, fault_rates=FAULTS,
                          script={image: ["not_found"] for image in vanished}, seed=seed,
                          record=False)
    async with FakeCph(dataset, config) as fake:
        print(f"demo: night of {day}: fake CPH and IAM on {fake.url} (day {dataset.day}): "
              f"{len(dataset.project_ids)} projects in cn-north-4 with "
              f"{len(dataset.image_ids()) + 1:,} images; throttled at 600 requests/s, ~2% of "
              f"requests fail (retryable), {len(vanished)} images deleted while the run goes")
        settings = Settings.of(endpoint=fake.url, iam_endpoint=fake.url, region="cn-north-4",
                            discover=True, output=output, rate_limit=500, concurrency=64,
                            backoff_base=0.2, progress_interval=5, snapshot_date=day,
                            trusted_projects=",".join(sorted(trusted)) or None,
                            storage_endpoint=storage.get("endpoint"))
        parts = build(settings, storage, auth=lambda _: TokenAuth(Secret(token)))
        record = await Run(settings, None, parts).execute()
    print(summary_line(record), flush=True)
    return record


async def _demo(output: Path | BucketUrl, images: int, seed: int,
                storage: dict[str, str]) -> int:
    first, second = (Dataset(seed=seed, projects=2, images=max(images // 4, 1),
                             locked_project=False, day=d) for d in (0, 1))
    nights = (dt.date(2026, 11, 30), dt.date(2026, 12, 1))
    print("demo: two nights of discovery (IAM's projects, ListImages' images, then members at "
          "500 requests/s), the account changing in between ...", flush=True)
    await _night(output, first, nights[0], seed, frozenset(), storage)
    # the partners are the projects we shared with on the first night; new ones are untrusted
    partners = frozenset(str(m["member_id"]) for i in first.image_ids()
                         for m in first.members(i))
    record = await _night(output, second, nights[1], seed, partners, storage)
    date = record.snapshot_date.isoformat()
    store = open_store(Settings.of(storage_endpoint=storage.get("endpoint")), output, storage)
    print(f"demo: wrote {', '.join(f'{output}/{t}/' for t in TABLES)} and {output}/runs/")
    print("demo: the images shared with the most projects:")
    for name, image, count in top_shared(store, date):
        print(f"  {name}  ({image})  {count} projects")
    table, summary = changes_between(store, nights[0], nights[1], partners)
    where = f"{output} --storage-endpoint {storage['endpoint']}" if "endpoint" in storage \
        else str(output)
    print(f"demo: cph-collector diff --output {where} --from {nights[0]} --to {nights[1]} "
          "(newest first, ! = not a partner):")
    text = io.BytesIO()
    render(table, "table", text)
    lines = text.getvalue().decode().splitlines()
    print("\n".join(lines[:DIFF_LINES + 1]))
    if len(lines) > DIFF_LINES + 1:
        print(f"  ... and {len(lines) - DIFF_LINES - 1:,} more")
    print(f"demo: {summary.line()}")
    if isinstance(store, BucketStore):
        status = read_table(store, "image_status")
        print(f"demo: read back from the bucket with pyarrow: image_status has {status.num_rows:,} "
              f"rows over {len(set(status['snapshot_date'].to_pylist()))} snapshot dates; "
              f"{', '.join(f'{k} {v:,}' for k, v in sorted(_counts(status).items()))}")
    else:
        glob = f"{output}/changes/*/*.parquet"
        query = ("SELECT change, trusted, count(*) FROM read_parquet('{}', hive_partitioning = "
                 "true) GROUP BY ALL")
        print(f"demo: query it yourself, e.g. duckdb -c \"{query.format(glob)}\"")
    key = write_report(store, nights[1])
    print(f"demo: the morning report (open it in a browser; cph-collector report --output "
          f"{where} writes it again): {output}/{key}")
    assert record.exit_code is not None
    return record.exit_code


def _counts(status: pa.Table) -> dict[str, int]:
    counted = status.group_by("status").aggregate([("status", "count")])
    return dict(zip(counted["status"].to_pylist(), counted["status_count"].to_pylist(),
                    strict=True))


def demo(output: Path | BucketUrl, images: int, seed: int, with_s3: bool = False) -> int:
    """Run the demo; its exit code is the collection's. ``with_s3``: against an S3 server it
    starts on loopback (moto's, installed with the ``s3demo`` or ``test`` extra)."""
    if not isinstance(output, BucketUrl):
        if with_s3:
            raise UsageError("--with-s3: give --output s3://bucket/prefix")
        return loop.run(_demo(output, images, seed, {}))
    if not with_s3:  # your own bucket: the AWS_* (or HUAWEICLOUD_SDK_*) keys, and
        storage = dict(os.environ)  # CPH_STORAGE_ENDPOINT unless it is AWS itself
        if os.environ.get("CPH_STORAGE_ENDPOINT"):
            storage["endpoint"] = os.environ["CPH_STORAGE_ENDPOINT"]
        return loop.run(_demo(output, images, seed, storage))
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise UsageError("--with-s3 needs moto's S3 server: pip install "
                         "'cph-collector[s3demo]'") from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        storage = {"endpoint": f"http://{host}:{port}", **DEMO_KEYS}
        pafs.S3FileSystem(access_key=DEMO_KEYS["AWS_ACCESS_KEY_ID"],
                          secret_key=DEMO_KEYS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                          endpoint_override=storage["endpoint"],
                          allow_bucket_creation=True).create_dir(output.bucket)
        print(f"demo: an S3 server (moto) on {storage['endpoint']}, bucket {output.bucket}")
        return loop.run(_demo(output, images, seed, storage))
    finally:
        server.stop()
