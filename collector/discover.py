"""Discovery: which projects, and which images, without an input file.

    projects  --project-id P[,P...], else IAM: GET /v3/auth/projects (a token) or GET
              /v3/projects (AK/SK), keeping the region's (named like it, or ``<region>_*``)
    images    for each project and image_type (private, share): GET /v1/{p}/cloud-phone/images
              ?image_type=T&offset=O&limit=100 until offset >= total (a missing total: until a
              short page). A listing that lies fails: an empty page before ``total``, or a
              page of images all listed before (a page repeated, in any order, however
              long ago: the offset ignored); an image on two pages is kept once, counted.

Every page goes through the fetcher: the same limiter, retries, auth and endpoint check as the
member calls. Each listing leaves one ledger row (``Listing``): a listing that failed is
``failed``, never "no images". Pages are handed to ``write`` as they come (streamed to staging),
so no list of a million images is held here. A listed value that does not fit its column (a
time of no shape we know or out of range, a number too large for its type, an ID no URL may
carry) is null, or an ``invalid_id`` row, and counted: never a failed night. The pure parts
(pages, times, values, projects) are plain functions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import math
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
from collector.ids import is_valid_id, shown
from collector.intake import IdSet
from collector.secrets import redact
from collector.sink import ParquetSink

log = logging.getLogger("collector")
IMAGE_TYPES = ("private", "share")
LISTINGS_AT_ONCE = 4  # each listing is sequential (offset paging); a few run side by side
PAGE = 100  # ListImages' largest limit
MAX_LISTING_PAGES = 100_000  # ten million images in one project: a runaway server, not data
# Times outside these years are no image's (a misread unit, a sentinel, garbage): null, counted.
EARLIEST_MS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
LATEST_MS = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
SECONDS_BELOW = 10**11  # an epoch number below this is seconds (10**11 ms is 1973, s is 5138)
INTEGERS = {"status": 2**31 - 1, "image_size": 2**63 - 1}  # int32, int64; never negative
TEXTS = ("image_name", "image_version", "domain_id", "src_project_id")


@dataclass(slots=True)
class Inventory:
    """Column buffers of inventory rows (``sink.IMAGES_SCHEMA``), filled page by page."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {
        name: [] for name in ("collected_at", "region", "project_id", "image_id", "image_name",
                              "image_type", "status", "image_size", "image_version",
                              "domain_id", "src_project_id", "create_time", "update_time")})
    bad_times: int = 0  # time strings of no shape we know: stored as null, counted
    unfit: int = 0  # other values that do not fit their column: stored as null, counted

    def __len__(self) -> int:
        return len(self.columns["image_id"])

    def add(self, listing: Listing, infos: list[dict[str, Any]], now_ms: int) -> None:
        c = self.columns
        for info in infos:
            c["collected_at"].append(now_ms)
            c["region"].append(listing.region)
            c["project_id"].append(listing.project_id)
            c["image_id"].append(str(info["image_id"]))
            c["image_type"].append(listing.image_type)  # what we asked for: collected once
            disagrees = info.get("image_type") not in (None, listing.image_type)
            self.unfit += disagrees  # a row of a type its listing is not: the listing's, counted
            listing.unfit += disagrees
            for name in TEXTS:
                value = info.get(name)
                unfit = value is not None and not isinstance(value, str)
                c[name].append(None if unfit else value)
                self.unfit += unfit
                listing.unfit += unfit
            for name, highest in INTEGERS.items():
                value = info.get(name)
                number = fit_integer(value, highest)
                unfit = value is not None and number is None
                c[name].append(number)
                self.unfit += unfit
                listing.unfit += unfit
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
    images: int = 0  # each image once, however many pages showed it
    pages: int = 0
    # Not in the ledger; kept beside it (``sink.listing_notes``) for a run that resumes:
    bad_times: int = 0  # image times of no shape we know or out of range (stored as null)
    unfit: int = 0  # other values that do not fit their column (stored as null)
    repeated: int = 0  # images a later page showed again (kept once)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Listing:
        """A ledger row read back from staging (a resumed run)."""
        return cls(row["region"], row["project_id"], row["image_type"], Status(row["status"]),
                   row["attempts"], row["http_status"], row["error_code"], row["error_msg"],
                   row["request_id"], row["images"], row["pages"])


