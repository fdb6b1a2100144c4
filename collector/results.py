"""What collecting one image gives: the row that the writer turns into Parquet.

Its own module so that the files side (``sink``) needs nothing of the HTTP side (``fetch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.api import Member
from collector.errors import Status


@dataclass(slots=True)
class ImageResult:
    """One image's outcome: its status row's fields and, when ok, its members."""
    project_id: str
    image_id: str
    status: Status
    attempts: int = 0
    http_status: int | None = None
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None
    members: list[Member] = field(default_factory=list)
    collected_at_ms: int = 0
