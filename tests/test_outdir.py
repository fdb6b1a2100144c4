"""Only our own files: an output folder shared with other tools, links and all, used by a run."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from collector.errors import UsageError
from collector.fake import FakeCph
from collector.outdir import LOCK_NAME, OutputLock
from tests.conftest import Outcome

Collect = Callable[..., Awaitable[Outcome]]
DAY = dt.date(2026, 12, 1)


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) and its content's sha256 or link target."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[key] = "dir"
    return found


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder outside the output that a careless link points at."""
    victim = tmp_path / "precious"
    (victim / "snapshot_date=2020-01-01").mkdir(parents=True)
    (victim / "snapshot_date=2020-01-01" / "data.bin").write_bytes(b"do not delete")
    (victim / "notes.txt").write_text("mine\n")
    return victim


def foreign_runs_manifest() -> bytes:
    """Another tool's JSON in runs/, even one that says "running"."""
    return orjson.dumps({"status": "running", "job": "backup", "run_id": "x"})


async def test_another_tools_files_in_the_output_are_never_touched(
        fake: FakeCph, collect: Collect, tmp_path: Path, elsewhere: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    (out / "_staging" / "x").mkdir(parents=True)
    (out / "_staging" / "x" / "state.db").write_bytes(b"another tool's state")
    (out / "_staging" / "snapshot_date=not-a-date").mkdir()
    (out / "_staging" / "snapshot_date=2026-11-30").symlink_to(
        elsewhere / "snapshot_date=2020-01-01")
    (out / "_staging" / "README").write_text("not ours\n")
    (out / "runs").mkdir()
    (out / "runs" / "x.json").write_bytes(foreign_runs_manifest())
    (out / "runs" / "linked.json").symlink_to(elsewhere / "notes.txt")
    (out / "members").mkdir()
    (out / "members" / "other.csv").write_text("a,b\n")
    before, outside = tree(out), tree(elsewhere)

    done = await collect(fake, fake.dataset.image_ids()[:5], output=out, snapshot_date=DAY)
    assert done.record.exit_code == 0
    after = tree(out)
    assert {k: v for k, v in after.items() if k in before} == before  # unchanged, every one
    ours = {k for k in after if k not in before}
    assert all(k.startswith(("members/snapshot_date=2026-12-01", "image_status", "images",
                             "changes", "listing_status",
                             f"runs/{done.record.run_id}.json", "_staging/snapshot_date=2026-12-01",
                             LOCK_NAME)) for k in ours), ours
    assert tree(elsewhere) == outside
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"left {out}/_staging/snapshot_date=2026-11-30 alone: not a folder the tool made"]


@pytest.mark.parametrize("link", ["_staging", "_staging/snapshot_date=2026-12-01", "runs",
                                  "members", "image_status/snapshot_date=2026-12-01"])
async def test_a_link_where_the_tool_would_write_is_exit_2_and_nothing_changes(
        link: str, fake: FakeCph, collect: Collect, tmp_path: Path, elsewhere: Path) -> None:
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(elsewhere)
    before, outside = tree(out), tree(elsewhere)
    done = await collect(fake, fake.dataset.image_ids()[:5], output=out, snapshot_date=DAY)
    assert done.error is not None and done.error.exit_code == 2
    assert str(done.error) == (f"output {out}: {link} is a symbolic link; the tool writes and "
                               "deletes only in folders it made (remove the link, or use another "
                               "--output)")
    assert tree(out) == before and tree(elsewhere) == outside
    assert not fake.log


async def test_a_linked_lock_file_is_refused_and_its_target_kept(
        fake: FakeCph, collect: Collect, tmp_path: Path, elsewhere: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(elsewhere / "notes.txt")
    done = await collect(fake, fake.dataset.image_ids()[:5], output=out)
    assert done.error is not None and done.error.exit_code == 2
    assert (elsewhere / "notes.txt").read_text() == "mine\n"


def test_the_lock_is_opened_without_following_links_and_kept_private(
        tmp_path: Path, elsewhere: Path) -> None:
    with OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).stat().st_mode & 0o777 == 0o600
    (tmp_path / LOCK_NAME).unlink()
    (tmp_path / LOCK_NAME).symlink_to(elsewhere / "notes.txt")
    with pytest.raises(UsageError, match=r"cannot open the lock file .* symbolic link"):
        OutputLock(tmp_path).__enter__()
    assert (elsewhere / "notes.txt").read_text() == "mine\n"


async def test_the_careless_folder_of_the_issue_is_left_exactly_as_it_was(
        fake: FakeCph, collect: Collect, tmp_path: Path, elsewhere: Path) -> None:
    """Another tool's staging and runs file, a linked ``_staging``, a linked lock: all at once."""
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "x.json").write_bytes(foreign_runs_manifest())
    (elsewhere / "x").mkdir()
    (elsewhere / "x" / "state.db").write_bytes(b"another tool's state")
    (out / "_staging").symlink_to(elsewhere)
    (out / LOCK_NAME).symlink_to(elsewhere / "notes.txt")
    before, outside = tree(out), tree(elsewhere)
    done = await collect(fake, fake.dataset.image_ids()[:5], output=out)
    assert done.error is not None and done.error.exit_code == 2
    assert tree(out) == before and tree(elsewhere) == outside


@pytest.mark.parametrize("shard", [None, "2/3"])
async def test_two_runs_started_together_by_one_process_never_both_write(
        shard: str | None, fake: FakeCph, collect: Collect, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Same host name, same pid (two pods of one index are both PID 1): the flock is the
    open file's, not the process's, so one of them is refused, naming the other's run."""
    import asyncio
    import re

    monkeypatch.setattr("socket.gethostname", lambda: "cph-collector-1")
    ids = fake.dataset.image_ids()
    out = tmp_path / "out"
    options = {"shard": shard} if shard else {}
    runs = await asyncio.gather(*(collect(fake, ids, output=out, snapshot_date=DAY,
                                          chunk_images=5, **options) for _ in range(2)))
    refused = [r for r in runs if r.error is not None]
    assert len(refused) == 1 and refused[0].error is not None
    assert refused[0].error.exit_code == 2
    winner = next(r for r in runs if r.error is None)
    assert re.fullmatch(rf"output \S+: another cph-collector run \(run {winner.record.run_id}, "
                        rf"pid {os.getpid()}\) is writing to it; wait for it or use another "
                        r"--output", str(refused[0].error)), refused[0].error
    assert winner.record.status == ("staged" if shard else "finished")
