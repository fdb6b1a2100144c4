"""AK/SK signing reproduces the published vectors bit for bit (cph-api.md section 4.3)."""

from __future__ import annotations

from collector.signer import canonical_query, canonical_request, canonical_uri, sign, signature

SDK_HEADERS = {"Host": "service.endpoint.myhuaweicloud.com", "X-Sdk-Date": "20200608T023900Z",
               "TEST_UNDERSCORE": "excluded"}


def test_the_sdk_vector_for_a_get() -> None:
    auth = sign("AccessKey", "SecretKey", "GET", "/resources", [("size", "1")], SDK_HEADERS)
    assert auth == ("SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=host;x-sdk-date, "
                    "Signature=cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842")


def test_the_sdk_vector_for_a_post_with_a_body() -> None:
    auth = sign("AccessKey", "SecretKey", "POST", "/resources", [("size", "1")], SDK_HEADERS,
                b'{"name":"test","id":1}')
    assert auth.endswith(
        "Signature=436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f")


def test_the_official_guide_example() -> None:
    headers = {"content-type": "application/json", "host": "service.region.example.com",
               "x-sdk-date": "20191115T033655Z"}
    query = [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")]
    canonical = canonical_request("GET", "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs", query,
                                  headers, sorted(headers))
    import hashlib

    assert hashlib.sha256(canonical.encode()).hexdigest() == \
        "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
    assert signature("MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc", "20191115T033655Z",
                     canonical) == \
        "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"


def test_canonical_parts() -> None:
    assert canonical_uri("/v1/p/cloud-phone/images/i/members") == \
        "/v1/p/cloud-phone/images/i/members/"
    assert canonical_query([("marker", "a b/c~"), ("limit", "2")]) == "limit=2&marker=a%20b%2Fc~"
