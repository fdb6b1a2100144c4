"""How each setting's text becomes its value: the parsers (``Kind``) ``specs`` declares with.

A parser raises ``ValueError`` for a value it refuses; ``Refused`` when it can say why, and the
error line then shows that reason (decided by the type, never by the message's wording).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.errors import Refused
from collector.ids import is_valid_id
from collector.shards import Shard, parse_shard
from collector.store import BucketUrl, parse_bucket_url

# Regions of CPH, as the official SDK lists them (huaweicloudsdkcph/v1/region/cph_region.py).
REGIONS = ("cn-north-4", "cn-north-9", "cn-east-2", "cn-east-3", "cn-east-4", "cn-south-1",
           "cn-southwest-2", "ap-southeast-1", "ap-southeast-3", "ru-northwest-2", "la-south-2",
           "la-north-2", "af-north-1")


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: how to read it, what is allowed (said in errors, the TOML and the README,
    always from here), one line of help, and where its value lives (``group.attr``)."""

    parse: Callable[[Any], Any]
    allowed: str
    help: str
    group: str
    attr: str


Kind = tuple[Callable[[Any], Any], str]  # a parser and the words for what it allows


def spec(kind: Kind, help: str, where: str) -> Spec:
    """A ``Spec`` from a kind (parser and its words), a line of help and ``group.attr``."""
    group, _, attr = where.partition(".")
    return Spec(kind[0], kind[1], help, group, attr)


def _checked_number(raw: Any, whole: bool) -> float:
    if isinstance(raw, bool):
        raise TypeError
    if whole and isinstance(raw, float) and not raw.is_integer():
        raise ValueError  # 5.7 connections is a mistake, not 5
    value = int(raw) if whole and not isinstance(raw, float) else float(raw)
    if not math.isfinite(value):
        raise ValueError
    return value


def whole(low: int, high: int) -> Kind:
    """A whole number in [low, high]; 5.7 is refused, not rounded."""
    def parse(raw: Any) -> int:
        value = int(_checked_number(raw, whole=True))
        if not low <= value <= high:
            raise ValueError
        return value

    return parse, f"a whole number from {low} to {high}"


def number(low: float, high: float) -> Kind:
    """A finite number in [low, high]."""
    def parse(raw: Any) -> float:
        value = _checked_number(raw, whole=False)
        if not low <= value <= high:
            raise ValueError
        return value

    return parse, f"a number from {low:g} to {high:g}"


def positive(high: float, unit: str = "a number") -> Kind:
    """A finite number in (0, high]."""
    def parse(raw: Any) -> float:
        value = _checked_number(raw, whole=False)
        if not 0 < value <= high:
            raise ValueError
        return value

    return parse, f"{unit} > 0 and <= {high:g}"


def choice(options: tuple[str, ...]) -> Kind:
    """One of ``options``, case-insensitive."""
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in options:
            raise ValueError
        return value

    return parse, "one of " + ", ".join(options)


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def check_url(raw: str, *, path: bool, userinfo: bool) -> str:
    """An http(s) URL and nothing else, or ValueError saying what else it is. Checked on the
    raw text: ``urlsplit`` silently drops tabs and line breaks, which would hide them."""
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise Refused("it contains whitespace or a control character")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not raw.startswith(f"{parts.scheme}://"):
        raise Refused("it does not start with http:// or https://")
    if "?" in raw:
        raise Refused("it has a query")
    if "#" in raw:
        raise Refused("it has a fragment")
    userinfo_given, _, hostport = parts.netloc.rpartition("@")
    if userinfo_given and not userinfo:
        raise Refused("it has a user or password, which would end up in logs")
    host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") \
        else (hostport, "", "")
    if not colon:
        host = hostport
    if not _HOST.fullmatch(host):
        raise Refused("its host is missing or malformed")
    if colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise Refused("its port is not a number from 1 to 65535")
    if not path and parts.path not in ("", "/"):
        raise Refused("a proxy URL has no path")
    if not _PATH.fullmatch(parts.path):
        raise Refused("its path has characters a URL may not hold")
    return raw


def endpoint_value(raw: Any) -> str:
    """A URL; ``{region}`` in it stands for each region of a run over several."""
    value = str(raw)
    check_url(value.replace("{region}", "cn-north-4"), path=True, userinfo=False)
    return value.rstrip("/")


def regions_value(raw: Any) -> tuple[str, ...]:
    values = [str(v).strip().lower() for v in (raw if isinstance(raw, list | tuple)
                                               else str(raw).split(","))]
    if not values or not all(v in REGIONS for v in values) or len(set(values)) < len(values):
        raise ValueError
    return tuple(values)


ENDPOINT: Kind = (endpoint_value, "an http(s) URL without query, fragment or credentials")


def proxy_value(raw: Any) -> str:
    return check_url(str(raw), path=False, userinfo=True)


PROXY: Kind = (proxy_value, "an http:// or https:// proxy URL, e.g. http://proxy.example:3128")


def project_id_value(raw: Any) -> tuple[str, ...]:
    parts = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    values = [str(p).strip() for p in parts]
    if not values or not all(is_valid_id(v) for v in values) or len(set(values)) < len(values):
        raise ValueError
    return tuple(values)


TRUSTED_FILE_BYTES = 16 << 20


def trusted_value(raw: Any) -> tuple[str, ...]:
    """Project IDs: a list, a comma list, or ``@FILE`` with one a line (``#`` comments)."""
    if isinstance(raw, str) and raw.strip().startswith("@"):
        path = Path(raw.strip()[1:]).expanduser()
        try:
            if path.stat().st_size > TRUSTED_FILE_BYTES:  # a wrong file, not a partner list
                raise Refused(f"its file {path} is over {TRUSTED_FILE_BYTES >> 20} MiB "
                                 "(a partner list of 200,000 projects is 7 MiB)")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Refused(f"its file {path} cannot be read ({type(exc).__name__})") from None
        raw = [line.strip() for line in text.splitlines()
               if line.strip() and not line.strip().startswith("#")]
        if not raw:
            return ()
    return project_id_value(raw)


def flag_value(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError


def name_value(raw: Any) -> str:
    value = str(raw).strip()
    if not value or not value.isprintable():
        raise ValueError
    return value


def date_value(raw: Any) -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    return dt.date.fromisoformat(str(raw).strip())


def output_value(raw: Any) -> Path | BucketUrl:
    """A folder, or ``s3://bucket/prefix`` / ``obs://bucket/prefix``."""
    if isinstance(raw, BucketUrl):
        return raw
    url = parse_bucket_url(str(raw).strip())
    return url if url is not None else path_value(raw)


def shard_value(raw: Any) -> Shard:
    return raw if isinstance(raw, Shard) else parse_shard(str(raw))


def prom_value(raw: Any) -> Path:
    """node_exporter's textfile collector reads ``*.prom`` files only."""
    path = path_value(raw)
    if path.suffix != ".prom":
        raise Refused("the textfile collector reads only files named *.prom")
    if path.exists() and not path.is_file():  # a FIFO would hold the run, a device take it
        raise Refused("it is a FIFO, a device or a folder, not a regular file")
    return path


def path_value(raw: Any) -> Path:
    value = str(raw)
    if not value.strip() or "\x00" in value:
        raise ValueError
    return Path(value).expanduser()


NAME: Kind = (name_value, "a non-empty name")
