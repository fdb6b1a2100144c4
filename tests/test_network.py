"""Where a nightly job runs: behind a proxy, with its own CA, and against endpoints that are
silent or wrong. Real sockets on loopback: a forwarding proxy, TLS with a CA made here."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest
import trustme

from collector.client import tls_context
from collector.fake import Dataset, FakeCph, ServerConfig
from tests.conftest import TOKEN, Outcome
from tests.invariants import visible_files
from tests.proxy import ForwardingProxy

Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- proxies ----------------------------------------------------------------------------------

async def test_http_proxy_from_the_environment_carries_every_request(fake: FakeCph,
                                                                    collect: Collect) -> None:
    ids = fake.dataset.image_ids()
    async with ForwardingProxy() as proxy:
        out = await collect(fake, ids, env={"HTTP_PROXY": proxy.url})
    assert out.record.exit_code == 0
    assert {r["status"] for r in out.statuses().values()} == {"ok"}
    project = fake.dataset.project_ids[0]
    assert sorted(proxy.requests) == sorted(
        f"GET {fake.url}/v1/{project}/cloud-phone/images/{i}/members" for i in ids)


async def test_the_lower_case_variable_wins_and_no_proxy_goes_direct(fake: FakeCph,
                                                                     collect: Collect) -> None:
    async with ForwardingProxy() as proxy:
        lower = await collect(fake, ["x1"], env={"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}",
                                                 "http_proxy": proxy.url})
        assert lower.record.exit_code == 0 and len(proxy.requests) == 1
        direct = await collect(fake, ["x2"], env={"HTTP_PROXY": proxy.url,
                                                  "NO_PROXY": "localhost,127.0.0.1"},
                               output=lower.output.parent / "direct")
    assert direct.record.exit_code == 0 and len(proxy.requests) == 1  # not one more


async def test_the_proxy_setting_overrides_the_environment(fake: FakeCph,
                                                           collect: Collect) -> None:
    async with ForwardingProxy() as proxy:
        out = await collect(fake, ["x1", "x2"], proxy=proxy.url,
                            env={"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}"})
    assert out.record.exit_code == 0 and len(proxy.requests) == 2


async def test_proxy_credentials_are_sent_and_never_shown(fake: FakeCph, collect: Collect) -> None:
    password = 'pr0xy"pass\\word'
    async with ForwardingProxy(credentials=("nightly-job", password)) as proxy:
        encoded = "pr0xy%22pass%5Cword"
        url = proxy.url.replace("http://", f"http://nightly-job:{encoded}@")
        out = await collect(fake, fake.dataset.image_ids(), proxy=url)
    assert out.record.exit_code == 0
    manifest = next((out.output / "runs").glob("*.json")).read_text()
    assert orjson.loads(manifest)["settings"]["proxy"] == proxy.url.replace("http://",
                                                                            "http://***@")
    everything = out.stderr + "".join(p.read_bytes().decode("latin-1")
                                      for p in out.output.rglob("*") if p.is_file())
    for form in (password, encoded, "nightly-job", orjson.dumps(password).decode()[1:-1]):
        assert form not in everything


async def test_a_proxy_that_wants_credentials_ends_the_run_naming_the_proxy(
        fake: FakeCph, collect: Collect) -> None:
    async with ForwardingProxy(credentials=("u", "right-password")) as proxy:
        url = proxy.url.replace("http://", "http://u:wrong-password@")
        out = await collect(fake, fake.dataset.image_ids(), proxy=url)
    assert out.error is not None and out.record.exit_code == 3
    message = str(out.error)
    assert message.startswith(f"proxy {proxy.url.replace('http://', 'http://***@')} refused "
                              "the request: HTTP 407")
    assert "wrong-password" not in message and "\n" not in message
    assert not visible_files(out.output, "image_status")


async def test_an_unreachable_proxy_is_exit_3_naming_the_proxy_not_the_endpoint(
        fake: FakeCph, collect: Collect) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    out = await collect(fake, [f"img{i}" for i in range(100)], env={"HTTPS_PROXY": dead,
                                                                    "HTTP_PROXY": dead},
                        fail_fast_after=10)
    assert out.error is not None and out.record.exit_code == 3
    assert re.fullmatch(  # at least 10: requests already in flight fail too
        rf"cannot connect to proxy {dead}: Connection refused for the first 1\d requests; check "
        r"the proxy \(--proxy, CPH_PROXY, HTTPS_PROXY/HTTP_PROXY, NO_PROXY\)", str(out.error))
    assert not visible_files(out.output, "image_status")


# -- TLS ----------------------------------------------------------------------------------------

@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "our-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def tls_fake(ca: trustme.CA) -> FakeCph:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    fake = FakeCph(Dataset(seed=3, images=20), ServerConfig(tokens=(TOKEN,)))
    await fake.start(tls=context)
    return fake


async def test_https_with_our_ca_works_only_with_ca_bundle(ca: trustme.CA, ca_file: Path,
                                                           collect: Collect,
                                                           tmp_path: Path) -> None:
    fake = await tls_fake(ca)
    try:
        refused = await collect(fake, fake.dataset.image_ids(), output=tmp_path / "no-ca",
                                fail_fast_after=5)
        trusted = await collect(fake, fake.dataset.image_ids(), output=tmp_path / "ca",
                                ca_bundle=ca_file)
    finally:
        await fake.close()
    assert refused.error is not None and refused.record.exit_code == 3
    assert "TLS certificate verify failed" in str(refused.error)
    assert "\n" not in str(refused.error)
    assert not visible_files(refused.output, "image_status")
    assert trusted.record.exit_code == 0
    assert {r["status"] for r in trusted.statuses().values()} == {"ok"}


async def test_https_through_a_proxy_is_a_connect_tunnel(ca: trustme.CA, ca_file: Path,
                                                         collect: Collect) -> None:
    fake = await tls_fake(ca)
    try:
        async with ForwardingProxy() as proxy:
            out = await collect(fake, fake.dataset.image_ids(), ca_bundle=ca_file,
                                env={"HTTPS_PROXY": proxy.url}, concurrency=2)
    finally:
        await fake.close()
    assert out.record.exit_code == 0
    host = fake.url.removeprefix("https://")
    assert proxy.requests and set(proxy.requests) == {f"CONNECT {host}"}


@pytest.fixture
def system_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[trustme.CA]:
    """A CA that stands in for the system's trust store (OpenSSL reads SSL_CERT_FILE)."""
    public = trustme.CA()
    path = tmp_path / "system.pem"
    public.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return public


