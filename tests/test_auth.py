"""Credentials: each method collects against the fake server, renews as promised, fails clearly,
and our AK/SK signatures equal the official SDK's for arbitrary requests."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.auth import AkSkAuth, IamTokenAuth, Post, TokenAuth, build_auth
from collector.config import Settings
from collector.errors import UsageError
from collector.fake import Dataset, FakeCph
from collector.secrets import Secret
from collector.signer import sign
from tests.conftest import Outcome
from tests.invariants import check_published

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]
PASSWORD, SK = "pw-Secret-123!", "sk-Secret-4567890"

# -- the official signer, cross-checked -------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=12)
SEGMENT = st.text(alphabet="abcXYZ019-_.~ %+=&?:@é/", min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       segments=st.lists(SEGMENT, min_size=1, max_size=4),
       query=st.lists(st.tuples(TEXT.filter(bool), TEXT), max_size=4),
       port=st.sampled_from(["", ":443", ":8080"]),
       body=st.one_of(st.just(b""), st.binary(max_size=40)),
       json_type=st.booleans())
def test_our_signature_equals_the_official_sdk_s(method: str, segments: list[str],
                                                 query: list[tuple[str, str]], port: str,
                                                 body: bytes, json_type: bool) -> None:
    path = "/" + "/".join(segments)
    headers = {"Host": f"cph.cn-north-4.myhuaweicloud.com{port}",
               "X-Sdk-Date": "20261128T101500Z", "X-Project-Id": "0123abc"}
    if json_type:
        headers["Content-Type"] = "application/json"
    ours = sign("AKEXAMPLE", SK, method, path, query, headers, body)
    request = SdkRequest(method=method, schema="https", host=headers["Host"], resource_path=path,
                         query_params=list(query), header_params=dict(headers), body=body)
    theirs = Signer(BasicCredentials("AKEXAMPLE", SK)).sign(request).header_params
    assert ours == theirs["Authorization"]


# -- each method against the fake server ------------------------------------------------------


async def test_aksk_signs_every_request_and_the_gateway_accepts_them(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=41, images=120)
    fake = await fake_factory(dataset, access_keys={"AKTEST": SK}, tokens=(),
                              fault_rates={"http_503": 0.1})
    out = await collect(fake, dataset.image_ids(), auth=AkSkAuth("AKTEST", Secret(SK)))
    assert out.record.exit_code == 0 and out.record.retries > 0  # retries were signed too
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset,
                    fake)


async def test_a_wrong_secret_key_stops_the_run_naming_the_method(
        fake_factory: Factory, collect: Collect) -> None:
    fake = await fake_factory(access_keys={"AKTEST": SK}, tokens=())
    out = await collect(fake, fake.dataset.image_ids(), auth=AkSkAuth("AKTEST", Secret("wrong-sk")))
    assert out.record.exit_code == 3 and out.error is not None
    assert "verify aksk signature fail" in str(out.error) and "AK/SK" in str(out.error)


async def test_a_skewed_clock_is_named_as_the_cause(fake_factory: Factory,
                                                    collect: Collect) -> None:
    fake = await fake_factory(access_keys={"AKTEST": SK}, tokens=())
    late = AkSkAuth("AKTEST", Secret(SK),
                    clock=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    out = await collect(fake, fake.dataset.image_ids(), auth=late)
    assert out.error is not None
    assert "check x-sdk-date" in str(out.error)
    assert "clock is 60 minutes off the server's" in str(out.error)


def iam(fake: FakeCph) -> Callable[[Post], IamTokenAuth]:
    """IAM password tokens from the fake, through the run's own pool (``post``)."""
    return lambda post: IamTokenAuth(fake.url, post, user="alice", domain="acct",
                                     password=Secret(PASSWORD))


async def no_post(url: str, body: bytes,
                  headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    raise AssertionError("no IAM request expected")


async def test_an_iam_token_rejected_mid_run_is_renewed_exactly_once_for_all_workers(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=42, images=300)
    fake = await fake_factory(dataset, iam_users={"acct/alice": PASSWORD}, tokens=(),
                              token_max_requests=200)  # the token dies after 200 requests
    out = await collect(fake, dataset.image_ids(), auth=iam(fake), concurrency=16)
    assert out.record.exit_code == 0
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset,
                    fake)
    token_requests = [e for e in fake.log if e.path == "/v3/auth/tokens"]
    assert len(token_requests) == 2  # the first token, and one renewal after the 401s
    assert out.record.auth["token_requests"] == 2


