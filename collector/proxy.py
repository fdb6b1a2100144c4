"""Which proxy a request goes through, as every HTTP tool decides it: pure functions.

``HTTP_PROXY`` / ``HTTPS_PROXY`` (either case, the lower-case one winning, as curl and Python's
``urllib`` read them) by the target's scheme, ``ALL_PROXY`` as the fallback, and ``NO_PROXY``
(host names, domain suffixes, ``host:port``, ``*``) to go direct. The ``proxy`` setting
overrides the proxy variables; ``NO_PROXY`` still applies to it. A proxy URL's userinfo is
never shown (``shown``, and ``redact`` by its shape); its password (and ``user:password``, the
``Basic`` credential) is registered for redaction. The user name alone is not a secret: it is
often an ordinary word, and scrubbing it everywhere mangled paths (see ``collector.secrets``).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from collector.secrets import Secret


def proxy_variables(env: Mapping[str, str]) -> dict[str, str]:
    """``{"http": url, "https": url, "all": url, "no": hosts}`` from the environment."""
    found: dict[str, str] = {}
    for name, value in env.items():  # upper case first, so that lower case wins
        if name.isupper() and name.endswith("_PROXY") and value.strip():
            found[name[:-6].lower()] = value.strip()
    for name, value in env.items():
        if name.islower() and name.endswith("_proxy") and value.strip():
            found[name[:-6]] = value.strip()
    return found


def choose(url: str, setting: str | None, env: Mapping[str, str]) -> str | None:
    """The proxy URL for a request to ``url``, or None to connect directly."""
    variables = proxy_variables(env)
    target = urlsplit(url)
    host = target.hostname or ""
    if target.port is not None:
        host = f"{host}:{target.port}"
    no_proxy = variables.get("no")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # stable, not in typeshed
    if no_proxy and bypass(host, {"no": no_proxy}):
        return None
    if setting is not None:
        return setting
    return variables.get(target.scheme) or variables.get("all")


def register_credentials(proxy: str) -> None:
    """Make ``redact`` scrub the proxy's password (as given and decoded) and the ``user:password``
    of its ``Basic`` credential wherever they might surface."""
    parts = urlsplit(proxy)
    if parts.password:
        for password in {parts.password, unquote(parts.password)}:
            Secret(password)
            Secret(f"{unquote(parts.username or '')}:{password}")


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def shown(proxy: str) -> str:
    """The proxy URL fit for a log line, an error or the manifest: any user and password
    replaced. Works on the raw text, so a malformed URL is shown as it was given."""
    return _USERINFO.sub(r"\1***@", proxy, count=1)


def has_credentials(proxy: str) -> bool:
    """True when a proxy URL carries a user or password."""
    parts = urlsplit(proxy)
    return bool(parts.username or parts.password)
