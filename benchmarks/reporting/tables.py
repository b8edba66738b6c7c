"""Tables for reports: one column spec, rendered as Markdown (for people) and CSV (for scripts).

CSV cells carry the raw values unchanged (`str(value)`, so floats round-trip exactly); Markdown and
HTML cells go through each column's formatter. Costs are always counted in MACs (one multiply-add
= 1 MAC; FLOPs ~= 2 x MACs), as docs/algorithms.md section 6 prescribes.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Column",
    "MISSING",
    "format_cells",
    "markdown_table",
    "csv_text",
    "fmt_macs",
    "fmt_pct",
    "fmt_ms",
    "fmt_float",
    "fmt_speedup",
    "fmt_int",
]

MISSING = "n/a"


def _fmt_any(value: Any) -> str:
    return str(value)


@dataclass(frozen=True)
class Column:
    """A table column: record key, human header (with units) and a display formatter."""

    key: str
    header: str
    fmt: Callable[[Any], str] = _fmt_any


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_cells(records: Sequence[Mapping[str, Any]],
                 columns: Sequence[Column]) -> list[list[str]]:
    """Formatted display cells, one row per record; absent or None values show as MISSING."""
    rows = []
    for record in records:
        row = []
        for column in columns:
            value = record.get(column.key)
            row.append(MISSING if _is_missing(value) else column.fmt(value))
        rows.append(row)
    return rows


def _escape_md(cell: str) -> str:
    # A literal pipe would split the cell.
    return cell.replace("|", "\\|")


def markdown_table(records: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """GitHub-flavoured Markdown table (header, separator, rows), ending in a newline."""
    header = "| " + " | ".join(_escape_md(c.header) for c in columns) + " |"
    separator = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_escape_md(cell) for cell in row) + " |"
        for row in format_cells(records, columns)
    ]
    return "\n".join([header, separator, *body]) + "\n"


def csv_text(records: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with the column keys as header and raw values (None -> empty cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in columns])
    for record in records:
        writer.writerow(["" if record.get(c.key) is None else record.get(c.key) for c in columns])
    return buffer.getvalue()


def fmt_macs(value: float) -> str:
    """MAC count with an SI prefix: 1234567 -> '1.23 M'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:.0f}"


def fmt_pct(fraction: float) -> str:
    """A fraction in [0, 1] as a percentage with two decimals: 0.9512 -> '95.12%'."""
    return f"{100.0 * fraction:.2f}%"


def fmt_ms(value: float) -> str:
    """Milliseconds with three decimals."""
    return f"{value:.3f}"


def fmt_float(value: float) -> str:
    """A float with four significant decimals."""
    return f"{value:.4g}"


def fmt_speedup(value: float) -> str:
    """A ratio as '3.21x'."""
    return f"{value:.2f}x"


def fmt_int(value: int) -> str:
    """An integer with thousands separators."""
    return f"{int(value):,}"