async def test_every_401_in_a_run_gets_its_own_single_renewal(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=45, images=300)
    fake = await fake_factory(dataset, iam_users={"acct/alice": PASSWORD}, tokens=(),
                              token_max_requests=50)  # every token dies after 50 requests
    out = await collect(fake, dataset.image_ids(), auth=iam(fake), concurrency=16)
    assert out.record.exit_code == 0
    check_published(out, {(dataset.project_ids[0], i) for i in dataset.image_ids()}, dataset,
                    fake)
    assert out.record.auth["token_requests"] == 6  # 300 answers, 50 a token, one IAM call each
    assert len([e for e in fake.log if e.path == "/v3/auth/tokens"]) == 6


async def test_renewed_tokens_rejected_twice_in_a_row_end_the_run(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=46, images=40)
    fake = await fake_factory(dataset, iam_users={"acct/alice": PASSWORD}, tokens=(),
                              token_max_requests=0)  # IAM issues tokens CPH never takes
    out = await collect(fake, dataset.image_ids(), auth=iam(fake), concurrency=4)
    assert out.record.exit_code == 3 and out.error is not None
    assert str(out.error).startswith("credentials rejected: HTTP 401 APIGW.0301")
    assert out.record.auth["token_requests"] == 3  # the first token and two renewals, no loop


async def test_an_iam_token_is_renewed_before_it_expires() -> None:
    now = [0.0]

    class Stub(IamTokenAuth):
        async def _request(self, project_id: str) -> tuple[Secret, float]:
            self.requests += 1
            return Secret(f"token-{self.requests}"), 3600.0

    auth = Stub("https://iam.example", no_post, clock=lambda: now[0])
    url = "https://cph.example/v1/p/x"
    assert (await auth.headers("GET", url, "p"))[0] == {"X-Auth-Token": "token-1"}
    now[0] = 3600 - 301  # more than five minutes left: keep it
    assert (await auth.headers("GET", url, "p"))[0] == {"X-Auth-Token": "token-1"}
    now[0] = 3600 - 299  # under five minutes left: renew first
    assert (await auth.headers("GET", url, "p"))[0] == {"X-Auth-Token": "token-2"}
    assert auth.requests == 2


async def test_an_agency_token_is_assumed_with_the_user_s_own_token(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=43, images=40)
    fake = await fake_factory(dataset, iam_users={"acct/alice": PASSWORD},
                              agencies={"owner/cph-reader"}, tokens=())
    def agency(post: Post) -> IamTokenAuth:
        return IamTokenAuth(fake.url, post, agency=("owner", "cph-reader"), base=iam(fake)(post))

    out = await collect(fake, dataset.image_ids(), auth=agency)
    assert out.record.exit_code == 0
    assert len([e for e in fake.log if e.path == "/v3/auth/tokens"]) == 2  # base + assume_role


@pytest.mark.parametrize(("user", "project", "message"), [
    ("mallory", None, "HTTP 401 The username or password is wrong.; check CPH_IAM_PASSWORD"),
    ("alice", "f" * 32, "HTTP 400 Could not find project"),
])
async def test_iam_refusals_stop_the_run_with_one_clear_line(
        fake_factory: Factory, collect: Collect, user: str, project: str | None,
        message: str) -> None:
    fake = await fake_factory(iam_users={"acct/alice": PASSWORD}, tokens=())
    def auth(post: Post) -> IamTokenAuth:
        return IamTokenAuth(fake.url, post, user=user, domain="acct", password=Secret(PASSWORD))

    out = await collect(fake, ["abc"], auth=auth, project_id=project or fake.dataset.project_ids[0])
    assert out.record.exit_code == 3 and out.error is not None
    assert message in str(out.error) and "\n" not in str(out.error)
    assert PASSWORD not in str(out.error)


async def test_a_fixed_token_that_expires_mid_run_ends_it_without_a_retry_loop(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=44, images=60)
    fake = await fake_factory(dataset, token_max_requests=10)
    out = await collect(fake, dataset.image_ids(), concurrency=1)
    assert out.record.exit_code == 3 and out.error is not None
    assert str(out.error).startswith("credentials rejected: HTTP 401 APIGW.0301")
    assert "check the X-Auth-Token from CPH_AUTH_TOKEN or token_file" in str(out.error)
    assert out.record.requests == 11  # ten answered, one refused, and no renewal attempt


