"""The ListImageMembers contract: URLs no ID can bend, and bodies we accept or refuse."""

from __future__ import annotations

import orjson
import pytest

from collector.api import ApiError, BodyError, Member, members_url, parse_error, parse_members
from collector.fake.dataset import DOC_EXAMPLE_IMAGE, DOC_EXAMPLE_MEMBERS

DOC_BODY = orjson.dumps({"members": list(DOC_EXAMPLE_MEMBERS)})


def test_url_for_a_page() -> None:
    assert members_url("https://cph.example.com", "p1", "img-1") == \
        "https://cph.example.com/v1/p1/cloud-phone/images/img-1/members"
    assert members_url("http://h:1", "p", "i", marker="a b/c~") == \
        "http://h:1/v1/p/cloud-phone/images/i/members?marker=a%20b%2Fc~"


@pytest.mark.parametrize("bad", ["../x", "a/b", "a%2Fb", "a?b", "", "a b", "é"])
def test_an_id_can_never_change_the_path(bad: str) -> None:
    with pytest.raises(ValueError, match="unchecked image ID"):
        members_url("https://h", "p", bad)
    with pytest.raises(ValueError, match="unchecked project ID"):
        members_url("https://h", bad, "img-1")


def test_the_documented_example_parses_to_its_two_members() -> None:
    page = parse_members(DOC_BODY, DOC_EXAMPLE_IMAGE)
    assert page.members == [
        Member("87dc6af96095488d9205b6f31f314b16", 1713320018058, 1713320018058),
        Member("6733a7ad58694af18c7ee4820052d63f", 1713083265307, 1713083265307)]
    assert page.next_marker is None


def test_page_info_next_marker_is_followed_and_empty_means_last() -> None:
    body = {"members": [], "page_info": {"next_marker": "m2"}}
    assert parse_members(orjson.dumps(body), "i").next_marker == "m2"
    body["page_info"] = {"next_marker": ""}
    assert parse_members(orjson.dumps(body), "i").next_marker is None


@pytest.mark.parametrize("body", [
    b"", b"<html>", b"[]", b'{"members": {}}', b'{"members": [1]}',
    b'{"members": [{"member_id": 5, "create_time": 1, "update_time": 1}]}',
    b'{"members": [{"member_id": "m", "create_time": "1.5e3", "update_time": 1}]}',
    b'{"members": [{"member_id": "m", "create_time": "-1", "update_time": 1}]}',
    b'{"members": [{"member_id": "m", "create_time": "", "update_time": 1}]}',
    b'{"members": [{"member_id": "m", "create_time": 1, "update_time": "\xd9\xa3"}]}',
    b'{"members": [{"member_id": "m", "create_time": true, "update_time": 1}]}',
    b'{"members": [{"member_id": "m", "create_time": 1.5, "update_time": 1}]}',
    b'{"members": [{"image_id": "other", "member_id": "m", "create_time": 1, "update_time": 1}]}',
    b'{"members": [], "page_info": []}',
    b'{"members": [], "page_info": {"next_marker": 3}}',
])
def test_any_other_shape_is_a_body_error(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_members(body, "i")


def test_error_bodies_in_every_known_shape() -> None:
    cps = (b'{"request_id":"r1","error_code":"CPS.0030",'
           b'"error_msg":"Parameter: image_id is invalid."}')
    assert parse_error(cps) == ApiError("CPS.0030", "Parameter: image_id is invalid.", "r1")
    assert parse_error(b'{"errorCode":"X.1","errorMsg":"m"}') == ApiError("X.1", "m", None)
    assert parse_error(b'{"error":{"code":"401","message":"m"}}') == ApiError("401", "m", None)
    assert parse_error(b"<html>") == ApiError(None, None, None)


def test_member_times_given_as_strings_of_digits_are_the_same_epoch_ms() -> None:
    body = (b'{"members": [{"image_id": "img1", "member_id": "m1", "create_time": "1713320018058",'
            b' "update_time": "1713320019000"}, {"member_id": "m2", "create_time": 5}]}')
    assert parse_members(body, "img1").members == [Member("m1", 1713320018058, 1713320019000),
                                                   Member("m2", 5, 5)]


def test_a_bad_time_names_the_field() -> None:
    body = b'{"members": [{"member_id": "m", "create_time": 1, "update_time": "soon"}]}'
    with pytest.raises(BodyError, match=r"^members\[0\]\.update_time is not epoch milliseconds$"):
        parse_members(body, "img1")
