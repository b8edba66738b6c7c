"""PNG plots for reports, drawn with matplotlib's object API on the Agg canvas.

Pure functions: data in, PNG bytes out. No pyplot, so no global figure state and no display
backend is ever touched (safe in CI and in parallel sweeps). Every plot has a title, axis labels
(callers put units in them) and a legend.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Series", "PlotSpec", "line_plot_png", "grouped_bar_png", "PNG_MAGIC"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DPI = 110
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Series:
    """One line: label, x and y values, optional symmetric y error bars (e.g. one std)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    yerr: Sequence[float] | None = None


@dataclass(frozen=True)
class PlotSpec:
    """Title and axis labels (with units), whether the x axis is logarithmic, and a horizontal
    offset in x units between series so error bars at equal x stay readable (0 = none)."""

    title: str
    xlabel: str
    ylabel: str
    logx: bool = False
    dodge: float = 0.0


def _new_axes(spec: PlotSpec, size: tuple[float, float] = (6.4, 4.2)):
    # Imported lazily so that importing this module costs nothing.
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(spec.title)
    axes.set_xlabel(spec.xlabel)
    axes.set_ylabel(spec.ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _check_series(series: Sequence[Series]) -> None:
    if not series:
        raise ValueError("a plot needs at least one series")
    for line in series:
        if len(line.x) != len(line.y):
            raise ValueError(f"series {line.label!r}: {len(line.x)} x values, "
                             f"{len(line.y)} y values")
        if line.yerr is not None and len(line.yerr) != len(line.y):
            raise ValueError(f"series {line.label!r}: yerr length differs from y")


def line_plot_png(series: Sequence[Series], spec: PlotSpec) -> bytes:
    """Lines with markers (and error bars where given), one per series; returns PNG bytes."""
    _check_series(series)
    figure, axes = _new_axes(spec)
    for index, line in enumerate(series):
        order = sorted(range(len(line.x)), key=lambda i: line.x[i])
        shift = (index - (len(series) - 1) / 2) * spec.dodge
        xs = [line.x[i] + shift for i in order]
        ys = [line.y[i] for i in order]
        errs = None if line.yerr is None else [line.yerr[i] for i in order]
        axes.errorbar(xs, ys, yerr=errs, label=line.label, marker=_MARKERS[index % len(_MARKERS)],
                      capsize=3 if errs is not None else 0)
    if spec.logx:
        axes.set_xscale("log")
    axes.legend()
    return _png_bytes(figure)


def grouped_bar_png(groups: Sequence[str], bars: Mapping[str, Sequence[float]],
                    spec: PlotSpec) -> bytes:
    """Grouped bar chart: one group per entry of `groups`, one bar colour per key of `bars`.

    Each bar is annotated with its value so the chart reads without the table.
    """
    if not groups or not bars:
        raise ValueError("a bar chart needs at least one group and one bar series")
    for label, values in bars.items():
        if len(values) != len(groups):
            raise ValueError(f"bar series {label!r}: {len(values)} values for {len(groups)} groups")
    figure, axes = _new_axes(spec, size=(7.2, 4.4))
    width = 0.8 / len(bars)
    for index, (label, values) in enumerate(bars.items()):
        positions = [g + (index - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        drawn = axes.bar(positions, values, width=width, label=label)
        axes.bar_label(drawn, fmt="%.3g", fontsize=7, padding=2)
    axes.set_xticks(range(len(groups)), list(groups))
    axes.margins(y=0.15)
    axes.legend()
    return _png_bytes(figure)
