"""One report bundle: CSV + Markdown + PNG figures + a self-contained HTML page, written atomically.

Shared by the frontier and ablation reports, which differ only in their rows, columns, figures
and the context lines that describe the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.reporting.html import Heading, Image, Paragraph, Table, html_page
from benchmarks.reporting.tables import Column, csv_text, markdown_table
from featherdeploy.runtime.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["ReportBundle", "write_report_bundle"]


@dataclass(frozen=True)
class ReportBundle:
    """Everything one report shows; ``failures`` are one line per failed point."""

    title: str
    caption: str
    context: Sequence[str]
    rows: Sequence[Mapping[str, object]]
    columns: Sequence[Column]
    plots: Mapping[str, bytes]
    failures: Sequence[str]
    failure_heading: str = "Failed points"


def _markdown(bundle: ReportBundle) -> str:
    lines = [f"# {bundle.title}", "", *(f"- {line}" for line in bundle.context), "",
             markdown_table(bundle.rows, bundle.columns)]
    if bundle.failures:
        lines += [f"## {bundle.failure_heading}", "", *(f"- {f}" for f in bundle.failures), ""]
    lines += [f"![{name}]({name})" for name in bundle.plots]
    return "\n".join(lines) + "\n"


def _html(bundle: ReportBundle) -> str:
    blocks: list = [Paragraph(line) for line in bundle.context]
    blocks.append(Table(bundle.rows, bundle.columns, caption=bundle.caption))
    blocks += [Image(png, name) for name, png in bundle.plots.items()]
    if bundle.failures:
        blocks += [Heading(bundle.failure_heading)]
        blocks += [Paragraph(line) for line in bundle.failures]
    return html_page(bundle.title, blocks)


def write_report_bundle(bundle: ReportBundle, out_dir: str | Path, csv_name: str, md_name: str,
                        html_name: str = "index.html") -> list[Path]:
    """Write the CSV, Markdown, each PNG and the HTML page; return the paths written."""
    out = Path(out_dir)
    written = [out / csv_name, out / md_name, out / html_name]
    atomic_write_text(written[0], csv_text(bundle.rows, bundle.columns))
    atomic_write_text(written[1], _markdown(bundle))
    for name, png in bundle.plots.items():
        atomic_write_bytes(out / name, png)
        written.append(out / name)
    atomic_write_text(written[2], _html(bundle))
    return written
