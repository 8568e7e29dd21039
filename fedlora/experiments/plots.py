"""Figures of the experiments, drawn on matplotlib's Agg canvas (no display, pyplot's state untouched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_accuracy(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, *, title: str) -> Path:
    """One line per method: test accuracy against the round (round 0 is the starting model)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Fixed margins rather than a layout engine: constrained layout draws the text twice (slow on CPU).
    figure = Figure(figsize=(6.4, 4.0))
    figure.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.91)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, points in curves.items():
        rounds, accuracy = zip(*points, strict=True)
        axes.plot(rounds, accuracy, marker="o", markersize=3, label=name)
    axes.set_xlabel("round")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("test accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path
