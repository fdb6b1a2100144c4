"""The morning report: every number equals the tables' (by DuckDB over the output, the manifest
and ``diff``), every table is the head of the query printed under it, and the page, opened in
headless Chromium, requests nothing, logs no error and filters and sorts its tables."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from collector.diff import changes_between
from collector.errors import UsageError
from collector.fake import Dataset, FakeCph
from collector.pipeline import summary_line
from collector.report import report_key, write_report
from collector.report.page import CSP, cell_text
from collector.store import LocalStore
from tests.browser import chromium
from tests.conftest import S3_ENV, Outcome
from tests.test_changes import NIGHTS_OF_IMAGES, _night_table

pytestmark = pytest.mark.timeout(300)  # the demo and a browser, on a machine that may be busy
Collect = Callable[..., Awaitable[Outcome]]
Factory = Callable[..., Awaitable[FakeCph]]
NIGHT1, NIGHT2 = dt.date(2026, 11, 30), dt.date(2026, 12, 1)
ROOT = Path(__file__).resolve().parents[1]


class Parsed(HTMLParser):
    """What a reader without JavaScript sees: the figures, and each table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, tuple[str, str]] = {}  # key -> (data value, text)
        self.tables: dict[str, dict[str, Any]] = {}
        self.empty: set[str] = set()
        self._figure: str | None = None
        self._value = ""
        self._text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in.append(tag)
        if a.get("data-figure"):
            self._figure, self._text = a["data-figure"], []
        if tag == "data" and self._figure:
            self._value = a.get("value") or ""
        if a.get("data-table"):
            self._table = a["data-table"]
            self.tables[self._table] = {"rows": [], "query": "", "head": []}
        if a.get("data-empty"):
            self.empty.add(str(a["data-empty"]))
        if tag == "table" and self._table:
            self.tables[self._table]["total"] = int(a.get("data-total") or 0)
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        self._in.pop()
        if tag in ("dd", "p") and self._figure:
            self.figures[self._figure] = (self._value, "".join(self._text).strip())
            self._figure, self._value = None, ""
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            table = self.tables[self._table]
            if table["head"]:
                table["rows"].append(self._row)
            else:
                table["head"] = self._row
            self._row = None
        if tag == "section" and self._table and "section" not in self._in:
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._figure:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._table and self._in and self._in[-1] == "code":
            self.tables[self._table]["query"] += data


def parse(page: str) -> Parsed:
    parsed = Parsed()
    parsed.feed(page)
    return parsed


def number(text: str) -> float:
    return float(text.replace(",", "").removesuffix(" s"))


def manifest_of(output: Path, day: dt.date) -> dict[str, Any]:
    docs = [orjson.loads(p.read_bytes()) for p in (output / "runs").glob("*.json")]
    return max((d for d in docs if d["snapshot_date"] == day.isoformat()
                and d["status"] == "finished"), key=lambda d: d["ended_at"])


