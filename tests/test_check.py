"""``cph-collector check``: every check a run makes, one line each, and the run's exit code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from collector.auth import TokenAuth
from collector.check import run_checks
from collector.config import Settings
from collector.fake import FakeCph
from collector.secrets import Secret
from tests.conftest import S3_ENV, TOKEN, S3Server

Factory = Callable[..., Awaitable[FakeCph]]


async def check(fake: FakeCph, tmp_path: Path, *, token: str = TOKEN, ids: bool = True,
                env: dict[str, str] | None = None, **settings: Any) -> tuple[int, list[str]]:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in fake.dataset.image_ids()))
    base = Settings.of(endpoint=fake.url, output=tmp_path / "out",
                    project_id=fake.dataset.project_ids[0], discover=not ids)
    lines: list[str] = []
    code = await run_checks(base.revise(**settings), str(path) if ids else None, env or {},
                            auth=lambda _: TokenAuth(Secret(token)), out=lines.append)
    return code, lines


async def test_check_passes_against_the_fake_server_and_says_every_check(
        fake: FakeCph, tmp_path: Path) -> None:
    code, lines = await check(fake, tmp_path)
    first = fake.dataset.image_ids()[0]
    assert code == 0
    assert [line.split(":")[0] for line in lines] == [
        "check settings", "check input", "check ca_bundle", "check proxy", "check output",
        "check credentials", "check endpoint", "check"]
    assert lines[-1] == "check: 7 of 7 passed"
    assert lines[5] == f"check credentials: ok (accepted by ListImageMembers of {first})"
    assert len(fake.log) == 1  # one request
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()
                and p.name != ".cph-collector.lock"]  # nothing collected, no probe left

    code, lines = await check(fake, tmp_path, ids=False)
    assert code == 0 and lines[-1] == "check: 8 of 8 passed"
    assert "check endpoint: ok (ListImages of " in "\n".join(lines)


async def test_a_wrong_token_is_exit_3_naming_the_credentials(
        fake: FakeCph, tmp_path: Path) -> None:
    code, lines = await check(fake, tmp_path, token="not-the-token")
    assert code == 3
    assert lines[-2].startswith("check credentials: failed (credentials rejected: HTTP 401 ")
    assert "not-the-token" not in "\n".join(lines)
    assert lines[-1] == "check: 5 of 6 passed; exit 3"


async def test_a_wrong_endpoint_is_exit_3_naming_the_endpoint(
        fake: FakeCph, tmp_path: Path) -> None:
    code, lines = await check(fake, tmp_path, endpoint="http://127.0.0.1:9")
    assert code == 3
    assert lines[-2].startswith("check endpoint: failed (endpoint http://127.0.0.1:9: cannot "
                                "connect")


async def test_an_unwritable_output_is_exit_2_even_when_the_api_answers(
        fake: FakeCph, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    code, lines = await check(fake, tmp_path, output=tmp_path / "file")
    assert code == 2
    assert f"check output: failed (output {tmp_path / 'file'}: not writable (" in lines[4]
    assert lines[-1] == "check: 6 of 7 passed; exit 2"


async def test_a_missing_bucket_is_exit_2(fake: FakeCph, tmp_path: Path, s3: S3Server) -> None:
    from collector.store import BucketUrl

    code, lines = await check(fake, tmp_path, output=BucketUrl("s3", "no-such-bucket", "x"),
                              storage_endpoint=s3.endpoint, env=S3_ENV)
    assert code == 2
    assert lines[4].startswith("check output: failed (output s3://no-such-bucket/x: not "
                               "writable (the bucket does not exist")


async def test_a_discovery_check_says_the_credentials_once_and_each_projects_listing(
        fake_factory: Factory, tmp_path: Path) -> None:
    from collector.fake import Dataset

    fake = await fake_factory(Dataset(seed=91, projects=3, images=20, locked_project=False))
    code, lines = await check(fake, tmp_path, ids=False,
                              project_id=",".join(fake.dataset.project_ids))
    names = [line.split(":")[0] for line in lines]
    assert code == 0
    assert names.count("check credentials") == names.count("check endpoint") == 1
    projects = len(fake.dataset.project_ids)
    assert names.count("check listing") == projects - 1 > 0
    assert lines[-1] == f"check: {7 + projects} of {7 + projects} passed"


async def test_a_project_the_api_refuses_is_exit_1_as_the_run_would_give(
        fake_factory: Factory, tmp_path: Path) -> None:
    """IAM lists it, CPH refuses it (CPS.0001): the run lists it as forbidden and exits 1."""
    from collector.fake import Dataset

    fake = await fake_factory(Dataset(seed=92, projects=1, images=10))
    locked = next(p for p, region in fake.dataset.other_projects.items()
                  if region.endswith("_locked"))
    code, lines = await check(fake, tmp_path, ids=False,
                              project_id=f"{fake.dataset.project_ids[0]},{locked}")
    assert code == 1
    refused = [line for line in lines if line.startswith("check listing: failed")]
    assert len(refused) == 1 and locked in refused[0] and "CPS.0001" in refused[0]
    assert lines[-1].endswith("; exit 1")


async def _blamed(fake: FakeCph, tmp_path: Path, monkeypatch: Any,
                  error: Exception) -> list[str]:
    async def stops(*_: Any) -> list[Any]:
        raise error

    monkeypatch.setattr("collector.check._member_call", stops)
    return (await check(fake, tmp_path))[1]


async def test_the_blame_comes_from_the_error_not_its_wording(
        fake: FakeCph, tmp_path: Path, monkeypatch: Any) -> None:
    """A reworded message keeps its blame: an endpoint error that does not start with
    "endpoint " still blames the endpoint, and a credentials error that does, the credentials."""
    from collector.errors import Blame, FatalRunError

    lines = await _blamed(fake, tmp_path, monkeypatch,
                          FatalRunError("nothing answers as CPH does", Blame.ENDPOINT))
    assert lines[-2] == "check endpoint: failed (nothing answers as CPH does)"
    lines = await _blamed(fake, tmp_path, monkeypatch,
                          FatalRunError("endpoint accepted no token: HTTP 401"))
    assert lines[-2] == "check credentials: failed (endpoint accepted no token: HTTP 401)"
