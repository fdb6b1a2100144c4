"""How a run ends, decided in one pure function: (stop signal, endpoint, tally) -> verdict."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from collector.errors import DEFINITIVE, ExitCode, RunStatus


@dataclass(frozen=True, slots=True)
class Conclusion:
    """The manifest's status, the process's exit code, and the one-line error if any."""

    status: RunStatus
    exit_code: ExitCode
    error: str | None = None

    @property
    def publishes(self) -> bool:
        return self.status is RunStatus.FINISHED


def conclude(stop_signal: int | None, endpoint_verdict: str | None,
             by_status: dict[str, int], listings_failed: int = 0) -> Conclusion:
    """A collection that ran to its end (or was stopped):

    - stopped by SIGINT/SIGTERM: ``interrupted``, 130/143, nothing published (a re-run resumes);
    - nothing proved the endpoint (``endpoint_verdict`` says why): ``fatal``, 3, nothing
      published, so a good snapshot is never replaced by a night of ``failed`` rows;
    - else ``finished`` and published: 0 when every image got a definitive answer and every
      listing succeeded, else 1 (an image never listed must not pass for one that is not).
    """
    if stop_signal is not None:
        code = ExitCode.INTERRUPTED if stop_signal == signal.SIGINT else ExitCode.TERMINATED
        return Conclusion(RunStatus.INTERRUPTED, code,
                          f"stopped by {signal.Signals(stop_signal).name}")
    if endpoint_verdict is not None:
        return Conclusion(RunStatus.FATAL, ExitCode.FATAL, endpoint_verdict)
    definitive = all(n == 0 for status, n in by_status.items() if status not in DEFINITIVE)
    ok = definitive and listings_failed == 0
    return Conclusion(RunStatus.FINISHED, ExitCode.OK if ok else ExitCode.SOME_FAILED)
