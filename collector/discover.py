"""Discovery: which projects, and which images, without an input file.

    projects  --project-id P[,P...], else IAM: GET /v3/auth/projects (a token) or GET
              /v3/projects (AK/SK), keeping the region's (named like it, or ``<region>_*``)
    images    for each project and image_type (private, share): GET /v1/{p}/cloud-phone/images
              ?image_type=T&offset=O&limit=100 until offset >= total (a missing total: until a
              short page; a page that repeats the last one is a failed listing, never a loop)

Every page goes through the fetcher: the same limiter, retries, auth and endpoint check as the
member calls. Each listing leaves one ledger row (``Listing``): a listing that failed is
``failed``, never "no images". Pages are handed to ``write`` as they come (streamed to staging),
so no list of a million images is held here. The pure parts (pages, times, projects) are plain
functions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from collector.api import BodyError
from collector.build import Region
from collector.config import Settings
from collector.errors import ErrorCode, FatalRunError, Status, UsageError
from collector.fetch import Fetcher
from collector.ids import is_valid_id
from collector.secrets import redact
from collector.sink import ParquetSink

log = logging.getLogger("collector")
IMAGE_TYPES = ("private", "share")
LISTINGS_AT_ONCE = 4  # each listing is sequential (offset paging); a few run side by side
PAGE = 100  # ListImages' largest limit
MAX_LISTING_PAGES = 100_000  # ten million images in one project: a runaway server, not data


@dataclass(slots=True)
class Inventory:
    """Column buffers of inventory rows (``sink.IMAGES_SCHEMA``), filled page by page."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {
        name: [] for name in ("collected_at", "region", "project_id", "image_id", "image_name",
                              "image_type", "status", "image_size", "image_version",
                              "domain_id", "src_project_id", "create_time", "update_time")})
    bad_times: int = 0  # time strings of no shape we know: stored as null, counted

    def __len__(self) -> int:
        return len(self.columns["image_id"])

    def add(self, listing: Listing, infos: list[dict[str, Any]], now_ms: int) -> None:
        c = self.columns
        for info in infos:
            c["collected_at"].append(now_ms)
            c["region"].append(listing.region)
            c["project_id"].append(listing.project_id)
            c["image_id"].append(str(info["image_id"]))
            c["image_type"].append(str(info.get("image_type") or listing.image_type))
            for name, kind in (("image_name", str), ("image_version", str), ("domain_id", str),
                               ("src_project_id", str), ("status", int), ("image_size", int)):
                value = info.get(name)
                c[name].append(value if isinstance(value, kind) and not isinstance(value, bool)
                               else None)
            for name in ("create_time", "update_time"):
                raw = info.get(name)
                stamp = parse_time(raw)
                bad = raw not in (None, "") and stamp is None
                self.bad_times += bad
                listing.bad_times += bad
                c[name].append(stamp)


def ledger(listings: list[Listing], now_ms: int) -> dict[str, list[Any]]:
    """The listing_status rows (``sink.LISTING_SCHEMA``, without run_id)."""
    return {"collected_at": [now_ms] * len(listings),
            "region": [x.region for x in listings],
            "project_id": [x.project_id for x in listings],
            "image_type": [x.image_type for x in listings],
            "status": [x.status.value for x in listings],
            "images": [x.images for x in listings],
            "pages": [x.pages for x in listings],
            "http_status": [x.http_status for x in listings],
            "error_code": [x.error_code for x in listings],
            "error_msg": [redact(x.error_msg) if x.error_msg else None for x in listings],
            "request_id": [x.request_id for x in listings],
            "attempts": [x.attempts for x in listings]}


@dataclass(slots=True)
class Listing:
    """One (region, project, image_type) listing: its ledger row."""

    region: str
    project_id: str
    image_type: str
    status: Status = Status.FAILED
    attempts: int = 0
    http_status: int | None = None
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None
    images: int = 0
    pages: int = 0
    bad_times: int = 0  # image times of no shape we know (stored as null); not in the ledger

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Listing:
        """A ledger row read back from staging (a resumed run)."""
        return cls(row["region"], row["project_id"], row["image_type"], Status(row["status"]),
                   row["attempts"], row["http_status"], row["error_code"], row["error_msg"],
                   row["request_id"], row["images"], row["pages"])


