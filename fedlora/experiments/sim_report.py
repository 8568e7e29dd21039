"""Writers of the simulation experiments: plain rows (one dict each) to a CSV, a markdown table and
matplotlib figures on the Agg canvas (no display, pyplot's state untouched)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]


def cell(value: Any, *, digits: int = 3) -> str:
    """A value as a table shows it: floats to `digits` places (small ones in scientific notation),
    None as an em dash, sequences joined by commas."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "—"
    return str(value)


def markdown_table(rows: Sequence[Row], columns: Sequence[tuple[str, str]], *, digits: int = 3) -> str:
    """A markdown table of `rows`; `columns` are (key, header) pairs in order."""
    head = "| " + " | ".join(header for _, header in columns) + " |\n"
    rule = "| " + " | ".join("---" for _ in columns) + " |\n"
    body = "".join(
        "| " + " | ".join(cell(row.get(key), digits=digits) for key, _ in columns) + " |\n" for row in rows
    )
    return head + rule + body


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """Every row, every key (the union, in first-seen order); lists joined by `;`, None left empty."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in keys})
    return path


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return value


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins rather than a layout engine: constrained layout draws the text twice (slow on CPU).
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.9)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


def plot_lines(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
) -> Path:
    """One line per name, (x, y) points."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure()
    axes = figure.add_subplot()
    for name, points in curves.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o", markersize=3, label=name)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    stacked: bool = False,
    log_y: bool = False,
) -> Path:
    """Bars per group: side by side, one per series, or stacked."""
    figure = _figure()
    axes = figure.add_subplot()
    positions = list(range(len(groups)))
    count = max(len(series), 1)
    width = 0.8 if stacked else 0.8 / count
    bottom = [0.0] * len(groups)
    for i, (name, values) in enumerate(series.items()):
        if stacked:
            axes.bar(positions, values, width, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        else:
            offset = (i - (count - 1) / 2) * width
            axes.bar([p + offset for p in positions], values, width, label=name)
    axes.set_xticks(positions, list(groups))
    if log_y:
        axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        axes.legend(fontsize=8)
    return _save(figure, path)
