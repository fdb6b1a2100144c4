"""Is the endpoint the CPH API? Only an answer that is recognisably the API's says yes.

A wrong endpoint rarely refuses connections: a login portal redirects, a proxy answers HTML,
a firewall stays silent, another gateway says 404. Publishing a night of ``failed`` rows from
such a run would replace a good snapshot with nothing. So each answer is sorted once:

    PROOF         200 with a members body we could read, or an error in the CPS/API Gateway
                  shape with one of their codes (CPS.xxxx, APIGW.xxxx), except APIGW.0101
    NO_ANSWER     refused, timed out, reset, TLS failure: nothing answered at all
    UNRECOGNISED  an HTTP answer that is not the API's: 3xx, HTML, JSON of another shape,
                  and 404 APIGW.0101 (a wrong path and an unknown image look alike)

Until the first PROOF, ``fail_fast_after`` requests that got no answer, or ten times as many
that got any unproving answer, end the run (exit 3); a run that ends with no PROOF at all is
fatal too and publishes nothing. The wider window for answers lets a run that starts with a
block of unknown images (404 APIGW.0101 from a gateway configured that way) go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

API_CODE = re.compile(r"(?:CPS|APIGW|APIG)\.\d{4}")
AMBIGUOUS_CODES = frozenset({"APIGW.0101", "APIG.0101"})
ANSWER_WINDOW = 10  # unproving answers are given this many times fail_fast_after


class Sign(Enum):
    """What one answer says about the endpoint (see the module docstring)."""
    PROOF = "proof"
    NO_ANSWER = "no_answer"
    UNRECOGNISED = "unrecognised"


def sign_of(http_status: int, error_code: str | None, body_readable: bool) -> Sign:
    """What one HTTP answer says about the endpoint (``body_readable``: a 200's body parsed)."""
    if http_status == 200:
        return Sign.PROOF if body_readable else Sign.UNRECOGNISED
    if 300 <= http_status < 400 or error_code is None or error_code in AMBIGUOUS_CODES:
        return Sign.UNRECOGNISED
    return Sign.PROOF if API_CODE.fullmatch(error_code) else Sign.UNRECOGNISED


def describe(http_status: int, error_code: str | None, location: str | None) -> str:
    """A few words for the last unproving answer, for the one-line error."""
    if 300 <= http_status < 400:
        return f"HTTP {http_status} redirect" + (f" to {location[:200]}" if location else "")
    if error_code is not None:
        return f"HTTP {http_status} {error_code[:60]}"
    return f"HTTP {http_status} that is not the API's JSON"


@dataclass(slots=True)
class EndpointCheck:
    """What the answers so far say; ``note`` returns an error once the run should stop."""

    endpoint: str
    fail_fast_after: int
    proven: bool = False
    no_answer: int = 0
    unrecognised: int = 0
    last: str = ""

    def note(self, sign: Sign, what: str = "") -> str | None:
        """Count one answer; the error to stop with once the evidence says the endpoint is wrong."""
        if self.proven:
            return None
        if sign is Sign.PROOF:
            self.proven = True
            return None
        if sign is Sign.NO_ANSWER:
            self.no_answer += 1
        else:
            self.unrecognised += 1
        self.last = what or self.last
        if self.no_answer >= self.fail_fast_after:
            return (f"endpoint {self.endpoint}: {self.last} for the first {self.no_answer} "
                    "requests; check --endpoint")
        if self.no_answer + self.unrecognised >= ANSWER_WINDOW * self.fail_fast_after:
            return self.verdict()
        return None

    def verdict(self) -> str:
        """The error of a run that nothing proved."""
        seen = self.no_answer + self.unrecognised
        return (f"endpoint {self.endpoint}: none of {seen} requests was answered as the CPH "
                f"API answers (last: {self.last or 'nothing'}); check --endpoint")
