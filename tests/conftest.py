"""Shared fixtures: a fake CPH on a real socket, and a collection run against it."""

from __future__ import annotations

import inspect
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core as aioresponses_core
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from aioresponses import aioresponses

from collector.auth import Auth, Post, TokenAuth
from collector.build import build
from collector.config import Settings
from collector.errors import CollectorError
from collector.fake import Dataset, FakeCph, FastFakeCph, ServerConfig
from collector.manifest import RunRecord
from collector.pipeline import Run
from collector.secrets import Secret

TOKEN = "test-token-4f1c9a7e2b"


@pytest.fixture(autouse=True)
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket lease settles in 0.5 s here, not 5 s (tests that time it set their own)."""
    import collector.lease_bucket

    monkeypatch.setattr(collector.lease_bucket, "TIMING",
                        collector.lease_bucket.Timing(5.0, 0.2, 0.5))


async def no_sleep(_: float) -> None:
    """Backoff waits in tests take no time; the limiter and timeouts stay real."""


@dataclass
class Outcome:
    record: RunRecord
    output: Path
    stderr: str
    error: CollectorError | None = None
    filesystem: Any = None  # a bucket's, when ``output`` is a BucketUrl
    night: Any = None  # a shard's ``Night`` with publish_when_staged

    def table(self, name: str) -> pa.Table:
        if self.filesystem is not None:
            return ds.dataset(f"{self.output.base}/{name}", format="parquet",  # type: ignore[attr-defined]
                              partitioning="hive", filesystem=self.filesystem).to_table()
        folder = self.output / name
        return ds.dataset(folder, format="parquet", partitioning="hive").to_table()

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {row["image_id"]: row for row in self.table("image_status").to_pylist()}


@pytest.fixture
def front() -> type[FakeCph | FastFakeCph]:
    """Which fake server serves the test; fidelity tests run against both."""
    return FakeCph


@pytest.fixture
async def fake_factory(
        front: type[FakeCph | FastFakeCph]) -> AsyncIterator[Callable[..., Awaitable[FakeCph]]]:
    started: list[FakeCph | FastFakeCph] = []

    async def start(dataset: Dataset | None = None, regions: dict[str, Dataset] | None = None,
                    **config: Any) -> FakeCph | FastFakeCph:
        config.setdefault("tokens", (TOKEN,))
        fake = front(dataset or Dataset(seed=3, images=50), ServerConfig(**config), regions)
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


@pytest.fixture
async def fake(fake_factory: Callable[..., Awaitable[FakeCph]]) -> FakeCph:
    return await fake_factory()


@pytest.fixture
def collect(tmp_path: Path) -> Callable[..., Awaitable[Outcome]]:
    """Run the real pipeline over ``lines`` (written as a text file unless ``input_path``)."""

    async def run(fake: FakeCph | None, lines: list[str] | None = None, *,
                  input_path: Path | None = None, token: str = TOKEN, endpoint: str | None = None,
                  output: Any = None, sleep: Callable[[float], Awaitable[None]] = no_sleep,
                  auth: Auth | Callable[[Post], Auth] | None = None,
                  env: dict[str, str] | None = None,
                  **settings: Any) -> Outcome:
        if settings.get("discover"):
            pass  # the images come from ListImages
        elif input_path is None:
            input_path = tmp_path / "ids.txt"
            input_path.write_text("".join(f"{line}\n" for line in lines or []), encoding="utf-8")
        output = output or tmp_path / "out"
        base = Settings.of(endpoint=endpoint or (fake.url if fake else None), output=output,
                        project_id=fake.dataset.project_ids[0] if fake else "p1",
                        rate_limit=100_000, concurrency=16, progress_interval=3600,
                        max_failed_share=1.0)  # tiny nights: one failed image is a share;
        # a test of max_failed_share gives it
        settings = base.revise(**settings)
        stderr = io.StringIO()
        credentials = auth if callable(auth) else (lambda _: auth or TokenAuth(Secret(token)))
        # env={} by default: the machine's own HTTP(S)_PROXY never applies here
        parts = build(settings, env or {}, auth=credentials, backoff_sleep=sleep)
        run = Run(settings, str(input_path) if input_path else None, parts, stderr=stderr)
        store = parts.store
        fs = getattr(store, "fs", None)
        try:
            record = await run.execute()
        except CollectorError as exc:
            return Outcome(run.record, output, stderr.getvalue(), exc, fs, run.night)
        return Outcome(record, output, stderr.getvalue(), filesystem=fs, night=run.night)

    return run


class _MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass the ``stream_writer`` that aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); a response that was "already sent" only reads its size."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def mock_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, made to work with the installed aiohttp."""
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _MockResponse)
    with aioresponses() as mock:
        yield mock


S3_ENV = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-key-93b1"}


@dataclass
class S3Server:
    """moto's S3 in server mode on 127.0.0.1: the code path is the one that talks to OBS."""

    endpoint: str
    server: Any
    made: int = 0

    def filesystem(self) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                                 secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                                 endpoint_override=self.endpoint, allow_bucket_creation=True)

    def bucket(self, prefix: str = "nightly", scheme: str = "s3") -> Any:
        """A new, empty bucket, and the URL of ``prefix`` in it."""
        from collector.store import BucketUrl

        self.made += 1
        name = f"bucket-{self.made}-{id(self) % 10_000}"
        self.filesystem().create_dir(name)
        return BucketUrl(scheme, name, prefix)

    def keys(self, url: Any) -> list[str]:
        """Every object under ``url``, relative to it."""
        import pyarrow.fs as pafs

        infos = self.filesystem().get_file_info(pafs.FileSelector(url.base, recursive=True,
                                                                  allow_not_found=True))
        return sorted(i.path.removeprefix(url.base + "/") for i in infos
                      if i.type == pafs.FileType.File)


def start_moto(port: int = 0) -> Any:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = start_moto()
    host, port = server.get_host_and_port()
    yield S3Server(f"http://{host}:{port}", server)
    server.stop()