def test_a_secret_is_redacted_in_every_encoding_a_manifest_or_log_may_use() -> None:
    from collector.manifest import RunRecord

    password = 'pa"ss\\word/ü+1'
    Secret(password)
    record = RunRecord("r1", dt.date(2026, 12, 1), dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
                       "ids.txt", {}, error=f"IAM said: bad password {password}; sent {password}")
    text = record.to_json().decode()
    for form in (password, orjson.dumps(password).decode()[1:-1],
                 json.dumps(password)[1:-1], quote(password, safe="")):
        assert form not in text
    assert text.count("***") >= 2


# -- choosing the method --------------------------------------------------------------------


@pytest.mark.parametrize(("env", "kind"), [
    ({"HUAWEICLOUD_SDK_AK": "AK", "HUAWEICLOUD_SDK_SK": "SK", "CPH_AUTH_TOKEN": "t"}, AkSkAuth),
    ({"CPH_IAM_PASSWORD": "pw", "CPH_AUTH_TOKEN": "t"}, IamTokenAuth),
    ({"CPH_AUTH_TOKEN": "token-1234"}, TokenAuth),
])
def test_auto_picks_the_method_from_the_environment(env: dict[str, str], kind: type) -> None:
    settings_ = Settings.of(iam_user="alice", iam_domain="acct", region="cn-north-4")
    auth = build_auth(settings_, env, no_post)
    assert isinstance(auth, kind)
    if isinstance(auth, IamTokenAuth):
        assert auth.iam_endpoint == "https://iam.cn-north-4.myhuaweicloud.com"


@pytest.mark.parametrize(("settings_", "env", "message"), [
    (Settings.of(auth="aksk"), {}, "set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK"),
    (Settings.of(auth="password"), {"CPH_IAM_PASSWORD": "pw"}, "--iam-user and --iam-domain"),
    (Settings(), {}, "CPH_AUTH_TOKEN: not set"),
])
def test_incomplete_credentials_are_a_usage_error(settings_: Settings, env: dict[str, str],
                                                  message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("-", r"\-")):
        build_auth(settings_, env, no_post)


def test_a_region_gives_the_documented_endpoints(tmp_path: Path) -> None:
    regional = Settings.of(region="ap-southeast-1")
    assert regional.cph_endpoint == "https://cph.ap-southeast-1.myhuaweicloud.com"
    assert regional.iam_url == "https://iam.ap-southeast-1.myhuaweicloud.com"
    assert Settings.of(region="cn-north-4", endpoint="http://127.0.0.1:1").cph_endpoint == \
        "http://127.0.0.1:1"


@pytest.mark.parametrize("name", ["CPH_AUTH_TOKEN", "CPH_IAM_PASSWORD", "HUAWEICLOUD_SDK_AK",
                                  "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN"])
@pytest.mark.parametrize("bad", ["ab\r\nX-Evil: 1", "ab\ncd", "ab\x00cd", "ab\x1bcd"])
def test_a_control_character_in_any_credential_is_exit_2_naming_it(name: str, bad: str) -> None:
    env = {"HUAWEICLOUD_SDK_AK": "AK123", "HUAWEICLOUD_SDK_SK": "sk-secret",
           "CPH_AUTH_TOKEN": "tok", "CPH_IAM_PASSWORD": "pw", name: f"value-{bad}-end"}
    with pytest.raises(UsageError) as caught:
        build_auth(Settings(), env, no_post)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"{name}: contains a line break or another control")
    assert "value-" not in str(caught.value)


class _HeaderInjection:
    """Credentials that turn bad mid-run (as a renewed token might)."""

    name = "test credentials"

    def static_headers(self) -> dict[str, str]:
        return {}

    async def headers(self, method: str, url: str, project_id: str) -> tuple[dict[str, str], int]:
        return {"X-Auth-Token": "tok\r\nX-Evil: 1"}, 0

    def accepted(self, project_id: str, generation: int) -> None:
        pass

    async def refresh(self, project_id: str, generation: int) -> bool:
        return False

    def rejection_hint(self, server_date: str | None) -> str:
        return ""


async def test_a_usage_error_found_mid_run_is_exit_2_in_the_manifest_too(
        fake: FakeCph, collect: Collect) -> None:
    out = await collect(fake, fake.dataset.image_ids()[:3], auth=_HeaderInjection())
    assert out.error is not None and out.error.exit_code == 2
    manifest = orjson.loads((out.output / "runs" / f"{out.record.run_id}.json").read_bytes())
    assert (manifest["status"], manifest["exit_code"]) == ("fatal", 2)
    assert manifest["error"] == ("the X-Auth-Token header contains a control character; check "
                                 "the credentials")
    assert not fake.log  # nothing was sent


