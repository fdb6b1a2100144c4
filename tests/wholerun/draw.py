"""A seed becomes a Scenario: one configuration from the product's feature space, and the
fake's fault scripts for each night. Everything here is a pure function of the seed."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from collector.fake import Dataset, FaultPlan

# Faults the README says are retried (429, 5xx, CPS.0003, resets, broken bodies): an image that
# meets fewer than max_attempts of them in a row ends ok, so the oracle can say what happens.
RETRYABLE = ("http_500", "http_502", "http_503", "http_504", "cps_0003",
             "reset_before_headers", "reset_mid_body", "short_body")
DOOMED = ["http_503"] * 400  # a scripted image (or page) that fails whatever is retried
DATES = ("2026-12-01", "2026-12-02")
OTHER_DATE = "2027-01-15"  # an ordinary run of another date, later than every night
PAGE = 100  # ListImages page size the collector asks for


@dataclass(frozen=True)
class Kill:
    """A signal to one step at a moment after it started; the re-run the README prescribes
    follows (the same command again)."""
    signal: str  # "SIGKILL" or "SIGTERM"
    role: str  # which step: "run", "plan", "shard", "publish"
    after: float  # seconds after the step started


@dataclass(frozen=True)
class NightPlan:
    """One night: its date, the fake's day, its faults, and how it is run."""
    date: str
    day: int
    rates: dict[str, float]  # random fault rates of the fake (per image and attempt)
    doomed: int  # images scripted to fail for good
    throttled: int  # images scripted to meet a burst of 429s (fewer than max_attempts)
    listing_fail: bool  # one private listing page fails for good
    iam_hiccup: bool  # the first IAM token request answers 503 (then 429 once)
    shards: int  # 0: one ordinary run; else N shards (plan first with discovery) and publish
    kill: Kill | None
    other_date: bool  # an ordinary run of OTHER_DATE while the shards run
    premature_publish: bool  # a publish before the last shard has run
    retry_budget: float | None  # None: the default
    relapse: float = 0.0  # > 0: first a run against the backend down (every answer 503),
    # SIGTERM after this many seconds if it still runs; then the re-run against it healthy


