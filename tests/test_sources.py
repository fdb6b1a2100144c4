"""Where a run's images come from is chosen once, from the settings (``sources.source_of``)."""

from __future__ import annotations

from pathlib import Path

from collector.config import Settings
from collector.sources import Discovery, InputFile, Planned, source_of


def settings(**given: object) -> Settings:
    return Settings.of(endpoint="http://127.0.0.1:9", output=Path("out"),
                    **given)  # type: ignore[arg-type]


def test_one_source_per_way_the_images_come() -> None:
    given = source_of(settings(project_id="p1"), "ids.csv", plan=False)
    assert isinstance(given, InputFile) and (given.label, given.fmt) == ("ids.csv", "csv")
    sharded = source_of(settings(project_id="p1", shard="1/2"), "ids.txt", plan=False)
    assert isinstance(sharded, InputFile)  # the intake keeps the shard's share
    listed = source_of(settings(discover=True), None, plan=False)
    assert isinstance(listed, Discovery) and listed.collects and listed.label == "discover"
    plan = source_of(settings(discover=True), None, plan=True)
    assert isinstance(plan, Discovery) and not plan.collects
    share = source_of(settings(discover=True, shard="2/3"), None, plan=False)
    assert isinstance(share, Planned) and str(share.shard) == "2/3"


def test_a_resume_matches_the_input_bytes_or_what_is_listed() -> None:
    given = source_of(settings(project_id="p1"), "ids.txt", plan=False)
    assert given.fingerprint(None) is None  # stdin cannot be read twice
    assert given.fingerprint("a") != given.fingerprint("b")
    listed = source_of(settings(discover=True), None, plan=False)
    share = source_of(settings(discover=True, shard="1/2"), None, plan=False)
    assert listed.fingerprint(None) == share.fingerprint("ignored")  # the plan's = a shard's
