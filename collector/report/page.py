"""The morning report's HTML: a view model (``model.Report``) in, one self-contained page out.

Inline CSS, inline SVG charts and a little inline script, every value escaped with
``html.escape``; the Content-Security-Policy names the style and the script by their hashes and
allows nothing else (no request of any kind), so the page opens the same from a laptop, an
e-mail attachment or a bucket. Every number is in the HTML; the script only sorts and filters.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from html import escape

from collector.report.view import Cell, Figure, Report, Section, Series, Table, count_of

STYLE = """
:root { --ink: #1b1f24; --muted: #4b5563; --line: #d0d7de; --bad: #a4000f; --bad-bg: #fff1f0;
  --good: #0f5323; --good-bg: #eefbf0; --accent: #1f4f99; font-family: system-ui, -apple-system,
  "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #fff; line-height: 1.4; }
body { margin: 0 auto; max-width: 78rem; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 .25rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid var(--line); padding-bottom: .2rem;
  margin-top: 2rem; }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
a { color: var(--accent); }
.verdict { border: 2px solid; border-left-width: .6rem; padding: .6rem .9rem; font-weight: 600;
  margin: .75rem 0; }
.verdict.complete { border-color: var(--good); background: var(--good-bg); }
.verdict.incomplete { border-color: var(--bad); background: var(--bad-bg); }
.lead { color: var(--muted); margin: .25rem 0 .75rem; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(10.5rem, 1fr));
  gap: .5rem; margin: 0; }
dl.figures div { border: 1px solid var(--line); border-radius: .3rem; padding: .4rem .6rem; }
dl.figures dt { font-size: .85rem; color: var(--muted); }
dl.figures dd { margin: 0; font-size: 1.3rem; font-weight: 600;
  font-variant-numeric: tabular-nums; }
dl.figures div.alert { border-color: var(--bad); border-width: 2px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85rem; min-width: 60%; }
caption { text-align: left; font-size: .85rem; color: var(--muted); padding: .2rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .25rem .5rem; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; white-space: nowrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0;
  cursor: pointer; color: inherit; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .8rem;
  white-space: nowrap; }
tr.untrusted td:first-child { box-shadow: inset .3rem 0 0 var(--bad); }
.trust-untrusted { color: var(--bad); font-weight: 700; white-space: nowrap; }
p.none { margin: .2rem 0 .8rem; }
.trust-untrusted::before { content: "! "; }
.filter { margin: .25rem 0; }
.filter input { font: inherit; padding: .2rem .4rem; min-width: 16rem; max-width: 100%; }
details { margin: .3rem 0 1rem; font-size: .85rem; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; padding: .5rem;
  border: 1px solid var(--line); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr));
  gap: 1rem; }
.charts figure { margin: 0; border: 1px solid var(--line); border-radius: .3rem;
  padding: .4rem; }
.charts figcaption { font-size: .85rem; }
svg { width: 100%; height: auto; }
svg .line { fill: none; stroke: var(--accent); stroke-width: 2; }
svg .dot { fill: var(--accent); }
svg .axis { stroke: var(--line); }
svg text { font-size: 11px; fill: var(--muted); }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem; }
@media (max-width: 40rem) { body { padding: .5rem; } dl.figures { grid-template-columns:
  repeat(2, 1fr); } .filter input { min-width: 0; width: 100%; } }
@media print { .filter, nav { display: none; } details > pre { display: block; }
  h2 { break-after: avoid; } tr { break-inside: avoid; } body { max-width: none; } }
"""

SCRIPT = """
document.querySelectorAll("[data-table]").forEach(function (wrap) {
  var table = wrap.querySelector("table");
  var body = table.tBodies[0];
  var box = wrap.querySelector("input[type=search]");
  var count = wrap.querySelector("output");
  if (box) {
    box.closest("p").hidden = false;
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase();
      var shown = 0;
      Array.prototype.forEach.call(body.rows, function (row) {
        var hit = !q || row.textContent.toLowerCase().indexOf(q) >= 0;
        row.hidden = !hit;
        if (hit) { shown += 1; }
      });
      count.textContent = q ? shown + " of " + body.rows.length + " rows match" : "";
    });
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(button);
    button.addEventListener("click", function () {
      var down = th.getAttribute("aria-sort") !== "descending";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
        other.removeAttribute("aria-sort");
      });
      th.setAttribute("aria-sort", down ? "descending" : "ascending");
      var rows = Array.prototype.slice.call(body.rows);
      var numeric = th.classList.contains("num");
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var order = numeric ? Number(x.dataset.value || 0) - Number(y.dataset.value || 0)
          : x.textContent.localeCompare(y.textContent);
        return down ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
IDS = frozenset({"image_id", "project_id", "member_id"})


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; style-src {_digest(STYLE)}; script-src {_digest(SCRIPT)}; "
       "img-src 'none'; connect-src 'none'; font-src 'none'; base-uri 'none'; "
       "form-action 'none'")


