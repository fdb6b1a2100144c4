"""The README's retention recipe, run as written: a date removed whole leaves the other dates
snapshots that the tool reads without a warning, and the next night compares with the newest
date kept."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from collector.fake import Dataset, FakeCph
from collector.published import published_dates
from collector.store import LocalStore
from tests.conftest import Outcome

README = Path(__file__).resolve().parent.parent / "README.md"
OLD, KEPT, NEXT = dt.date(2026, 11, 28), dt.date(2026, 11, 29), dt.date(2026, 11, 30)


def readme_recipe() -> str:
    """The README's bash block that removes a date."""
    blocks = README.read_text(encoding="utf-8").split("```bash\n")[1:]
    return next(b.split("```", 1)[0] for b in blocks if "OUT=output D=" in b)


def remove(out: Path, day: dt.date) -> list[Path]:
    """Runs the recipe for ``day`` on ``out``; what is left that names the date."""
    script = readme_recipe().replace("OUT=output D=2025-12-01", f"OUT={out} D={day}")
    assert script != readme_recipe()
    subprocess.run(["bash", "-euc", script], check=True)  # noqa: S607 (the README's bash)
    return [p for p in out.rglob("*") if day.isoformat() in p.name or
            (p.suffix == ".json" and f'"snapshot_date": "{day}"' in p.read_text())]


async def test_the_readmes_retention_recipe_removes_one_date_and_nothing_else(
        fake_factory: Callable[..., Awaitable[FakeCph]],
        collect: Callable[..., Awaitable[Outcome]], caplog: pytest.LogCaptureFixture) -> None:
    days = [Dataset(seed=62, images=60, with_doc_example=False, day=d) for d in (0, 1, 2)]
    fakes = [await fake_factory(d) for d in days]
    for fake, data, day in zip(fakes[:2], days[:2], (OLD, KEPT), strict=True):
        assert (await collect(fake, data.image_ids(), snapshot_date=day)).record.exit_code == 0
    out = Path(str((await collect(fakes[2], days[2].image_ids(), snapshot_date=KEPT)).output))
    assert remove(out, OLD) == []
    assert published_dates(LocalStore(out)) == [KEPT]
    caplog.set_level(logging.WARNING)
    after = await collect(fakes[2], days[2].image_ids(), snapshot_date=NEXT)
    assert after.record.exit_code == 0
    manifest = orjson.loads((out / "runs" / f"{after.record.run_id}.json").read_bytes())
    assert manifest["changes"]["previous_snapshot_date"] == KEPT.isoformat()
    assert published_dates(LocalStore(out)) == [KEPT, NEXT]
    assert not [r for r in caplog.records if "ignoring" in r.getMessage()]