@dataclass(frozen=True)
class Scenario:
    """A whole configuration: the account, the settings, and one or two nights."""
    seed: int
    discover: bool
    iam_projects: bool  # discovery: projects from IAM instead of --project-id
    projects: int  # the account's projects (1-6)
    images: int  # images per project
    forbidden: int  # extra project IDs the credentials may not read
    chunk_images: int
    concurrency: int
    max_attempts: int
    bucket: bool  # output in an S3 bucket (moto) instead of a folder
    nights: tuple[NightPlan, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """The configuration, one setting a line, for a failure report."""
        doc = asdict(self)
        nights = doc.pop("nights")
        lines = [" ".join(f"{k}={v}" for k, v in doc.items())]
        lines += [f"  night {n + 1}: " + " ".join(f"{k}={v}" for k, v in night.items())
                  for n, night in enumerate(nights)]
        return "\n".join(lines)


def draw(seed: int) -> Scenario:
    """The configuration of ``seed``."""
    rng = random.Random(seed)
    discover = rng.random() < 0.5
    projects = rng.randint(1, 6)
    images = rng.choice((3, 20, 60, 101, 130, 250))
    while projects * images > 900:
        images //= 2
    iam_projects = discover and rng.random() < 0.3
    forbidden = 0 if iam_projects else rng.choice((0, 0, 1, 2))
    bucket = rng.random() < 0.3
    total = projects * images
    chunk = rng.choice((1, 2, 7, 50, 99, 100, 101, 150, 1000, 10_000))
    chunk = max(chunk, math.ceil(total / (30 if bucket else 150)))  # seconds, not minutes
    concurrency = rng.choice((1, 4, 16, 64))
    max_attempts = rng.choice((3, 4, 5))
    count = rng.choice((1, 1, 2))
    featured = rng.randrange(count)  # the night that gets shards, kills and interleavings
    nights = []
    for n in range(count):
        special = n == featured
        shards = rng.choice((0, 0, 2, 3)) if special else 0
        rates: dict[str, float] = {}
        if rng.random() < 0.6:
            for kind in rng.sample(RETRYABLE, rng.randint(1, 3)):
                rates[kind] = rng.choice((0.005, 0.01, 0.02))
        if rng.random() < 0.2:
            rates["throttle"] = rng.choice((0.05, 0.1))  # a 429 storm
        sick = rng.random() < 0.08  # a night too broken to publish
        doomed = max(1, total // 3) if sick else rng.choice((0, 0, 1, 2, 3))
        doomed = doomed if sick else min(doomed, total // 20)
        kill = None
        if special and rng.random() < 0.45:
            roles = ["shard", "publish"] + (["plan"] if discover else []) if shards else ["run"]
            kill = Kill("SIGTERM" if bucket or rng.random() < 0.5 else "SIGKILL",
                        rng.choice(roles), round(rng.uniform(0.4, 3.0), 2))
        nights.append(NightPlan(
            date=DATES[n], day=n, rates=rates, doomed=doomed,
            throttled=rng.choice((0, 0, 2, 5)),
            listing_fail=discover and n == count - 1 and rng.random() < 0.25,
            iam_hiccup=not iam_projects and forbidden == 0 and rng.random() < 0.2,
            shards=shards, kill=kill,
            other_date=bool(shards) and rng.random() < 0.7,
            premature_publish=bool(shards) and rng.random() < 0.7,
            retry_budget=None,
            relapse=_relapse(seed, n) if not shards and not discover else 0.0))
    scenario = Scenario(seed, discover, iam_projects, projects, images, forbidden, chunk,
                        concurrency, max_attempts, bucket, tuple(nights))
    return _within_budget(scenario)


def _relapse(seed: int, night: int) -> float:
    """Seconds the backend-down run may go before SIGTERM; 0.0: no such run (its own random
    source, so adding this feature left every other draw of a seed as it was)."""
    rng = random.Random(f"{seed}:relapse:{night}")
    return round(rng.uniform(1.0, 4.0), 2) if rng.random() < 0.15 else 0.0


def _within_budget(scenario: Scenario) -> Scenario:
    """A night whose faults could spend the default retry budget (100 retries, plus 0.2 an
    image) would make some healthy images fail by chance: give it a large budget instead, so
    the oracle can still say which images fail."""
    nights = []
    for n, night in enumerate(scenario.nights):
        world = World(scenario, n)
        plan = FaultPlan(night.rates, world.script(), scenario.seed + n)
        retries = sum(sum(1 for a in range(1, scenario.max_attempts + 1)
                          if plan.outcome(key, a).value in RETRYABLE) for key in world.fault_keys())
        if retries > 60:
            night = NightPlan(**{**asdict(night), "kill": night.kill, "retry_budget": 10.0})
        nights.append(night)
    return Scenario(**{**asdict(scenario), "nights": tuple(nights)})


class World:
    """The fake's account on one night of a scenario, and what the collector will ask of it."""

    def __init__(self, scenario: Scenario, night: int) -> None:
        self.scenario = scenario
        self.night = scenario.nights[night]
        self.index = night
        self.dataset = dataset_of(scenario, self.night.day)
        self.previous = dataset_of(scenario, self.night.day - 1) if self.night.day else None
        rng = random.Random(f"{scenario.seed}:forbidden")
        self.forbidden = [f"{rng.getrandbits(128):032x}" for _ in range(scenario.forbidden)]
        self.own = self.dataset.project_ids[: scenario.projects]

    @property
    def fault_seed(self) -> int:
        return self.scenario.seed + self.index

    def input_rows(self) -> list[tuple[str, str]]:
        """(project, image) rows of the input file, in order: every image of both days, IDs
        nobody has, rows of forbidden projects, bad IDs and duplicates."""
        rng = random.Random(f"{self.scenario.seed}:input:{self.index}")
        rows = [(p, i) for p in self.own for i in self.dataset.image_ids(p)]
        if self.previous is not None:  # yesterday's images too: deleted ones are not_found
            known = set(rows)
            rows += [(p, i) for p in self.own for i in self.previous.image_ids(p)
                     if (p, i) not in known]
        rows += [(self.own[0], i) for i in self.dataset.unknown_ids(rng.randint(0, 4))]
        for project in self.forbidden:
            rows += [(project, f"{rng.getrandbits(128):032x}") for _ in range(rng.randint(1, 3))]
        rows += [rows[rng.randrange(len(rows))] for _ in range(rng.randint(0, 3))]
        return rows + [(self.own[0], bad) for bad in BAD_IDS[: rng.randint(0, len(BAD_IDS))]]

    def listed_projects(self) -> list[str]:
        """The projects a discovery run lists: named ones, or IAM's of the region."""
        if self.scenario.iam_projects:
            locked = [p for p, n in self.dataset.other_projects.items() if n.endswith("_locked")]
            return self.dataset.project_ids + locked
        return self.own + self.forbidden

    def pages(self, project: str, image_type: str) -> list[int]:
        """The offsets of the listing's pages (a listing of nothing is one page)."""
        total = len(self.dataset.listed(project, image_type)) if project in self.own else 0
        return list(range(0, max(total, 1), PAGE))

    def failing_page(self) -> tuple[str, int] | None:
        """(project, offset) of the private listing page that fails for good, if any."""
        if not (self.scenario.discover and self.night.listing_fail):
            return None
        rng = random.Random(f"{self.scenario.seed}:listing:{self.index}")
        project = rng.choice(self.own)
        return project, rng.choice(self.pages(project, "private"))

    def candidates(self) -> list[tuple[str, str]]:
        """Images of ours that faults may be scripted for, in a stable order."""
        return [(p, i) for p in self.own for i in self.dataset.image_ids(p)]

    def doomed(self) -> set[str]:
        rng = random.Random(f"{self.scenario.seed}:doomed:{self.index}")
        pool = self.candidates()
        return {i for _, i in rng.sample(pool, min(self.night.doomed, len(pool)))}

    def throttled(self) -> dict[str, int]:
        """Images that meet a burst of 429s: how many (always fewer than max_attempts)."""
        rng = random.Random(f"{self.scenario.seed}:throttled:{self.index}")
        doomed = self.doomed()
        pool = [i for _, i in self.candidates() if i not in doomed]
        chosen = rng.sample(pool, min(self.night.throttled, len(pool)))
        return {i: rng.randint(1, self.scenario.max_attempts - 1) for i in chosen}

    def fault_keys(self) -> list[str]:
        """Every fault key the collector's requests draw from: member calls and listing
        pages."""
        if not self.scenario.discover:
            return list(dict.fromkeys(i for _, i in self.input_rows() if i not in BAD_IDS))
        keys = [i for p in self.own for i in self.dataset.listed(p, "private")]
        for project in self.listed_projects():
            for image_type in ("private", "share"):
                keys += [f"list:{project}:{image_type}:{o}"
                         for o in self.pages(project, image_type)]
        return keys

    def script(self) -> dict[str, list[str]]:
        """The fake's per-key scripts: doomed images, 429 bursts, the failing listing page,
        the IAM hiccup, and an empty script (no random fault) for every key that would
        otherwise meet max_attempts retryable faults in a row within the attempts any
        sequence of runs can make."""
        script: dict[str, list[str]] = {i: list(DOOMED) for i in self.doomed()}
        script.update({i: ["throttle"] * k for i, k in self.throttled().items()})
        failing = self.failing_page()
        if failing is not None:
            script[f"list:{failing[0]}:private:{failing[1]}"] = list(DOOMED)
        if self.night.iam_hiccup:
            script["iam:/v3/auth/tokens"] = ["http_503", "throttle"]
        plan = FaultPlan(self.night.rates, None, self.fault_seed)
        if plan.rates:
            streak = self.scenario.max_attempts
            for key in self.fault_keys():
                if key in script:
                    continue
                run = 0
                for attempt in range(1, 16 * streak):
                    run = run + 1 if plan.outcome(key, attempt).value != "normal" else 0
                    if run >= streak:
                        script[key] = []
                        break
        return script


BAD_IDS = ("../etc", "has space", "a%2Fb", "x" * 65)


def dataset_of(scenario: Scenario, day: int) -> Dataset:
    """The fake's dataset on ``day`` (the same seed every night: the account evolves)."""
    return Dataset(seed=scenario.seed % 100_000 + 11, projects=scenario.projects,
                   images=scenario.images, day=day, with_doc_example=False,
                   locked_project=scenario.iam_projects)


def features(scenario: Scenario) -> set[str]:
    """The parts of the feature space a scenario exercises (to choose the suite's seeds)."""
    found = {"discover" if scenario.discover else "input", "bucket" if scenario.bucket
             else "folder", f"concurrency {scenario.concurrency}"}
    found |= {"iam projects"} if scenario.iam_projects else set()
    found |= {"forbidden"} if scenario.forbidden or scenario.iam_projects else set()
    found |= {"several projects"} if scenario.projects > 1 else set()
    found |= {"chunk 1-9" if scenario.chunk_images < 10 else
              "chunk 10-99" if scenario.chunk_images < 100 else "chunk 100+"}
    found |= {"listing above a page"} if scenario.discover and scenario.images > PAGE else set()
    found |= {"two nights"} if len(scenario.nights) > 1 else set()
    for night in scenario.nights:
        found |= {f"{night.shards} shards"} if night.shards else set()
        found |= {"other-date run"} if night.other_date else set()
        found |= {"premature publish"} if night.premature_publish else set()
        found |= {night.kill.signal, f"kill {night.kill.role}"} if night.kill else set()
        found |= {"5xx/resets"} if set(night.rates) - {"throttle"} else set()
        found |= {"429 storm"} if "throttle" in night.rates or night.throttled else set()
        found |= {"failed images"} if night.doomed else set()
        found |= {"too broken to publish"} if night.doomed > 10 else set()
        found |= {"listing fails"} if night.listing_fail else set()
        found |= {"iam hiccup"} if night.iam_hiccup else set()
        found |= {"backend down, then re-run"} if night.relapse else set()
    return found
