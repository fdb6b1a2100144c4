"""The fake CPH over real sockets: it answers as the documentation says the real API does."""

from __future__ import annotations

import asyncio
import bisect
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest

from collector.fake import Dataset, FakeCph, FastFakeCph, Outcome
from collector.fake.dataset import DOC_EXAMPLE_IMAGE, DOC_EXAMPLE_MEMBERS, DOC_EXAMPLE_PROJECT
from collector.fake.gateway import Gateway
from collector.fake.model import Exchange, ServerConfig
from tests.conftest import TOKEN

Factory = Callable[..., Awaitable[FakeCph]]


@pytest.fixture(params=[FakeCph, FastFakeCph], ids=["aiohttp", "fast"])
def front(request: pytest.FixtureRequest) -> type[FakeCph | FastFakeCph]:
    """Both fronts of the fake server must behave the same."""
    return request.param  # type: ignore[no-any-return]
ERROR_KEYS = {"request_id", "error_code", "error_msg"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-Auth-Token": TOKEN}) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    async with http.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, orjson.loads(await resp.read()), resp.headers.get("X-Request-Id", "")


def members_url(fake: FakeCph, project: str, image: str) -> str:
    return f"{fake.url}/v1/{project}/cloud-phone/images/{image}/members"


async def test_the_documented_example_round_trips(fake: FakeCph,
                                                  http: aiohttp.ClientSession) -> None:
    status, body, rid = await get(http, members_url(fake, DOC_EXAMPLE_PROJECT, DOC_EXAMPLE_IMAGE))
    assert status == 200 and len(rid) == 32
    assert body["members"] == list(DOC_EXAMPLE_MEMBERS)


async def test_paging_returns_every_member_exactly_once(fake_factory: Factory,
                                                        http: aiohttp.ClientSession) -> None:
    fake = await fake_factory(Dataset(seed=8, images=40, empty_share=0.0))
    project = fake.dataset.project_ids[0]
    for image in fake.dataset.image_ids():
        seen, marker = [], None
        while True:
            params = {"limit": "2", **({"marker": marker} if marker else {})}
            status, body, _ = await get(http, members_url(fake, project, image), params=params)
            assert status == 200 and len(body["members"]) <= 2
            seen += [m["member_id"] for m in body["members"]]
            marker = body["page_info"].get("next_marker")
            if not marker:
                break
        assert seen == [m["member_id"] for m in fake.dataset.members(image)]


async def test_the_older_api_answers_without_page_info(fake_factory: Factory,
                                                       http: aiohttp.ClientSession) -> None:
    fake = await fake_factory(paging=False)
    image = fake.dataset.image_ids()[0]
    _, body, _ = await get(http, members_url(fake, fake.dataset.project_ids[0], image),
                           params={"limit": "1"})
    assert set(body) == {"members"} and body["members"] == fake.dataset.members(image)


@pytest.mark.parametrize(("headers", "where", "status", "code", "msg"), [
    ({"X-Auth-Token": ""}, "image", 401, "APIGW.0301", "x-auth-token not found"),
    ({"X-Auth-Token": "wrong"}, "image", 401, "APIGW.0301", "verify token failed"),
    ({}, "unknown", 400, "CPS.0030", "Parameter: image_id is invalid."),
    ({}, "foreign", 400, "CPS.0001", "No permission to request resources."),
    ({}, "bad_limit", 400, "CPS.0002", "Parameter: limit is invalid."),
    ({}, "no_api", 404, "APIGW.0101", "The API does not exist"),
])
async def test_error_statuses_and_bodies_are_exactly_as_documented(
        fake: FakeCph, http: aiohttp.ClientSession, headers: dict[str, str], where: str,
        status: int, code: str, msg: str) -> None:
    project, image = fake.dataset.project_ids[0], fake.dataset.image_ids()[0]
    url, params = members_url(fake, project, image), {}
    if where == "unknown":
        url = members_url(fake, project, "0" * 32)
    elif where == "foreign":
        url = members_url(fake, "f" * 32, image)
    elif where == "bad_limit":
        params = {"limit": "101"}
    elif where == "no_api":
        url = f"{fake.url}/v2/{project}/cloud-phone/imagez"
    got_status, body, rid = await get(http, url, headers=headers, params=params)
    assert got_status == status
    assert set(body) == ERROR_KEYS
    assert body["error_code"] == code and msg in body["error_msg"]
    assert body["request_id"] == rid


async def test_unknown_images_can_answer_404(fake_factory: Factory,
                                             http: aiohttp.ClientSession) -> None:
    fake = await fake_factory(unknown_image="404")
    status, body, _ = await get(http, members_url(fake, fake.dataset.project_ids[0], "0" * 32))
    assert (status, body["error_code"]) == (404, "APIGW.0101")


def test_the_throttle_never_admits_more_than_n_in_any_window() -> None:
    """The gateway on its own (no sockets, no sleeping): bursts of 30, 0.1 s apart."""
    gateway = Gateway(ServerConfig(tokens=("t",), rate_limit=20, rate_window=0.25,
                                   retry_after="1"))
    answers = []
    for burst in range(6):
        for n in range(30):
            ex = Exchange(100.0 + burst * 0.1 + n * 1e-4, "GET", "/v1/p/x", f"r{burst}-{n}", 1)
            answers.append((ex.arrived, gateway.admit(ex, {}, {"x-auth-token": "t"}, b"")))
    throttled = [orjson.loads(a.body) for _, a in answers if a is not None]
    assert {a.status for _, a in answers if a is not None} == {429}
    assert len(throttled) == 180 - len(gateway.arrivals) and gateway.arrivals
    assert throttled[0]["error_code"] == "APIGW.0308"
    assert throttled[0]["error_msg"].endswith(
        "policy user over ratelimit,limit:20,time:0.25 second")
    assert all(a.retry_after == "1" for _, a in answers if a is not None)
    times = sorted(gateway.arrivals)
    busiest = max(bisect.bisect_right(times, t + 0.25 - 1e-9) - i for i, t in enumerate(times))
    assert busiest == 20


async def test_scripted_outcomes_happen_in_order_and_are_logged(
        fake_factory: Factory, http: aiohttp.ClientSession) -> None:
    dataset = Dataset(seed=1, images=3)
    image = dataset.image_ids()[1]
    fake = await fake_factory(dataset, script={image: ["throttle", "http_503", "cps_0003"]})
    url = members_url(fake, dataset.project_ids[0], image)
    statuses = [(await get(http, url))[0] for _ in range(4)]
    assert statuses == [429, 503, 400, 200]
    mine = [e for e in fake.log if e.image_id == image]
    assert [(e.attempt, e.outcome, e.status) for e in mine] == [
        (1, "throttle", 429), (2, "http_503", 503), (3, "cps_0003", 400), (4, "normal", 200)]
    assert fake.requested_images() == {image}


async def test_tokens_expire_after_a_number_of_requests(fake_factory: Factory,
                                                        http: aiohttp.ClientSession) -> None:
    fake = await fake_factory(token_max_requests=2)
    url = members_url(fake, fake.dataset.project_ids[0], fake.dataset.image_ids()[0])
    statuses = [(await get(http, url))[0] for _ in range(3)]
    assert statuses == [200, 200, 401]


async def test_list_images_pages_with_offset_limit_and_total(
        fake: FakeCph, http: aiohttp.ClientSession) -> None:
    project = fake.dataset.project_ids[0]
    url = f"{fake.url}/v1/{project}/cloud-phone/images"
    seen, offset = [], 0
    while True:
        status, body, _ = await get(http, url, params={"offset": str(offset), "limit": "20"})
        assert status == 200 and body["total"] == 50
        seen += [info["image_id"] for info in body["image_infos"]]
        offset += 20
        if offset >= body["total"]:
            break
    assert seen == fake.dataset.image_ids(project)
    status, body, _ = await get(http, url, params={"limit": "0"})
    assert (status, body["error_code"]) == (400, "CPS.0002")


async def test_the_log_records_concurrency(fake_factory: Factory,
                                           http: aiohttp.ClientSession) -> None:
    fake = await fake_factory(latency=0.1)
    url = members_url(fake, fake.dataset.project_ids[0], fake.dataset.image_ids()[0])
    await asyncio.gather(*(get(http, url) for _ in range(8)))
    assert fake.max_in_flight == 8
    assert max(e.in_flight for e in fake.log) == 8


def test_the_dataset_is_deterministic() -> None:
    one, two = Dataset(seed=5, projects=2, images=30), Dataset(seed=5, projects=2, images=30)
    assert one.image_ids() == two.image_ids()
    assert [one.members(i) for i in one.image_ids()] == [two.members(i) for i in two.image_ids()]
    assert all(len(one.members(i)) <= 10 for i in one.image_ids())
    assert any(not one.members(i) for i in one.image_ids())
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in one.image_ids())  # CPH's ID shape
    assert Dataset(seed=6, images=30).image_ids() != one.image_ids()[:30]


