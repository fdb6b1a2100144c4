"""One chunk of a run's results: the member and status rows of a batch of images, buffered as
plain lists (``schemas.buffers``) and written by the sink as one file per table."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.errors import Status
from collector.intake import Rejected
from collector.results import ImageResult
from collector.schemas import MEMBERS_SCHEMA, STATUS_SCHEMA, Columns, buffers
from collector.secrets import redact

# The order ``Chunk.add`` gives a status row's values in: the schema's, checked here once.
STATUS_ROW = ("collected_at", "project_id", "image_id", "status", "http_status", "error_code",
              "error_msg", "request_id", "attempts", "member_count")
if tuple(buffers(STATUS_SCHEMA)) != STATUS_ROW:
    raise ImportError("STATUS_SCHEMA's columns are not in the order Chunk.add gives them")


@dataclass(slots=True)
class Chunk:
    """Column buffers for one chunk: plain lists, turned into Arrow arrays once per chunk."""

    members: Columns = field(default_factory=lambda: buffers(MEMBERS_SCHEMA))
    status: Columns = field(default_factory=lambda: buffers(STATUS_SCHEMA))
    images: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, result: ImageResult | Rejected, now_ms: int) -> None:
        """One image's answer: its status row (values in ``STATUS_ROW``'s order: a tuple is
        the hot path's cheapest), and its member rows (a rejected ID: its ``invalid_id`` row,
        stamped ``now_ms``)."""
        self.images += 1
        if isinstance(result, Rejected):
            values: tuple[object, ...] = (now_ms, result.project_id, result.image_id,
                                          Status.INVALID_ID.value, None, None, result.reason,
                                          None, 0, 0)
            self.counts[Status.INVALID_ID.value] = self.counts.get(Status.INVALID_ID.value, 0) + 1
        else:
            status = result.status.value
            # Messages come from servers and libraries: scrub them like the logs.
            message = redact(result.error_msg) if result.error_msg else None
            values = (result.collected_at_ms, result.project_id, result.image_id, status,
                      result.http_status, result.error_code, message, result.request_id,
                      result.attempts, len(result.members))
            self.counts[status] = self.counts.get(status, 0) + 1
            if result.members:
                m = self.members
                for member in result.members:
                    m["collected_at"].append(result.collected_at_ms)
                    m["project_id"].append(result.project_id)
                    m["image_id"].append(result.image_id)
                    m["member_id"].append(member.member_id)
                    m["create_time"].append(member.create_time)
                    m["update_time"].append(member.update_time)
        for column, value in zip(self.status.values(), values, strict=True):
            column.append(value)
