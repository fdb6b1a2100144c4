"""How a run ends: the whole table of (stop signal, endpoint, statuses) -> verdict."""

from __future__ import annotations

import signal

import pytest

from collector.conclude import Conclusion, conclude, with_changes
from collector.errors import ExitCode, RunStatus

OK = {"ok": 5, "not_found": 1, "invalid_id": 2, "forbidden": 0, "failed": 0}
SOME_FAILED = {**OK, "failed": 1}
FORBIDDEN = {**OK, "forbidden": 1}
WRONG = "endpoint https://x: none of 3 requests was answered as the CPH API answers"

TABLE = [
    (None, None, OK, Conclusion(RunStatus.FINISHED, ExitCode.OK)),
    (None, None, SOME_FAILED, Conclusion(RunStatus.FINISHED, ExitCode.SOME_FAILED)),
    (None, None, FORBIDDEN, Conclusion(RunStatus.FINISHED, ExitCode.SOME_FAILED)),
    (None, None, {}, Conclusion(RunStatus.FINISHED, ExitCode.OK)),  # an empty run publishes
    (None, WRONG, OK, Conclusion(RunStatus.FATAL, ExitCode.FATAL, WRONG)),
    (signal.SIGINT, None, OK,
     Conclusion(RunStatus.INTERRUPTED, ExitCode.INTERRUPTED, "stopped by SIGINT")),
    (signal.SIGTERM, WRONG, SOME_FAILED,  # a stop wins: the user asked for it
     Conclusion(RunStatus.INTERRUPTED, ExitCode.TERMINATED, "stopped by SIGTERM")),
]


@pytest.mark.parametrize(("stop", "endpoint", "statuses", "expected"), TABLE)
def test_how_a_run_ends(stop: int | None, endpoint: str | None, statuses: dict[str, int],
                        expected: Conclusion) -> None:
    verdict = conclude(stop, endpoint, statuses)
    assert verdict == expected
    assert verdict.publishes == (expected.status is RunStatus.FINISHED)


def test_a_night_with_more_failed_images_than_max_failed_share_publishes_nothing() -> None:
    broken = {"ok": 16_886, "not_found": 0, "invalid_id": 3, "forbidden": 0, "failed": 23_114}
    verdict = conclude(None, None, broken, max_failed_share=0.1)
    assert verdict == Conclusion(
        RunStatus.FATAL, ExitCode.FATAL,
        "23,114 of 40,000 images failed (58%): more than max_failed_share 0.1; nothing "
        "published; the previous snapshot stays; a re-run resumes and retries the failed images")
    assert not verdict.publishes
    at_the_limit = {"ok": 9, "failed": 1}  # 10% is not more than 0.1
    assert conclude(None, None, at_the_limit, max_failed_share=0.1) == Conclusion(
        RunStatus.FINISHED, ExitCode.SOME_FAILED)
    assert conclude(None, None, broken) == Conclusion(RunStatus.FINISHED, ExitCode.SOME_FAILED)
    assert conclude(signal.SIGTERM, None, broken, max_failed_share=0.1).status \
        is RunStatus.INTERRUPTED  # a stop still wins


def test_a_night_with_more_failed_listings_than_max_failed_share_publishes_nothing() -> None:
    verdict = conclude(None, None, OK, 3, listings=(2, 8), max_failed_share=0.1)
    assert verdict == Conclusion(
        RunStatus.FATAL, ExitCode.FATAL,
        "2 of 8 listings failed (25%): more than max_failed_share 0.1; nothing published; the "
        "previous snapshot stays; a re-run resumes and lists again")
    assert conclude(None, None, OK, 3, listings=(2, 8), max_failed_share=0.25) == Conclusion(
        RunStatus.FINISHED, ExitCode.SOME_FAILED)


def test_untrusted_shares_turn_a_published_night_into_exit_4_and_nothing_else() -> None:
    published = conclude(None, None, SOME_FAILED)
    assert with_changes(published, 2, True) == Conclusion(RunStatus.FINISHED, ExitCode.UNTRUSTED)
    assert with_changes(published, 2, False) == published
    assert with_changes(published, 0, True) == published
    stopped = conclude(signal.SIGINT, None, OK)
    assert with_changes(stopped, 2, True) == stopped
