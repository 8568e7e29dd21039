"""What a paper-table run leaves behind: config.json, results.csv, results.md and two plots."""

from __future__ import annotations

import csv
import json
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from fedlora.experiments.plots import plot_accuracy

if TYPE_CHECKING:
    from fedlora.experiments.paper_tables import Row, TableConfig, TableResult

CSV_COLUMNS = (
    "experiment",
    "setting",
    "method",
    "seed",
    "round",
    "test_accuracy",
    "final_accuracy",
    "epsilon",
    "mismatch",
    "seconds",
)


def write_outputs(result: TableResult, out_dir: Path) -> dict[str, Path]:
    from fedlora.experiments.paper_tables import METHOD_LABELS, expand

    config = result.config
    files = result.files
    files["config"] = write_config(config, out_dir / "config.json", hospitals=result.hospital_sizes)
    files["csv"] = write_csv(config.experiment, result.rows, out_dir / "results.csv")
    settings = [s.label for s in expand(config)]
    files["bars"] = plot_bars(
        result.rows,
        out_dir / "final_accuracy.png",
        settings=settings,
        methods=list(config.methods),
        title=f"{config.experiment}: final test accuracy after {config.rounds} round(s)"
        + (f", mean of {len(config.seeds)} seeds" if len(config.seeds) > 1 else ""),
        majority=result.majority_rate,
    )
    files["curves"] = plot_accuracy(
        {
            f"{METHOD_LABELS.get(method, method)} {setting}": list(enumerate(curve))
            for (setting, method), curve in mean_curves(result.rows).items()
        },
        out_dir / "accuracy_by_round.png",
        title=f"{config.experiment}: test accuracy by round"
        + (f" (mean of {len(config.seeds)} seeds)" if len(config.seeds) > 1 else ""),
    )
    files["markdown"] = out_dir / "results.md"
    files["markdown"].write_text(results_markdown(result))
    return files


def write_config(config: TableConfig, path: Path, *, hospitals: dict[str, dict[str, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "experiment": config.experiment,
                "config": config.to_dict(),
                "data": {"task": config.task, "hospitals_per_setting": hospitals},
                "environment": {
                    "python": platform.python_version(),
                    **{pkg: version(pkg) for pkg in ("torch", "numpy", "transformers", "opacus")},
                },
            },
            indent=2,
        )
        + "\n"
    )
    return path


def write_csv(experiment: str, rows: Sequence[Row], path: Path) -> Path:
    """One line per (setting, method, round): every number the table and the plots are drawn from."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            for round_, accuracy in enumerate((row.accuracy_before, *row.accuracies)):
                writer.writerow(
                    [
                        experiment,
                        row.setting,
                        row.method,
                        row.seed,
                        round_,
                        f"{accuracy:.6f}",
                        f"{row.final_accuracy:.6f}",
                        "" if row.epsilon is None else f"{row.epsilon:.4f}",
                        f"{row.mismatch:.6g}",
                        f"{row.seconds:.2f}",
                    ]
                )
    return path


@dataclass(frozen=True)
class Cell:
    """One method at one setting over the seeds: final test accuracies in seed order."""

    finals: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals)

    @property
    def spread(self) -> float | None:
        """The sample standard deviation over the seeds (None with one seed)."""
        return statistics.stdev(self.finals) if len(self.finals) > 1 else None


def _by_cell(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    """(setting, method) -> its runs, ordered by seed."""
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.seed):
        grouped.setdefault((row.setting, row.method), []).append(row)
    return grouped


def cells(rows: Sequence[Row]) -> dict[tuple[str, str], Cell]:
    """(setting, method) -> its runs' final accuracies, ordered by seed."""
    return {key: Cell(tuple(r.final_accuracy for r in runs)) for key, runs in _by_cell(rows).items()}