def test_ca_bundle_adds_to_the_system_trust_store(system_ca: trustme.CA, ca: trustme.CA,
                                                  ca_file: Path) -> None:
    subjects = {c["subject"] for c in tls_context(ca_file).get_ca_certs()}
    ours = {c["subject"] for c in _context_of(ca).get_ca_certs()}
    public = {c["subject"] for c in _context_of(system_ca).get_ca_certs()}
    assert ours <= subjects and public <= subjects and ours != public
    assert tls_context(ca_file).verify_mode is ssl.CERT_REQUIRED
    assert tls_context(ca_file).check_hostname


def _context_of(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    authority.configure_trust(context)
    return context


# -- silent endpoints ------------------------------------------------------------------------

@pytest.fixture
def black_hole() -> Iterator[str]:
    """A listening socket whose accept queue is full and is never accepted: new SYNs are
    dropped, as by a firewall, so every connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)  # let the handshakes land in the queue
    yield f"http://127.0.0.1:{port}"
    for sock in (*fillers, listener):
        sock.close()


@pytest.mark.e2e
async def test_a_black_holed_endpoint_ends_with_exit_3_and_nothing_published(
        black_hole: str, collect: Collect) -> None:
    started = time.monotonic()
    out = await collect(None, [f"img{i}" for i in range(200)], endpoint=black_hole,
                        connect_timeout=0.5, read_timeout=1, request_timeout=2,
                        fail_fast_after=10)
    elapsed = time.monotonic() - started
    assert out.error is not None and out.record.exit_code == 3
    assert re.fullmatch(rf"endpoint {black_hole}: cannot connect \(connect timed out\) for the "
                        r"first 1\d requests; check --endpoint", str(out.error))
    assert not visible_files(out.output, "image_status")
    assert elapsed < 0.5 * 4  # a few connect timeouts, not 200 images times 5 attempts
