"""How a run ends, decided in one pure function: (stop signal, endpoint, tally) -> verdict.

A run and ``publish --shards`` both end here, so one night gets one verdict however it ran.
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass

from collector.errors import DEFINITIVE, ExitCode, RunStatus, Status


@dataclass(frozen=True, slots=True)
class Conclusion:
    """The manifest's status, the process's exit code, and the one-line error if any."""

    status: RunStatus
    exit_code: ExitCode
    error: str | None = None

    @property
    def publishes(self) -> bool:
        """A finished run publishes; every other ending leaves the snapshot as it was."""
        return self.status is RunStatus.FINISHED


def conclude(stop_signal: int | None, endpoint_verdict: str | None,
             by_status: dict[str, int], listings_failed: int = 0, *,
             listings: tuple[int, int] = (0, 0),
             max_failed_share: float | None = None) -> Conclusion:
    """A collection that ran to its end (or was stopped):

    - stopped by SIGINT/SIGTERM: ``interrupted``, 130/143, nothing published (a re-run resumes);
    - nothing proved the endpoint (``endpoint_verdict`` says why): ``fatal``, 3, nothing
      published, so a good snapshot is never replaced by a night of ``failed`` rows;
    - more than ``max_failed_share`` of the images (or of the listings: ``listings`` is
      (failed, of how many)) failed: ``fatal``, 3, nothing published, for the same reason (a
      backend that is down answers, but only 503s);
    - else ``finished`` and published: 0 when every image got a definitive answer and every
      listing succeeded (``listings_failed``: those that did not, forbidden included), else 1
      (an image never listed must not pass for one that is not).
    """
    if stop_signal is not None:
        code = ExitCode.INTERRUPTED if stop_signal == signal.SIGINT else ExitCode.TERMINATED
        return Conclusion(RunStatus.INTERRUPTED, code,
                          f"stopped by {signal.Signals(stop_signal).name}")
    if endpoint_verdict is not None:
        return Conclusion(RunStatus.FATAL, ExitCode.FATAL, endpoint_verdict)
    if max_failed_share is not None:
        broken = too_broken(by_status, *listings, max_failed_share)
        if broken is not None:
            return Conclusion(RunStatus.FATAL, ExitCode.FATAL, broken)
    definitive = all(n == 0 for status, n in by_status.items() if status not in DEFINITIVE)
    ok = definitive and listings_failed == 0
    return Conclusion(RunStatus.FINISHED, ExitCode.OK if ok else ExitCode.SOME_FAILED)


def verdict_of(counts: dict[str, int], max_failed_share: float | None = None, *,
               stop_signal: int | None = None,
               endpoint_verdict: str | None = None) -> Conclusion:
    """``conclude`` from a manifest's ``counts`` (a run's, a ``publish --shards``'s, or a
    publish a stopped run left for the next run to record): one rule for every ending."""
    by_status = {s.value: counts.get("invalid" if s is Status.INVALID_ID else s.value, 0)
                 for s in Status}
    failed = counts.get("listings_failed", 0)
    return conclude(stop_signal, endpoint_verdict, by_status,
                    failed + counts.get("listings_forbidden", 0),
                    listings=(failed, counts.get("listings", 0)),
                    max_failed_share=max_failed_share)


def too_broken(by_status: dict[str, int], listings_failed: int, listings: int,
               max_failed_share: float) -> str | None:
    """The one line of a night too broken to publish, or None. Images are the ones asked
    about (``invalid_id`` lines never were); the listings count the same way."""
    images = sum(n for status, n in by_status.items() if status != Status.INVALID_ID)
    failed = by_status.get(Status.FAILED, 0)
    tail = (f"more than max_failed_share {max_failed_share:g}; nothing published; the previous "
            "snapshot stays; a re-run resumes and ")
    if listings and listings_failed / listings > max_failed_share:
        return (f"{listings_failed:,} of {listings:,} listings failed "
                f"({listings_failed / listings:.0%}): {tail}lists again")
    if images and failed / images > max_failed_share:
        return (f"{failed:,} of {images:,} images failed ({failed / images:.0%}): "
                f"{tail}retries the failed images")
    return None


def with_changes(conclusion: Conclusion, untrusted_alerts: int,
                 fail_on_untrusted: bool) -> Conclusion:
    """A published night with a share to an untrusted project added or updated exits 4 under
    ``fail_on_untrusted`` (4 wins over 1)."""
    if conclusion.publishes and untrusted_alerts and fail_on_untrusted:
        return dataclasses.replace(conclusion, exit_code=ExitCode.UNTRUSTED)
    return conclusion