def mean_curves(rows: Sequence[Row]) -> dict[tuple[str, str], list[float]]:
    """(setting, method) -> test accuracy by round (round 0 first), averaged over the seeds."""
    # Every seed runs the same rounds, so the curves have one length.
    return {
        key: [
            statistics.fmean(column)
            for column in zip(*((r.accuracy_before, *r.accuracies) for r in runs), strict=True)
        ]
        for key, runs in _by_cell(rows).items()
    }


def _percent(mean: float, spread: float | None, *, sign: bool = False) -> str:
    text = f"{100 * mean:+.1f}" if sign else f"{100 * mean:.1f}"
    return text if spread is None else f"{text} ± {100 * spread:.1f}"


def paired_difference(rows: Sequence[Row], setting: str) -> tuple[float, float | None, int, int] | None:
    """FFA-LoRA minus LoRA at `setting`, paired by seed: (mean, sample std or None, seeds where FFA-LoRA
    is ahead, seeds compared); None when no seed has both methods."""
    finals = {(r.method, r.seed): r.final_accuracy for r in rows if r.setting == setting}
    seeds = sorted(
        {seed for method, seed in finals if method == "ffa"} & {s for m, s in finals if m == "fedit"}
    )
    if not seeds:
        return None
    gaps = [finals[("ffa", seed)] - finals[("fedit", seed)] for seed in seeds]
    spread = statistics.stdev(gaps) if len(gaps) > 1 else None
    return statistics.fmean(gaps), spread, sum(g > 0 for g in gaps), len(gaps)


def table_markdown(rows: Sequence[Row], *, settings: Sequence[str], methods: Sequence[str]) -> str:
    """The paper's layout: one row per setting, one column of final test accuracy (%) per method (the mean
    over the seeds, ± their standard deviation when there are several), and the difference FFA-LoRA minus
    LoRA paired by seed when both ran (with several seeds, in how many FFA-LoRA was ahead)."""
    from fedlora.experiments.paper_tables import METHOD_LABELS

    by_cell = cells(rows)
    both = {"ffa", "fedit"} <= set(methods)
    header = ["setting", *(METHOD_LABELS.get(m, m) for m in methods)]
    if both:
        header.append("FFA - LoRA")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for setting in settings:
        values = [by_cell.get((setting, m)) for m in methods]
        line = [setting, *("-" if v is None else _percent(v.mean, v.spread) for v in values)]
        if both:
            diff = paired_difference(rows, setting)
            if diff is None:
                line.append("-")
            else:
                mean, spread, ahead, compared = diff
                text = _percent(mean, spread, sign=True)
                line.append(text if compared == 1 else f"{text} (ahead in {ahead}/{compared})")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(result: TableResult) -> str:
    from fedlora.experiments.paper_tables import METHOD_LABELS, PAPER_TABLES, expand

    config = result.config
    settings = expand(config)
    table = table_markdown(result.rows, settings=[s.label for s in settings], methods=config.methods)
    detail = "| setting | method | seed | accuracy by round | epsilon spent | last mismatch | wall s |\n"
    detail += "| --- | --- | --- | --- | --- | --- | --- |\n"
    for r in result.rows:
        curve = " → ".join(f"{100 * a:.1f}" for a in (r.accuracy_before, *r.accuracies))
        eps = "no DP" if r.epsilon is None else f"{r.epsilon:.2f}"
        detail += (
            f"| {r.setting} | {METHOD_LABELS.get(r.method, r.method)} | {r.seed} | {curve} | {eps} "
            f"| {r.mismatch:.3g} "
            f"| {r.seconds:.0f} |\n"
        )
    base = (
        f"{config.hospitals} hospitals over {config.edges} edge(s), {config.partition} label split, "
        f"rank {config.rank}, alpha {config.alpha:g}, learning rate {config.learning_rate:g}"
        + (
            f" (LoRA's {config.fedit_learning_rate:g})"
            if config.fedit_learning_rate is not None and "fedit" in config.methods
            else ""
        )
        + ", "
        f"{'no DP' if config.epsilon is None else f'example-level epsilon {config.epsilon:g}'} "
        f"(delta {config.delta:g}, per-example clip {config.max_grad_norm:g})"
    )
    axis = {
        "privacy": "the example-level epsilon each hospital spends over the whole run",
        "heterogeneity": "the hospitals' label-proportion split (mild: 0.3-0.7, severe: 0.1-0.9)",
        "rank": "the LoRA rank",
        "alpha": "the scaling factor alpha, the learning rate scaled so that `lr * alpha` stays "
        f"{config.learning_rate * config.alpha:g}",
    }[config.experiment]
    layers = "all" if config.layers_to_transform is None else ", ".join(map(str, config.layers_to_transform))
    seeds = ", ".join(map(str, config.seeds))
    spread = (
        f"Each cell is the mean over seeds {seeds} ± the standard deviation between them; the last column "
        "is the difference paired by seed and in how many seeds FFA-LoRA finished ahead."
        if len(config.seeds) > 1
        else f"One seed ({seeds})."
    )
    return (
        f"# {config.experiment}: FFA-LoRA vs LoRA (the FFA-LoRA paper's Table {PAPER_TABLES[config.experiment]})"
        f"\n\nFinal test accuracy (%) after {config.rounds} round(s); the rows vary {axis}. {spread}\n\n"
        f"{table}\n"
        f"Base federation, of which each row changes only the swept value: {base}. MiniLM "
        f"(all-MiniLM-L6-v2), LoRA on `{', '.join(config.target_modules)}` "
        f"of layer(s) {layers}, the classification head trained and averaged by both methods; "
        f"{config.rounds} round(s) of {config.steps} local DP-SGD/SGD step(s) of batch {config.batch_size}, "
        f"sequences cut to {config.max_seq_length} tokens, {config.max_train_examples} training and "
        f"{config.max_test_examples} test examples of `{config.task}` (majority class "
        f"{100 * result.majority_rate:.1f}% of the test set, mean over the seeds), {config.scheme} encryption, seeds {seeds}, "
        f"{config.threads} thread(s), {result.seconds:.0f} s in all. This is far smaller than the paper's "
        "runs (RoBERTa-large, GLUE, many rounds): compare the methods, not the numbers.\n\n"
        f"## Every run\n\n{detail}\n"
        "Round 0 is the starting adapter (B and the head zero). `epsilon spent` is the largest hospital's "
        "example-level epsilon after the last round; `last mismatch` is FedIT's relative aggregation error "
        "`||mean(B_i) mean(A_i) - mean(B_i A_i)|| / ||mean(B_i A_i)||` in the last round (zero for FFA-LoRA, "
        "whose A is shared).\n"
    )


