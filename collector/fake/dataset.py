"""A deterministic CPH dataset from a seed: projects, images, and who each image is shared with.

The same seed always gives the same IDs, members and times, so a test, the demo and a benchmark
can all say what the right answer is. Members are derived per image on demand (and cached), so a
million-image dataset costs only its ID list until it is asked about.
"""

from __future__ import annotations

import dataclasses
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
    region: str = "cn-north-4"  # the region of the projects, as IAM names them
    shared_per_project: int = 3  # images other accounts share with each project (image_type=share)
    locked_project: bool = True  # IAM lists a project of ours that CPH refuses (CPS.0001)
    day: int = 0  # the account as it is on this day: day 0, then shares added, revoked and
    # updated, images deleted and created, a seeded day at a time (``event``, ``changes``)
    project_ids: list[str] = field(init=False)
    project_names: dict[str, str] = field(init=False)
    other_projects: dict[str, str] = field(init=False)  # IAM lists them; they hold no images
    _owner: dict[str, str] = field(init=False, repr=False)
    _pool: list[str] = field(init=False, repr=False)
    _members: dict[str, list[dict[str, object]]] = field(init=False, repr=False,
                                                         default_factory=dict)
    _listed: dict[str, list[str]] = field(init=False, repr=False, default_factory=dict)
    _born: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _history: dict[tuple[str, int], list[dict[str, object]]] = field(
        init=False, repr=False, default_factory=dict)

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
        self._evolve()
        # The region's main project is named like the region; the others are sub-projects.
        self.project_names = {p: self.region if n == 0 else f"{self.region}_{n}"
                              for n, p in enumerate(self.project_ids)}
        # IAM also lists a project of another region, and one of ours that CPH refuses (CPS.0001).
        elsewhere = "cn-east-3" if self.region != "cn-east-3" else "cn-north-4"
        self.other_projects = {hex_id(rng): elsewhere, hex_id(rng): f"{self.region}_locked"}
        if not self.locked_project:
            self.other_projects = {k: v for k, v in self.other_projects.items()
                                   if not v.endswith("_locked")}
        self._shared = {p: [hex_id(rng) for _ in range(self.shared_per_project)]
                        for p in self.project_ids}

    def image_ids(self, project: str | None = None) -> list[str]:
        """Every image (of one project), in a stable order; the doc example is not included."""
        return [i for i, p in self._owner.items()
                if (project is None or p == project) and i != DOC_EXAMPLE_IMAGE]

    def owner(self, image_id: str) -> str | None:
        """The project that owns ``image_id``, or None for an image nobody has."""
        return self._owner.get(image_id)

    def _evolve(self) -> None:
        """Days 1..day: new images each day, and the images deleted by then."""
        base = list(self._owner.items())
        for d in range(1, self.day + 1):
            for project in self.project_ids[: self.projects]:
                rng = random.Random(f"{self.seed}:new:{project}:{d}")
                for _ in range(max(self.images // 50, 1)):
                    image = hex_id(rng)
                    self._owner[image] = project
                    self._born[image] = d
        for image, _ in base + [(i, p) for i, p in self._owner.items() if i in self._born]:
            if image == DOC_EXAMPLE_IMAGE:
                continue
            if any(self.event_kind(image, d) == "delete"
                   for d in range(self._born.get(image, 0) + 1, self.day + 1)):
                del self._owner[image]

    def event_kind(self, image_id: str, day: int) -> str:
        """What happens to an image on ``day`` (one thing at most): delete, add (a share),
        revoke (a share), update (a share's update_time), or nothing."""
        x = random.Random(f"{self.seed}:{image_id}:day{day}").random()
        for kind, bound in (("delete", 0.01), ("add", 0.06), ("revoke", 0.09), ("update", 0.11)):
            if x < bound:
                return kind
        return "none"

    def members_on(self, image_id: str, day: int) -> list[dict[str, object]]:
        """The image's shares as they are on ``day`` (before any deletion)."""
        born = self._born.get(image_id, 0)
        if day <= born:
            return self._first_members(image_id, born)
        key = (image_id, day)
        if key not in self._history:
            shares = [dict(m) for m in self.members_on(image_id, day - 1)]
            kind = self.event_kind(image_id, day)
            rng = random.Random(f"{self.seed}:{image_id}:share{day}")
            stamp = T1_MS + day * 86_400_000 + rng.randrange(86_400_000)
            taken = {m["member_id"] for m in shares}
            if kind == "add" and len(shares) < self.max_members:
                # mostly an account we already share with; now and then one never seen before
                member = hex_id(rng) if rng.random() < 0.1 else rng.choice(
                    [p for p in self._pool[:64] if p not in taken])
                shares.append({"image_id": image_id, "member_id": member,
                               "create_time": stamp, "update_time": stamp})
            elif kind == "revoke" and shares:
                shares.pop(rng.randrange(len(shares)))
            elif kind == "update" and shares:
                shares[rng.randrange(len(shares))]["update_time"] = stamp
            self._history[key] = shares
        return self._history[key]

    def changes(self) -> set[tuple[str, str, str, str]]:
        """The ground truth of changes from ``day - 1`` to ``day`` (see ``day_changes``)."""
        return day_changes(dataclasses.replace(self, day=self.day - 1), self) \
            if self.day > 0 else set()

    def members(self, image_id: str) -> list[dict[str, object]]:
        """The image's members, as the API shows them; [] for an image shared with nobody."""
        cached = self._members.get(image_id)
        if cached is not None:
            return cached
        if self.day > 0 and image_id in self._owner:
            found = self.members_on(image_id, self.day)
            self._members[image_id] = found
            return found
        return self._first_members(image_id, 0)

    def _first_members(self, image_id: str, born: int) -> list[dict[str, object]]:
        """The shares an image has the day it appears (day 0 for the base images)."""
        key = (image_id, -1)
        if key in self._history:
            return self._history[key]
        rng = random.Random(f"{self.seed}:{image_id}")
        if rng.random() < self.empty_share or self.max_members == 0:
            found: list[dict[str, object]] = []
        else:
            # Most images are shared with one to three projects, a few with many (mean ~2.5).
            count = min(self.max_members, 1 + int(rng.expovariate(0.7)))
            found = []
            for member in rng.sample(self._pool, min(count, len(self._pool))):
                created = rng.randrange(T0_MS, T1_MS) + born * 86_400_000
                updated = created if rng.random() < 0.8 else rng.randrange(
                    created, T1_MS + born * 86_400_000)
                found.append({"image_id": image_id, "member_id": member,
                              "create_time": created, "update_time": updated})
        self._history[key] = found
        if self.day == 0:
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

    def listed(self, project: str, image_type: str) -> list[str]:
        """What ListImages lists for a project: its own images (``private``, the doc example
        included) or those other accounts shared with it (``share``), in a stable order."""
        if image_type == "share":
            return self._shared.get(project, [])
        listed = self._listed.get(project)
        if listed is None:  # built once: a listing of a million images asks 10,000 times
            listed = self._listed[project] = [i for i, p in self._owner.items() if p == project]
        return listed

    def iam_projects(self) -> list[dict[str, object]]:
        """The account's projects as IAM lists them (``GET /v3/auth/projects``)."""
        domain = f"{self.seed:032x}"
        return [{"id": p, "name": name, "enabled": True, "domain_id": domain,
                 "parent_id": domain, "is_domain": False, "description": ""}
                for p, name in {**self.project_names, **self.other_projects}.items()]

    def image_info(self, image_id: str, index: int, image_type: str = "private",
                   project: str | None = None) -> dict[str, object]:
        """One ``ListImagesView``. Its times are strings of unstated format: the fake uses
        several (ISO 8601 with Z, with an offset, without a zone, and epoch ms as digits)."""
        rng = random.Random(f"{self.seed}:info:{image_id}")
        created = rng.randrange(T0_MS, T1_MS)
        updated = created + rng.randrange(0, 86_400_000)
        shape = rng.randrange(4)
        info: dict[str, object] = {
            "image_id": image_id, "image_name": f"image-{index:06d}", "image_type": image_type,
            "status": rng.choice((1, 1, 1, 0, 2)), "image_version": rng.choice(
                ("android-11", "android-12", "android-13")),
            "image_size": rng.randrange(2 << 30, 12 << 30), "domain_id": f"{self.seed:032x}",
            "create_time": _stamp(created, shape), "update_time": _stamp(updated, shape)}
        if image_type == "share":
            info["src_project_id"] = self._pool[rng.randrange(len(self._pool))]
        else:
            info["project_id"] = project or self._owner[image_id]
        return info

    def expected_inventory(self, project: str, image_type: str) -> list[tuple[str, int, int]]:
        """(image_id, create ms, update ms) of each listed image, as the collector should
        store them (times are whole seconds in every shape the fake sends)."""
        rows = []
        for image in self.listed(project, image_type):
            rng = random.Random(f"{self.seed}:info:{image}")
            created = rng.randrange(T0_MS, T1_MS)
            updated = created + rng.randrange(0, 86_400_000)
            rows.append((image, created // 1000 * 1000, updated // 1000 * 1000))
        return rows

    def expected_rows(self, project: str, image_id: str) -> list[tuple[str, str, str, int, int]]:
        """(project, image, member, create, update) as the collector should write them."""
        return [(project, image_id, str(m["member_id"]), int(m["create_time"]),  # type: ignore[call-overload]
                 int(m["update_time"])) for m in self.members(image_id)]  # type: ignore[call-overload]


def _stamp(ms: int, shape: int) -> str:
    """A time in one of the shapes ListImages might use (whole seconds)."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    if shape == 0:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if shape == 1:
        return when.astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat()
    if shape == 2:
        return when.strftime("%Y-%m-%d %H:%M:%S")  # no zone: UTC
    return str(ms // 1000 * 1000)


def day_changes(before: Dataset, after: Dataset) -> set[tuple[str, str, str, str]]:
    """(project, image, member, change) for every share added, removed or updated from one day
    to the next, and every share of a deleted image (``image_gone``)."""
    truth: set[tuple[str, str, str, str]] = set()
    for image, project in before._owner.items():
        if image == DOC_EXAMPLE_IMAGE:
            continue
        old = {str(m["member_id"]): m for m in before.members(image)}
        if after.owner(image) is None:
            truth |= {(project, image, m, "image_gone") for m in old}
            continue
        new = {str(m["member_id"]): m for m in after.members(image)}
        truth |= {(project, image, m, "added") for m in new.keys() - old.keys()}
        truth |= {(project, image, m, "removed") for m in old.keys() - new.keys()}
        truth |= {(project, image, m, "updated") for m in new.keys() & old.keys()
                  if new[m]["update_time"] != old[m]["update_time"]}
    for image, born in after._born.items():
        owner = after.owner(image)
        if born == after.day and owner is not None:
            truth |= {(owner, image, str(m["member_id"]), "added")
                      for m in after.members(image)}
    return truth
