"""From input lines to work: assign projects, reject bad IDs, drop duplicates, count them all.

Every line read ends in exactly one of: a request (``Target``), a rejection (``Rejected``,
an ``invalid_id`` status row), a counted duplicate, or -- when resuming -- an ID an earlier run
of the same date already committed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from collector.inputs import Line

REJECTED = "\x00"  # the "project" of rejected lines; no project ID can be this
_HEX32 = re.compile(r"[0-9a-f]{32}")


class IdSet:
    """Exactly which (project, image) pairs were seen, in little memory.

    A set per project; an image ID in the canonical form of CPH IDs (32 lowercase hex digits)
    is kept as its integer (44 bytes instead of a ~110-byte "project/image" string). Any other
    ID is kept as it is, so "ABC..." and "abc..." stay different, as they are to the API.
    """

    def __init__(self) -> None:
        self._by_project: dict[str, set[int | str]] = {}
        self._size = 0

    @staticmethod
    def _compact(image_id: str) -> int | str:
        return int(image_id, 16) if _HEX32.fullmatch(image_id) else image_id

    def add(self, project: str, image_id: str) -> bool:
        """Add the pair; False if it was there already."""
        images = self._by_project.setdefault(project, set())
        key = self._compact(image_id)
        if key in images:
            return False
        images.add(key)
        self._size += 1
        return True

    def discard(self, project: str, image_id: str) -> bool:
        """Remove the pair; False if it was not there."""
        images = self._by_project.get(project)
        key = self._compact(image_id)
        if images is None or key not in images:
            return False
        images.remove(key)
        self._size -= 1
        return True

    def __len__(self) -> int:
        return self._size


class Target(NamedTuple):  # a tuple: cheap to build on the hot path
    project_id: str
    image_id: str


class Rejected(NamedTuple):  # a tuple: cheap to build on the hot path
    line: int
    project_id: str
    image_id: str
    reason: str


@dataclass(slots=True)
class Intake:
    default_project: str | None
    done: IdSet = field(default_factory=IdSet)  # committed by an earlier run; shrinks
    lines: int = 0
    duplicates: int = 0
    rejected: int = 0
    targets: int = 0
    resumed: int = 0
    _seen: IdSet = field(default_factory=IdSet)

    def admit(self, line: Line) -> Target | Rejected | None:
        """The line's fate; None for a duplicate, or for an ID already committed."""
        self.lines += 1
        project = line.project_id or self.default_project
        problem = line.problem
        if problem is None and project is None:
            problem = "no project_id (give --project-id or a project_id column)"
        # A rejected line is keyed by what its row will show, so image_status holds it once.
        bucket = (project or "") if problem is None else REJECTED
        if not self._seen.add(bucket, line.image_id):
            self.duplicates += 1
            return None
        if self.done.discard(bucket, line.image_id):
            self.resumed += 1
            return None
        if problem is not None:
            self.rejected += 1
            return Rejected(line.number, project or "", line.image_id,
                            f"line {line.number}: {problem}")
        assert project is not None
        self.targets += 1
        return Target(project, line.image_id)

    @property
    def unique(self) -> int:
        return self.targets + self.rejected + self.resumed