def parse_time(value: Any) -> int | None:
    """Epoch ms from ListImages' time strings, whose format the API does not state: epoch ms
    as digits, or ISO 8601 / RFC 3339 with or without a zone (UTC when none); else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**53 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if len(text) >= 12 and number < 2**53 else number * 1000
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def parse_image_page(body: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """(image_infos, total) of a ListImages page; BodyError for any other shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError("response is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("image_infos"), list):
        raise BodyError("response has no image_infos list")
    infos = doc["image_infos"]
    for index, info in enumerate(infos):
        if not isinstance(info, dict) or not isinstance(info.get("image_id"), str):
            raise BodyError(f"image_infos[{index}] has no image_id")
    total = doc.get("total")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
        raise BodyError("total is not a number")
    return infos, total


def parse_projects(body: bytes) -> list[dict[str, Any]]:
    """IAM's ``{"projects": [...]}``; BodyError for any other shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError("response is not valid JSON") from None
    projects = doc.get("projects") if isinstance(doc, dict) else None
    if not isinstance(projects, list) or not all(isinstance(p, dict) for p in projects):
        raise BodyError("response has no projects list")
    return projects


def region_projects(projects: list[dict[str, Any]], region: str) -> list[str]:
    """The IDs of the region's enabled projects: named like the region, or ``<region>_*``."""
    return sorted(str(p["id"]) for p in projects
                  if p.get("enabled", True) is not False and isinstance(p.get("id"), str)
                  and is_valid_id(p["id"]) and isinstance(p.get("name"), str)
                  and (p["name"] == region or p["name"].startswith(f"{region}_")))


async def list_projects(fetcher: Fetcher, iam_url: str, region: str, signed: bool) -> list[str]:
    """The region's projects from IAM; ``FatalRunError`` if IAM will not say (a run that
    cannot tell which projects exist must not pretend there are none)."""
    path = "/v3/projects" if signed else "/v3/auth/projects"
    row = Listing(region, "", "projects")
    found = await fetcher.fetch(f"{iam_url}{path}", "", row, parse_projects)
    if found is None:
        detail = " ".join(str(x) for x in (row.http_status, row.error_code, row.error_msg) if x)
        raise FatalRunError(f"IAM {iam_url}: cannot list the projects of {region} ({detail}); "
                            "give them with --project-id")
    return region_projects(found, region)


Write = Callable[[Listing, list[dict[str, Any]]], Awaitable[None]]


async def list_images(fetcher: Fetcher, endpoint: str, listing: Listing, write: Write,
                      stop: asyncio.Event | None = None) -> Listing:
    """Every page of one listing, each handed to ``write`` as it comes; returns the ledger row.
    A set ``stop`` ends it between pages (the listing stays unfinished: a re-run lists again)."""
    offset, last_page = 0, ""
    for _ in range(MAX_LISTING_PAGES):
        if stop is not None and stop.is_set():
            listing.error_msg = "stopped before the listing ended"
            return listing
        url = (f"{endpoint}/v1/{listing.project_id}/cloud-phone/images?image_type="
               f"{listing.image_type}&offset={offset}&limit={PAGE}")
        page = await fetcher.fetch(url, listing.project_id, listing, parse_image_page)
        if page is None:
            if listing.status is Status.NOT_FOUND:  # the listing API itself is missing
                listing.status = Status.FAILED
            return listing
        infos, total = page
        fingerprint = hashlib.sha256(b"".join(str(i["image_id"]).encode() + b"\0"
                                              for i in infos)).hexdigest()
        if infos and fingerprint == last_page:
            listing.status, listing.error_code = Status.FAILED, ErrorCode.PAGING_LOOP
            listing.error_msg = f"the page at offset {offset} repeats the one before it"
            return listing
        last_page = fingerprint
        listing.pages += 1
        listing.images += len(infos)
        if infos:
            await write(listing, infos)
        offset += len(infos)
        done = offset >= total if total is not None else len(infos) < PAGE
        if done or not infos:
            listing.status = Status.OK
            listing.error_code = listing.error_msg = None
            return listing
    listing.status, listing.error_code = Status.FAILED, ErrorCode.PAGING_LIMIT
    listing.error_msg = f"more than {MAX_LISTING_PAGES} pages"
    return listing


async def list_all(jobs: list[tuple[Region, Listing]], sink: ParquetSink, chunk_rows: int,
                   stop: asyncio.Event | None = None) -> list[Listing]:
    """Every listing, a few at a time, streamed into staging in chunks of ``chunk_rows``;
    then the ledger, which marks the listing complete (not when ``stop`` cut it short: the
    next run lists again)."""
    inventory, bad_times = Inventory(), 0
    gate = asyncio.Semaphore(LISTINGS_AT_ONCE)
    numbers = itertools.count()  # drawn on the loop: each chunk's file is its own

    async def flush() -> None:
        nonlocal inventory, bad_times
        full, inventory = inventory, Inventory()
        bad_times += full.bad_times
        await asyncio.to_thread(sink.commit_images, full.columns, next(numbers))

    async def write(listing: Listing, infos: list[dict[str, Any]]) -> None:
        inventory.add(listing, infos, time.time_ns() // 1_000_000)
        if len(inventory) >= chunk_rows:
            await flush()

    async def one(region: Region, listing: Listing) -> Listing:
        async with gate:
            return await list_images(region.fetcher, region.endpoint, listing, write, stop)

    listings = list(await asyncio.gather(*(one(region, x) for region, x in jobs)))
    await flush()
    if stop is not None and stop.is_set():
        return listings
    if bad_times:
        log.warning("%d image times were of no shape we know; stored as null", bad_times)
    await asyncio.to_thread(sink.commit_listings, ledger(listings, time.time_ns() // 1_000_000))
    return listings


async def discover(settings: Settings, sink: ParquetSink, regions: list[Region], signed: bool,
                   stop: asyncio.Event) -> list[Listing]:
    """The run's listings: adopted from staging when a stopped run of the same date and
    settings had finished listing (no listing again), else listed now, region by region."""
    if sink.listed():
        listings = [Listing.from_row(row) for row in sink.listings()]
        log.info("resuming: the listing of %s is committed (%d images); not listing again",
                 sink.snapshot_date, sum(x.images for x in listings))
        return listings
    jobs: list[tuple[Region, Listing]] = []
    for region in regions:
        projects = list(settings.project_ids)
        if not projects:
            if not region.name:
                raise UsageError("discover: give --project-id, or --region to list the "
                                 "region's projects from IAM")
            projects = await list_projects(region.iam_fetcher, region.iam_url, region.name,
                                           signed)
            if not projects:
                log.warning("IAM lists no project of %s: nothing to collect", region.name)
        jobs += [(region, Listing(region.name, p, t)) for p in projects for t in IMAGE_TYPES]
    return await list_all(jobs, sink, settings.chunk_images, stop)