@pytest.mark.parametrize(("tamper", "message"), [
    (None, None),
    ("path", "verify aksk signature fail"),
    ("query", "verify aksk signature fail"),
    ("date", "check x-sdk-date"),
    ("key", "ak not exist"),
])
async def test_the_gateway_checks_aksk_signatures(fake_factory: Factory, tamper: str | None,
                                                  message: str | None) -> None:
    import datetime as dt

    from yarl import URL

    from collector.auth import AkSkAuth
    from collector.secrets import Secret

    fake = await fake_factory(access_keys={"AKTEST": "sk-1234567"}, tokens=())
    project, image = fake.dataset.project_ids[0], fake.dataset.image_ids()[0]
    signed_url = URL(members_url(fake, project, image) + "?limit=5", encoded=True)
    clock = (lambda: dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)) if tamper == "date" \
        else (lambda: dt.datetime.now(dt.UTC))
    auth = AkSkAuth("AKOTHER" if tamper == "key" else "AKTEST", Secret("sk-1234567"), clock=clock)
    headers, _ = await auth.headers("GET", str(signed_url), project)
    sent = {"path": members_url(fake, project, fake.dataset.image_ids()[1]) + "?limit=5",
            "query": members_url(fake, project, image) + "?limit=6"}.get(tamper or "",
                                                                         str(signed_url))
    async with aiohttp.ClientSession() as session, \
            session.get(URL(sent, encoded=True), headers=headers) as resp:
        status, body = resp.status, orjson.loads(await resp.read())
    if message is None:
        assert status == 200
    else:
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        assert message in body["error_msg"]