def cell_text(value: Cell) -> str:
    """How a value reads in the page (the tests read the tables' values the same way)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _figure(figure: Figure) -> str:
    shown = escape(cell_text(figure.value))
    unit = f" {escape(figure.unit)}" if figure.unit else ""
    alert = figure.key.startswith("untrusted") and figure.value not in (0, "0")
    return (f'<div{" class=alert" if alert else ""}><dt>{escape(figure.label)}</dt>'
            f'<dd data-figure="{escape(figure.key)}"><data value="{escape(str(figure.value))}">'
            f"{shown}</data>{unit}</dd></div>")


def _cell(column: str, value: Cell, numeric: bool) -> str:
    text = escape(cell_text(value))
    if numeric:
        raw = "" if value is None else escape(str(value))
        return f'<td class="num" data-value="{raw}">{text}</td>'
    if column == "trust":
        return f'<td><span class="trust-{text}">{text}</span></td>'
    if column in IDS:
        return f'<td class="id">{text}</td>'
    return f"<td>{text}</td>"


def _table(table: Table) -> str:
    head = "".join(f'<th scope="col"{" class=num" if c in table.numeric else ""}>'
                   f"{escape(c)}</th>" for c in table.columns)
    rows = []
    for n, row in enumerate(table.rows):
        marked = n < len(table.untrusted) and table.untrusted[n]
        cells = "".join(_cell(c, v, c in table.numeric)
                        for c, v in zip(table.columns, row, strict=True))
        rows.append(f'<tr{" class=untrusted" if marked else ""}>{cells}</tr>')
    shown = len(table.rows)
    extent = (f"all {count_of(table.total, 'row')}" if shown == table.total
              else f"the first {shown:,} of {table.total:,} rows")
    key = escape(table.key)
    if not rows:
        return (f'<section class="list" data-empty="{key}" aria-labelledby="t-{key}">'
                f'<h3 id="t-{key}">{escape(table.title)}</h3>'
                f'<p class="none">{escape(table.empty)}.</p></section>')
    body = "".join(rows)
    return (f'<section class="list" data-table="{key}" aria-labelledby="t-{key}">'
            f'<h3 id="t-{key}">{escape(table.title)}</h3>'
            f'<p class="filter" hidden><label>Filter <input type="search" '
            f'aria-controls="tab-{key}" placeholder="any text in a row"></label> '
            f'<output aria-live="polite"></output></p>'
            f'<div class="scroll" tabindex="0" role="region" '
            f'aria-label="{escape(table.title)}: the table, scrolls sideways">'
            f'<table id="tab-{key}" data-total="{table.total}"><caption>{extent}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f"<details><summary>The full list: a DuckDB query</summary>"
            f"<pre><code>{escape(table.query)}</code></pre></details></section>")


def _chart(series: Series) -> str:
    """A small line chart: a point per night with its value as a tooltip, and the first and
    last values written on it."""
    width, height, pad = 300, 110, 28
    values = [v for _, v in series.points]
    top = max(values, default=0) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def xy(n: int, value: int) -> tuple[float, float]:
        """A point of the chart: the night's x and its value's y."""
        return pad + n * step, height - pad - (height - 2 * pad) * value / top

    points = [xy(n, v) for n, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                   f"<title>{day.isoformat()}: {value:,}</title></circle>"
                   for (x, y), (day, value) in zip(points, series.points, strict=True))
    key = escape(series.key)
    last = f"{values[-1]:,}" if values else "none"
    labels = ""
    if series.points:
        labels = (f'<text x="{pad}" y="{height - 8}">{series.points[0][0].isoformat()}</text>'
                  f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">'
                  f"{series.points[-1][0].isoformat()}</text>"
                  f'<text x="2" y="{pad - 10}">max {top:,}</text>')
    summary = ", ".join(f"{day.isoformat()} {value:,}" for day, value in series.points)
    return (f'<figure data-series="{key}"><svg viewBox="0 0 {width} {height}" role="img" '
            f'aria-labelledby="c-{key}"><title id="c-{key}">{escape(series.title)}: '
            f"{escape(summary)}</title>"
            f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" '
            f'y2="{height - pad}"/><polyline class="line" points="{line}"/>{dots}{labels}</svg>'
            f"<figcaption>{escape(series.title)}: <strong>{last}</strong> on the last night"
            f"</figcaption></figure>")


def _section(section: Section) -> str:
    figures = "".join(_figure(f) for f in section.figures)
    charts = "".join(_chart(s) for s in section.series)
    return (f'<section id="{escape(section.key)}" aria-labelledby="h-{escape(section.key)}">'
            f'<h2 id="h-{escape(section.key)}">{escape(section.title)}</h2>'
            f'<p class="lead">{escape(section.lead)}</p>'
            + (f'<dl class="figures">{figures}</dl>' if figures else "")
            + (f'<div class="charts">{charts}</div>' if charts else "")
            + "".join(_table(t) for t in section.tables) + "</section>")


def render(report: Report) -> str:
    """The whole page."""
    day = report.snapshot_date.isoformat()
    state = "complete" if report.complete else "incomplete"
    nav = "".join(f'<li><a href="#{escape(s.key)}">{escape(s.title)}</a></li>'
                  for s in report.sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>CPH image shares: the night of {day}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>CPH image shares: the night of {day}</h1>"
        f'<p class="lead">From the tables published under <code>{escape(report.output)}</code> '
        f"and its manifest <code>runs/{escape(report.run_id or '?')}.json</code>.</p>"
        f'<p class="verdict {state}" role="status" data-figure="complete">'
        f"{escape(report.verdict)}</p>"
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav></header><main>'
        + "".join(_section(s) for s in report.sections)
        + "</main><footer>Written by cph-collector report; every number comes from the "
        "Parquet tables and manifests under the output, the full lists by the query under "
        f"each table.</footer><script>{SCRIPT}</script></body></html>\n")
