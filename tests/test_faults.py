"""The fault matrix of RELIABILITY.md over real sockets: each fault, what the user then finds."""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from collector.fake import Dataset, FakeCph, FastFakeCph
from tests.conftest import Outcome
from tests.invariants import check_published, visible_files

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]
DAY = dt.date(2026, 12, 1)


@pytest.fixture(params=[FakeCph, FastFakeCph], ids=["aiohttp", "fast"])
def front(request: pytest.FixtureRequest) -> type[FakeCph | FastFakeCph]:
    """Both fronts of the fake server must behave the same."""
    return request.param  # type: ignore[no-any-return]


# script for the first image -> (status, attempts, error_code of the row)
MATRIX = {
    "5xx_twice_then_ok": (["http_503", "http_502"], "ok", 3, None),
    "429_twice_then_ok": (["throttle", "throttle"], "ok", 3, None),
    "cps_0003_is_retried": (["cps_0003"], "ok", 2, None),
    "reset_before_headers": (["reset_before_headers"], "ok", 2, None),
    "reset_mid_body": (["reset_mid_body"], "ok", 2, None),
    "short_body": (["short_body"], "ok", 2, None),
    "html_502_is_retried": (["html_502"], "ok", 2, None),
    "trickle_under_read_timeout": (["trickle"], "ok", 1, None),
    "stall_times_out_then_ok": (["stall"], "ok", 2, None),
    "truncated_json": (["truncated_json"], "failed", 1, "bad_body"),
    "wrong_json_types": (["wrong_types"], "failed", 1, "bad_body"),
    "html_with_200": (["html_200"], "failed", 1, "bad_body"),
    "endless_body": (["huge_body"], "failed", 1, "body_too_large"),
    "paging_loop": (["paging_loop", "paging_loop"], "failed", 2, "paging_loop"),
    "interim_1xx_is_skipped": (["interim", "interim"], "ok", 1, None),
    "huge_header_is_retried": (["huge_header"], "ok", 2, None),
    "endless_header_is_retried": (["endless_header"], "ok", 2, None),
    "redirect_is_not_followed": (["redirect"], "failed", 1, "redirect"),
    "persistent_500": (["http_500"] * 9, "failed", 4, "CPS.0003"),
    "persistent_429": (["throttle"] * 9, "failed", 4, "APIGW.0308"),
    "not_found_once": (["not_found"], "not_found", 1, "CPS.0030"),
    "forbidden_once": (["forbidden"], "forbidden", 1, "CPS.0001"),
}


REAL_TIME = {"trickle_under_read_timeout", "stall_times_out_then_ok"}  # they wait for timeouts


@pytest.mark.parametrize("case", [
    pytest.param(case, id=name, marks=[pytest.mark.e2e] if name in REAL_TIME else [])
    for name, case in MATRIX.items()])
async def test_fault(case: tuple[list[str], str, int, str | None], fake_factory: Factory,
                     collect: Collect) -> None:
    script, status, attempts, code = case
    dataset = Dataset(seed=21, images=8, empty_share=0.0)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, script={victim: script}, stall_seconds=5,
                              trickle_delay=0.05, huge_body_bytes=4 << 20)
    out = await collect(fake, dataset.image_ids(), max_attempts=4, read_timeout=0.5,
                        max_body_bytes=65_536)

    row = out.statuses()[victim]
    assert (row["status"], row["attempts"], row["error_code"]) == (status, attempts, code)
    assert fake.attempts(victim) == attempts  # the server saw exactly that many calls
    others = [r for i, r in out.statuses().items() if i != victim]
    assert {r["status"] for r in others} == {"ok"}  # one sick image harms no other
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset, fake)
    assert out.record.exit_code == (0 if status in ("ok", "not_found") else 1)


async def test_retry_after_is_honoured_but_clamped(fake_factory: Factory,
                                                   collect: Collect) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    dataset = Dataset(seed=2, images=2)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, script={victim: ["throttle", "throttle"]},
                              retry_after="120")
    out = await collect(fake, dataset.image_ids(), sleep=record, retry_after_cap=7)
    assert waits == [7, 7]
    assert out.statuses()[victim]["status"] == "ok"


