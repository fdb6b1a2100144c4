"""From input lines to work: assign projects, reject bad IDs, drop duplicates, count them all.

Every line read ends in exactly one of: a request (``Target``), a rejection (``Rejected``,
an ``invalid_id`` status row), a counted duplicate, or -- when resuming -- an ID an earlier run
of the same date already committed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from collector.inputs import Line

REJECTED = "\x00"  # the "project" of rejected lines; no project ID can be this
_HEX32 = re.compile(r"[0-9a-f]{32}")


class IdSet:
    """Exactly which (project, image) pairs were seen, in about 26 bytes per CPH image ID.

    An image ID in the canonical form of CPH IDs (32 lowercase hex digits) is kept as its 16
    bytes, appended to one of up to 65,536 byte strings picked by its hash (not its digits:
    sequential IDs would share one); a lookup is one C substring search over that string
    (~250 bytes at a million IDs). A Python
    set of the same IDs as integers costs ~80 bytes each: 80 MB at a million, the run's largest
    cost.
    Any other ID is kept as it is, in a set, so "ABC..." and "abc..." stay different, as they
    are to the API.
    """

    def __init__(self) -> None:
        self._packed: dict[str, dict[int, bytearray]] = {}  # project -> bucket -> keys
        self._other: dict[str, set[str]] = {}
        self._size = 0

    def add(self, project: str, image_id: str) -> bool:
        """Add the pair; False if it was there already."""
        if _HEX32.fullmatch(image_id):
            key = bytes.fromhex(image_id)
            buckets = self._packed.get(project)
            if buckets is None:
                buckets = self._packed[project] = {}
            slot = hash(image_id) & BUCKETS
            bucket = buckets.get(slot)
            if bucket is None:
                buckets[slot] = bytearray(key)
            elif _find(bucket, key) >= 0:
                return False
            else:
                bucket += key
        else:
            others = self._other.setdefault(project, set())
            if image_id in others:
                return False
            others.add(image_id)
        self._size += 1
        return True

    def discard(self, project: str, image_id: str) -> bool:
        """Remove the pair; False if it was not there."""
        if _HEX32.fullmatch(image_id):
            bucket = self._packed.get(project, {}).get(hash(image_id) & BUCKETS)
            at = -1 if bucket is None else _find(bucket, bytes.fromhex(image_id))
            if bucket is None or at < 0:
                return False
            del bucket[at:at + KEY]
        else:
            others = self._other.get(project)
            if others is None or image_id not in others:
                return False
            others.remove(image_id)
        self._size -= 1
        return True

    def __len__(self) -> int:
        return self._size


KEY = 16
BUCKETS = 0xFFFF  # a mask: 65,536 buckets at most, made as they are needed


def _find(bucket: bytearray, key: bytes) -> int:
    """Offset of ``key`` among the bucket's 16-byte keys, or -1 (a match must be aligned)."""
    at = bucket.find(key)
    while at >= 0 and at % KEY:
        at = bucket.find(key, at + 1)
    return at


class Target(NamedTuple):  # a tuple: cheap to build on the hot path
    """An ID to request: valid, first seen, not yet committed by an earlier run."""
    project_id: str
    image_id: str


class Rejected(NamedTuple):  # a tuple: cheap to build on the hot path
    """An input line that is not a usable ID: it becomes an ``invalid_id`` row."""
    line: int
    project_id: str
    image_id: str
    reason: str


@dataclass(slots=True)
class Intake:
    """Decides each line's fate once: request it, reject it, or skip a duplicate."""
    default_project: str | None
    done: IdSet = field(default_factory=IdSet)  # committed by an earlier run; shrinks
    lines: int = 0
    duplicates: int = 0
    rejected: int = 0
    targets: int = 0
    resumed: int = 0
    owns: Callable[[str, str], bool] | None = None  # a shard's share of (project, image)
    other_shards: int = 0  # lines that belong to another shard
    _seen: IdSet = field(default_factory=IdSet)

    def admit(self, line: Line) -> Target | Rejected | None:
        """The line's fate; None for a duplicate, an ID already committed, or one of another
        shard's."""
        self.lines += 1
        project = line.project_id or self.default_project
        problem = line.problem
        if problem is None and project is None:
            problem = "no project_id (give --project-id or a project_id column)"
        # A rejected line is keyed by what its row will show, so image_status holds it once.
        bucket = (project or "") if problem is None else REJECTED
        if self.owns is not None and not self.owns(bucket, line.image_id):
            self.other_shards += 1
            return None
        if not self._seen.add(bucket, line.image_id):
            self.duplicates += 1
            return None
        if self.done.discard(bucket, line.image_id):
            self.resumed += 1
            return None
        if problem is not None:
            self.rejected += 1
            return Rejected(line.number, project or "", line.image_id,  # 0: a listed ID
                            f"line {line.number}: {problem}" if line.number else problem)
        assert project is not None
        self.targets += 1
        return Target(project, line.image_id)

    @property
    def unique(self) -> int:
        """Unique input IDs so far: requested, rejected as invalid, or resumed."""
        return self.targets + self.rejected + self.resumed
