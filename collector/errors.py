"""What can go wrong, as a tree, and the names the output and the manifest use for it.

    CollectorError                  exit 2 unless a subclass says otherwise
    ├── UsageError                  exit 2: bad flag, setting, input or output, before any request
    └── FatalRunError               exit 3: the run cannot go on (credentials, output, endpoint);
                                    its ``blame`` says which
    Refused (a ValueError)          a setting's value refused, with the ``reason`` shown

Per-image outcomes are not exceptions: they are status rows (``Status``), and the ones we
diagnose ourselves carry an ``ErrorCode`` (the API's own codes, ``CPS.*``/``APIGW.*``, pass
through as they came). A run ends in a ``RunStatus`` and an ``ExitCode``. Transport failures
(no HTTP answer) are the client's exceptions, in ``client``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """The process's exit codes, as the README documents them."""
    OK = 0  # every ID got a definitive answer
    SOME_FAILED = 1  # finished, but some IDs are `failed`
    USAGE = 2  # usage, configuration, input or output error before any request
    FATAL = 3  # the run stopped: credentials rejected, endpoint wrong, output unwritable
    UNTRUSTED = 4  # finished and published; --fail-on-untrusted and a share to an untrusted
    # project was added or updated (wins over 1)
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


class Status(StrEnum):
    """The `status` column of image_status: what happened to one image."""

    OK = "ok"  # answered; member_count rows in members (0 is data, not an error)
    NOT_FOUND = "not_found"  # the API says the image does not exist (CPS.0030 or 404)
    INVALID_ID = "invalid_id"  # rejected from the input, never requested
    FORBIDDEN = "forbidden"  # the caller may not read it (CPS.0001, 403, account state)
    FAILED = "failed"  # no definitive answer after the allowed attempts


class ErrorCode(StrEnum):
    """The ``error_code`` values we write for a ``failed`` image when the API gave no code."""

    TIMEOUT = "timeout"  # no answer, or no part of one, within the timeouts
    CONNECT = "connect"  # no connection: refused, unreachable, DNS, TLS, proxy
    CONNECTION = "connection"  # the connection broke before an answer
    BROKEN_BODY = "broken_body"  # the answer ended early or was not well-formed HTTP
    BAD_BODY = "bad_body"  # a 200 whose body is not the documented JSON
    BODY_TOO_LARGE = "body_too_large"  # over max_body_bytes
    REDIRECT = "redirect"  # a 3xx: never followed
    PAGING_LOOP = "paging_loop"  # a next_marker seen before
    PAGING_LIMIT = "paging_limit"  # more than max_pages pages
    EMPTY_PAGE = "empty_page"  # a listing's page was empty before its total was reached
    TOO_MANY_MEMBERS = "too_many_members"  # more than max_members members


class RunStatus(StrEnum):
    """The manifest's ``status``: only ``finished`` describes published data."""

    RUNNING = "running"
    FINISHED = "finished"
    FATAL = "fatal"
    INTERRUPTED = "interrupted"
    CRASHED = "crashed"  # still running when a later run started: killed, or the machine died
    STAGED = "staged"  # a shard that collected its share: published by `publish --shards N`


# Statuses that let a run exit 0. `forbidden` is an answer, but not the data the user asked for.
DEFINITIVE = frozenset({Status.OK, Status.NOT_FOUND, Status.INVALID_ID})


class CollectorError(Exception):
    """A failure of ours that ends the command with one line and ``exit_code``."""
    exit_code = ExitCode.USAGE


class UsageError(CollectorError):
    """Something the user gave us is wrong; nothing was requested."""

    exit_code = ExitCode.USAGE


class LockHeld(UsageError):
    """The output's lock is held by another live run: ``where`` and ``holder`` as values, so a
    command that is not a run (``publish``) can say what to do in its own words."""

    def __init__(self, where: str, holder: str) -> None:
        self.where, self.holder = where, holder
        super().__init__(f"output {where}: another cph-collector run ({holder}) is writing to "
                         "it; wait for it or use another --output")

    def for_publish(self, snapshot_date: object) -> UsageError:
        """The refusal as a publish says it: retrying the publish is the remedy."""
        return UsageError(f"publish of {snapshot_date} refused: another cph-collector run "
                          f"({self.holder}) is writing to the output {self.where}; nothing was "
                          "published: run this publish again after it ends (it then publishes "
                          "the night, or gives the verdict of the publish that did)")


class Blame(StrEnum):
    """Which part of the set-up a fatal error points at (``check`` names it)."""

    ENDPOINT = "endpoint"  # the CPH or IAM endpoint: nothing there answers as the API does
    CREDENTIALS = "credentials"  # everything else a first request can stop on


class FatalRunError(CollectorError):
    """The run cannot go on; what was committed stays valid. ``blame`` says which part of the
    set-up to fix, as a value: decisions never read the message's wording."""

    exit_code = ExitCode.FATAL

    def __init__(self, message: str, blame: Blame = Blame.CREDENTIALS) -> None:
        super().__init__(message)
        self.blame = blame


class Refused(ValueError):
    """A setting's value refused with a ``reason`` its error line shows (a bare ``ValueError``
    says only what is allowed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