def parse_time(value: Any) -> int | None:
    """Epoch ms from ListImages' times, whose format the API does not state: an epoch number
    (a JSON number or digits, in seconds or milliseconds, told apart by size), or ISO 8601 /
    RFC 3339 with or without a zone (UTC when none); None for any other shape, and for a
    time outside 2000-2099 (no image's; and beyond that, outside what a column can hold)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        stamp = _epoch_ms(value)
    elif isinstance(value, str) and value.strip():
        stamp = _text_ms(value.strip())
    else:
        return None
    return stamp if stamp is not None and EARLIEST_MS <= stamp < LATEST_MS else None


def _epoch_ms(number: float) -> int | None:
    if not math.isfinite(number) or abs(number) >= 10**17:
        return None
    return round(number * 1000) if abs(number) < SECONDS_BELOW else round(number)


def _text_ms(text: str) -> int | None:
    if text.isascii() and text.replace(".", "", 1).isdigit() and not text.startswith("."):
        if len(text) > 20:  # a number no time is, and int() of thousands of digits refuses
            return None
        return _epoch_ms(int(text) if text.isdigit() else float(text))
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)
    except (ValueError, OverflowError):
        return None


def fit_integer(value: Any, highest: int) -> int | None:
    """``value`` as a whole number from 0 to ``highest`` (its column's type), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if 0 <= value <= highest else None


def parse_image_page(body: bytes) -> tuple[list[dict[str, Any]], int | None]:
    """(image_infos, total) of a ListImages page; BodyError for any other shape."""
    doc = _page_json(body)
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


def _page_json(body: bytes) -> Any:
    """A page's JSON. A number no double holds (``1e400``), which orjson refuses, is read by
    the standard library as infinity: one value that does not fit its column (null, counted),
    not a page, and so a listing, lost. Anything else orjson refuses is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith("number is infinity"):
            raise BodyError("response is not valid JSON") from None
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_not_json, parse_int=_integer)
        orjson.dumps(doc)  # no text orjson would refuse (a lone surrogate) gets through
    except (ValueError, orjson.JSONEncodeError):
        raise BodyError("response is not valid JSON") from None
    return doc


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _integer(text: str) -> int | float:
    """A JSON integer; one beyond 64 bits (no column holds it; orjson reads it so) is
    infinity, and thousands of digits are never converted."""
    if len(text) > 4000:
        return -math.inf if text.startswith("-") else math.inf
    value = int(text)
    return value if -(2**63) <= value < 2**64 else (-math.inf if value < 0 else math.inf)


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
    return sorted(p["id"] for p in projects
                  if _of_region(p, region) and isinstance(p["id"], str) and is_valid_id(p["id"]))


def unusable_projects(projects: list[dict[str, Any]], region: str) -> list[str]:
    """The region's enabled projects whose IDs no URL may carry, as they can be shown."""
    return sorted(shown(str(p.get("id"))) for p in projects if _of_region(p, region)
                  and not (isinstance(p.get("id"), str) and is_valid_id(p["id"])))


def _of_region(project: dict[str, Any], region: str) -> bool:
    name = project.get("name")
    return (project.get("enabled", True) is not False and isinstance(name, str)
            and (name == region or name.startswith(f"{region}_")))


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
    unusable = unusable_projects(found, region)
    if unusable:
        log.warning("IAM lists %d project(s) of %s whose IDs are not valid project IDs (only "
                    "letters, digits, - and _): not listed: %s", len(unusable), region,
                    ", ".join(unusable[:10]) + (", ..." if len(unusable) > 10 else ""))
    return region_projects(found, region)


Write = Callable[[Listing, list[dict[str, Any]]], Awaitable[None]]


async def list_images(fetcher: Fetcher, endpoint: str, listing: Listing, write: Write,
                      stop: asyncio.Event | None = None) -> Listing:
    """Every page of one listing, each handed to ``write`` as it comes; returns the ledger row.
    A set ``stop`` ends it between pages (the listing stays unfinished: a re-run lists again)."""
    offset, images_seen = 0, IdSet()
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
        if not infos and total is not None and offset < total:
            listing.status, listing.error_code = Status.FAILED, ErrorCode.EMPTY_PAGE
            listing.error_msg = (f"the page at offset {offset} is empty, but total says "
                                 f"{total} images")
            return listing
        fresh = [i for i in infos if images_seen.add("", i["image_id"])]
        if infos and not fresh:  # a page seen before, in any order: the offset is ignored
            listing.status, listing.error_code = Status.FAILED, ErrorCode.PAGING_LOOP
            listing.error_msg = (f"the page at offset {offset} shows only images of earlier "
                                 "pages (the server ignores the offset?)")
            return listing
        listing.pages += 1
        listing.repeated += len(infos) - len(fresh)
        listing.images += len(fresh)
        if fresh:
            await write(listing, fresh)
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
    inventory = Inventory()
    gate = asyncio.Semaphore(LISTINGS_AT_ONCE)
    numbers = itertools.count()  # drawn on the loop: each chunk's file is its own

    async def flush() -> None:
        nonlocal inventory
        full, inventory = inventory, Inventory()
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
    for count, what in ((sum(x.bad_times for x in listings), "image times were of no shape "
                         "we know, or outside 2000-2099; stored as null"),
                        (sum(x.unfit for x in listings), "listed values did not fit their "
                         "column (a number too large, negative or of another type); stored as "
                         "null (an image_type not its listing's: stored as the listing's)"),
                        (sum(x.repeated for x in listings), "images were listed again on a "
                         "later page of the same listing; kept once")):
        if count:
            log.warning("%d %s", count, what)
    await asyncio.to_thread(sink.commit_listings, ledger(listings, time.time_ns() // 1_000_000),
                            notes(listings))
    return listings


NOTED = ("bad_times", "unfit", "repeated")  # a listing's counts the ledger has no column for


def notes(listings: list[Listing]) -> list[list[Any]]:
    """What the manifest counts of each listing beyond its ledger row, kept beside the ledger
    so that a resumed run counts them too: [region, project, image_type, *NOTED]."""
    return [[x.region, x.project_id, x.image_type, *(getattr(x, n) for n in NOTED)]
            for x in listings]


def committed_listings(sink: ParquetSink) -> list[Listing]:
    """The listings a run (or the plan) committed, read back with their notes."""
    listings = [Listing.from_row(row) for row in sink.listings()]
    noted = {(r, p, t): values for r, p, t, *values in sink.listing_notes()}
    for listing in listings:
        for name, value in zip(NOTED, noted.get(
                (listing.region, listing.project_id, listing.image_type), ()), strict=False):
            setattr(listing, name, value if isinstance(value, int) else 0)
    return listings


async def discover(settings: Settings, sink: ParquetSink, regions: list[Region], signed: bool,
                   stop: asyncio.Event) -> list[Listing]:
    """The run's listings: adopted from staging when a stopped run of the same date and
    settings had finished listing (no listing again), else listed now, region by region."""
    if sink.listed():
        listings = committed_listings(sink)
        log.info("resuming: the listing of %s is committed (%d images); not listing again",
                 sink.snapshot_date, sum(x.images for x in listings))
        return listings
    jobs: list[tuple[Region, Listing]] = []
    for region in regions:
        projects = list(settings.source.project_ids)
        if not projects:
            if not region.name:
                raise UsageError("discover: give --project-id, or --region to list the "
                                 "region's projects from IAM")
            projects = await list_projects(region.iam_fetcher, region.iam_url, region.name,
                                           signed)
            if not projects:
                log.warning("IAM lists no project of %s: nothing to collect", region.name)
        jobs += [(region, Listing(region.name, p, t)) for p in projects for t in IMAGE_TYPES]
    return await list_all(jobs, sink, settings.output.chunk_images, stop)
