"""Where a run's images come from: one source, chosen once from the settings (``source_of``).

    an input file (local, or a bucket's object) ─> InputFile ─┐
    discovery: list the projects' images, then collect them ──> Discovery ─┼─> Images(total,
    a discovery shard: its share of the date's plan ───────────> Planned ──┘   lines, listings)

``plan`` is a discovery that lists only (its ``Images`` have no lines). A shard of an input
file reads the whole file: the intake keeps its share. A source is opened before the output
lock (an input is downloaded, its first line read), asked for its images under it, and closed
at the end; what it records is its ``label`` (the manifest's ``input``), its ``fingerprint``
(what a re-run must match to resume) and, for discovery, its listings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson

from collector.auth import AkSkAuth
from collector.build import Parts
from collector.concurrency import in_daemon_thread, in_thread
from collector.config import Settings
from collector.discover import discover
from collector.errors import UsageError
from collector.fetch import Fetcher
from collector.ids import problem_with
from collector.inputs import Line, detect_format, read_input
from collector.listing import Listing, committed_listings
from collector.shards import Shard
from collector.sink import ParquetSink
from collector.staging import plan_name, shard_mark
from collector.store import BucketUrl, Store, parse_bucket_url, reason


@dataclass(frozen=True, slots=True)
class Images:
    """What a source gives: how many (when known), the lines (None: nothing to collect, a
    plan), and the listings they came from (discovery)."""

    total: int | None
    lines: Iterator[Line] | None
    listings: list[Listing] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Context:
    """What a source reads its images with, under the output lock."""

    settings: Settings
    parts: Parts
    sink: ParquetSink
    stop: asyncio.Event
    run_id: str
    fingerprint: str | None
    ticking: Callable[[], AbstractAsyncContextManager[None]]  # the metrics file moving


class Source(Protocol):
    """Where the images come from (see the module's docstring)."""

    label: str  # the manifest's ``input``
    fmt: str  # the input's format (a discovery's: the default's)
    lists: bool  # its counts include the listings'

    @property
    def path(self) -> str | None:
        """The local file ``preflight.prepare`` surveys (None: nothing to survey)."""

    async def open(self, scratch: Path, stores: Callable[[BucketUrl], Store]) -> None:
        """Before the lock: the input downloaded into ``scratch`` and its first line read."""

    def fingerprint(self, digest: str | None) -> str | None:
        """What must match for a re-run to resume (``digest``: the input's sha256)."""

    async def images(self, ctx: Context, surveyed: int | None) -> Images:
        """The images to collect (``surveyed``: the input's lines, counted by the survey)."""

    def close(self, still_reading: bool) -> None:
        """The input closed, unless a reader thread still holds it (it ends with the
        process)."""


def source_of(settings: Settings, input_path: str | None, plan: bool) -> Source:
    """The one source of a run: an input file, a plan's listing, a shard's share of the
    plan, or discovery."""
    if input_path is not None:
        return InputFile(input_path, settings)
    if plan:
        return Discovery(settings, collects=False)
    if settings.shards.shard is not None:
        return Planned(settings, settings.shards.shard)
    return Discovery(settings, collects=True)


class InputFile:
    """An input file, local or a bucket's object (copied into the scratch folder first)."""

    lists = False

    def __init__(self, given: str, settings: Settings) -> None:
        """``given``: the path or bucket URL the user gave."""
        self.label = self._path = given
        self.settings = settings
        self.fmt = detect_format(given, settings.source.input_format)
        self._lines: Generator[Line, None, None] | None = None

    @property
    def path(self) -> str | None:
        """The local copy once opened."""
        return self._path

    async def open(self, scratch: Path, stores: Callable[[BucketUrl], Store]) -> None:
        """Download (a bucket's object), then read the first line off the loop."""
        path = self._path = await in_thread(local_input, self.label, scratch, stores)
        self._lines = await in_daemon_thread(
            lambda: open_input(path, self.fmt, self.settings.source.project_id))

    def fingerprint(self, digest: str | None) -> str | None:
        """The input's bytes and what shapes the rows; None for stdin (cannot be read twice)."""
        if digest is None:
            return None
        s = self.settings
        return _sha256(f"{digest}|{s.cph_endpoint}|{s.source.project_id}|{s.source.input_format}")

    async def images(self, ctx: Context, surveyed: int | None) -> Images:
        """The file's lines, as many as the survey counted."""
        return Images(surveyed, self._lines)

    def close(self, still_reading: bool) -> None:
        """Close the file, unless a reader thread is blocked in it."""
        if self._lines is not None and not still_reading:
            self._lines.close()


class _Listed:
    """A discovery's source: no input file; the fingerprint is what is listed."""

    label = "discover"
    lists = True
    path = None

    def __init__(self, settings: Settings) -> None:
        """The settings say what is listed."""
        self.settings = settings
        self.fmt = detect_format("-", settings.source.input_format)

    async def open(self, scratch: Path, stores: Callable[[BucketUrl], Store]) -> None:
        """Nothing to open."""

    def fingerprint(self, digest: str | None) -> str | None:
        """The endpoint, projects, region and IAM: what is listed."""
        s = self.settings
        return _sha256(f"discover|{s.cph_endpoint}|{s.source.project_id}|{s.http.region}|"
                       f"{s.iam_url}")

    def close(self, still_reading: bool) -> None:
        """Nothing to close."""


class Discovery(_Listed):
    """List the images into staging (or adopt a committed listing), then collect the private
    ones; ``collects`` False: a plan, which lists only."""

    def __init__(self, settings: Settings, *, collects: bool) -> None:
        """``collects``: collect what is listed (a plan does not)."""
        super().__init__(settings)
        self.collects = collects

    async def images(self, ctx: Context, surveyed: int | None) -> Images:
        """The listing (the metrics file keeps moving meanwhile), then its private images."""
        parts = ctx.parts
        async with ctx.ticking():  # the listing of a large account takes a while
            listings = await discover(ctx.settings, ctx.sink, parts.regions,
                                      isinstance(parts.auth, AkSkAuth), ctx.stop)
        lines = None if not self.collects else iter(()) if ctx.stop.is_set() \
            else discovered_lines(ctx.sink)
        return Images(private_images(listings), lines, listings)


class Planned(_Listed):
    """A discovery shard: the date's plan, listed once for all shards (its share is the
    intake's)."""

    def __init__(self, settings: Settings, shard: Shard) -> None:
        """``shard``: which share of the plan."""
        super().__init__(settings)
        self.shard = shard

    async def images(self, ctx: Context, surveyed: int | None) -> Images:
        """The plan's listings and lines (UsageError when there is no plan, or another's)."""
        listings, lines = await in_thread(
            read_plan, ctx.parts.store, ctx.sink.snapshot_date, ctx.run_id, ctx.fingerprint,
            self.shard)
        return Images(private_images(listings), lines, listings)


def _sha256(shape: str) -> str:
    return hashlib.sha256(shape.encode()).hexdigest()


def private_images(listings: list[Listing]) -> int:
    """How many private images the listings hold: the images to collect."""
    return sum(x.images for x in listings if x.image_type == "private")


def route_of(listings: list[Listing], parts: Parts) -> dict[str, Fetcher]:
    """Each listed project's region's fetcher (the first region's when it has none)."""
    by_region = {r.name: r.fetcher for r in parts.regions}
    return {x.project_id: by_region.get(x.region, parts.fetcher) for x in listings}


def open_input(path: str, input_format: str,
               default_project: str | None) -> Generator[Line, None, None]:
    """The input's lines, after checking it is readable and not empty (UsageError if it is).

    Close the generator when done with it: that closes the file, however the run ended.
    """
    lines = read_input(path, input_format)
    first = next(lines, None)
    if first is None:
        raise UsageError(f"input {path}: no image IDs (empty, or only blank lines and comments)")
    if first.project_id is None and default_project is None and first.problem is None:
        lines.close()
        raise UsageError(f"input {path}: rows have no project_id; give --project-id "
                         "(or a project_id column)")

    def all_lines() -> Generator[Line, None, None]:
        """The first line again, then the rest; the file closed when this is."""
        try:
            yield first
            yield from lines
        finally:
            lines.close()

    return all_lines()


def discovered_lines(sink: ParquetSink) -> Iterator[Line]:
    """The listed private images, as input lines (read back from staging, in batches); an ID
    no URL may carry is a line with its problem (an ``invalid_id`` row naming the listing)."""
    for project, image in sink.private_images():
        problem = problem_with(image)
        yield Line(0, image, project, None if problem is None else
                   f"ListImages of project {project} (image_type private) listed an image ID "
                   f"that is not one: {problem}")


def local_input(input_path: str, scratch: Path, stores: Callable[[BucketUrl], Store]) -> str:
    """The input as a local path: a bucket's object is first copied into ``scratch``
    (streamed, named as it is, so its format and fingerprint are those of the object);
    UsageError when it cannot be read."""
    try:
        url = parse_bucket_url(input_path)
    except ValueError as exc:
        raise UsageError(f"input {input_path}: {exc}") from None
    if url is None:
        return input_path
    folder, name = url.parent()
    local = scratch / (name or "input")
    try:
        stores(folder).download(name, local)
    except OSError as exc:
        raise UsageError(f"input {url}: cannot be read ({reason(exc)})") from None
    return str(local)


def read_plan(store: Store, snapshot_date: dt.date, run_id: str, fingerprint: str | None,
              shard: Shard | None) -> tuple[list[Listing], Iterator[Line]]:
    """A discovery shard's images: the date's plan (``cph-collector plan``), listed once
    for all shards; UsageError when there is none, or it was made with other settings."""
    plan = ParquetSink(store, snapshot_date, run_id, plan_name())
    mark = shard_mark(plan.staging)
    if not store.exists(mark):
        raise UsageError(f"shard {shard} of a --discover run: no plan for {snapshot_date} in "
                         f"{store.url}; run cph-collector plan with the same settings first")
    if orjson.loads(store.read(mark)).get("fingerprint") != fingerprint:
        raise UsageError(f"shard {shard}: the plan of {snapshot_date} was made with other "
                         "settings (endpoint, projects or region)")
    return committed_listings(plan), discovered_lines(plan)
