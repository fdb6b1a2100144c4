"""One seed, end to end: draw, act out every night, and hold what a reader finds against the
oracle. The first violated invariant is the seed's verdict."""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.wholerun import oracle
from tests.wholerun.draw import BAD_IDS, OTHER_DATE, Scenario, draw
from tests.wholerun.observe import Reader, metrics
from tests.wholerun.runner import Done, NightRun, Output, act_out


class Violation(AssertionError):
    """An invariant that does not hold, named like RELIABILITY.md's."""


@dataclass
class Result:
    """A seed's verdict: the first violation (None: every invariant held)."""
    seed: int
    scenario: Scenario
    violation: str | None
    seconds: float
    log: list[str] = field(default_factory=list)  # each command's summary line

    @property
    def replay(self) -> str:
        return f"python bench/wholerun.py --seed {self.seed}"

    def report(self) -> str:
        head = f"seed {self.seed}: {'ok' if self.violation is None else 'FAILED'} " \
               f"({self.seconds:.1f} s)"
        if self.violation is None:
            return head
        return "\n".join([head, f"  replay: {self.replay}", f"  first violation: "
                          f"{self.violation}", "  configuration: " + self.scenario.describe()
                          .replace("\n", "\n  "), "  commands:",
                          *(f"    {line}" for line in self.log)])


def run_seed(seed: int, keep: Path | None = None) -> Result:
    """Draw ``seed``'s scenario, run it, check it. ``keep``: leave the work folder there."""
    scenario = draw(seed)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"wholerun-{seed}-", dir=keep))
    log: list[str] = []
    violation = None
    try:
        output = Output(scenario, work)
        expected: list[oracle.Night] = []
        for index in range(len(scenario.nights)):
            done = act_out(scenario, index, output, work)
            log += [d.summary() for d in done.done]
            expected.append(oracle.night(scenario, index))
            check_night(scenario, index, expected, done, output.reader())
    except Violation as exc:
        violation = str(exc)
    except Exception:
        violation = "the checker itself failed: " + traceback.format_exc(limit=4)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return Result(seed, scenario, violation, time.monotonic() - began, log)


def require(ok: bool, what: str) -> None:
    if not ok:
        raise Violation(what)


def check_night(scenario: Scenario, index: int, expected: list[oracle.Night], run: NightRun,
                reader: Reader) -> None:
    """Every invariant of one night, in the order a user would notice them."""
    night, truth = scenario.nights[index], expected[index]
    date = night.date
    if not night.shards:
        final = _final(run, "run")
        _exit(final, truth.exit_code, "run")
        sick = run.last("sick")
        if sick is not None:
            require(sick.code in oracle.sick_codes(), f"I6 run against the backend down: exit "
                    f"{sick.code}, expected one of {sorted(oracle.sick_codes())}: "
                    f"{sick.summary()}")
    else:
        if scenario.discover:
            _exit(_final(run, "plan"), oracle.plan_code(truth), "plan")
        for k in range(1, night.shards + 1):
            name = f"shard {k}/{night.shards}"
            _exit(_final(run, "shard", name), oracle.shard_code(truth, k, night.shards), name)
        early = run.last("premature")
        if early is not None:
            require(early.code in (2, 3), f"I6 premature publish (before the last shard ran): "
                    f"exit {early.code}, expected 3 (nothing published)")
        final = _final(run, "publish")
        allowed = {truth.exit_code} | ({0} if republished(final) else set())
        require(final.code in allowed, f"I6 publish --shards {night.shards}: exit "
                f"{final.code}, expected {truth.exit_code} (what one unsharded run gives): "
                f"{final.summary()}")
        other = run.last("other")
        if other is not None:
            _exit(other, truth.exit_code, f"run {OTHER_DATE}")
            _snapshot(reader, OTHER_DATE, truth, other, f"run {OTHER_DATE}", scenario)
    _snapshot(reader, date, truth, final, f"night {index + 1} ({date})", scenario)
    if index == 1 and truth.publishes and expected[0].publishes:
        got = {(r["project_id"], r["image_id"], r["member_id"], r["change"])
               for r in reader.rows("changes", date) or []}
        want = oracle.changes(scenario, expected[0], truth)
        _same(got, want, f"change table of {date} vs the fake's ground truth restricted to "
                         "comparable images")
    invalid = {i for i in BAD_IDS}
    require(not invalid & run.requested, "I2 an invalid ID was requested")
    if not night.shards and truth.publishes:
        _metrics(final, reader)


