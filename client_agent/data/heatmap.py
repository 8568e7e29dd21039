"""A client-by-class heatmap of a partition (the figure seed 004's FedLoRA baseline reports)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from client_agent.data.errors import PartitionError


def plot_heatmap(
    counts: np.ndarray, label_names: Sequence[str], path: str | Path, *, title: str | None = None
) -> Path:
    """Write a PNG heatmap of ``counts`` (clients x classes, from ``client_class_counts``) to ``path``.

    Every cell is annotated with its count. Uses matplotlib's Agg canvas directly, so it needs no
    display and leaves pyplot's global state alone.
    """
    # Imported here: matplotlib takes a noticeable time to import and most callers never plot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(counts)
    if matrix.ndim != 2 or matrix.shape[1] != len(label_names):
        raise PartitionError(
            f"`counts` must be (clients, {len(label_names)} classes), got shape {matrix.shape}"
        )
    n_clients, n_classes = matrix.shape
    figure = Figure(figsize=(1.2 + 0.9 * n_classes, 1.0 + 0.45 * n_clients), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", aspect="auto", vmin=0)
    figure.colorbar(image, ax=axes, label="examples")
    axes.set_xticks(range(n_classes), [str(name) for name in label_names], rotation=30, ha="right")
    axes.set_yticks(range(n_clients), [f"client {i}" for i in range(n_clients)])
    axes.set_xlabel("class")
    if title:
        axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(n_clients):
        for col in range(n_classes):
            value = matrix[row, col]
            colour = "white" if value > threshold else "black"
            axes.text(col, row, f"{value:d}", ha="center", va="center", color=colour, fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png", dpi=120)
    return out