def expected_figures(output: Path, day: dt.date, previous: dt.date | None) -> dict[str, Any]:
    """Every figure, computed here from the tables (DuckDB), the manifest and ``diff``."""
    def one(sql: str) -> Any:
        return duckdb.sql(sql).fetchall()[0][0]

    def t(name: str) -> str:
        return (f"(SELECT * FROM read_parquet('{output}/{name}/*/*.parquet', hive_partitioning "
                f"= true) WHERE snapshot_date = '{day}')")

    doc = manifest_of(output, day)
    trusted = sorted(filter(None, (doc["settings"]["trusted_projects"] or "").split(",")))
    outside = f"member_id NOT IN (SELECT unnest({trusted!r}::VARCHAR[]))"
    counts = doc["counts"]
    got: dict[str, Any] = {
        "exit_code": doc["exit_code"], "images": one(f"SELECT count(*) FROM {t('image_status')}"),
        **{s: one(f"SELECT count(*) FROM {t('image_status')} WHERE status = '{s}'")
           for s in ("ok", "not_found", "forbidden", "failed", "invalid_id")},
        "listings": one(f"SELECT count(*) FROM {t('listing_status')}"),
        "listings_not_ok": one(f"SELECT count(*) FROM {t('listing_status')} WHERE status <> 'ok'"),
        "shared_images": one(f"SELECT count(DISTINCT (project_id, image_id)) FROM {t('members')}"),
        "shares": one(f"SELECT count(*) FROM {t('members')}"),
        "receiving_projects": one(f"SELECT count(DISTINCT member_id) FROM {t('members')}"),
        "seconds": round(summary_seconds(doc), 1), "requests": doc["requests"],
        "retries": doc["retries"], "throttled_429": doc["throttled_429"],
        "untrusted_shares": one(f"SELECT count(*) FROM {t('members')} WHERE {outside}"),
        "untrusted_images": one(f"SELECT count(DISTINCT (project_id, image_id)) FROM "
                                f"{t('members')} WHERE {outside}"),
        "untrusted_receiving": one(f"SELECT count(DISTINCT member_id) FROM {t('members')} "
                                   f"WHERE {outside}"),
        "old_shares": one(f"SELECT count(*) FROM {t('members')} WHERE create_time < "
                          f"TIMESTAMPTZ '{day - dt.timedelta(days=365)} 00:00:00+00'"),
    }
    # the summary line's own figures, as the run printed them
    assert got["images"] == counts["status_rows"] and got["shares"] == counts["member_rows"]
    assert all(got[s] == counts[s] for s in ("ok", "not_found", "forbidden", "failed"))
    assert got["invalid_id"] == counts["invalid"]
    if "listings" in counts:
        assert got["listings"] == counts["listings"]
    got["images_per_second"] = round(counts["status_rows"] / summary_seconds(doc))
    if previous is not None:
        _, summary = changes_between(LocalStore(output), previous, day, frozenset(trusted))
        for kind, n in summary.counts.items():
            got[kind] = n
            got[f"untrusted_{kind}"] = summary.untrusted[kind]
        got["uncomparable_images"] = summary.uncomparable_images
        assert {k: doc["changes"][k] for k in summary.counts} == summary.counts
        assert doc["changes"]["uncomparable_images"] == summary.uncomparable_images
        assert {kind: one(f"SELECT count(*) FROM {t('changes')} WHERE change = '{kind}'")
                for kind in summary.counts} == summary.counts
    return got


def assert_figures_equal_the_tables(figures: dict[str, tuple[str, str]],
                                    expected: dict[str, Any]) -> None:
    shown = {key: value for key, value in figures.items() if key != "complete"}
    assert set(shown) == set(expected)
    for key, want in expected.items():
        value, text = shown[key]
        assert number(value) == want, key
        assert number(text) == want, key  # the words a reader sees, not only the attribute


def table_rows_from_query(query: str, limit: int) -> tuple[int, list[list[str]]]:
    rows = duckdb.sql(query).fetchall()
    return len(rows), [[cell_text(v if not isinstance(v, dt.date) or isinstance(v, dt.datetime)
                                  else v.isoformat()) for v in row] for row in rows[:limit]]


