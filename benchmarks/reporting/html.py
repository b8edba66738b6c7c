"""One self-contained HTML page per report: tables inline, PNG plots embedded as data URIs.

The page has no external references (no CSS/JS/image links), so it can be mailed or opened from
any directory. All text is escaped with `html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.reporting.tables import Column, format_cells

__all__ = ["Heading", "Paragraph", "Table", "Image", "Block", "html_page", "png_data_uri"]


@dataclass(frozen=True)
class Heading:
    """A section heading."""

    text: str


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table rendered with the same column specs as the Markdown / CSV versions."""

    records: Sequence[Mapping[str, Any]]
    columns: Sequence[Column]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG image (raw bytes) with alt text."""

    png: bytes
    alt: str


Block = Heading | Paragraph | Table | Image

_STYLE = """
body { font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th { background: #eee; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def png_data_uri(png: bytes) -> str:
    """`data:image/png;base64,...` URI for embedding."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table_html(block: Table) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in block.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in format_cells(block.records, block.columns)
    )
    caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _block_html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h2>{html.escape(block.text)}</h2>"
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Image):
        return f'<img src="{png_data_uri(block.png)}" alt="{html.escape(block.alt)}">'
    raise TypeError(f"unknown report block {type(block).__name__}")


def html_page(title: str, blocks: Sequence[Block]) -> str:
    """A complete HTML5 document with the given title and blocks."""
    body = "\n".join(_block_html(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
