"""The frontier report (``reports/frontier/index.html``) opened in headless Chromium: its plots
load and show, its table has a row per point, and the page logs no errors.

The report comes from the frontier CLI with the fake point runner of the report tests (no
training). Chromium is the Debian package ``chromium``: when it is missing the test skips
locally, and fails under CI (``CI=true``, set by ``.ci/run``, which installs it).
``FEATHERDEPLOY_FRONTIER_SCREENSHOT=PATH`` also saves the page's screenshot there.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import frontier
from benchmarks.reporting.plots import PNG_MAGIC
from tests.e2e.chromium import find_chromium, render_page
from tests.e2e.test_frontier_report import FakeRunner, write_sweep

SCREENSHOT_ENV = "FEATHERDEPLOY_FRONTIER_SCREENSHOT"
PLOTS = (frontier.MACS_PLOT, frontier.LATENCY_PLOT)


def chromium_or_skip() -> str:
    """The browser; skip without it, except under CI where a skip would hide a missing check."""
    executable = find_chromium()
    if executable is None:
        reason = "headless Chromium not found (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must run this check")
        pytest.skip(f"{reason}; under CI=true this fails instead")
    return executable


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    executable = chromium_or_skip()
    tmp = tmp_path_factory.mktemp("frontier")
    code = frontier.main(["--sweep", str(write_sweep(tmp)), "--no-progress"],
                         runner=FakeRunner())
    assert code == 0
    out = tmp / "report"
    page = render_page(executable, out / frontier.HTML_NAME)
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_save(page.screenshot_png, tmp / "frontier.png"), target)
    return out, page


def _save(png: bytes, path: Path) -> Path:
    path.write_bytes(png)
    return path


def test_frontier_page_loads_without_errors(rendered: tuple) -> None:
    _, page = rendered
    assert page.errors == []
    assert page.dom["title"].startswith("Sparsity frontier")


def test_frontier_plots_load_and_show(rendered: tuple) -> None:
    _, page = rendered
    images = page.dom["images"]
    assert [image["alt"] for image in images] == list(PLOTS)
    for image in images:
        assert image["complete"]
        assert min(image["natural"]) > 0 and min(image["shown"]) > 0  # decoded and laid out
    for drawing in page.dom["svgs"] + page.dom["canvases"]:  # none today; any must show
        assert min(drawing["shown"]) > 0


def test_frontier_table_has_a_row_per_point(rendered: tuple) -> None:
    out, page = rendered
    (table,) = page.dom["tables"]
    with open(out / frontier.CSV_NAME, newline="") as handle:
        points = [row["point"] for row in csv.DictReader(handle)]
    assert len(points) == 6  # 2 backbones x 3 targets, the dense point in each line
    assert table["headers"] == [column.header for column in frontier.FRONTIER_COLUMNS]
    point_column = table["headers"].index("point")
    assert [row[point_column] for row in table["rows"]] == points
    assert all(row[table["headers"].index("status")] == "done" for row in table["rows"])


def test_frontier_screenshot_is_a_page(rendered: tuple) -> None:
    _, page = rendered
    png = page.screenshot_png
    assert png.startswith(PNG_MAGIC)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 800 and height >= 600  # the whole page, plots included


def test_the_browser_check_sees_a_broken_image_and_console_errors(tmp_path: Path) -> None:
    """The checks above can fail: a missing image and a console error are reported."""
    executable = chromium_or_skip()
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>b</title></head><body>'
                    '<img alt="gone" src="missing.png"><script>console.error("boom")</script>'
                    '</body></html>')
    report = render_page(executable, page)
    assert report.dom["images"][0]["natural"] == [0, 0]
    assert any("missing.png" in e for e in report.errors)
    assert any(e == "console.error: boom" for e in report.errors)