async def test_rejected_credentials_stop_the_run_with_nothing_published(
        fake: FakeCph, collect: Collect) -> None:
    out = await collect(fake, fake.dataset.image_ids(), token="not-the-token")
    assert out.error is not None
    assert out.record.exit_code == 3
    assert "credentials rejected" in str(out.error) and "APIGW.0301" in str(out.error)
    assert out.record.status == "fatal"
    assert not visible_files(out.output, "image_status")


async def test_a_refused_endpoint_fails_fast_with_exit_3(collect: Collect) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = await collect(None, [f"img{i}" for i in range(200)], endpoint=f"http://127.0.0.1:{port}",
                        fail_fast_after=10)
    assert out.error is not None and out.record.exit_code == 3
    assert "cannot connect" in str(out.error)
    assert out.record.requests < 100  # it did not try every ID five times


async def test_a_wrong_path_everywhere_is_a_configuration_error(
        fake: FakeCph, collect: Collect) -> None:
    """The gateway's 404 APIGW.0101 for every request means the endpoint is wrong."""
    out = await collect(fake, ["a1", "a2", "a3"], endpoint=fake.url + "/not-cph")
    assert out.error is not None and out.record.exit_code == 3
    assert str(out.error) == (f"endpoint {fake.url}/not-cph: none of 3 requests was answered as "
                              "the CPH API answers (last: HTTP 404 APIGW.0101); check --endpoint")


async def test_the_retry_budget_stops_a_sick_api_from_being_hammered(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=4, images=300)
    fake = await fake_factory(dataset, fault_rates={"http_503": 1.0})
    out = await collect(fake, dataset.image_ids(), max_attempts=5, retry_budget=0.0)
    assert out.record.retries == 100  # the initial budget, nothing earned back
    assert {r["status"] for r in out.statuses().values()} == {"failed"}
    assert out.record.exit_code == 1


@pytest.mark.e2e
async def test_limits_hold_during_retries(fake_factory: Factory, collect: Collect) -> None:
    """I8 and I9: the rate and the concurrency hold while a fifth of the requests fail."""
    dataset = Dataset(seed=14, images=500)
    fake = await fake_factory(dataset, latency=0.004, rate_limit=2000,  # 429s say 2000/s
                              fault_rates={"http_503": 0.1, "reset_before_headers": 0.05,
                                           "throttle": 0.05})
    out = await collect(fake, dataset.image_ids(), rate_limit=500, concurrency=8,
                        max_attempts=4, backoff_base=0.01)
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset,
                    fake)
    assert fake.max_in_flight <= 8
    times = sorted(e.t for e in fake.log)
    # the limiter's contract (limiter.py): a second admits R; 100 ms at most two windows of R/10
    for width, cap in ((1.0, 500 * 1.05 + 1), (0.1, 2 * 50)):
        busiest = max(bisect.bisect_right(times, t + width - 1e-9) - i
                      for i, t in enumerate(times))
        assert busiest <= cap, (width, busiest)
    rows = out.statuses().values()
    assert max(r["attempts"] for r in rows) <= 4
    assert out.record.retries == sum(r["attempts"] - 1 for r in rows)
    assert out.record.requests == len(fake.log)  # every request on the wire was counted


async def test_a_server_that_echoes_the_token_does_not_get_it_into_the_output(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.fake.core import SIMPLE_FAULTS
    from collector.fake.faults import Outcome
    from tests.conftest import TOKEN

    monkeypatch.setitem(SIMPLE_FAULTS, Outcome.FORBIDDEN,
                        (400, "CPS.0001", f"token {TOKEN} may not read this"))
    dataset = Dataset(seed=3, images=2)
    fake = await fake_factory(dataset, script={dataset.image_ids()[0]: ["forbidden"]})
    out = await collect(fake, dataset.image_ids())
    row = out.statuses()[dataset.image_ids()[0]]
    assert row["error_msg"] == "token *** may not read this"
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in out.output.rglob("*.parquet"))


async def test_interim_answers_on_every_request_never_give_an_image_another_images_answer(
        fake_factory: Factory, collect: Collect) -> None:
    """100, 102 and 103 before every answer, on connections that are reused (concurrency 2)."""
    dataset = Dataset(seed=22, images=60, empty_share=0.0)
    fake = await fake_factory(dataset, fault_rates={"interim": 1.0})
    out = await collect(fake, dataset.image_ids(), concurrency=2)
    assert {r["status"] for r in out.statuses().values()} == {"ok"}
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset, fake)
    assert len(fake.log) == 60  # one request per image: no answer was taken for another's