def assert_tables_are_their_queries(parsed: Parsed) -> None:
    assert parsed.tables
    for key, table in parsed.tables.items():
        total, rows = table_rows_from_query(table["query"], len(table["rows"]))
        assert table["total"] == total, key
        assert table["rows"] == rows, key


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``cph-collector demo``, as a user runs it (small), and what it printed."""
    output = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run([sys.executable, "-m", "collector", "demo", "--output", str(output),
                           "--images", "600"], capture_output=True, text=True, timeout=280,
                          check=False)
    assert done.returncode == 0, done.stderr
    return output, done.stdout


def test_the_demo_ends_with_its_report_and_every_figure_equals_the_tables(
        demo_output: tuple[Path, str]) -> None:
    output, stdout = demo_output
    last = stdout.rstrip().splitlines()[-1]
    path = output / report_key(NIGHT2)
    assert last.endswith(f": {path}") and last.startswith("demo: the morning report")
    page = path.read_text()
    parsed = parse(page)
    assert_figures_equal_the_tables(parsed.figures, expected_figures(output, NIGHT2, NIGHT1))
    assert parsed.figures["complete"][1].startswith("Complete")
    doc = manifest_of(output, NIGHT2)
    assert f"{parsed.figures['images_per_second'][1]} images/s" in summary_line_of(doc)
    assert len(page.encode()) < 2_000_000


def summary_seconds(doc: dict[str, Any]) -> float:
    """The duration the summary line divides by (``RunRecord.seconds``)."""
    return (dt.datetime.fromisoformat(doc["ended_at"])
            - dt.datetime.fromisoformat(doc["started_at"])).total_seconds()


def summary_line_of(doc: dict[str, Any]) -> str:
    from collector.manifest import RunRecord

    record = RunRecord(doc["run_id"], dt.date.fromisoformat(doc["snapshot_date"]),
                       dt.datetime.fromisoformat(doc["started_at"]), doc["input"], {},
                       doc["status"], dt.datetime.fromisoformat(doc["ended_at"]),
                       doc["exit_code"], None, doc["counts"], doc["requests"], doc["retries"],
                       doc["throttled_429"], changes=doc["changes"] or {})
    return summary_line(record)


def test_every_table_of_the_demo_report_is_the_head_of_the_query_under_it(
        demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    parsed = parse((output / report_key(NIGHT2)).read_text())
    assert {"changes", "untrusted_images", "most_shared", "receiving", "old_shares",
            "trend"} <= set(parsed.tables)
    changes = parsed.tables["changes"]["rows"]
    trust = [row[0] for row in changes]
    assert "untrusted" in trust and trust == sorted(trust, reverse=True)  # untrusted first, a word
    assert_tables_are_their_queries(parsed)


async def failing_nights(fake_factory: Factory, collect: Collect) -> tuple[Outcome, Outcome,
                                                                           list[str]]:
    """Two discovery nights; on the second a project's listing fails, three images fail and
    two are forbidden; the partners are some of the first night's members."""
    before, after = (Dataset(seed=45, projects=2, images=200, with_doc_example=False,
                             locked_project=False, day=d) for d in (0, 1))
    lost = after.project_ids[1]
    kept = [i for i in after.image_ids(after.project_ids[0]) if after.members(i)]
    script: dict[str, list[str]] = {f"list:{lost}:private:0": ["http_503"] * 9}
    script.update({image: ["http_503"] * 9 for image in kept[:3]})
    script.update({image: ["forbidden"] for image in kept[3:5]})
    partners = sorted({str(m["member_id"]) for i in before.image_ids()
                       for m in before.members(i)})[::2]
    common: dict[str, Any] = {"discover": True, "region": "cn-north-4", "project_id": None,
                              "trusted_projects": ",".join(partners)}
    first_fake = await fake_factory(before)
    first = await collect(first_fake, snapshot_date=NIGHT1, iam_endpoint=first_fake.url,
                          **common)
    second_fake = await fake_factory(after, script=script)
    second = await collect(second_fake, snapshot_date=NIGHT2, iam_endpoint=second_fake.url,
                           max_attempts=2, report=True, **common)
    return first, second, kept[:5]


