"""``cph-collector check``: what a run would check before its first request, then one request
of each kind it would send, each said in one line; nothing is collected or published.

    settings ─> input (or discovery) ─> CA bundle and proxy ─> metrics file and Pushgateway
             ─> output (writable, lockable)
             ─> credentials and endpoint (one member call, or ``ListImages?limit=1`` a project)

The exit code is the one a run would have given: that of the first check that failed (2 for
what is wrong before any request, 3 for credentials and endpoint), else 0.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from collector import metrics
from collector import proxy as proxies
from collector.auth import AkSkAuth, Auth, Post
from collector.build import Parts, build, open_store
from collector.client import tls_context
from collector.concurrency import in_thread
from collector.config import Settings
from collector.discover import list_projects
from collector.errors import Blame, CollectorError, ExitCode, FatalRunError, Status, UsageError
from collector.inputs import detect_format
from collector.intake import Intake, Rejected, Target
from collector.listing import Listing, parse_image_page
from collector.outdir import check_writable, lock
from collector.pipeline import local_input, open_input
from collector.results import ImageResult
from collector.secrets import printable, redact
from collector.store import reason


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: int = 0
    warning: bool = False  # ok for the exit code, as a run goes on with a warning

    def line(self) -> str:
        """The check's line; its detail may quote a server, so it is redacted and escaped."""
        said = "warning" if self.warning else "ok" if self.ok else "failed"
        return f"check {self.name}: {said} ({printable(redact(self.detail))})"


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def warned(name: str, detail: str) -> Check:
    return Check(name, True, detail, warning=True)


def failed(name: str, detail: str, code: ExitCode = ExitCode.USAGE) -> Check:
    return Check(name, False, detail, int(code))


def _answer(result: ImageResult | Listing) -> str:
    return " ".join(str(x) for x in (f"HTTP {result.http_status}" if result.http_status
                                     else None, result.error_code, result.error_msg) if x)


def judge(what: str, result: ImageResult | Listing) -> list[Check]:
    """The credentials and endpoint checks from one answer (pure): any answer of the API but
    401 proves both; a 401 or 403 of the gateway is the credentials; no answer, or not the
    API's, is the endpoint."""
    detail = f"{what}: {_answer(result) or 'answered'}"
    if result.status in (Status.OK, Status.NOT_FOUND) or (
            result.status is Status.FORBIDDEN and result.error_code != "APIGW.0301"):
        return [passed("credentials", f"accepted by {what}"), passed("endpoint", detail)]
    if result.http_status in (401, 403):
        return [failed("credentials", detail, ExitCode.FATAL),
                passed("endpoint", f"{what}: the API answered")]
    return [failed("endpoint", detail, ExitCode.FATAL)]


async def run_checks(settings: Settings, input_path: str | None, env: Mapping[str, str], *,
                     auth: Callable[[Post], Auth] | None = None,
                     out: Callable[[str], None] = print) -> int:
    """Print one line per check; returns the exit code a run would have given."""
    checks: list[Check] = []

    def say(check: Check) -> None:
        checks.append(check)
        out(check.line())

    say(passed("settings", f"output {settings.output.location}, rate_limit "
                           f"{settings.http.rate_limit:g}/s, auth {settings.auth.method}"))
    with tempfile.TemporaryDirectory(prefix="cph-check-") as scratch:
        local = None  # the input as a local file, fetched once (a bucket's object is copied)
        if input_path is not None:
            local, check = await in_thread(_input, settings, input_path, env,
                                                   Path(scratch))
            say(check)
        await _after_input(settings, input_path, local, env, auth, say)
    bad = [c for c in checks if not c.ok]
    code = worst.exit_code if (worst := _worst(bad)) else 0
    out(f"check: {len(checks) - len(bad)} of {len(checks)} passed" +
        (f"; exit {code}" if bad else ""))
    return code


def _worst(bad: list[Check]) -> Check | None:
    """The check whose code the run gives: the first that stops a run (2, 3) before any 1."""
    return next((c for c in bad if c.exit_code != ExitCode.SOME_FAILED), bad[0] if bad else None)


async def _after_input(settings: Settings, input_path: str | None, local: str | None,
                    env: Mapping[str, str], auth: Callable[[Post], Auth] | None,
                    say: Callable[[Check], None]) -> None:
    """Discovery, CA bundle, proxy, output, then the requests (not for an input that could
    not be read: the run would stop there)."""
    if input_path is None:
        say(passed("discovery", f"region {settings.http.region or '(endpoint only)'}, projects "
                                f"{settings.source.project_id or 'from IAM'}"))
    say(_ca_bundle(settings))
    say(_proxy(settings, env))
    for check in await in_thread(_metrics, settings):
        say(check)
    parts: Parts | None = None
    try:
        quick = settings.revise(max_attempts=min(settings.retry.max_attempts, 2),
                                    fail_fast_after=1, backoff_base=0.1, backoff_cap=0.5)
        parts = build(quick, env, auth=auth)
    except UsageError as exc:
        say(failed("credentials", str(exc)))
    if parts is not None:
        say(await in_thread(_output, parts))
        if input_path is not None and local is None:
            return
        async with parts.client:
            for check in await _requests(settings, input_path, local, parts):
                say(check)


def _input(settings: Settings, input_path: str, env: Mapping[str, str],
           scratch: Path) -> tuple[str | None, Check]:
    """The input as a run reads it (``pipeline.local_input``), with its first ID; the local
    path is None when it cannot be read."""
    try:
        local = local_input(input_path, scratch, lambda url: open_store(settings, url, env))
        lines = open_input(local, detect_format(input_path, settings.source.input_format),
                           settings.source.project_id)
        first = next(lines)
        lines.close()
    except (UsageError, ValueError) as exc:
        return None, failed("input", str(exc))
    except OSError as exc:
        return None, failed("input", f"input {input_path}: cannot be read ({reason(exc)})")
    return local, passed("input", f"{input_path}: first ID {first.image_id} (line "
                                  f"{first.number})")


