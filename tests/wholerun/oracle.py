"""What a correct collector publishes and exits with, as pure functions of the fake's ground
truth (``Dataset``, the fault scripts) and the configuration — never of the collector's code.

Each README rule is one small function, so a rule that changes is changed in one place:
``exit_code`` (the exit-code table, with ``max_failed_share``), ``image_status`` (what one
image ends as), ``comparable`` (which images the change table compares).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from collector.shards import place
from tests.wholerun.draw import BAD_IDS, PAGE, Scenario, World

MAX_FAILED_SHARE = 0.1  # the setting's default (issue 22, Build 2)
Key = tuple[str, str]  # (project_id, image_id)
Share = tuple[str, int, int]  # (member_id, create ms, update ms)


@dataclass(frozen=True)
class Night:
    """What one night must publish, and its exit code."""
    statuses: dict[Key, str]  # every valid unique input (or listed private) ID
    invalid: int  # invalid_id rows
    members: dict[Key, frozenset[Share]]  # the truth for every ok image
    listings: dict[tuple[str, str], str]  # (project, image_type) -> status (discovery)
    listed: dict[tuple[str, str], int]  # (project, image_type) -> images listed
    images: frozenset[tuple[str, str, str]]  # (project, image, image_type) of the inventory
    exit_code: int

    @property
    def publishes(self) -> bool:
        return self.exit_code in (0, 1, 4)

    def counts(self) -> Counter[str]:
        return Counter(self.statuses.values())


# -- the rules ---------------------------------------------------------------------------------

def too_broken(failed: int, total: int, max_share: float = MAX_FAILED_SHARE) -> bool:
    """More than ``max_failed_share`` of the images (or of the listings) failed: nothing is
    published, exit 3."""
    return total > 0 and failed / total > max_share


def exit_code(by_status: Counter[str], invalid: int, listings: Counter[str]) -> int:
    """README "Exit codes" for a run that ran to its end (and for ``publish --shards``, which
    gives the code one unsharded run gives): 3 when the night is too broken to publish; 1 when
    an image or a listing is failed or forbidden; else 0."""
    images = sum(by_status.values()) + invalid
    if too_broken(by_status["failed"], images) or too_broken(listings["failed"],
                                                             sum(listings.values())):
        return 3
    if by_status["failed"] or by_status["forbidden"] or listings["failed"] \
            or listings["forbidden"]:
        return 1
    return 0


def shard_exit_code(by_status: Counter[str]) -> int:
    """A shard (or a plan) exits 0 once its share is staged, whatever its images' statuses:
    the night's verdict is the publish's (README "Exit codes")."""
    return 0


def sick_codes() -> set[int]:
    """A run against a backend that answers 503 to everything: every image failed, so it is
    too broken to publish (3), unless SIGTERM stopped it first (143; -15 before the handler)."""
    return {3, 143, -15}


def image_status(world: World, key: Key, doomed: set[str]) -> str:
    """What one requested image ends as: forbidden for a project we may not read, failed when
    every allowed attempt meets a retryable fault (scripted), ok when the image is the
    project's, else not_found. Random faults never reach max_attempts in a row (draw.py)."""
    project, image = key
    if project not in world.dataset.project_ids:
        return "forbidden"
    if image in doomed:
        return "failed"
    return "ok" if world.dataset.owner(image) == project else "not_found"


def comparable(before: str | None, after: str | None, gone: bool) -> bool:
    """README "changes": an image ok on both nights; ok then not_found (or no longer listed by
    an ok listing: ``gone``); new tonight or not_found before, ok now. Nothing else."""
    if before == "ok":
        return after in ("ok", "not_found") or (after is None and gone)
    return after == "ok" and before in (None, "not_found")


# -- a night -----------------------------------------------------------------------------------

def night(scenario: Scenario, index: int) -> Night:
    """The oracle of night ``index`` (also of an ordinary run of another date on that night's
    account: the same answers)."""
    world = World(scenario, index)
    doomed = world.doomed()
    listings: dict[tuple[str, str], str] = {}
    listed: dict[tuple[str, str], int] = {}
    images: set[tuple[str, str, str]] = set()
    if scenario.discover:
        keys, invalid = _discovered(world, listings, listed, images)
    else:
        rows = world.input_rows()
        keys = list(dict.fromkeys(r for r in rows if r[1] not in BAD_IDS))
        invalid = sum(1 for r in rows if r[1] in BAD_IDS)
    statuses = {k: image_status(world, k, doomed) for k in keys}
    members = {k: frozenset((m, c, u) for _, _, m, c, u in world.dataset.expected_rows(*k))
               for k, s in statuses.items() if s == "ok"}
    code = exit_code(Counter(statuses.values()), invalid, Counter(listings.values()))
    return Night(statuses, invalid, members, listings, listed, frozenset(images), code)


def _discovered(world: World, listings: dict[tuple[str, str], str],
                listed: dict[tuple[str, str], int],
                images: set[tuple[str, str, str]]) -> tuple[list[Key], int]:
    """Discovery: every listing's status and images; the private ones are collected."""
    failing = world.failing_page()
    keys: list[Key] = []
    for project in world.listed_projects():
        for image_type in ("private", "share"):
            if project not in world.dataset.project_ids:
                listings[(project, image_type)] = "forbidden"
                listed[(project, image_type)] = 0
                continue
            ids = world.dataset.listed(project, image_type)
            status = "ok"
            if failing is not None and (project, image_type) == (failing[0], "private"):
                ids, status = ids[: failing[1]], "failed"
            listings[(project, image_type)] = status
            listed[(project, image_type)] = len(ids)
            images |= {(project, i, image_type) for i in ids}
            if image_type == "private":
                keys += [(project, i) for i in ids]
    return keys, 0


def changes(scenario: Scenario, first: Night, second: Night) -> set[tuple[str, str, str, str]]:
    """The change table of night 2: the fake's ground truth of the day's changes, restricted to
    the images the README says are compared."""
    world = World(scenario, 1)
    truth = world.dataset.changes()
    ok_listings = {p for (p, t), s in second.listings.items() if t == "private" and s == "ok"}

    def keep(project: str, image: str) -> bool:
        gone = scenario.discover and project in ok_listings
        return comparable(first.statuses.get((project, image)),
                          second.statuses.get((project, image)), gone)

    return {c for c in truth if keep(c[0], c[1])}


def shard_of(key: Key, count: int) -> int:
    """The shard (1 to N) that collects ``key``: the README's stable hash."""
    return place(key[0], key[1], count) + 1


def shard_code(expected: Night, shard: int, count: int) -> int:
    """A shard's exit code: its share of the night's images, and (discovery) the plan's
    listings, which its summary reports."""
    share = Counter(s for k, s in expected.statuses.items() if shard_of(k, count) == shard)
    return max(shard_exit_code(share), plan_code(expected))


def plan_code(expected: Night) -> int:
    """A plan lists; staged, it exits 0 whatever its listings (their verdict is the
    publish's, README "Exit codes")."""
    return 0


__all__ = ["PAGE", "Night", "changes", "comparable", "exit_code", "image_status", "night",
           "plan_code", "shard_code", "too_broken"]
