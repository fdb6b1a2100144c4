"""What the fake CPH answers, decided with no I/O: one request description in, one answer out.

    gateway.py   X-Auth-Token / AK/SK, the per-caller throttle, the error shape
    iam.py       POST /v3/auth/tokens
    cph.py       ListImageMembers, ListImages, and the faults injected into them
    recorder.py  every request and the traffic a gateway would measure
    wire.py      the response head and the transport faults as steps, acted out by a front

Two fronts serve these answers: ``server.FakeCph`` on aiohttp.web, and ``fast.FastFakeCph``, a
lean HTTP/1.1 protocol for benchmarks. Both only translate requests and act out the same steps.
The next features (IAM project listing, a dataset that changes between days) are a method of
``Iam`` and a ``Dataset`` variant; the dispatch below stays as it is.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
from array import array
from collections import Counter
from collections.abc import Mapping
from typing import Self

from collector.fake.cph import SIMPLE_FAULTS, CphApi, route
from collector.fake.dataset import Dataset
from collector.fake.faults import Outcome
from collector.fake.gateway import MSG, Gateway, error
from collector.fake.iam import Iam
from collector.fake.model import JSON, Answer, Exchange, LogEntry, ServerConfig
from collector.fake.recorder import Recorder

CREDENTIAL_HEADERS = ("x-auth-token", "x-security-token", "authorization", "proxy-authorization")

__all__ = ["JSON", "MSG", "SIMPLE_FAULTS", "Answer", "Exchange", "FakeApiCore", "LogEntry",
           "ServerConfig", "url_of"]


class FakeApiCore:
    """The parts of the fake, composed; subclasses add the sockets (``start``/``close``)."""

    def __init__(self, dataset: Dataset | None = None, config: ServerConfig | None = None,
                 regions: dict[str, Dataset] | None = None) -> None:
        """``regions``: more datasets, each served under a path prefix ``/{region}`` (CPH and
        IAM alike), as a run over several regions meets several endpoints."""
        self.dataset = dataset or Dataset()
        self.config = config or ServerConfig()
        self.gateway = Gateway(self.config)
        self.cph, self.iam = self._apis(self.dataset)
        self.regional = {name: self._apis(data) for name, data in (regions or {}).items()}
        self.recorder = Recorder(self.config.record)
        self.url = ""
        self._rng = random.Random(self.config.seed + 1)

    def _apis(self, dataset: Dataset) -> tuple[CphApi, Iam]:
        cph = CphApi(dataset, self.config, self.gateway)
        return cph, Iam(self.config, self.gateway, cph.projects, dataset.iam_projects())

    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    tls: ssl.SSLContext | None = None) -> str:
        """Listen on ``host:port`` (0: a free port); returns the base URL."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop listening and close the connections."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what tests and benchmarks read ---------------------------------------------------------

    @property
    def log(self) -> list[LogEntry]:
        """Every request, in order (tests read it)."""
        return self.recorder.log

    @property
    def max_in_flight(self) -> int:
        """The most requests in flight at once: what the collector's concurrency reached."""
        return self.recorder.max_in_flight

    @property
    def arrivals(self) -> array[float]:
        """Monotonic times of the requests the throttle admitted."""
        return self.gateway.arrivals

    @property
    def statuses(self) -> Counter[int]:
        """How many answers of each HTTP status (0: cut before a status line)."""
        return self.recorder.statuses

    def attempts(self, image_id: str) -> int:
        """Requests made for ``image_id``, retries included."""
        return self.cph.attempts[image_id]

    def requested_images(self) -> set[str]:
        """The image IDs a member call asked for."""
        return self.recorder.requested_images()

    def traffic(self) -> dict[str, float]:
        """Requests per second and in flight, for benchmarks."""
        return self.recorder.traffic()

    # -- one request ----------------------------------------------------------------------------

    def begin(self, method: str, path: str) -> Exchange:
        """A request arrived: counted in flight and given a request ID."""
        return self.recorder.begin(method, path)

    def finish(self, ex: Exchange, status: int) -> None:
        """A request answered (or cut): counted, and logged when the log is on."""
        self.recorder.finish(ex, status)

    def answer(self, ex: Exchange, query: Mapping[str, str], headers: Mapping[str, str],
               body: bytes = b"") -> Answer:
        """The answer to one request. ``headers`` must look up lowercase names."""
        cph, iam, path = self.cph, self.iam, ex.path
        ex.credentials = " ".join(headers[name] for name in CREDENTIAL_HEADERS if headers.get(name))
        prefix, _, rest = path[1:].partition("/")
        if prefix in self.regional:
            (cph, iam), path = self.regional[prefix], "/" + rest
        if iam.handles(path):
            return self._iam_hiccup(ex, path, cph) or iam.answer(ex, path, query, headers, body)
        refused = self.gateway.admit(ex, query, headers, body)
        if refused is not None:
            return refused
        target = route(ex.method, path)
        if target is None:
            return error(ex, 404, "APIGW.0101", MSG["APIGW.0101"], backend=False)
        ex.project_id, ex.image_id = target
        if ex.image_id is None:
            return cph.images(ex, query)
        ex.marker = query.get("marker")
        return cph.members(ex, query)

    def _iam_hiccup(self, ex: Exchange, path: str, cph: CphApi) -> Answer | None:
        """A scripted IAM fault (script key ``iam:{path}``, e.g. ``iam:/v3/auth/tokens``:
        ``["http_503"]``): IAM has bad moments too. Only scripted, so the random rates of the
        member calls never reach IAM."""
        key = f"iam:{path}"
        if key not in cph.faults.script:
            return None
        cph.attempts[key] += 1
        ex.attempt = cph.attempts[key]
        outcome = cph.faults.outcome(key, ex.attempt)
        if outcome is Outcome.THROTTLE:
            return self.gateway.throttled(ex, self.config.rate_limit or 200, backend=False)
        if outcome in SIMPLE_FAULTS:
            status, code, message = SIMPLE_FAULTS[outcome]
            return error(ex, status, code, message, backend=False)
        return None

    # -- latency --------------------------------------------------------------------------------

    @property
    def has_latency(self) -> bool:
        """Whether answers wait (then each front sleeps before answering)."""
        return self.config.latency > 0 or self.config.latency_p50 is not None

    def latency_sample(self) -> float:
        """Seconds for one answer: fixed, or log-normal through the given p50 and p99."""
        cfg = self.config
        if cfg.latency_p50 is not None and cfg.latency_p99 is not None:
            sigma = max(math.log(cfg.latency_p99 / cfg.latency_p50), 0.0) / 2.326  # z(0.99)
            return self._rng.lognormvariate(math.log(cfg.latency_p50), sigma)
        return cfg.latency

    async def delay(self) -> None:
        """Waits one answer's latency."""
        seconds = self.latency_sample()
        if seconds > 0:
            await asyncio.sleep(seconds)


def url_of(host: str, port: int, scheme: str = "http") -> str:
    """The base URL of a listening address (IPv6 in brackets)."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