async def test_a_night_with_failures_says_incomplete_and_why_and_its_numbers_are_the_tables(
        fake_factory: Factory, collect: Collect, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="collector")
    _, second, victims = await failing_nights(fake_factory, collect)
    assert second.record.exit_code == 1 and second.record.status == "finished"
    # written by the run itself (setting report), after publishing
    assert f"report: {second.output}/{report_key(NIGHT2)}" in caplog.text
    page = (second.output / report_key(NIGHT2)).read_text()
    parsed = parse(page)
    assert parsed.figures["complete"][1].startswith("Incomplete: 5 images failed or forbidden "
                                                    "and 1 listing not ok (exit 1)")
    assert_figures_equal_the_tables(parsed.figures,
                                    expected_figures(second.output, NIGHT2, NIGHT1))
    failed = parsed.tables["failed_images"]["rows"]
    assert sorted(row[1] for row in failed) == sorted(victims)
    assert {row[3] for row in failed} == {"failed", "forbidden"}
    uncomparable = parsed.tables["uncomparable"]
    why = {row[1]: row[5] for row in uncomparable["rows"]}
    assert uncomparable["total"] == second.record.changes["uncomparable_images"] > len(why)
    assert {w for i, w in why.items() if i not in victims} == {
        "its project's listing was not ok tonight"}
    assert all(why[v].startswith(("failed tonight (", "forbidden tonight (")) for v in victims
               if v in why)
    assert parsed.tables["failed_listings"]["rows"][0][3] == "failed"
    assert_tables_are_their_queries(parsed)
    uri = (second.output / report_key(NIGHT2)).as_uri()
    async with chromium() as browser:  # every kind of table filled: still quiet and local
        await browser.open(uri)
        shown = await browser.evaluate("document.querySelectorAll('#tab-failed_images tbody tr')"
                                       ".length")
        assert shown == len(victims)
        assert browser.console == [] and browser.requests == [uri]
        source = axe()  # where axe-core is installed, the failing page passes its rules too
        if source is not None:
            await browser.evaluate(source)
            assert await browser.evaluate(AXE_RUN) == []


def test_the_page_allows_no_request_of_any_kind() -> None:
    assert "unsafe-inline" not in CSP and "default-src 'none'" in CSP
    assert re.search(r"connect-src 'none'.*img-src|img-src 'none'", CSP)


