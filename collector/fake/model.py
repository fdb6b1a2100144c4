"""What the fake's parts say to each other: its settings, one request, one answer, the log."""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.fake.faults import Outcome

JSON = "application/json"


@dataclass
class ServerConfig:
    """How the fake behaves; the defaults are a healthy, unthrottled API."""

    tokens: tuple[str, ...] = ("fake-token",)
    token_ttl: float | None = None  # seconds a token stays valid after the server starts
    token_max_requests: int | None = None  # requests a token may make before it expires
    unknown_image: str = "cps"  # "cps": 400 CPS.0030; "404": 404 APIGW.0101
    paging: bool = True  # False: the older API without marker/limit/page_info
    rate_limit: int | None = None  # requests per caller per window; None: unlimited
    rate_window: float = 1.0
    retry_after: str | None = None  # Retry-After header value on 429s
    latency: float = 0.0  # seconds before each answer
    latency_p50: float | None = None  # with p99: a log-normal latency instead
    latency_p99: float | None = None
    fault_rates: dict[str, float] = field(default_factory=dict)
    script: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 0
    trickle_pieces: int = 8
    trickle_delay: float = 0.05
    stall_seconds: float = 30.0
    huge_body_bytes: int = 64 << 20
    access_keys: dict[str, str] = field(default_factory=dict)  # AK -> SK, for signatures
    iam_users: dict[str, str] = field(default_factory=dict)  # "account/user" -> password
    agencies: set[str] = field(default_factory=set)  # "account/agency" any IAM user may assume
    iam_token_ttl: float = 86_400.0  # seconds an IAM-issued token is valid
    record: bool = True  # keep a LogEntry per request (tests); counters are always kept
    # A ListImages that misbehaves: image -> fields over its entry (an ID no URL may carry, a
    # status of 2**31, a time in epoch seconds ...); project -> a lie its listings tell (cph.LIES)
    listed_fields: dict[str, dict[str, object]] = field(default_factory=dict)
    listing_lies: dict[str, str] = field(default_factory=dict)
    iam_extra_projects: list[dict[str, object]] = field(default_factory=list)  # IAM lists too


class RawJson:
    """A listed field's value sent as this JSON text, as is (``1e400``: a number that no
    double holds, which ``orjson`` cannot write). Not a dataclass: orjson writes those."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(slots=True)
class Exchange:
    """One request while it is handled."""

    arrived: float
    method: str
    path: str
    rid: str
    in_flight: int
    project_id: str | None = None
    image_id: str | None = None
    marker: str | None = None
    attempt: int = 0
    outcome: str = "normal"
    credentials: str = ""  # the credential headers it carried, for the echoing faults


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One request as the fake saw it, for tests to assert on."""
    t: float  # time.monotonic() when the request arrived
    method: str
    path: str
    project_id: str | None
    image_id: str | None
    marker: str | None
    status: int  # 0 when the connection was cut before a status line
    outcome: str
    attempt: int  # this request's number among requests for the same image
    in_flight: int  # requests being handled when this one arrived, itself included


@dataclass(slots=True)
class Answer:
    """What the core decided to answer; a front turns it into bytes on the wire."""
    status: int
    body: bytes
    content_type: str = JSON
    retry_after: str | None = None
    fault: Outcome | None = None  # act this out on the connection instead of answering
    backend: bool = True  # it passed the gateway, so the configured latency applies
    subject_token: str | None = None  # X-Subject-Token of an IAM answer
    location: str | None = None  # Location of a redirect
    request_id: str | None = None  # X-Request-Id, when not the exchange's own
