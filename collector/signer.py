"""AK/SK request signing, ``SDK-HMAC-SHA256``, as Huawei Cloud's API Gateway checks it.

Spec: "API Request Signing Guide", signing algorithm (support.huaweicloud.com/devg-apisign/
api-sign-algorithm-003.html); reference implementation: huaweicloudsdkcore/signer/signer.py.

    CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n
                       SignedHeaders \\n hex(sha256(body))
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Signature        = hex(HMAC-SHA256(key = SK, StringToSign))           -- no derived key
    Authorization    = "SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2>, Signature=<hex>"

CanonicalURI: each path segment percent-encoded (RFC 3986 unreserved and ``~`` kept), always
ending in ``/``. CanonicalQuery: (key, value) pairs sorted, both encoded the same way, joined
``k=v&...``. CanonicalHeaders: ``name:trimmed value\\n`` for each signed header, names lowercase
and sorted. Pure functions; ``auth.AkSkAuth`` holds the keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def sdk_date(now: dt.datetime) -> str:
    """X-Sdk-Date's format: ``YYYYMMDDTHHMMSSZ`` in UTC."""
    return now.astimezone(dt.UTC).strftime(DATE_FORMAT)


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """The path as signed: each segment URI-encoded, with a trailing slash."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """The query as signed: sorted by name and value, each URI-encoded."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def canonical_request(method: str, path: str, query: Iterable[tuple[str, str]],
                      headers: Mapping[str, str], signed: list[str], body: bytes = b"") -> str:
    """``headers`` keyed by lowercase name; ``signed`` lowercase and sorted."""
    lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_HASH
    return "\n".join((method.upper(), canonical_uri(path), canonical_query(query), lines,
                      ";".join(signed), payload))


def signature(secret_key: str, date: str, canonical: str) -> str:
    """HMAC-SHA256 of the string to sign with the secret key, in hex."""
    to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def sign(access_key: str, secret_key: str, method: str, path: str,
         query: Iterable[tuple[str, str]], headers: Mapping[str, str],
         body: bytes = b"") -> str:
    """The Authorization header for a request whose ``headers`` already hold Host and
    X-Sdk-Date; every header whose name has no ``_`` is signed, as the SDK does."""
    lowered = {name.lower(): value for name, value in headers.items()}
    signed = sorted(name for name in lowered if "_" not in name and name != "authorization")
    canonical = canonical_request(method, path, query, lowered, signed, body)
    return (f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, "
            f"Signature={signature(secret_key, lowered['x-sdk-date'], canonical)}")


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """(access key, signed headers, signature) from an Authorization header, or None."""
    if not value.startswith(ALGORITHM + " "):
        return None
    fields = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        key, _, item = part.strip().partition("=")
        fields[key] = item
    if not {"Access", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields["Access"], fields["SignedHeaders"].split(";"), fields["Signature"]