def republished(done: Done) -> bool:
    """A publish that found the date already published (README: harmless, exit 0)."""
    return "already published" in done.stdout + done.stderr


def _final(run: NightRun, role: str, name: str | None = None) -> Done:
    found = run.last(role, name)
    require(found is not None, f"{name or role}: never ran")
    assert found is not None
    require(not found.killed, f"{found.step.name}: still signalled after its re-runs")
    return found


def _exit(done: Done, want: int, what: str) -> None:
    require(done.code == want, f"I6 {what}: exit {done.code}, expected {want}: {done.summary()}")


def _snapshot(reader: Reader, date: str, truth: oracle.Night, final: Done, what: str,
              scenario: Scenario) -> None:
    """I1 exactly once, members = truth, listings, inventory, I5 manifest = files."""
    status = reader.rows("image_status", date)
    if not truth.publishes:
        require(status is None, f"I15 {what}: expected nothing published (exit "
                f"{truth.exit_code}), found {len(status or [])} image_status rows")
        return
    require(status is not None, f"I1 {what}: no image_status published")
    assert status is not None
    keyed = Counter((r["project_id"], r["image_id"]) for r in status
                    if r["status"] != "invalid_id")
    twice = [k for k, n in keyed.items() if n > 1]
    require(not twice, f"I1 {what}: {len(twice)} images appear more than once in image_status "
            f"(e.g. {twice[:2]})")
    missing = set(truth.statuses) - set(keyed)
    extra = set(keyed) - set(truth.statuses)
    require(not missing and not extra, f"I1 {what}: {len(missing)} of {len(truth.statuses)} "
            f"images missing from image_status (e.g. {sorted(missing)[:2]}), {len(extra)} "
            f"not in the input (e.g. {sorted(extra)[:2]})")
    invalid = sum(r["status"] == "invalid_id" for r in status)
    require(invalid == truth.invalid, f"I1 {what}: {invalid} invalid_id rows, expected "
            f"{truth.invalid}")
    got = {(r["project_id"], r["image_id"]): r["status"] for r in status
           if r["status"] != "invalid_id"}
    wrong = {k: (got[k], s) for k, s in truth.statuses.items() if got[k] != s}
    require(not wrong, f"I1 {what}: {len(wrong)} images with the wrong status (got, expected), "
            f"e.g. {dict(list(wrong.items())[:3])}; all: {dict(Counter(wrong.values()))}")
    members = reader.rows("members", date) or []
    shares: dict[tuple[str, str], set[tuple[str, int, int]]] = {}
    for m in members:
        shares.setdefault((m["project_id"], m["image_id"]), set()).add(
            (m["member_id"], m["create_time"], m["update_time"]))
    require(len(members) == sum(len(v) for v in shares.values()),
            f"I1 {what}: a member row appears twice")
    require(set(shares) <= set(truth.members), f"I1 {what}: member rows of images that are "
            f"not ok: {sorted(set(shares) - set(truth.members))[:2]}")
    counts = {(r["project_id"], r["image_id"]): r["member_count"] for r in status}
    for key, want in truth.members.items():
        require(shares.get(key, set()) == want, f"I1 {what}: members of {key} differ from the "
                f"truth: {len(shares.get(key, set()))} rows, expected {len(want)}")
        require(counts[key] == len(want), f"I1 {what}: member_count of {key} is "
                f"{counts[key]}, expected {len(want)}")
    if scenario.discover:
        _inventory(reader, date, truth, what)
    _manifest(reader, date, final, status, members, what, scenario)


