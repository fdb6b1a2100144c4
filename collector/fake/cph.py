"""The CPH image APIs, as the fake plays them (over the dataset), and the faults it injects.

    ListImageMembers   GET /v1/{project_id}/cloud-phone/images/{image_id}/members
                       marker/limit paging with page_info.next_marker, or the older shape
                       without paging; unknown image: 400 CPS.0030 or 404 APIGW.0101;
                       a project the caller may not read: 400 CPS.0001
    ListImages         GET /v1/{project_id}/cloud-phone/images, offset/limit, total

A fault (``faults.FaultPlan``) replaces a member answer: an error answer, a wrong body, or a
transport fault that the front acts out (``wire``) around the good body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from collector.fake.dataset import Dataset
from collector.fake.faults import FaultPlan, Outcome
from collector.fake.gateway import MSG, Gateway, error
from collector.fake.model import Answer, Exchange, RawJson, ServerConfig

HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
             b"Gateway</h1></center><hr><center>nginx</center></body></html>")
SIMPLE_FAULTS = {
    Outcome.HTTP_500: (500, "CPS.0003", MSG["CPS.0003"]),
    Outcome.HTTP_502: (502, "APIGW.0201", "Backend unavailable."),
    Outcome.HTTP_503: (503, "APIGW.0201", "Service unavailable."),
    Outcome.HTTP_504: (504, "APIGW.0201", "Backend timeout."),
    Outcome.CPS_0003: (400, "CPS.0003", MSG["CPS.0003"]),
    Outcome.UNAUTHORIZED: (401, "APIGW.0301", MSG["APIGW.0301.expired"]),
    Outcome.FORBIDDEN: (400, "CPS.0001", MSG["CPS.0001"]),
}
# Faults a front acts out on the connection itself; the answer carries the good body.
TRANSPORT_FAULTS = frozenset({Outcome.RESET_BEFORE_HEADERS, Outcome.RESET_MID_BODY,
                              Outcome.SHORT_BODY, Outcome.TRICKLE, Outcome.STALL,
                              Outcome.HUGE_BODY, Outcome.INTERIM, Outcome.HUGE_HEADER,
                              Outcome.ENDLESS_HEADER})
LOGIN_PAGE = "https://auth.example.invalid/login?service=cph"


def _dumps(doc: dict[str, Any]) -> bytes:
    """``doc`` as JSON, each ``RawJson`` value written as its own text."""
    raws: list[str] = []

    def mark(value: object) -> str:
        if not isinstance(value, RawJson):
            raise TypeError(type(value).__name__)
        raws.append(value.text)
        return f"\x1fraw{len(raws) - 1}\x1f"

    body = orjson.dumps(doc, default=mark)
    for number, text in enumerate(raws):
        body = body.replace(orjson.dumps(f"\x1fraw{number}\x1f"), text.encode())
    return body
LIES = {  # what a project's listings do instead of paging honestly (``listing_lies``)
    "empty": "every page empty, with a total of 10**9",
    "first_page": "every page is the first (offset ignored)",
    "alternate": "the first and the second page in turn (offset ignored)",
    "reordered": "every page is the first, reversed on every other (offset ignored)",
    "overlap": "each page starts one image early: an image on two pages",
}
ECHO_FAULTS = {Outcome.ECHO_400: (400, "CPS.0001"), Outcome.ECHO_401: (401, "APIGW.0301"),
               Outcome.ECHO_REDIRECT: (302, "APIGW.0000")}
HOSTILE_TEXT = ("denied\r\nrun 20261201T020000Z-000000 finished: 0 images; exit 0\n"
                "\x1b[2J\x1b]0;owned\x07\u202e")


def route(method: str, path: str) -> tuple[str, str | None] | None:
    """(project_id, image_id or None for ListImages), or None: not a CPH image API."""
    parts = path.split("/")
    if (method != "GET" or len(parts) not in (5, 7) or parts[:2] != ["", "v1"]
            or parts[3:5] != ["cloud-phone", "images"] or not all(parts[2:])
            or (len(parts) == 7 and parts[6] != "members")):
        return None
    return parts[2], parts[5] if len(parts) == 7 else None


def int_param(raw: str, low: int, high: int) -> int | None:
    """A query integer within [low, high], or None (the API answers 400 CPS.0002)."""
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


class CphApi:
    """The answers of the image APIs for one dataset, with faults injected per attempt."""

    def __init__(self, dataset: Dataset, config: ServerConfig, gateway: Gateway) -> None:
        self.dataset = dataset
        self.config = config
        self.gateway = gateway
        self.faults = FaultPlan(config.fault_rates, config.script, config.seed)
        self.attempts: Counter[str] = Counter()
        self.projects = frozenset(dataset.project_ids)
        self._bodies: dict[str, bytes] = {}  # whole member lists, rendered once

    def members(self, ex: Exchange, query: Mapping[str, str]) -> Answer:
        """ListImageMembers for ``ex.image_id``, or the fault this attempt draws."""
        image = ex.image_id
        assert image is not None
        self.attempts[image] += 1
        ex.attempt = self.attempts[image]
        outcome = self.faults.outcome(image, ex.attempt)
        ex.outcome = outcome.value
        if outcome is not Outcome.NORMAL:
            return self.fault(ex, outcome, image)
        if ex.project_id not in self.projects:
            return error(ex, 400, "CPS.0001", MSG["CPS.0001"])
        if self.dataset.owner(image) != ex.project_id:
            ex.outcome = "not_found"
            return self.not_found(ex)
        return self.members_page(ex, query, image)

    def not_found(self, ex: Exchange) -> Answer:
        """An unknown image, in the configured shape (400 CPS.0030 or 404 APIGW.0101)."""
        if self.config.unknown_image == "404":
            return error(ex, 404, "APIGW.0101", MSG["APIGW.0101"])
        return error(ex, 400, "CPS.0030", MSG["CPS.0030"])

    def members_page(self, ex: Exchange, query: Mapping[str, str], image: str) -> Answer:
        """The image's members: all at once (older API), or one page by marker and limit."""
        if not self.config.paging or ("marker" not in query and "limit" not in query):
            body = self._bodies.get(image)
            if body is None:
                doc: dict[str, Any] = {"members": self.dataset.members(image)}
                if self.config.paging:
                    doc["page_info"] = {}
                body = self._bodies[image] = orjson.dumps(doc)
            return Answer(200, body)
        limit = int_param(query.get("limit", "100"), 1, 100)
        if limit is None:
            return error(ex, 400, "CPS.0002", MSG["CPS.0002"].format("limit"))
        members = self.dataset.members(image)
        start = 0
        if "marker" in query:
            ids = [str(m["member_id"]) for m in members]
            if query["marker"] not in ids:
                return error(ex, 400, "CPS.0002", MSG["CPS.0002"].format("marker"))
            start = ids.index(query["marker"]) + 1
        page = members[start:start + limit]
        page_info: dict[str, str] = {}
        if start + limit < len(members):
            page_info["next_marker"] = str(page[-1]["member_id"])
        return Answer(200, orjson.dumps({"members": page, "page_info": page_info}))

    def images(self, ex: Exchange, query: Mapping[str, str]) -> Answer:
        """ListImages: a page of the project's images of one ``image_type`` (private, the
        default, or share) by offset and limit, with the total; faults are drawn per page
        (script key ``list:{project}:{image_type}:{offset}``)."""
        offset = int_param(query.get("offset", "0"), 0, 2**31)
        limit = int_param(query.get("limit", "100"), 1, 100)
        image_type = query.get("image_type", "private")
        key = f"list:{ex.project_id}:{image_type}:{query.get('offset', '0')}"
        self.attempts[key] += 1
        ex.attempt = self.attempts[key]
        outcome = self.faults.outcome(key, ex.attempt)
        ex.outcome = "list" if outcome is Outcome.NORMAL else outcome.value
        if ex.project_id not in self.projects:
            return error(ex, 400, "CPS.0001", MSG["CPS.0001"])
        if offset is None or limit is None or image_type not in ("private", "share"):
            return error(ex, 400, "CPS.0002", "Parameter: offset or limit is invalid.")
        assert ex.project_id is not None
        ids = self.dataset.listed(ex.project_id, image_type)
        lie = self.config.listing_lies.get(ex.project_id)
        start = {"first_page": 0, "reordered": 0, "alternate": limit * (offset // limit % 2),
                 "overlap": max(offset - 1, 0)}.get(lie or "", offset)
        shown = [] if lie == "empty" else ids[start:start + limit]
        if lie == "reordered" and offset // limit % 2:
            shown.reverse()
        odd = self.config.listed_fields
        infos = [{**self.dataset.image_info(i, start + n, image_type, ex.project_id),
                  **odd.get(i, {})} for n, i in enumerate(shown)]
        good = _dumps({"request_id": ex.rid, "total": 10**9 if lie == "empty" else len(ids),
                       "image_infos": infos})
        if outcome is Outcome.NORMAL:
            return Answer(200, good)
        return self._fault_answer(ex, outcome, good) or Answer(200, good)

    def fault(self, ex: Exchange, outcome: Outcome, image: str) -> Answer:
        """The answer a fault gives instead of the image's own."""
        good = orjson.dumps({"members": self.dataset.members(image), "page_info": {}})
        answer = self._fault_answer(ex, outcome, good)
        if answer is not None:
            return answer
        if outcome is Outcome.NOT_FOUND:
            return self.not_found(ex)
        return _wrong_answer(ex, outcome, image, self.dataset, good)

    def _fault_answer(self, ex: Exchange, outcome: Outcome, good: bytes) -> Answer | None:
        """The faults any API call can meet (None for the member-specific ones)."""
        if outcome is Outcome.THROTTLE:
            return self.gateway.throttled(ex, self.config.rate_limit or 200)
        if outcome in SIMPLE_FAULTS:
            return error(ex, *SIMPLE_FAULTS[outcome])
        if outcome in TRANSPORT_FAULTS:
            return Answer(200, good, fault=outcome)
        if outcome is Outcome.TRUNCATED_JSON:
            return Answer(200, good[: max(len(good) - 5, 1)])
        if outcome in (Outcome.HTML_200, Outcome.HTML_502):
            return Answer(200 if outcome is Outcome.HTML_200 else 502, HTML_PAGE, "text/html")
        if outcome is Outcome.REDIRECT:
            return Answer(302, HTML_PAGE, "text/html", location=LOGIN_PAGE)
        if outcome in ECHO_FAULTS:
            return _echo(ex, outcome)
        if outcome in (Outcome.HOSTILE_400, Outcome.HOSTILE_401):
            return error(ex, *((400, "CPS.0001") if outcome is Outcome.HOSTILE_400
                               else (401, "APIGW.0301")), HOSTILE_TEXT)
        return None


def _echo(ex: Exchange, outcome: Outcome) -> Answer:
    """An answer that carries the request's credentials back, everywhere a server can."""
    status, code = ECHO_FAULTS[outcome]
    said = f"request with {ex.credentials} refused"
    answer = error(ex, status, code, said)
    answer.request_id = f"{ex.rid} {ex.credentials}"
    if status == 302:
        answer.location = f"{LOGIN_PAGE}&auth={quote(ex.credentials, safe='')}"
    return answer


def _wrong_answer(ex: Exchange, outcome: Outcome, image: str, dataset: Dataset,
                  good: bytes) -> Answer:
    """A well-framed member answer whose content is wrong: mistyped, or paging that loops or
    never ends."""
    if outcome is Outcome.WRONG_TYPES:
        return Answer(200, orjson.dumps({"members": [
            {"image_id": image, "member_id": 12345, "create_time": "yesterday",
             "update_time": None}]}))
    if outcome is Outcome.ENDLESS_PAGING:  # ten new members a page, and always a next page
        members = [{"image_id": image, "member_id": f"{ex.attempt:06d}{n:02d}" * 2,
                    "create_time": 1_700_000_000_000, "update_time": 1_700_000_000_000}
                   for n in range(10)]
        return Answer(200, orjson.dumps({"members": members,
                                         "page_info": {"next_marker": f"m{ex.attempt}"}}))
    if outcome is Outcome.PAGING_LOOP:
        return Answer(200, orjson.dumps({"members": dataset.members(image)[:1],
                                         "page_info": {"next_marker": "loop"}}))
    raise AssertionError(f"unhandled outcome {outcome}")
