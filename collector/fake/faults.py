"""What the fake server does to one request: the outcome kinds, random rates and per-ID scripts.

A script says "this ID gets 429, 429, then 200": ``{"<image_id>": ["throttle", "throttle"]}``;
after its list the image behaves normally. Random rates apply to unscripted attempts. The draw
depends only on (seed, image, attempt), not on the order requests arrive in, so two runs against
fresh servers with the same seed meet exactly the same faults, image by image.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from enum import StrEnum


class Outcome(StrEnum):
    """What one attempt at an image meets: normal, or a fault of a kind."""
    NORMAL = "normal"  # what the dataset says: members, or not found
    THROTTLE = "throttle"  # 429 APIGW.0308
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    CPS_0003 = "cps_0003"  # 400 "Service internal error", retryable
    UNAUTHORIZED = "unauthorized"  # 401 APIGW.0301
    FORBIDDEN = "forbidden"  # 400 CPS.0001
    NOT_FOUND = "not_found"  # the configured not-found answer
    RESET_BEFORE_HEADERS = "reset_before_headers"
    RESET_MID_BODY = "reset_mid_body"
    SHORT_BODY = "short_body"  # fewer bytes than Content-Length, then FIN
    TRUNCATED_JSON = "truncated_json"  # 200, correct length, JSON cut short
    WRONG_TYPES = "wrong_types"  # 200, member_id a number, create_time a string
    HTML_200 = "html_200"
    HTML_502 = "html_502"
    TRICKLE = "trickle"  # the body in slow pieces, each under a read timeout
    STALL = "stall"  # no headers for a long time
    HUGE_BODY = "huge_body"  # an endless chunked body
    PAGING_LOOP = "paging_loop"  # next_marker that points to itself
    ENDLESS_PAGING = "endless_paging"  # a new next_marker on every page, for ever
    REDIRECT = "redirect"  # 302 to a login page, as a portal or a wrong host answers
    INTERIM = "interim"  # 100 Continue, 102 Processing and 103 Early Hints, then the answer
    HUGE_HEADER = "huge_header"  # the answer with a 1 MB X-Request-Id
    ENDLESS_HEADER = "endless_header"  # a header line that never ends
    # A server that echoes the credentials it was sent (X-Auth-Token, X-Security-Token,
    # Authorization, Proxy-Authorization) in error_msg, X-Request-Id and Location:
    ECHO_400 = "echo_400"  # 400 CPS.0001 (forbidden) with the credentials in both
    ECHO_401 = "echo_401"  # 401 APIGW.0301, the same
    ECHO_REDIRECT = "echo_redirect"  # 302 to a Location that carries them
    # error_msg with CR/LF, ANSI escapes and BEL, forging a summary line and clearing the screen
    HOSTILE_400 = "hostile_400"  # 400 CPS.0001 (forbidden)
    HOSTILE_401 = "hostile_401"  # 401 APIGW.0301


class FaultPlan:
    """Which attempt meets which fault: scripts per image, random rates otherwise."""
    def __init__(self, rates: Mapping[str, float] | None = None,
                 script: Mapping[str, Sequence[str]] | None = None, seed: int = 0) -> None:
        self.rates = {Outcome(k): float(v) for k, v in (rates or {}).items() if v > 0}
        if sum(self.rates.values()) > 1.0:
            raise ValueError("fault rates add up to more than 1")
        self.script = {image: [Outcome(o) for o in outcomes]
                       for image, outcomes in (script or {}).items()}
        self._seed = seed
        self._cumulative = []
        total = 0.0
        for outcome, rate in self.rates.items():
            total += rate
            self._cumulative.append((total, outcome))

    def outcome(self, image_id: str, attempt: int) -> Outcome:
        """What attempt number ``attempt`` (1 for the first) at ``image_id`` gets."""
        scripted = self.script.get(image_id)
        if scripted is not None:  # a scripted image is never hit by random faults
            return scripted[attempt - 1] if attempt <= len(scripted) else Outcome.NORMAL
        if self._cumulative:
            draw = random.Random(f"{self._seed}:{image_id}:{attempt}").random()
            for bound, outcome in self._cumulative:
                if draw < bound:
                    return outcome
        return Outcome.NORMAL