def _inventory(reader: Reader, date: str, truth: oracle.Night, what: str) -> None:
    ledger = reader.rows("listing_status", date) or []
    got = {(r["project_id"], r["image_type"]): r["status"] for r in ledger}
    _same(set(got.items()), set(truth.listings.items()), f"listing_status of {what}")
    counted = {(r["project_id"], r["image_type"]): r["images"] for r in ledger}
    require(counted == truth.listed, f"listing_status of {what}: images per listing "
            f"{counted}, expected {truth.listed}")
    rows = reader.rows("images", date) or []
    keys = Counter((r["project_id"], r["image_id"], r["image_type"]) for r in rows)
    require(all(n == 1 for n in keys.values()), f"I1 {what}: an image appears twice in images")
    _same(set(keys), set(truth.images), f"images (the inventory) of {what}")


def _manifest(reader: Reader, date: str, final: Done, status: list[dict[str, Any]],
              members: list[dict[str, Any]], what: str, scenario: Scenario) -> None:
    """I5: the publishing run's manifest says what its files hold."""
    again = republished(final)  # its work was done: the manifest is the earlier publish's
    run_id = final.run_id
    require(run_id is not None or again, f"{what}: no summary line naming the run: "
            f"{final.summary()}")
    doc = reader.latest_finished(date) if again or run_id is None else reader.manifest(run_id)
    require(doc is not None, f"I4 {what}: no manifest of the run that published {date}")
    assert doc is not None
    require(doc.get("status") == "finished" and doc.get("snapshot_date") == date,
            f"I4 {what}: manifest says {doc.get('status')} for {doc.get('snapshot_date')}")
    counts = doc.get("counts", {})
    by = Counter(r["status"] for r in status)
    want = {"status_rows": len(status), "member_rows": len(members), "ok": by["ok"],
            "not_found": by["not_found"], "forbidden": by["forbidden"], "failed": by["failed"],
            "invalid": by["invalid_id"]}
    if scenario.discover:
        ledger = reader.rows("listing_status", date) or []
        states = Counter(r["status"] for r in ledger)
        want |= {"listings": len(ledger), "listings_failed": states["failed"],
                 "listings_forbidden": states["forbidden"],
                 "images_listed": len(reader.rows("images", date) or [])}
    have = {k: counts.get(k) for k in want}
    require(have == want, f"I5 {what}: manifest counts {have} but its files hold {want}")
    require(again or doc.get("exit_code") == final.code, f"I5 {what}: manifest exit_code "
            f"{doc.get('exit_code')}, the process exited {final.code}")


def _metrics(final: Done, reader: Reader) -> None:
    """The metrics file says what the manifest says."""
    if final.step.metrics is None or final.run_id is None:
        return
    samples = metrics(final.step.metrics)
    require(samples is not None, f"metrics: {final.step.metrics.name} was not written")
    assert samples is not None
    doc = reader.manifest(final.run_id) or {}
    counts = doc.get("counts", {})
    prefix = "cph_collector_"
    got = {s: samples.get((prefix + "images", (("status", s),))) for s in
           ("ok", "not_found", "forbidden", "failed", "invalid_id")}
    want = {s: float(counts.get("invalid" if s == "invalid_id" else s, 0)) for s in got}
    require(got == want, f"metrics: images {got}, the manifest says {want}")
    rows = samples.get((prefix + "member_rows", ()))
    require(rows == counts.get("member_rows"), f"metrics: member_rows {rows}, the manifest "
            f"says {counts.get('member_rows')}")
    code = samples.get((prefix + "exit_code", ()))
    require(code == doc.get("exit_code"), f"metrics: exit_code {code}, the manifest says "
            f"{doc.get('exit_code')}")
    if "listings" in counts:
        listed = {s: samples.get((prefix + "listings", (("status", s),)))
                  for s in ("ok", "failed", "forbidden")}
        bad = counts.get("listings_failed", 0) + counts.get("listings_forbidden", 0)
        want_l = {"ok": float(counts["listings"] - bad),
                  "failed": float(counts.get("listings_failed", 0)),
                  "forbidden": float(counts.get("listings_forbidden", 0))}
        require(listed == want_l, f"metrics: listings {listed}, the manifest says {want_l}")


def _same(got: set[Any], want: set[Any], what: str) -> None:
    missing, extra = want - got, got - want
    require(not missing and not extra, f"{what}: {len(missing)} missing (e.g. "
            f"{sorted(missing)[:2]}), {len(extra)} unexpected (e.g. {sorted(extra)[:2]})")
