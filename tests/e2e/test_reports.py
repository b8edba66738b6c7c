"""Report building blocks: tables carry numbers unchanged, plots are real PNGs, HTML is
self-contained, the machine record parses /proc/cpuinfo text."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest

from benchmarks.reporting.html import Heading, Image, Paragraph, Table, html_page
from benchmarks.reporting.machine import cpu_model_name, machine_info, widest_simd
from benchmarks.reporting.plots import (
    PNG_MAGIC,
    PlotSpec,
    Series,
    grouped_bar_png,
    line_plot_png,
)
from benchmarks.reporting.tables import (
    MISSING,
    Column,
    csv_text,
    fmt_macs,
    fmt_pct,
    fmt_speedup,
    markdown_table,
)

RECORDS = [
    {"name": "a|b", "macs": 1234567, "top1": 0.912345678901, "speed": 3.14159},
    {"name": "c", "macs": 89, "top1": None, "speed": 1.0},
]
COLUMNS = [
    Column("name", "name"),
    Column("macs", "sparse MACs", fmt_macs),
    Column("top1", "top-1", fmt_pct),
    Column("speed", "speedup", fmt_speedup),
]


def _png_size(png: bytes) -> tuple[int, int]:
    # IHDR is the first chunk: width and height are big-endian u32 at bytes 16..24.
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_csv_carries_raw_values_unchanged():
    rows = list(csv.DictReader(io.StringIO(csv_text(RECORDS, COLUMNS))))
    assert [r["name"] for r in rows] == ["a|b", "c"]
    assert int(rows[0]["macs"]) == 1234567
    assert float(rows[0]["top1"]) == 0.912345678901  # exact round trip, no formatting
    assert rows[1]["top1"] == ""  # None -> empty cell
    assert float(rows[0]["speed"]) == 3.14159


def test_markdown_table_formats_and_escapes():
    text = markdown_table(RECORDS, COLUMNS)
    lines = text.strip().splitlines()
    assert lines[0] == "| name | sparse MACs | top-1 | speedup |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| a\\|b | 1.23 M | 91.23% | 3.14x |"
    assert lines[3] == f"| c | 89 | {MISSING} | 1.00x |"


@pytest.mark.parametrize("value, text", [(4_089_184_256, "4.09 G"), (40_900_000, "40.90 M"),
                                         (1500, "1.50 k"), (999, "999")])
def test_fmt_macs(value, text):
    assert fmt_macs(value) == text


def test_line_plot_is_a_png():
    png = line_plot_png(
        [Series("global", [1e6, 1e7], [80.0, 90.0]),
         Series("flops", [2e6, 5e6], [70.0, 85.0], yerr=[1.0, 0.5])],
        PlotSpec("t", "sparse MACs", "top-1 (%)", logx=True))
    assert png.startswith(PNG_MAGIC)
    width, height = _png_size(png)
    assert width > 200 and height > 200


def test_bar_chart_is_a_png():
    png = grouped_bar_png(["1 thr", "2 thr"], {"ORT": [2.0, 1.2], "engine": [0.5, 0.3]},
                          PlotSpec("latency", "threads", "ms"))
    assert png.startswith(PNG_MAGIC)


def test_plots_reject_ragged_data():
    with pytest.raises(ValueError, match="2 x values, 1 y values"):
        line_plot_png([Series("bad", [1, 2], [3])], PlotSpec("t", "x", "y"))
    with pytest.raises(ValueError, match="1 values for 2 groups"):
        grouped_bar_png(["a", "b"], {"s": [1.0]}, PlotSpec("t", "x", "y"))


def test_html_page_is_self_contained():
    png = grouped_bar_png(["g"], {"s": [1.0]}, PlotSpec("t", "x", "y"))
    page = html_page("Report <1>", [Heading("H & co"), Paragraph("a < b"),
                                    Table(RECORDS, COLUMNS, caption="cap"), Image(png, "plot")])
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Report &lt;1&gt;</title>" in page
    assert "H &amp; co" in page and "a &lt; b" in page
    assert "<td>91.23%</td>" in page and "<td>a|b</td>" in page
    # No external references: every src is an embedded data URI that decodes to our PNG.
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 1
    assert sources[0].startswith("data:image/png;base64,")
    assert base64.b64decode(sources[0].split(",", 1)[1]) == png
    assert "http://" not in page and "https://" not in page


def test_cpuinfo_parsing():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx avx2 avx512f\n"
    assert cpu_model_name(text) == "AMD EPYC 9R14"
    assert widest_simd(text) == "AVX-512"
    assert widest_simd("flags : fpu sse2 avx avx2\n") == "AVX2"


def test_machine_info_describes_this_machine():
    info = machine_info()
    assert info.cores >= 1
    assert f"{info.cores} cores" in info.describe()
    assert info.cpu_model in info.describe()
