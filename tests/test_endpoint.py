"""Which answers prove the endpoint is the CPH API, and when a run gives up on it."""

from __future__ import annotations

import pytest

from collector.endpoint import EndpointCheck, Sign, sign_of

SIGNS = [
    (200, None, True, Sign.PROOF),  # a members body we could read
    (200, None, False, Sign.UNRECOGNISED),  # an HTML page or another JSON with 200
    (400, "CPS.0030", False, Sign.PROOF),
    (429, "APIGW.0308", False, Sign.PROOF),
    (503, "APIGW.0201", False, Sign.PROOF),
    (404, "APIGW.0101", False, Sign.UNRECOGNISED),  # a wrong path, or an unknown image
    (404, None, False, Sign.UNRECOGNISED),
    (302, None, False, Sign.UNRECOGNISED),
    (301, "CPS.0001", False, Sign.UNRECOGNISED),  # a redirect is never the API's answer
    (500, "InternalError", False, Sign.UNRECOGNISED),  # another service's error shape
    (400, "CPS.0030x", False, Sign.UNRECOGNISED),
]


@pytest.mark.parametrize(("status", "code", "readable", "sign"), SIGNS)
def test_what_an_answer_says_about_the_endpoint(status: int, code: str | None, readable: bool,
                                                 sign: Sign) -> None:
    assert sign_of(status, code, readable) is sign


def test_no_answer_fails_fast_but_unproving_answers_get_a_window_ten_times_wider() -> None:
    check = EndpointCheck("https://cph.example", fail_fast_after=3)
    assert [check.note(Sign.UNRECOGNISED, "HTTP 404 APIGW.0101") for _ in range(27)] == [None] * 27
    assert check.note(Sign.NO_ANSWER, "request timed out") is None
    assert check.note(Sign.UNRECOGNISED, "HTTP 404 APIGW.0101") is None
    assert check.note(Sign.NO_ANSWER, "request timed out") == (
        "endpoint https://cph.example: none of 30 requests was answered as the CPH API answers "
        "(last: request timed out); check --endpoint")

    refused = EndpointCheck("https://cph.example", fail_fast_after=2)
    assert refused.note(Sign.NO_ANSWER, "cannot connect (Connection refused)") is None
    assert refused.note(Sign.NO_ANSWER, "cannot connect (Connection refused)") == (
        "endpoint https://cph.example: cannot connect (Connection refused) for the first 2 "
        "requests; check --endpoint")


def test_one_proof_settles_it_for_the_rest_of_the_run() -> None:
    check = EndpointCheck("https://cph.example", fail_fast_after=1)
    assert check.note(Sign.PROOF) is None
    assert [check.note(Sign.NO_ANSWER, "x") for _ in range(5)] == [None] * 5
    assert check.proven