def _ca_bundle(settings: Settings) -> Check:
    try:
        tls_context(settings.http.ca_bundle)
    except ValueError as exc:
        return failed("ca_bundle", str(exc))
    return passed("ca_bundle", str(settings.http.ca_bundle) if settings.http.ca_bundle
                  else "the system's certificates")


def _proxy(settings: Settings, env: Mapping[str, str]) -> Check:
    endpoint = settings.cph_endpoint or ""
    chosen = proxies.choose(endpoint, settings.http.proxy, env) if endpoint else None
    return passed("proxy", f"via {proxies.shown(chosen)}" if chosen else "direct")


def _metrics(settings: Settings) -> list[Check]:
    """The metrics file's folder is writable and the Pushgateway ready (``/-/ready``; nothing
    is pushed); a run only warns about either, so they are warnings here too."""
    checks = []
    path = settings.observe.metrics_file
    if path is not None:
        folder = path.parent
        if not folder.is_dir():
            checks.append(warned("metrics_file", f"{path}: its folder {folder} does not exist; "
                                                 "a run would warn and go on"))
        elif not os.access(folder, os.W_OK | os.X_OK):
            checks.append(warned("metrics_file", f"{path}: its folder {folder} is not "
                                                 "writable; a run would warn and go on"))
        else:
            checks.append(passed("metrics_file", f"{path}: its folder is writable"))
    gateway = settings.observe.pushgateway
    if gateway is not None:
        failure = metrics.probe(gateway)
        checks.append(passed("pushgateway", f"{gateway}: ready") if failure is None
                      else warned("pushgateway", f"{gateway}: not ready ({failure}); "
                                                 "a run would warn and go on"))
    return checks


def _output(parts: Parts) -> Check:
    """Writable and lockable, as a run finds it; the probe is deleted and the lock released."""
    store = parts.store
    try:
        check_writable(store)
        held = lock(store, "check")
        held.__enter__()
        held.__exit__(None, None, None)
    except CollectorError as exc:
        return failed("output", str(exc))
    except OSError as exc:
        return failed("output", f"output {store.url}: {reason(exc)}")
    return passed("output", f"{store.url}: writable, lockable")


async def _requests(settings: Settings, input_path: str | None, local: str | None,
                    parts: Parts) -> list[Check]:
    """One request of each kind a run sends first: a member call for the input's first ID,
    or IAM's project list (unless given) and ``ListImages?limit=1`` for each project."""
    try:
        if input_path is not None and local is not None:
            return await _member_call(settings, input_path, local, parts)
        return await _listing_calls(settings, parts)
    except CollectorError as exc:  # the run would stop here too: say which part it blames
        blamed = exc.blame if isinstance(exc, FatalRunError) else Blame.CREDENTIALS
        return [failed(str(blamed), str(exc), ExitCode.FATAL)]


async def _member_call(settings: Settings, input_path: str, local: str,
                       parts: Parts) -> list[Check]:
    """The first valid ID's member call, as the run's first request would be."""
    def first_target() -> Target | None:
        lines = open_input(local, detect_format(input_path, settings.source.input_format),
                           settings.source.project_id)
        intake = Intake(settings.source.project_id)
        try:
            for line in lines:
                admitted = intake.admit(line)
                if admitted is not None and not isinstance(admitted, Rejected):
                    return admitted
            return None
        finally:
            lines.close()

    first = await in_thread(first_target)
    if first is None:
        return [failed("endpoint", f"input {input_path}: no valid image ID to ask for")]
    result = await parts.fetcher.collect(first)
    return judge(f"ListImageMembers of {first.image_id}", result)


async def _listing_calls(settings: Settings, parts: Parts) -> list[Check]:
    """IAM's projects (unless given), then ``ListImages?limit=1`` for each: the credentials
    and the endpoint said once (by the first answer), then ``listing`` for each other project;
    it stops at the first that fails, as the run would."""
    checks: list[Check] = []
    for region in parts.regions:
        projects = list(settings.source.project_ids) or await list_projects(
            region.iam_fetcher, region.iam_url, region.name, isinstance(parts.auth, AkSkAuth))
        checks.append(passed("projects", f"{region.name or 'endpoint'}: {len(projects)} "
                                         f"({', '.join(projects[:3])}"
                                         f"{', …' if len(projects) > 3 else ''})"))
        for project in projects:
            listing = Listing(region.name, project, "private")
            url = (f"{region.endpoint}/v1/{project}/cloud-phone/images?image_type=private"
                   f"&offset=0&limit=1")
            page = await region.fetcher.fetch(url, project, listing, parse_image_page)
            if page is not None:
                listing.status = Status.OK
            found = judge(f"ListImages of {project}", listing)
            if any(c.name == "endpoint" for c in checks) and all(c.ok for c in found):
                found = [passed("listing", f"{project}: HTTP {listing.http_status}")]
            if listing.status is Status.FORBIDDEN and all(c.ok for c in found):
                # the credentials are good, but the run lists this project as forbidden: 1
                found = [c for c in found if c.name != "listing"] + [failed(
                    "listing", f"{project}: refused ({_answer(listing)}); the run lists it "
                               "as forbidden", ExitCode.SOME_FAILED)]
            checks += found
            if any(c.exit_code > ExitCode.SOME_FAILED for c in found):
                return checks
    return checks
