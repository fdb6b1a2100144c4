"""How a run ends: the whole table of (stop signal, endpoint, statuses) -> verdict."""

from __future__ import annotations

import signal

import pytest

from collector.conclude import Conclusion, conclude
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
