"""The report's view model: figures, top-N tables and trend series grouped into sections, the
values ``page`` renders and the tests look up by key; no reading and no HTML here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from collector.errors import Status

TOP = 100  # rows of a table in the page; the query under it gives them all
TOP_SMALL = 20  # the "most" tables
UNANSWERED = (Status.FAILED.value, Status.FORBIDDEN.value)
NOT_COMPARED = (Status.FAILED.value, Status.FORBIDDEN.value, Status.INVALID_ID.value)
Cell = str | int | float | dt.datetime | None


@dataclass(frozen=True)
class Figure:
    """One number (or word) of the page, under a stable key the tests look up."""

    key: str
    label: str
    value: int | float | str
    unit: str = ""


@dataclass(frozen=True)
class Table:
    """The first rows of a list, how many there are in all, and the query for all of them."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    total: int
    query: str
    numeric: frozenset[str] = frozenset()
    untrusted: list[bool] = field(default_factory=list)  # per row: a share to an untrusted one
    empty: str = "none"


@dataclass(frozen=True)
class Series:
    """One trend line: a value per night."""

    key: str
    title: str
    points: list[tuple[dt.date, int]]


@dataclass(frozen=True)
class Section:
    """One part of the page: a lead sentence, then its figures, tables and trend lines."""

    key: str
    title: str
    lead: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """The whole page: the snapshot, whether the night is complete, and its sections."""

    snapshot_date: dt.date
    output: str
    run_id: str | None
    complete: bool
    verdict: str
    sections: list[Section]


def count_of(n: int, noun: str) -> str:
    """``n`` things in a sentence: "1 image", "2 images" (nouns of the page add an s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"