def plot_bars(
    rows: Sequence[Row],
    path: Path,
    *,
    settings: Sequence[str],
    methods: Sequence[str],
    title: str,
    majority: float | None = None,
) -> Path:
    """Grouped bars: final test accuracy per setting, one bar per method (the mean over the seeds, with
    their standard deviation and every seed's result as a dot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fedlora.experiments.paper_tables import METHOD_LABELS

    by_cell = cells(rows)
    figure = Figure(figsize=(6.4, 4.0))
    figure.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.91)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(settings))]
        found = [by_cell.get((s, method)) for s in settings]
        heights = [0.0 if c is None else c.mean for c in found]
        errors = [0.0 if c is None or c.spread is None else c.spread for c in found]
        axes.bar(xs, heights, width=width, label=METHOD_LABELS.get(method, method))
        if any(errors):
            axes.errorbar(xs, heights, yerr=errors, fmt="none", ecolor="black", capsize=3, linewidth=1)
        # Every seed's own result as a dot on its bar, so that the spread can be seen, not only summarised.
        for x, c in zip(xs, found, strict=True):
            if c is not None and len(c.finals) > 1:
                axes.plot([x] * len(c.finals), c.finals, "o", color="black", markersize=2.5, alpha=0.6)
    if majority is not None:
        axes.axhline(majority, color="grey", linestyle="--", linewidth=1, label="majority class")
    axes.set_xticks(range(len(settings)), list(settings))
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("final test accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path
