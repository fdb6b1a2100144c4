"""A deterministic CPH dataset from a seed: projects, images, and who each image is shared with.

The same seed always gives the same IDs, members and times, so a test, the demo and a benchmark
can all say what the right answer is. Members are derived per image on demand (and cached), so a
million-image dataset costs only its ID list until it is asked about.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

MAX_MEMBERS = 10  # the documented cap of member accounts per image
T0_MS = 1_672_531_200_000  # 2023-01-01T00:00:00Z
T1_MS = 1_759_276_800_000  # 2025-10-01T00:00:00Z

# The example of the API reference (cph_api_0562), served verbatim for its image ID.
DOC_EXAMPLE_PROJECT = "0c4a57e3e7c04c3ab2a6d07fe49b8a96"
DOC_EXAMPLE_IMAGE = "23030320230421e300221a2000004167"
DOC_EXAMPLE_MEMBERS = (
    {"image_id": DOC_EXAMPLE_IMAGE, "member_id": "87dc6af96095488d9205b6f31f314b16",
     "create_time": 1713320018058, "update_time": 1713320018058},
    {"image_id": DOC_EXAMPLE_IMAGE, "member_id": "6733a7ad58694af18c7ee4820052d63f",
     "create_time": 1713083265307, "update_time": 1713083265307},
)


def hex_id(rng: random.Random) -> str:
    """A 32-hex-digit ID, as CPH's image and project IDs look."""
    return f"{rng.getrandbits(128):032x}"


@dataclass
class Dataset:
    """A seeded, reproducible world of projects, images and members that the fake serves."""
    seed: int = 1
    projects: int = 1
    images: int = 100  # per project
    max_members: int = MAX_MEMBERS
    empty_share: float = 0.2  # images shared with nobody
    accounts: int = 500  # distinct member projects to draw from
    with_doc_example: bool = True
    project_ids: list[str] = field(init=False)
    _owner: dict[str, str] = field(init=False, repr=False)
    _pool: list[str] = field(init=False, repr=False)
    _members: dict[str, list[dict[str, object]]] = field(init=False, repr=False,
                                                         default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.project_ids = [hex_id(rng) for _ in range(self.projects)]
        self._pool = [hex_id(rng) for _ in range(self.accounts)]
        self._owner = {}
        for project in self.project_ids:
            for _ in range(self.images):
                self._owner[hex_id(rng)] = project
        if self.with_doc_example:
            self.project_ids.append(DOC_EXAMPLE_PROJECT)
            self._owner[DOC_EXAMPLE_IMAGE] = DOC_EXAMPLE_PROJECT
            self._members[DOC_EXAMPLE_IMAGE] = [dict(m) for m in DOC_EXAMPLE_MEMBERS]

    def image_ids(self, project: str | None = None) -> list[str]:
        """Every image (of one project), in a stable order; the doc example is not included."""
        return [i for i, p in self._owner.items()
                if (project is None or p == project) and i != DOC_EXAMPLE_IMAGE]

    def owner(self, image_id: str) -> str | None:
        """The project that owns ``image_id``, or None for an image nobody has."""
        return self._owner.get(image_id)

    def members(self, image_id: str) -> list[dict[str, object]]:
        """The image's members, as the API shows them; [] for an image shared with nobody."""
        cached = self._members.get(image_id)
        if cached is not None:
            return cached
        rng = random.Random(f"{self.seed}:{image_id}")
        if rng.random() < self.empty_share or self.max_members == 0:
            found: list[dict[str, object]] = []
        else:
            # Most images are shared with one to three projects, a few with many (mean ~2.5).
            count = min(self.max_members, 1 + int(rng.expovariate(0.7)))
            found = []
            for member in rng.sample(self._pool, min(count, len(self._pool))):
                created = rng.randrange(T0_MS, T1_MS)
                updated = created if rng.random() < 0.8 else rng.randrange(created, T1_MS)
                found.append({"image_id": image_id, "member_id": member,
                              "create_time": created, "update_time": updated})
        self._members[image_id] = found
        return found

    def unknown_ids(self, count: int) -> list[str]:
        """Well-formed IDs that are in no project: the API answers "not found" for them."""
        rng = random.Random(f"{self.seed}:unknown")
        out: list[str] = []
        while len(out) < count:
            candidate = hex_id(rng)
            if candidate not in self._owner:
                out.append(candidate)
        return out

    def image_info(self, image_id: str, index: int) -> dict[str, object]:
        """One ``ListImagesView`` (times are strings there, unlike the members API)."""
        rng = random.Random(f"{self.seed}:info:{image_id}")
        created = rng.randrange(T0_MS, T1_MS)
        return {"image_id": image_id, "image_name": f"image-{index:06d}", "image_type": "private",
                "status": 1, "project_id": self._owner[image_id], "image_version": "android-13",
                "image_size": rng.randrange(2 << 30, 12 << 30),
                "create_time": _iso(created), "update_time": _iso(created)}

    def expected_rows(self, project: str, image_id: str) -> list[tuple[str, str, str, int, int]]:
        """(project, image, member, create, update) as the collector should write them."""
        return [(project, image_id, str(m["member_id"]), int(m["create_time"]),  # type: ignore[call-overload]
                 int(m["update_time"])) for m in self.members(image_id)]  # type: ignore[call-overload]


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
