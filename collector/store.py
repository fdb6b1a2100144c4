"""Where a snapshot lives: a folder on local disk, or a bucket prefix (S3, or OBS, which speaks
the S3 API) through ``pyarrow.fs.S3FileSystem``, behind one small interface.

Keys are POSIX paths relative to the output (``members/snapshot_date=D/part-x.parquet``). Both
stores make an object appear under its name only complete:

* on disk, a ``.tmp`` beside it, fsynced, then renamed (``files``), and folders swap in with a
  rename;
* in a bucket there is no rename, and pyarrow's upload stream completes an upload even when the
  writer failed part-way (apache/arrow#40502: it cannot be aborted). So an object is uploaded
  under a temporary key in ``_staging/.tmp/`` and then copied, server-side, to its name; the
  copy of a complete object is the only way anything reaches a name a reader or a resume
  trusts. Temporary keys are ``_staging/.tmp/<run_id>/...``: one left by a failure is removed by
the next run that mends the output, once that run id holds no live lease (``lease``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from collector import staging
from collector.files import fsync_dir, write_atomically
from collector.storefaults import Kind as Kind
from collector.storefaults import RetriedReader, retry
from collector.storefaults import StoreFault as StoreFault
from collector.storefaults import fault_of as fault_of
from collector.storefaults import reason as reason

T = TypeVar("T")


class Store(Protocol):
    """What the sink, the manifest and the diff need of an output."""

    url: str  # how messages name it: a folder, or s3://bucket/prefix (never a secret)
    renames: bool  # True: a folder swaps in with one rename (disk); False: objects are copied

    def write(self, key: str, data: bytes | pa.Buffer) -> None:
        """``key`` holds ``data``, complete, or (on an error) is as it was."""
        ...

    def write_stream(self, key: str, fill: Callable[[Any], None]) -> None:
        """``key`` holds what ``fill(handle)`` writes, complete, or is as it was."""
        ...

    def read(self, key: str) -> bytes: ...

    def open(self, key: str) -> pa.NativeFile:
        """A random-access file (for ``pyarrow.parquet.ParquetFile``)."""
        ...

    def files(self, folder: str) -> list[str]:
        """The names of the files directly in ``folder``, sorted; [] when there is none."""
        ...

    def folders(self, folder: str) -> list[str]:
        """The names of the folders directly in ``folder``, sorted."""
        ...

    def exists(self, key: str) -> bool:
        """``key`` is an object (on disk: a file or a folder, never a link)."""
        ...

    def links(self, folder: str) -> list[str]:
        """The names of the symbolic links in ``folder`` (never followed; a bucket has none)."""
        ...

    def make_folder(self, folder: str) -> None:
        """A folder that exists even empty (disk; a bucket's folders are its keys' prefixes)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one file; a missing one is fine."""
        ...

    def delete_tree(self, folder: str) -> None:
        """Remove a folder and everything in it; a missing one is fine."""
        ...

    def copy(self, source: str, target: str) -> None:
        """``target`` becomes a complete copy of ``source`` (server-side in a bucket)."""
        ...

    def rename_folder(self, source: str, target: str) -> None:
        """One atomic rename (disk only: ``renames`` is True)."""
        ...

    def download(self, key: str, target: Path) -> None:
        """Copy ``key`` to the local file ``target``, streamed."""
        ...


class LocalStore:
    """A folder on local disk."""

    renames = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def write(self, key: str, data: bytes | pa.Buffer) -> None:
        self.write_stream(key, lambda handle: handle.write(data))

    def write_stream(self, key: str, fill: Callable[[Any], None]) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, fill)
        fsync_dir(target.parent)  # the rename is durable too

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> pa.NativeFile:
        return pa.OSFile(str(self.path(key)))

    def files(self, folder: str) -> list[str]:
        path = self.path(folder)
        if not path.is_dir() or path.is_symlink():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_file() and not p.is_symlink())

    def folders(self, folder: str) -> list[str]:
        path = self.path(folder)
        if not path.is_dir() or path.is_symlink():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.is_symlink())

    def exists(self, key: str) -> bool:
        path = self.path(key)
        return path.exists() and not path.is_symlink()

    def links(self, folder: str) -> list[str]:
        path = self.path(folder)
        if not path.is_dir() or path.is_symlink():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_symlink())

    def make_folder(self, folder: str) -> None:
        self.path(folder).mkdir(parents=True, exist_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, folder: str) -> None:
        shutil.rmtree(self.path(folder), ignore_errors=True)

    def copy(self, source: str, target: str) -> None:
        self.write(target, self.read(source))

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self.path(key), target)

    def rename_folder(self, source: str, target: str) -> None:
        final = self.path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path(source), final)
        fsync_dir(final.parent)


class BucketStore:
    """A prefix in a bucket, through one ``pyarrow.fs.S3FileSystem`` (S3 or OBS)."""

    renames = False

    def __init__(self, fs: pafs.S3FileSystem, url: str, base: str, attempts: int = 3,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.fs = fs
        self.attempts, self.sleep = attempts, sleep  # our own retry of reads: ``retried``
        self.url = url  # s3://bucket/prefix or obs://bucket/prefix, as given
        self.base = base.strip("/")  # bucket/prefix
        self.writer = uuid.uuid4().hex  # the run id once it holds its lease (``lease``)
        self.guard: Callable[[], None] | None = None  # raises once that lease is lost

    def _fenced(self, key: str = "") -> None:
        """A run that lost its lease writes nothing more, but its own manifest."""
        if self.guard is not None and key != f"runs/{self.writer}.json":
            self.guard()

    def path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def write(self, key: str, data: bytes | pa.Buffer) -> None:
        self.write_stream(key, lambda handle: handle.write(data))

    def write_stream(self, key: str, fill: Callable[[Any], None]) -> None:
        """Uploaded whole again after a transient fault (``retried``): UploadPart is one of
        the requests pyarrow does not retry, and ``fill`` writes the same bytes each time."""
        self._fenced(key)
        self.retried(lambda: self._upload(key, fill))

    def _upload(self, key: str, fill: Callable[[Any], None]) -> None:
        tmp = self.path(f"{staging.tmp_of(self.writer)}/{uuid.uuid4().hex}")  # whose: see ``lease``
        try:
            stream = self.fs.open_output_stream(tmp)
            try:
                fill(stream)
            finally:
                stream.close()  # completes even a failed upload: it is only a temporary key
            self.fs.copy_file(tmp, self.path(key))
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)

    def retried(self, call: Callable[[], T]) -> T:
        """``call()``, again after a transient fault (a 5xx, a timeout, no connection) within
        ``attempts``. pyarrow's retry strategy covers every request but GetObject: its error
        body is written into the read's own buffer, overflows it, and comes back as a client
        error the SDK never retries (``INTERNAL_FAILURE ... Failed to flush response
        stream``); so is UploadPart. Reads, uploads to a fresh temporary key, copies and
        deletes are idempotent, so they are retried here too (on top of pyarrow's)."""
        return retry(call, self.attempts, self.sleep)

    def read(self, key: str) -> bytes:
        def whole() -> bytes:
            with self.fs.open_input_stream(self.path(key)) as stream:
                return bytes(stream.read())

        return self.retried(whole)

    def open(self, key: str) -> pa.NativeFile:
        inner = self.retried(lambda: self.fs.open_input_file(self.path(key)))
        return pa.PythonFile(RetriedReader(inner, self.retried), mode="r")

    def _listing(self, folder: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return self.retried(lambda: list(self.fs.get_file_info(selector)))

    def files(self, folder: str) -> list[str]:
        return sorted(info.base_name for info in self._listing(folder)
                      if info.type == pafs.FileType.File)

    def newest(self, folder: str) -> float | None:
        """When the newest object under ``folder`` (at any depth) was written, in epoch
        seconds; None when there is none."""
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True, recursive=True)
        times = [info.mtime.timestamp() for info in self.fs.get_file_info(selector)
                 if info.type == pafs.FileType.File and info.mtime is not None]
        return max(times, default=None)

    def folders(self, folder: str) -> list[str]:
        return sorted(info.base_name for info in self._listing(folder)
                      if info.type == pafs.FileType.Directory)

    def exists(self, key: str) -> bool:
        return bool(self.retried(lambda: self.fs.get_file_info(self.path(key))).type
                    == pafs.FileType.File)

    def links(self, folder: str) -> list[str]:
        return []

    def make_folder(self, folder: str) -> None:
        pass

    def delete(self, key: str) -> None:
        self._fenced()
        with contextlib.suppress(FileNotFoundError):
            self.retried(lambda: self.fs.delete_file(self.path(key)))

    def delete_tree(self, folder: str) -> None:
        self._fenced()

        def once() -> None:
            if self.fs.get_file_info(self.path(folder)).type != pafs.FileType.NotFound:
                self.fs.delete_dir(self.path(folder))

        self.retried(once)

    def copy(self, source: str, target: str) -> None:
        self._fenced()
        self.retried(lambda: self.fs.copy_file(self.path(source), self.path(target)))

    def rename_folder(self, source: str, target: str) -> None:
        raise NotImplementedError("a bucket has no rename: objects are copied")

    def download(self, key: str, target: Path) -> None:
        with self.open(key) as source, target.open("wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)


BUCKET_SCHEMES = ("s3", "obs")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ADDRESSING = ("auto", "virtual", "path")


@dataclass(frozen=True, slots=True)
class BucketUrl:
    """``s3://bucket/prefix`` or ``obs://bucket/prefix``."""

    scheme: str
    bucket: str
    prefix: str = ""  # no slash at either end; "" for the bucket's root

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def base(self) -> str:
        """``bucket/prefix``, as pyarrow names paths."""
        return f"{self.bucket}/{self.prefix}".rstrip("/")

    def parent(self) -> tuple[BucketUrl, str]:
        """The URL of the folder an object is in, and the object's name (for an input)."""
        folder, _, name = self.prefix.rpartition("/")
        return BucketUrl(self.scheme, self.bucket, folder), name


def parse_bucket_url(text: str) -> BucketUrl | None:
    """A bucket URL, or None when ``text`` is not one (a local path); ValueError saying what
    is wrong with a malformed one."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in BUCKET_SCHEMES:
        return None
    if any(c in text for c in "?#") or not text.isprintable() or " " in text:
        raise ValueError("a bucket URL has no query, fragment, spaces or control characters")
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise ValueError("credentials and ports go in the environment and storage_endpoint, "
                         "not in the bucket URL")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError("a prefix has no '.' or '..' parts")
    return BucketUrl(scheme.lower(), bucket, "/".join(parts))


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret, whatever prints it
        return f"Credentials(access_key={self.access_key[:4]}***)"


def obs_endpoint(region: str) -> str:
    return f"https://obs.{region}.myhuaweicloud.com"


def open_bucket(url: BucketUrl, *, endpoint: str | None, region: str, addressing: str,
                credentials: Credentials | None, ca_file: Path | None, proxy: str | None,
                connect_timeout: float, max_attempts: int,
                read_timeout: float | None = None) -> BucketStore:
    """The bucket through ``pyarrow.fs.S3FileSystem``, retrying by its own standard strategy,
    with the run's timeouts (``request_timeout`` is curl's low-speed time on Linux: a store
    silent that long fails the request, not after the AWS SDK's 3 s).
    OBS refuses path-style requests on its domains (``VirtualHostDomainRequired``) and pyarrow
    uses path style whenever an endpoint is given, so ``obs://`` is virtual-hosted unless
    ``addressing`` says otherwise."""
    virtual = addressing == "virtual" or (addressing == "auto" and url.scheme == "obs")
    options: dict[str, Any] = {
        "region": region, "endpoint_override": endpoint, "force_virtual_addressing": virtual,
        "connect_timeout": connect_timeout, "request_timeout": read_timeout,
        "proxy_options": proxy, "allow_delayed_open": True,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        "tls_ca_file_path": str(ca_file) if ca_file else None,
    }
    if credentials is not None:
        options.update(access_key=credentials.access_key, secret_key=credentials.secret_key,
                       session_token=credentials.session_token)
    return BucketStore(pafs.S3FileSystem(**options), str(url), url.base, attempts=max_attempts)