async def test_iam_issues_expiring_project_tokens(fake_factory: Factory) -> None:
    fake = await fake_factory(iam_users={"acct/alice": "pw"}, iam_token_ttl=120)
    project = fake.dataset.project_ids[0]
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "password": "pw", "domain": {"name": "acct"}}}},
        "scope": {"project": {"id": project}}}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.url}/v3/auth/tokens?nocatalog=true",
                                data=orjson.dumps(body)) as resp:
            assert resp.status == 201
            token = resp.headers["X-Subject-Token"]
            doc = orjson.loads(await resp.read())
        assert doc["token"]["project"] == {"id": project}
        assert doc["token"]["expires_at"].endswith("Z")
        status, _, _ = await get(session, members_url(fake, project, fake.dataset.image_ids()[0]),
                                 headers={"X-Auth-Token": token})
        assert status == 200


def test_long_tailed_latency_has_the_asked_p50_and_p99() -> None:
    from collector.fake import ServerConfig

    fake = FakeCph(Dataset(images=1), ServerConfig(latency_p50=0.2, latency_p99=2.0))
    samples = sorted(fake.latency_sample() for _ in range(20_000))
    assert samples[10_000] == pytest.approx(0.2, rel=0.05)
    assert samples[19_800] == pytest.approx(2.0, rel=0.1)


async def test_list_images_lists_own_and_shared_images_by_type(
        fake: FakeCph, http: aiohttp.ClientSession) -> None:
    project = fake.dataset.project_ids[0]
    url = f"{fake.url}/v1/{project}/cloud-phone/images"
    _, own, _ = await get(http, url, params={"image_type": "private"})
    _, shared, _ = await get(http, url, params={"image_type": "share"})
    assert [i["image_id"] for i in own["image_infos"]] == fake.dataset.image_ids(project)
    assert {i["image_type"] for i in own["image_infos"]} == {"private"}
    assert all(i["project_id"] == project and "src_project_id" not in i
               for i in own["image_infos"])
    assert shared["total"] == 3 and all(
        i["image_type"] == "share" and len(i["src_project_id"]) == 32 and "project_id" not in i
        for i in shared["image_infos"])
    status, body, _ = await get(http, url, params={"image_type": "public"})
    assert (status, body["error_code"]) == (400, "CPS.0002")


async def test_a_listing_page_can_be_scripted_to_fail(fake_factory: Factory,
                                                      http: aiohttp.ClientSession) -> None:
    fake = await fake_factory()
    project = fake.dataset.project_ids[0]
    fake.cph.faults.script[f"list:{project}:private:0"] = [Outcome.HTTP_503]
    url = f"{fake.url}/v1/{project}/cloud-phone/images"
    assert [(await get(http, url, params={"offset": "0"}))[0] for _ in range(2)] == [503, 200]


async def test_iam_lists_the_accounts_projects_to_a_caller_it_knows(
        fake: FakeCph, http: aiohttp.ClientSession) -> None:
    status, body, _ = await get(http, f"{fake.url}/v3/auth/projects")
    assert status == 200
    names = {p["name"] for p in body["projects"]}
    assert names == {"cn-north-4", "cn-north-4_1", "cn-north-4_locked", "cn-east-3"}
    async with aiohttp.ClientSession() as anonymous, \
            anonymous.get(f"{fake.url}/v3/projects") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == 401


async def test_the_account_changes_from_day_to_day_with_a_ground_truth(
        fake_factory: Factory, http: aiohttp.ClientSession) -> None:
    base, later = Dataset(seed=7, images=600), Dataset(seed=7, images=600, day=1)
    truth = later.changes()
    assert {change for *_, change in truth} == {"added", "removed", "updated", "image_gone"}
    gone = {image for _, image, _, change in truth if change == "image_gone"}
    assert gone and not gone & set(later.image_ids())
    assert set(later.image_ids()) - set(base.image_ids())  # new images appeared
    fake = await fake_factory(later)
    project = later.project_ids[0]
    status, body, _ = await get(http, members_url(fake, project, sorted(gone)[0]))
    assert (status, body["error_code"]) == (400, "CPS.0030")  # deleted: not found on day 1
