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
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from collector.build import Region
from collector.concurrency import OneWriter, in_thread
from collector.config import Settings
from collector.errors import ErrorCode, FatalRunError, Status, UsageError
from collector.fetch import Fetcher
from collector.intake import IdSet
from collector.listing import (
    Inventory,
    Listing,
    committed_listings,
    ledger,
    notes,
    parse_image_page,
    parse_projects,
    region_projects,
    unusable_projects,
)
from collector.sink import ParquetSink

log = logging.getLogger("collector")
IMAGE_TYPES = ("private", "share")
LISTINGS_AT_ONCE = 4  # each listing is sequential (offset paging); a few run side by side
PAGE = 100  # ListImages' largest limit
MAX_LISTING_PAGES = 100_000  # ten million images in one project: a runaway server, not data


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
    """Every listing, a few at a time, streamed into staging in chunks of ``chunk_rows`` by
    one writer (``concurrency.OneWriter``: no two chunk writes at once); then the ledger,
    which marks the listing complete (not when ``stop`` cut it short: the next run lists
    again). One listing raising cancels the others at once."""
    inventory = Inventory()
    numbers = itertools.count()

    async def take(page: tuple[Listing, list[dict[str, Any]]] | None) -> None:
        """In the writer: a page into the inventory; a full one (or the last) committed."""
        nonlocal inventory
        if page is not None:
            inventory.add(*page, time.time_ns() // 1_000_000)
            if len(inventory) < chunk_rows:
                return
        full, inventory = inventory, Inventory()
        await in_thread(sink.commit_images, full.columns, next(numbers))

    writer: OneWriter[tuple[Listing, list[dict[str, Any]]]] = OneWriter(take, LISTINGS_AT_ONCE)

    async def write(listing: Listing, infos: list[dict[str, Any]]) -> None:
        await writer.put((listing, infos))

    listings = await writer.run(list_images(region.fetcher, region.endpoint, x, write, stop)
                                for region, x in jobs)
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
    await in_thread(sink.commit_listings, ledger(listings, time.time_ns() // 1_000_000),
                    notes(listings))
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
