"""What can go wrong, as a tree, and the exit code each branch ends in.

    CollectorError                  exit 2 unless a subclass says otherwise
    ├── UsageError                  exit 2: bad flag, setting, input or output, before any request
    └── FatalRunError               exit 3: the run cannot go on (credentials, output, endpoint)

Per-image outcomes are not exceptions: they are status rows (see ``Status``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    OK = 0  # every ID got a definitive answer
    SOME_FAILED = 1  # finished, but some IDs are `failed`
    USAGE = 2  # usage, configuration, input or output error before any request
    FATAL = 3  # the run stopped: credentials rejected, endpoint wrong, output unwritable
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


class Status(StrEnum):
    """The `status` column of image_status: what happened to one image."""

    OK = "ok"  # answered; member_count rows in members (0 is data, not an error)
    NOT_FOUND = "not_found"  # the API says the image does not exist (CPS.0030 or 404)
    INVALID_ID = "invalid_id"  # rejected from the input, never requested
    FORBIDDEN = "forbidden"  # the caller may not read it (CPS.0001, 403, account state)
    FAILED = "failed"  # no definitive answer after the allowed attempts


# Statuses that let a run exit 0. `forbidden` is an answer, but not the data the user asked for.
DEFINITIVE = frozenset({Status.OK, Status.NOT_FOUND, Status.INVALID_ID})


class CollectorError(Exception):
    exit_code = ExitCode.USAGE


class UsageError(CollectorError):
    """Something the user gave us is wrong; nothing was requested."""

    exit_code = ExitCode.USAGE


class FatalRunError(CollectorError):
    """The run cannot go on; what was committed stays valid."""

    exit_code = ExitCode.FATAL
