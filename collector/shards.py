"""Shards: the same split of the images on every machine and every re-run.

An image belongs to shard ``K`` of ``N`` when a stable hash of (project_id, image_id) — BLAKE2b,
not Python's ``hash``, which changes from process to process — is ``K - 1`` modulo ``N``. A
rejected input line is placed by its text the same way, so it too is in exactly one shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from collector import staging
from collector.secrets import printable

JOB_INDEX = "JOB_COMPLETION_INDEX"  # Kubernetes Indexed Jobs: 0 to completions - 1


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard K of N (1-based, as ``--shard K/N`` writes it)."""

    index: int  # 1 to count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """Its staging folder's name: ``shard-K-of-N``."""
        return staging.shard_name(self.index, self.count)

    def owns(self, project_id: str, image_id: str) -> bool:
        """Whether this shard collects the image: the stable hash's place is this shard's."""
        return place(project_id, image_id, self.count) == self.index - 1


def place(project_id: str, image_id: str, count: int) -> int:
    """0 to ``count - 1``: where (project_id, image_id) goes."""
    digest = hashlib.blake2b(f"{project_id}\0{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N; ValueError saying what is wrong."""
    index, sep, count = text.strip().partition("/")
    if not sep or not _whole(index) or not _whole(count):
        raise ValueError("give K/N, e.g. 2/3")
    shard = Shard(int(index), int(count))
    if not 1 <= shard.index <= shard.count or shard.count > 10_000:
        raise ValueError("K must be 1 to N (and N at most 10,000)")
    return shard


def from_job_index(count: int, env: Mapping[str, str]) -> Shard:
    """Shard ``JOB_COMPLETION_INDEX + 1`` of ``count``; ValueError if the index is missing or
    out of range."""
    raw = env.get(JOB_INDEX, "").strip()
    if not _whole(raw) or int(raw) >= count:
        raise ValueError(f"--shards {count} takes the shard from {JOB_INDEX} (0 to "
                         f"{count - 1}), which is {printable(raw) or 'not set'}")
    return Shard(int(raw) + 1, count)


def _whole(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` says yes to ``²``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()