async def test_the_report_in_chromium_requests_nothing_logs_nothing_and_shows_the_tables(
        demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    path = output / report_key(NIGHT2)
    async with chromium() as page:
        await page.open(path.as_uri())
        figures = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(e => "
            "[e.dataset.figure, [e.querySelector('data') ? e.querySelector('data').value : '', "
            "e.innerText.trim()]]))")
        assert_figures_equal_the_tables(figures, expected_figures(output, NIGHT2, NIGHT1))
        rows = await page.evaluate(
            "[...document.querySelectorAll('#tab-most_shared tbody tr')].map(r => "
            "[...r.cells].map(c => c.innerText))")
        total, want = table_rows_from_query(parse(path.read_text())
                                            .tables["most_shared"]["query"], len(rows))
        assert rows == want and total > len(rows)
        styled = await page.evaluate(  # the style's hash matched: the sheet applies
            "getComputedStyle(document.querySelector('.verdict')).borderLeftWidth")
        assert styled != "0px"
        assert page.console == []
        assert page.requests == [path.as_uri()]  # the page itself, and nothing else


async def test_typing_into_a_filter_narrows_its_table_and_a_header_sorts_it(
        demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    path = output / report_key(NIGHT2)
    async with chromium(width=375, height=800) as page:  # a phone's width
        await page.open(path.as_uri())
        body = "#tab-changes tbody tr"
        every = await page.evaluate(f"document.querySelectorAll('{body}').length")
        member = await page.evaluate(f"document.querySelector('{body} td:nth-child(6)')"
                                     ".innerText")
        await page.evaluate("document.querySelector('[data-table=changes] input').focus()")
        await page.send("Input.insertText", text=member)
        shown = await page.evaluate(f"[...document.querySelectorAll('{body}')]"
                                    ".filter(r => !r.hidden).map(r => r.innerText)")
        assert 0 < len(shown) < every and all(member in row for row in shown)
        said = await page.evaluate("document.querySelector('[data-table=changes] output')"
                                   ".innerText")
        assert said == f"{len(shown)} of {every} rows match"
        await page.evaluate("document.querySelector('#tab-most_shared th.num button').click()")
        await page.evaluate("document.querySelector('#tab-most_shared th.num button').click()")
        counts = await page.evaluate("[...document.querySelectorAll('#tab-most_shared tbody "
                                     "td:nth-child(4)')].map(c => Number(c.dataset.value))")
        assert counts == sorted(counts) and counts[0] < counts[-1]  # ascending, on the 2nd
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 375  # nothing but the tables' own scroll boxes is wider than a phone
        await page.send("Emulation.setEmulatedMedia", media="print")
        boxes = await page.evaluate("[...document.querySelectorAll('.filter')].map(e => "
                                    "getComputedStyle(e).display)")
        assert boxes and set(boxes) == {"none"}  # on paper: the tables, not the search boxes
        assert page.console == []


async def test_the_browser_harness_sees_a_request_and_an_error() -> None:
    """The two checks above can fail: a page that fetches and throws is caught by both."""
    async with chromium() as page:
        await page.open("data:text/html,<img src='http://127.0.0.1:9/x.png'>"
                        "<script>throw new Error('boom')</script>")
        await page.evaluate("new Promise(r => setTimeout(r, 200))")
        assert "http://127.0.0.1:9/x.png" in page.requests
        assert any("boom" in line for line in page.console)


def test_the_report_command_writes_the_latest_date_and_refuses_a_date_without_one(
        demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    done = subprocess.run([sys.executable, "-m", "collector", "report", "--output",
                           str(output), "--nights", "1"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"report: {output}/{report_key(NIGHT2)}\n"
    one_night = parse((output / report_key(NIGHT2)).read_text()).tables["trend"]["rows"]
    assert [row[0] for row in one_night] == [NIGHT2.isoformat()]
    missing = subprocess.run([sys.executable, "-m", "collector", "report", "--output",
                              str(output), "--snapshot-date", "2026-11-29"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert missing.stderr == (f"cph-collector: error: snapshot 2026-11-29: no finished "
                              f"snapshot in {output}\n")


def test_a_report_in_a_bucket_appears_complete_under_its_name(s3: Any,
                                                              tmp_path: Path) -> None:
    url = s3.bucket()
    env = {**os.environ, **S3_ENV, "CPH_STORAGE_ENDPOINT": s3.endpoint}
    local = tmp_path / "out"  # published on disk, then copied into the bucket as it is
    subprocess.run([sys.executable, "-m", "collector", "demo", "--output", str(local),
                    "--images", "200"], capture_output=True, check=True)
    fs = s3.filesystem()
    for path in sorted(local.rglob("*.parquet")) + sorted((local / "runs").glob("*.json")):
        key = path.relative_to(local).as_posix()
        with fs.open_output_stream(f"{url.base}/{key}") as handle:
            handle.write(path.read_bytes())
    done = subprocess.run([sys.executable, "-m", "collector", "report", "--output", str(url)],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    key = report_key(NIGHT2)
    assert done.stdout == f"report: {url}/{key}\n"
    keys = s3.keys(url)
    assert key in keys and not [k for k in keys if k.startswith("_staging/.tmp/")]
    with fs.open_input_stream(f"{url.base}/{key}") as handle:
        assert parse(handle.read().decode()).figures["complete"][1].startswith("Complete")


def test_write_report_returns_the_key_it_wrote(demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    assert write_report(LocalStore(output), NIGHT1) == report_key(NIGHT1)
    parsed = parse((output / report_key(NIGHT1)).read_text())
    assert_figures_equal_the_tables(parsed.figures, expected_figures(output, NIGHT1, None))


def axe() -> str | None:
    """axe-core from the npm registry (``.ci/run`` installs it and sets AXE_CORE_JS)."""
    found = os.environ.get("AXE_CORE_JS")
    return Path(found).read_text() if found and Path(found).is_file() else None


AXE_RUN = ("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => "
           "v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.target.join(' ')).slice(0, 3)"
           ".join(', ') + ')'))")


@pytest.fixture
def axe_source() -> str:
    found = axe()
    if found is None:
        pytest.skip("axe-core is not installed (npm install axe-core; AXE_CORE_JS=.../axe.min.js)")
    return found


async def test_the_report_passes_axe_cores_accessibility_rules(
        demo_output: tuple[Path, str], axe_source: str) -> None:
    """axe-core injected through DevTools (the page's own script stays what the CSP allows)."""
    output, _ = demo_output
    async with chromium() as page:
        await page.open((output / report_key(NIGHT2)).as_uri())
        await page.evaluate(axe_source)
        assert await page.evaluate(AXE_RUN) == []


@hyp_settings(max_examples=100, deadline=None)
@given(NIGHTS_OF_IMAGES, NIGHTS_OF_IMAGES, st.sampled_from(["strings", "files", "shared"]),
       st.integers(1, 4))
def test_the_images_not_compared_are_the_ones_compare_counts_and_the_readmes_rule(
        before: tuple[dict[str, str], dict[tuple[str, str], int]],
        after: tuple[dict[str, str], dict[tuple[str, str], int]], form: str,
        chunk: int) -> None:
    """The report's list of images not comparable is ``compare``'s count, image by image."""
    from collector.changes import Night, compare, uncomparable_images

    nights = [Night(*_night_table(*night, form, chunk)) for night in (before, after)]
    _, summary = compare(*nights, NIGHT1, "r", frozenset())
    got = uncomparable_images(*nights).to_pylist()
    def compared(image: str) -> bool:  # README: ok/ok, ok/not_found, new, or nothing either side
        p, d = before[0].get(image), after[0].get(image)
        return (p == "ok" and d in ("ok", "not_found")) or (p in (None, "not_found")
                                                           and d in ("ok", None, "not_found"))

    truth = sorted(i for i in set(before[0]) | set(after[0]) if not compared(i))
    assert [r["image_id"] for r in got] == truth
    assert len(got) == summary.uncomparable_images
    assert all(r["before"] == before[0].get(r["image_id"]) and
               r["after"] == after[0].get(r["image_id"]) for r in got)


def test_a_snapshot_no_manifest_of_ours_lists_is_not_reported(
        demo_output: tuple[Path, str], tmp_path: Path) -> None:
    """Files that no manifest in runs/ lists are not ours (README "Only our own files"): the
    report says there is no finished snapshot (exit 2) rather than report another tool's."""
    import shutil

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output, ignore=shutil.ignore_patterns("runs", "report"))
    (output / "runs").mkdir()
    with pytest.raises(UsageError, match="no finished snapshot"):
        write_report(LocalStore(output), NIGHT2)
    assert not (output / report_key(NIGHT2)).exists()


def test_images_per_second_is_the_summary_lines_even_where_the_manifest_rounds_seconds(
        demo_output: tuple[Path, str], tmp_path: Path) -> None:
    """The manifest keeps seconds to 3 decimals; the summary line divides by the exact time
    between start and end. 304 images in 1.5164 s are 200/s (1.516 s would say 201/s)."""
    import shutil

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output, ignore=shutil.ignore_patterns("report"))
    path = next(p for p in (output / "runs").glob("*.json")
                if orjson.loads(p.read_bytes())["snapshot_date"] == NIGHT2.isoformat())
    doc = orjson.loads(path.read_bytes())
    doc["counts"]["status_rows"] = 304
    started = dt.datetime.fromisoformat(doc["started_at"])
    doc["ended_at"] = (started + dt.timedelta(seconds=1.5164)).isoformat()
    doc["seconds"] = 1.516
    path.write_bytes(orjson.dumps(doc))
    write_report(LocalStore(output), NIGHT2)
    figures = parse((output / report_key(NIGHT2)).read_text()).figures
    rows = figures["images"][0]
    assert rows == "304"  # the demo's second night, as image_status has it
    assert " 200 images/s " in summary_line_of(doc)
    assert figures["images_per_second"][1] == "200"


def _report_cli(output: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "report", "--output", str(output),
                           *flags], capture_output=True, text=True, check=False)


def test_a_copy_of_our_own_file_in_a_partition_changes_no_figure_of_the_report(
        demo_output: tuple[Path, str], tmp_path: Path) -> None:
    """A copy of a run's image_status and members files (named as no manifest lists them) is
    ignored, as diff ignores it: the page's figures and trends are the run's, not 615/945."""
    import shutil

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output)
    before = parse(write_report_page(output))
    for table in ("image_status", "members"):
        folder = output / table / f"snapshot_date={NIGHT2.isoformat()}"
        shutil.copy(sorted(folder.glob("*.parquet"))[0], folder / "x-copy.parquet")
    done = _report_cli(output)
    assert done.returncode == 0, done.stderr
    after = parse((output / report_key(NIGHT2)).read_text())
    assert after.figures == before.figures
    assert after.tables["trend"]["rows"] == before.tables["trend"]["rows"]
    assert "x-copy.parquet: no manifest of ours" in done.stderr


def write_report_page(output: Path) -> str:
    write_report(LocalStore(output), NIGHT2)
    return (output / report_key(NIGHT2)).read_text()


def test_a_garbage_parquet_file_no_manifest_lists_is_ignored_by_the_report(
        demo_output: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output)
    before = parse(write_report_page(output))
    for table in ("image_status", "members", "images", "listing_status", "changes"):
        (output / table / f"snapshot_date={NIGHT2.isoformat()}" / "y.parquet").write_bytes(
            b"not parquet")
    done = _report_cli(output)
    assert done.returncode == 0, done.stderr
    assert parse((output / report_key(NIGHT2)).read_text()).figures == before.figures
    assert "Traceback" not in done.stderr


def test_our_own_unreadable_file_is_one_line_naming_it_and_exit_3(
        demo_output: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output, ignore=shutil.ignore_patterns("report"))
    folder = output / "members" / f"snapshot_date={NIGHT2.isoformat()}"
    ours = sorted(folder.glob("*.parquet"))[0]
    ours.write_bytes(b"garbage")
    done = _report_cli(output)
    assert done.returncode == 3
    key = ours.relative_to(output).as_posix()
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("cph-collector: error: ")
    assert f"{key} cannot be read" in done.stderr
    assert not (output / report_key(NIGHT2)).exists()


def test_report_and_diff_take_log_format_json_and_say_their_result_as_json(
        demo_output: tuple[Path, str]) -> None:
    output, _ = demo_output
    done = _report_cli(output, "--log-format", "json")
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["event"] == "report" and doc["report"] == f"{output}/{report_key(NIGHT2)}"
    assert doc["snapshot_date"] == NIGHT2.isoformat()
    diff = subprocess.run([sys.executable, "-m", "collector", "diff", "--output", str(output),
                           "--from", NIGHT1.isoformat(), "--to", NIGHT2.isoformat(),
                           "--format", "jsonl", "--log-format", "json"],
                          capture_output=True, text=True, check=False)
    assert diff.returncode == 0, diff.stderr
    lines = [orjson.loads(line) for line in diff.stderr.splitlines()]
    assert lines[-1]["event"] == "summary" and "changes from" in lines[-1]["message"]
    bad = _report_cli(output, "--log-format", "xml")
    assert bad.returncode == 2
    assert bad.stderr == "cph-collector: error: --log-format='xml': must be one of text, json\n"


@pytest.mark.parametrize(("failed", "said"), [
    (1, "Incomplete: 1 image failed or forbidden and 0 listings not ok"),
    (2, "Incomplete: 2 images failed or forbidden and 0 listings not ok")])
def test_the_page_counts_in_singular_and_plural(demo_output: tuple[Path, str], tmp_path: Path,
                                               failed: int, said: str) -> None:
    """Our own image_status file rewritten in place (still listed) with ``failed`` failures."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    output = tmp_path / "out"
    shutil.copytree(demo_output[0], output, ignore=shutil.ignore_patterns("report"))
    path = sorted((output / "image_status" / f"snapshot_date={NIGHT2.isoformat()}")
                  .glob("*.parquet"))[0]
    table = pq.read_table(path)
    status = table["status"].cast(pa.string()).to_pylist()
    status[:failed] = ["failed"] * failed
    index = table.column_names.index("status")
    pq.write_table(table.set_column(index, "status", pa.array(status).cast(
        table.schema.field("status").type)), path)
    write_report(LocalStore(output), NIGHT2, nights=1)
    page = (output / report_key(NIGHT2)).read_text()
    assert parse(page).figures["complete"][1].startswith(said)
    assert "The last 1 published night (at most --nights)" in page
