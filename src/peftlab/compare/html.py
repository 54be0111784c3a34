"""report.html: the comparison report as one self-contained page to share or open offline.

    write_html_report(results, "compare-out/charts", "compare-out/report.html")

The page is report.md (`report.render_report`, the same text and tables, so the two never
disagree) rendered by markdown-it (CommonMark + tables, raw HTML escaped: method names and
error messages are data, not markup), with

- every chart embedded as a `data:image/png;base64` URI (a chart missing from the folder is
  named in a note instead of a broken image),
- every table sortable: click a header to sort by it, again to reverse; numbers sort as numbers
  ("1.49K" < "22.71M"; units are not converted, a column holds one), "–" last; numeric
  columns are right-aligned,
- the CSS and the sorting script inline: no request leaves the page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from peftlab.compare.report import render_report
from peftlab.io import write_text

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 2rem auto;
       max-width: 90rem; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; border-radius: 4px; font-size: 0.88em; }
table { border-collapse: collapse; margin: 0.8rem 0; font-variant-numeric: tabular-nums; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f6f8fa; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
tbody tr:nth-child(even) { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1rem 0; border: 1px solid #eaeef2; }
p.missing { color: #9a6700; }
"""

# Sort a table by the clicked header; numbers (with K/M/B/G suffixes and units) as numbers.
_SCRIPT = """
(function () {
  var scale = {K: 1e3, M: 1e6, B: 1e9, G: 1e9, KiB: 1024, MiB: 1048576, GiB: 1073741824};
  function key(text) {
    var match = text.replace(/,/g, "").match(/^\\s*([-+]?\\d*\\.?\\d+(?:e[-+]?\\d+)?)\\s*([A-Za-z]*)/);
    if (!match) return null;
    return parseFloat(match[1]) * (scale[match[2]] || 1);
  }
  function sortBy(table, column, th) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    rows.sort(function (a, b) {
      var x = a.cells[column].textContent.trim(), y = b.cells[column].textContent.trim();
      var kx = key(x), ky = key(y);
      if (kx === null && ky === null) return ascending ? x.localeCompare(y) : y.localeCompare(x);
      if (kx === null) return 1;
      if (ky === null) return -1;
      return ascending ? kx - ky : ky - kx;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, column, th); });
      var cells = Array.prototype.map.call(table.tBodies[0].rows, function (row) { return row.cells[column]; });
      var numeric = cells.every(function (cell) { var t = cell.textContent.trim(); return t === "–" || key(t) !== null; });
      if (numeric && cells.some(function (cell) { return key(cell.textContent.trim()) !== null; })) {
        cells.forEach(function (cell) { cell.style.textAlign = "right"; });
      }
    });
  });
})();
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _renderer(charts_dir: Path) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules["image"]

    def image(renderer, tokens, index, options, env) -> str:
        token = tokens[index]
        chart = charts_dir / Path(token.attrGet("src") or "").name  # a file name inside charts_dir only
        if chart.suffix.lower() != ".png" or not chart.is_file():
            return f'<p class="missing">chart not written: {html.escape(chart.name)}</p>'
        token.attrSet("src", _data_uri(chart))
        return default_image(tokens, index, options, env)

    md.add_render_rule("image", image)
    md.add_render_rule("table_open", lambda renderer, tokens, index, options, env: '<table class="sortable">\n')
    return md


def render_html(results: dict[str, Any], charts_dir: str | Path) -> str:
    """The self-contained page for `results` (the schema of `compare/results.py`)."""
    body = _renderer(Path(charts_dir)).render(render_report(results))
    plan = results["plan"]
    title = html.escape(f"peftlab compare: {plan['model']} on {plan['data']}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}<script>{_SCRIPT}</script>\n</body>\n</html>\n")


def write_html_report(results: dict[str, Any], charts_dir: str | Path, path: str | Path) -> Path:
    """Write `render_html(results, charts_dir)` to `path` atomically; returns `path`."""
    write_text(path, render_html(results, charts_dir))
    return Path(path)
