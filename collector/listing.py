"""What discovery lists, as data: the ledger row of each listing (``Listing``), the inventory's
column buffers (``Inventory``), and the pure reading of IAM's and ListImages' pages, times and
values. The listing itself (requests, paging, streaming to staging) is ``discover``'s.

A listed value that does not fit its column (a time of no shape we know or out of range, a
number too large for its type, an ID no URL may carry) is null, or an ``invalid_id`` row, and
counted: never a failed night.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from collector.api import BodyError
from collector.errors import Status
from collector.ids import is_valid_id, shown
from collector.schemas import IMAGES_SCHEMA, LISTING_SCHEMA, Columns, append, buffers
from collector.secrets import redact

if TYPE_CHECKING:
    from collector.sink import ParquetSink

# Times outside these years are no image's (a misread unit, a sentinel, garbage): null, counted.
EARLIEST_MS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
LATEST_MS = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
SECONDS_BELOW = 10**11  # an epoch number below this is seconds (10**11 ms is 1973, s is 5138)
INTEGERS = {"status": 2**31 - 1, "image_size": 2**63 - 1}  # int32, int64; never negative
TEXTS = ("image_name", "image_version", "domain_id", "src_project_id")
# A ledger row's fields as a ``Listing`` has them (status: the enum's value; error_msg: redacted)
LEDGER = ("region", "project_id", "image_type", "attempts", "http_status", "error_code",
          "error_msg", "request_id", "images", "pages")


@dataclass(slots=True)
class Inventory:
    """Column buffers of inventory rows (``schemas.IMAGES_SCHEMA``), filled page by page."""

    columns: Columns = field(default_factory=lambda: buffers(IMAGES_SCHEMA))
    bad_times: int = 0  # time strings of no shape we know: stored as null, counted
    unfit: int = 0  # other values that do not fit their column: stored as null, counted

    def __len__(self) -> int:
        """How many rows are buffered."""
        return len(self.columns["image_id"])

    def add(self, listing: Listing, infos: list[dict[str, Any]], now_ms: int) -> None:
        """One page of ``listing``'s images, each value fitted to its column (or null, and
        counted on the inventory and the listing)."""
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


def ledger(listings: list[Listing], now_ms: int) -> Columns:
    """The listing_status rows (``schemas.LISTING_SCHEMA``, without run_id)."""
    columns = buffers(LISTING_SCHEMA)
    for x in listings:
        append(columns, {**{name: getattr(x, name) for name in LEDGER},
                         "collected_at": now_ms, "status": x.status.value,
                         "error_msg": redact(x.error_msg) if x.error_msg else None})
    return columns


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
        """A ledger row read back from staging (a resumed run), its fields by name."""
        return cls(**{name: row[name] for name in LEDGER}, status=Status(row["status"]))


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
    """Epoch ms of an epoch number in seconds or ms (by size); None beyond any time."""
    if not math.isfinite(number) or abs(number) >= 10**17:
        return None
    return round(number * 1000) if abs(number) < SECONDS_BELOW else round(number)


def _text_ms(text: str) -> int | None:
    """Epoch ms of a time's text: digits (an epoch number) or ISO 8601; else None."""
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
    """``NaN`` and ``Infinity`` are no JSON: refused."""
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
    """An enabled project named like the region, or ``<region>_*``."""
    name = project.get("name")
    return (project.get("enabled", True) is not False and isinstance(name, str)
            and (name == region or name.startswith(f"{region}_")))


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
