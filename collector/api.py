"""The ListImageMembers contract as pure functions: the URL we send, the bodies we accept.

Source: CPH API reference "Obtaining Projects that the Image Is Shared with" (cph_api_0562);
paging (``marker``/``limit``, ``page_info.next_marker``) exists only in newer API versions, so
the first page is requested without a query and ``next_marker`` is followed when present.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson

from collector.ids import is_valid_id
from collector.secrets import from_server


class BodyError(ValueError):
    """A 200 response whose body is not the documented shape."""


class Member(NamedTuple):  # a tuple: cheap to build on the hot path
    """One member row of a page: who the image is shared with, since when."""
    member_id: str
    create_time: int  # epoch milliseconds
    update_time: int


class Page(NamedTuple):  # a tuple: cheap to build on the hot path
    """One page of ListImageMembers: its members and the marker of the next page, if any."""
    members: list[Member]
    next_marker: str | None


@dataclass(frozen=True, slots=True)
class ApiError:
    """The error triple of a non-200 answer, whichever shape it came in."""
    code: str | None
    message: str | None
    request_id: str | None


@functools.lru_cache(maxsize=4096)
def _images_url(endpoint: str, project_id: str) -> str:
    if not is_valid_id(project_id):
        raise ValueError("refusing to build a URL from an unchecked project ID")
    return f"{endpoint}/v1/{project_id}/cloud-phone/images/"


def members_url(endpoint: str, project_id: str, image_id: str, marker: str | None = None) -> str:
    """The request URL; only allowlisted IDs may reach it, so no ID can change the path."""
    if not is_valid_id(image_id):
        raise ValueError("refusing to build a URL from an unchecked image ID")
    url = f"{_images_url(endpoint, project_id)}{image_id}/members"
    if marker is not None:
        url += "?marker=" + quote(marker, safe="")
    return url


def _epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds as a JSON number, or as a string of digits (other CPH APIs send
    times so); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**53 else None
    if isinstance(value, str) and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
        number = int(value)
        return number if number < 2**53 else None
    return None


def parse_members(body: bytes, image_id: str) -> Page:
    """The members of one page; raises ``BodyError`` with a short reason for any other shape."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BodyError("response is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BodyError("response is not a JSON object")
    raw_members = doc.get("members")
    if not isinstance(raw_members, list):
        raise BodyError("response has no members list")
    members = []
    for index, item in enumerate(raw_members):
        if not isinstance(item, dict):
            raise BodyError(f"members[{index}] is not an object")
        member_id, created, updated = item.get("member_id"), item.get("create_time"), \
            item.get("update_time")
        if not isinstance(member_id, str) or not member_id:
            raise BodyError(f"members[{index}].member_id is not a non-empty string")
        created_ms = _epoch_ms(created)
        if created_ms is None:
            raise BodyError(f"members[{index}].create_time is not epoch milliseconds")
        updated_ms = created_ms if updated is None else _epoch_ms(updated)  # None: never updated
        if updated_ms is None:
            raise BodyError(f"members[{index}].update_time is not epoch milliseconds")
        if item.get("image_id", image_id) != image_id:
            raise BodyError(f"members[{index}].image_id is another image")
        members.append(Member(member_id, created_ms, updated_ms))
    next_marker = None
    page_info = doc.get("page_info")
    if isinstance(page_info, dict):
        marker = page_info.get("next_marker")
        if marker is not None and not isinstance(marker, str):
            raise BodyError("page_info.next_marker is not a string")
        next_marker = marker or None
    elif page_info is not None:
        raise BodyError("page_info is not an object")
    return Page(members, next_marker)


def parse_error(body: bytes) -> ApiError:
    """The error triple, from any of the shapes Huawei services use; never raises."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ApiError(None, None, None)
    if not isinstance(doc, dict):
        return ApiError(None, None, None)
    if isinstance(doc.get("error"), dict):  # {"error": {"code", "message"}} (IAM, some gateways)
        doc = {**doc, **doc["error"]}

    def pick(*keys: str) -> str | None:
        """The first of ``keys`` the body has, as text, redacted and cut."""
        for key in keys:
            value = doc.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return from_server(str(value), 500)  # redacted before it is cut
        return None

    return ApiError(pick("error_code", "errorCode", "code"),
                    pick("error_msg", "errorMsg", "message"),
                    pick("request_id", "requestId"))