async def test_a_token_with_a_quote_echoed_in_a_401_never_reaches_the_manifest(
        fake_factory: Factory, collect: Collect, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is JSON: the token's escaped form (``\\"``) must be scrubbed too."""
    import collector.fake.core

    token = 'tok"en\\4f1c-9a7e'
    monkeypatch.setitem(collector.fake.core.MSG, "APIGW.0301.expired",
                        f"token {token} expired")
    dataset = Dataset(seed=47, images=20)
    fake = await fake_factory(dataset, tokens=(token,), token_max_requests=5)
    out = await collect(fake, dataset.image_ids(), token=token, concurrency=1)
    assert out.record.exit_code == 3
    text = (out.output / "runs" / f"{out.record.run_id}.json").read_text()
    for form in (token, orjson.dumps(token).decode()[1:-1], quote(token, safe="")):
        assert form not in text
    doc = orjson.loads(text)
    assert doc["error"] == ("credentials rejected: HTTP 401 APIGW.0301 token *** expired; check "
                            "the X-Auth-Token from CPH_AUTH_TOKEN or token_file")
    # a fatal run's manifest has its real counts
    assert (doc["requests"], doc["auth"]["method"], doc["rate_per_second"]["configured"]) == \
        (6, "X-Auth-Token from CPH_AUTH_TOKEN or token_file", 100_000)


async def test_iam_answering_429_then_503_is_retried_for_tokens_and_projects_alike(
        fake_factory: Factory, collect: Collect) -> None:
    dataset = Dataset(seed=48, projects=1, images=20, locked_project=False)
    fake = await fake_factory(dataset, iam_users={"acct/alice": PASSWORD}, tokens=(),
                              script={"iam:tokens": ["throttle", "http_503"],
                                      "iam:projects": ["throttle", "http_503"]})
    out = await collect(fake, discover=True, region="cn-north-4", endpoint=fake.url,
                        iam_endpoint=fake.url, project_id=None, auth=iam(fake))
    assert out.error is None and out.record.exit_code == 0, out.error
    tokens = [e.status for e in fake.log if e.path == "/v3/auth/tokens"]
    assert tokens[:3] == [429, 503, 201] and set(tokens[3:]) == {201}
    projects = [e.status for e in fake.log if e.path == "/v3/auth/projects"]
    assert projects == [429, 503, 200]
    assert (out.record.retries, out.record.throttled) == (4, 2)  # IAM's, in the manifest too
    check_published(out, {(p, i) for p in dataset.project_ids
                          for i in dataset.listed(p, "private")}, dataset, fake)


THROTTLED = (429, {"Retry-After": "7"}, orjson.dumps({
    "error_code": "APIGW.0308", "error_msg": "The throttling threshold has been reached: "
    "policy user over ratelimit,limit:4,time:1 second"}))
UNAVAILABLE = (503, {}, orjson.dumps({"error": {"code": 503, "message": "unavailable"}}))
ISSUED = (201, {"X-Subject-Token": "t"}, b"{}")
REFUSED = (401, {}, orjson.dumps({"error": {"code": 401, "message": "wrong password"}}))


@pytest.mark.parametrize(("answers", "status", "waits"), [
    ([THROTTLED, ISSUED], 201, [7.0]),  # Retry-After honoured, as for every call
    ([UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, ISSUED], 503, [0.5, 1.0]),  # max_attempts 3
    ([REFUSED, ISSUED], 401, []),  # not retryable: IAM's answer is final
])
async def test_a_token_request_is_retried_by_the_rules_and_a_429_slows_iams_limiter(
        answers: list[tuple[int, dict[str, str], bytes]], status: int,
        waits: list[float]) -> None:
    from collector.auth import PacedPost
    from collector.limiter import MARGIN, RateLimiter
    from collector.retry import Backoff

    sent, slept = [], []

    async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                              bytes]:
        sent.append(url)
        return answers[len(sent) - 1]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(10.0)
    paced = PacedPost(post, limiter, Backoff(base=0.5), 3, sleep)
    paced.rng.uniform = lambda low, high: high  # type: ignore[method-assign]  # the jitter's top
    answer = await paced("https://iam.example/v3/auth/tokens", b"{}", {})
    assert (answer[0], slept, paced.retries) == (status, waits, len(waits))
    # the gateway's announced limit reached IAM's limiter, as a member call's reaches the run's
    assert limiter.ceiling == (MARGIN * 4 if answers[0] is THROTTLED else 10.0)
