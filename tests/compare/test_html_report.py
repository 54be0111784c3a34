"""report.html in a real browser: headless Chromium (Debian's `chromium` package) opens the page
offline, takes a screenshot, and a probe script reports that every chart image decoded, that
every table lists every method, and that clicking a header sorts its table by number."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from peftlab.compare.html import render_html, write_html_report
from peftlab.compare.report import render_report

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-compare"
TIMEOUT_S = 60

# Appended to a copy of the page: runs after load, writes what it found into <pre id="probe">.
PROBE = r"""<script>
window.addEventListener("load", function () {
  var list = function (items, f) { return Array.prototype.map.call(items, f); };
  var tables = document.querySelectorAll("table");
  var isScore = function (c) { return / \(%\)$/.test(c.textContent.trim()); };  // e.g. "accuracy (%)"
  var quality = Array.prototype.filter.call(tables, function (t) {
    return list(t.tHead.rows[0].cells, isScore).indexOf(true) >= 0; })[0];
  var valueColumn = list(quality.tHead.rows[0].cells, isScore).indexOf(true);
  quality.tHead.rows[0].cells[valueColumn].click();
  var probe = {
    images: list(document.images, function (img) {
      return {alt: img.alt, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth}; }),
    tables: list(tables, function (t) {
      return {header: list(t.tHead.rows[0].cells, function (c) { return c.textContent.trim(); }),
              first: list(t.tBodies[0].rows, function (r) { return r.cells[0].textContent.trim(); })}; }),
    sortedValues: list(quality.tBodies[0].rows, function (r) { return r.cells[valueColumn].textContent.trim(); }),
    external: list(document.querySelectorAll("[src],[href]"), function (e) {
      return e.getAttribute("src") || e.getAttribute("href"); }).filter(function (u) { return /^https?:/.test(u); })
  };
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>"""


CONTROL_ROW = "base (control)"  # the inference table's timing control, not a method


def chart_titles(results: dict) -> list[str]:
    """The charts report.md shows for `results` (the learning-rate chart only where rates were chosen)."""
    return re.findall(r"!\[(.*?)\]\(charts/", render_report(results))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (.ci/run installs it)")
    return found


def _browser(*args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    results = json.loads((EXAMPLE / "results.json").read_text())
    folder = tmp_path_factory.mktemp("html")
    report = write_html_report(results, EXAMPLE / "charts", folder / "report.html")
    probed = folder / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "\n</body>"))
    dom = _browser("--dump-dom", probed.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: " + dom[-500:]
    return results, report, json.loads(html.unescape(found.group(1)))


def test_screenshot_is_taken(page, tmp_path):
    _, report, _ = page
    shot = tmp_path / "report.png"
    _browser(f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    assert _png_size(shot) == (1280, 2400) and shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_every_chart_image_loaded(page):
    _, _, probe = page
    assert sorted(image["alt"] for image in probe["images"]) == sorted(chart_titles(page[0]))
    assert all(image["loaded"] and image["width"] > 100 for image in probe["images"]), probe["images"]


def test_every_method_row_is_present(page):
    results, _, probe = page
    methods = sorted(r["method"] for r in results["methods"])
    method_tables = [t for t in probe["tables"] if t["header"][0] == "method"]
    assert len(method_tables) >= 6  # settings, parameters, memory, speed, inference, quality
    for table in method_tables:
        assert sorted(set(table["first"]) - {CONTROL_ROW}) == methods, table["header"]


def test_clicking_a_header_sorts_by_number(page):
    _, _, probe = page
    values = [float(v.split()[0]) for v in probe["sortedValues"]]  # "79.6 [76.8, 82.3]": the value, its interval
    assert values == sorted(values) and len(set(values)) > 1


def test_nothing_is_fetched_from_outside(page):
    _, report, probe = page
    assert probe["external"] == []
    assert "<script src" not in report.read_text() and "<link" not in report.read_text()


def test_a_missing_chart_is_named_not_broken(tmp_path):
    results = json.loads((EXAMPLE / "results.json").read_text())
    charts = tmp_path / "charts"
    shutil.copytree(EXAMPLE / "charts", charts)
    (charts / "radar.png").unlink()
    text = render_html(results, charts)
    assert "chart not written: radar.png" in text and text.count("<img") == len(chart_titles(results)) - 1


def test_markup_in_the_data_is_escaped(tmp_path):
    results = json.loads((EXAMPLE / "results.json").read_text())
    results["methods"][0]["method"] = "<script>alert(1)</script>"
    assert "<script>alert(1)</script>" not in render_html(results, EXAMPLE / "charts")