async def test_a_header_of_a_megabyte_fails_that_image_with_a_short_reason(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=23, images=5)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, script={victim: ["huge_header"] * 3})
    out = await collect(fake, dataset.image_ids(), max_attempts=3)
    row = out.statuses()[victim]
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "broken_body", 3)
    assert row["error_msg"].startswith("malformed HTTP response: ")
    assert len(row["error_msg"]) < 250
    assert {r["status"] for i, r in out.statuses().items() if i != victim} == {"ok"}


async def test_an_endless_paging_sequence_fails_the_image_at_max_pages(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=24, images=4)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, script={victim: ["endless_paging"] * 500})
    out = await collect(fake, dataset.image_ids(), max_pages=20)
    row = out.statuses()[victim]
    assert (row["status"], row["error_code"], row["error_msg"], row["member_count"]) == \
        ("failed", "paging_limit", "more than 20 pages (max_pages)", 0)
    assert fake.attempts(victim) == 20
    assert out.record.exit_code == 1


async def test_more_members_than_max_members_fails_the_image(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=25, images=4)
    victim = dataset.image_ids()[0]
    fake = await fake_factory(dataset, script={victim: ["endless_paging"] * 500})
    out = await collect(fake, dataset.image_ids(), max_members=55)
    row = out.statuses()[victim]
    assert (row["status"], row["error_code"], row["error_msg"]) == \
        ("failed", "too_many_members", "more than 55 members (max_members)")
    assert fake.attempts(victim) == 6  # ten members a page: the sixth page is one too many
    assert out.table("members").filter(pc.field("image_id") == victim).num_rows == 0


def _listing(output: Path) -> dict[str, str]:
    """Every file under ``output`` (the lock and the manifests aside) and its sha256."""
    return {str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(output.rglob("*")) if p.is_file()
            and p.parts[-2] != "runs" and p.name != ".cph-collector.lock"
            and not p.name.startswith("resume.json")}


@pytest.mark.parametrize("night", [
    pytest.param({"redirect": 1.0}, id="redirecting"),
    pytest.param({"stall": 1.0}, id="silent", marks=pytest.mark.e2e),
    pytest.param({"html_200": 1.0}, id="html")])
async def test_a_wrong_endpoint_never_replaces_a_good_snapshot(
        night: dict[str, float], fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=26, images=30)
    good = await fake_factory(dataset)
    first = await collect(good, dataset.image_ids(), snapshot_date=DAY)
    assert first.record.exit_code == 0
    before = _listing(first.output)

    wrong = await fake_factory(dataset, fault_rates=night, stall_seconds=5)
    out = await collect(wrong, dataset.image_ids(), snapshot_date=DAY, read_timeout=0.2,
                        request_timeout=0.5, fail_fast_after=2, max_attempts=2)
    assert out.record.exit_code == 3 and out.record.status == "fatal"
    assert out.error is not None and str(out.error).startswith(f"endpoint {wrong.url}: ")
    assert _listing(out.output) == before  # byte for byte
    assert not list((out.output / "_staging").rglob("*.parquet"))  # no failed rows to resume
    manifest = orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())
    assert (manifest["status"], manifest["exit_code"], manifest["files"]) == ("fatal", 3, [])


async def test_the_verdict_names_the_redirect(fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=27, images=3)
    fake = await fake_factory(dataset, fault_rates={"redirect": 1.0})
    out = await collect(fake, dataset.image_ids())
    assert str(out.error) == (
        f"endpoint {fake.url}: none of 3 requests was answered as the CPH API answers (last: "
        "HTTP 302 redirect to https://auth.example.invalid/login?service=cph); check --endpoint")


async def test_unknown_images_first_are_not_a_wrong_endpoint(
        fake_factory: Factory, collect: Collect) -> None:
    """A gateway that says 404 APIGW.0101 for unknown images, and 30 of them before any other."""
    dataset = Dataset(seed=28, images=20)
    fake = await fake_factory(dataset, unknown_image="404")
    unknown = [f"gone{i:03d}" for i in range(30)]
    out = await collect(fake, unknown + dataset.image_ids(), concurrency=1, fail_fast_after=20)
    assert out.error is None and out.record.exit_code == 0
    statuses = out.statuses()
    assert [statuses[i]["status"] for i in unknown] == ["not_found"] * 30
    assert {statuses[i]["status"] for i in dataset.image_ids()} == {"ok"}
