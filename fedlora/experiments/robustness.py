"""CLAIR against contaminated hospitals: detection precision and recall, and the accuracy benign hospitals
get from CLAIR, from FedAvg without a robust rule, and from training alone.

CLAIR (He, Chen, Feng 2026) needs each hospital as its own row, so every federation here has one edge per
hospital, no encryption and no client-level noise (the spec validator refuses anything else). The grid:
20 and 30 percent of the hospitals contaminated, by flipped labels or by random updates
(`fedlora.simulation_rounds.contaminate`). Per cell:

- `clair`: the simulation's flagged hospitals each round against its contaminated ones give precision
  (flagged that were contaminated) and recall (contaminated that were flagged), per round and pooled;
- `fedavg`: the same federation, FFA-LoRA's plain mean (the layout CLAIR uses: `A` frozen);
- `local`: each benign hospital trains alone from adapter version 0 for the same rounds and steps, with
  the agent's `train_local`, and is evaluated on the same test set.

Benign hospitals evaluate the global adapter on the common test set, so "benign-client accuracy" of a
federation is its test accuracy; of local training it is the mean over the benign hospitals.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedlora.experiments.sim_report import markdown_table, plot_bars
from fedlora.experiments.sim_runs import SimSettings, run_grid, write_outputs
from fedlora.simulation_rounds import Contamination

FRACTIONS: tuple[float, ...] = (0.2, 0.3)
KINDS: tuple[Contamination, ...] = ("flip", "random")
log = logging.getLogger("fedlora.experiments.robustness")


@dataclass(frozen=True)
class Detection:
    """Flagged hospitals against the contaminated ones. Precision is None when nothing was flagged,
    recall None when nothing was contaminated (0/0: undefined, not zero)."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives else None

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )


def detection(flagged: Sequence[str], contaminated: Sequence[str]) -> Detection:
    flagged_set, bad = set(flagged), set(contaminated)
    return Detection(len(flagged_set & bad), len(flagged_set - bad), len(bad - flagged_set))


def pooled(rounds: Sequence[Detection]) -> Detection:
    """Every round's flags together (micro-averaged)."""
    total = Detection(0, 0, 0)
    for d in rounds:
        total = total + d
    return total


def contaminated_count(hospitals: int, fraction: float) -> int:
    """The contaminated hospitals for a fraction: rounded to the nearest whole hospital, at least one."""
    return max(1, round(hospitals * fraction))


@dataclass(frozen=True)
class ClairConfig:
    """Ten hospitals of 200 snippets each; full batches (each hospital's whole share every step), so that
    an honest update's spread comes from its data rather than from its batches. IID split: CLAIR's
    shared subspace is a statement about hospitals that want the same adapter. Random updates at the
    benign norm (`contamination_scale` 1), so that length alone does not give them away. LoRA on the
    last layer only and 3 rounds of 6 steps at lr 2 (4 steps at lr 4 swung between the classes and learnt
    nothing) fit the eight federations and the local-only runs into about 22 CPU minutes here."""

    simulation: SimSettings = field(
        default_factory=lambda: SimSettings(
            steps=6, batch_size=512, learning_rate=2.0, partition="iid", layers_to_transform=(5,)
        )
    )
    hospitals: int = 10
    fractions: tuple[float, ...] = FRACTIONS
    kinds: tuple[Contamination, ...] = KINDS
    contamination_scale: float = 1.0
    local_only: bool = True

    def __post_init__(self) -> None:
        if self.hospitals < 3:
            raise ValueError(f"`hospitals` must be at least 3 (CLAIR compares rows), got {self.hospitals}")
        if not self.fractions or not all(0 < f < 0.5 for f in self.fractions):
            raise ValueError(f"`fractions` must lie in (0, 0.5), got {self.fractions}")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"`kinds` must be a non-empty subset of {KINDS}, got {self.kinds}")

    @classmethod
    def quick(cls) -> ClairConfig:
        return cls(
            simulation=SimSettings.quick(
                batch_size=512, learning_rate=2.0, partition="iid", layers_to_transform=(5,)
            ),
            fractions=(0.2,),
            kinds=("random",),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClairConfig:
        fields_ = dict(values)
        fields_["simulation"] = SimSettings.from_dict(fields_.get("simulation", {}))
        fields_["fractions"] = tuple(fields_.get("fractions", FRACTIONS))
        fields_["kinds"] = tuple(fields_.get("kinds", KINDS))
        return cls(**fields_)

    def grid(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, the cell's SimulationConfig fields): CLAIR and FedAvg at every fraction and kind."""
        cells = []
        for fraction in self.fractions:
            for kind in self.kinds:
                for method, strategy in (("clair", "clair"), ("fedavg", "ffa")):
                    cells.append(
                        (
                            f"{method}-{kind}-{round(fraction * 100)}",
                            dict(
                                strategy=strategy,
                                scheme="none",
                                hospitals=self.hospitals,
                                edges=self.hospitals,
                                contaminated=contaminated_count(self.hospitals, fraction),
                                contamination=kind,
                                contamination_scale=self.contamination_scale,
                            ),
                        )
                    )
        return cells


@dataclass
class ClairResult:
    config: ClairConfig
    rows: list[dict[str, Any]]  # one per (method, kind, fraction, round)
    summary: list[dict[str, Any]]  # one per (kind, fraction)
    local: list[dict[str, Any]]  # one per (fraction, benign hospital)
    files: dict[str, Path]
    seconds: float


def run_clair(config: ClairConfig, out_dir: Path) -> ClairResult:
    from fedlora.experiments.local_only import local_only

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    contaminated: dict[float, list[str]] = {}
    runs = run_grid(config.simulation, config.grid(), out_dir)
    for run in runs:
        method, kind, percent = run.label.split("-")
        fraction = int(percent) / 100
        contaminated[fraction] = run.report.contaminated
        for r in run.report.rounds:
            d = detection(r.flagged_hospitals, run.report.contaminated)
            rows.append(
                {
                    "method": method,
                    "contamination": kind,
                    "fraction": fraction,
                    "round": r.round + 1,
                    "accuracy": r.accuracy,
                    "contaminated": run.report.contaminated,
                    "flagged": r.flagged_hospitals,
                    "true_positives": d.true_positives,
                    "false_positives": d.false_positives,
                    "false_negatives": d.false_negatives,
                    "precision": d.precision,
                    "recall": d.recall,
                    "run_wall_s": run.wall_s,
                }
            )
    local: list[dict[str, Any]] = []
    if config.local_only:
        # Every hospital trains alone once; each fraction's baseline is the mean over its benign ones.
        cell = dict(hospitals=config.hospitals, edges=config.hospitals, scheme="none")
        alone = local_only(config.simulation.simulation(out_dir / "runs" / "local", **cell))
        for fraction, bad in contaminated.items():
            for hospital, accuracy in alone:
                if hospital not in bad:
                    local.append({"fraction": fraction, "hospital": hospital, "accuracy": accuracy})
    summary = summarise(rows, local)
    result = ClairResult(config, rows, summary, local, {}, time.perf_counter() - started)
    result.files = write_outputs(
        result,
        out_dir,
        experiment="clair",
        runs=runs,
        figures=figures,
        markdown=results_markdown,
        tables={"local_only": local},
    )
    return result


def summarise(rows: Sequence[Mapping[str, Any]], local: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (contamination, fraction): CLAIR's pooled precision and recall, and the final accuracy of CLAIR,
    FedAvg and (mean over benign hospitals) local training."""
    out = []
    for kind, fraction in dict.fromkeys((r["contamination"], r["fraction"]) for r in rows):
        cell = [r for r in rows if r["contamination"] == kind and r["fraction"] == fraction]
        clair = [r for r in cell if r["method"] == "clair"]
        fedavg = [r for r in cell if r["method"] == "fedavg"]
        total = pooled(
            [Detection(r["true_positives"], r["false_positives"], r["false_negatives"]) for r in clair]
        )
        alone = [entry["accuracy"] for entry in local if entry["fraction"] == fraction]
        out.append(
            {
                "contamination": kind,
                "fraction": fraction,
                "contaminated": clair[0]["contaminated"] if clair else [],
                # Rounds apart by " / ", hospitals within a round by ", ".
                "flagged_per_round": " / ".join(", ".join(r["flagged"]) or "none" for r in clair),
                "precision": total.precision,
                "recall": total.recall,
                "clair_accuracy": clair[-1]["accuracy"] if clair else None,
                "fedavg_accuracy": fedavg[-1]["accuracy"] if fedavg else None,
                "local_accuracy": statistics.fmean(alone) if alone else None,
                "local_accuracy_min": min(alone) if alone else None,
                "local_accuracy_max": max(alone) if alone else None,
            }
        )
    return out


SUMMARY_COLUMNS = (
    ("contamination", "contamination"),
    ("fraction", "fraction"),
    ("contaminated", "contaminated"),
    ("flagged_per_round", "CLAIR flagged per round"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("clair_accuracy", "CLAIR acc"),
    ("fedavg_accuracy", "FedAvg acc"),
    ("local_accuracy", "local-only acc (mean)"),
    ("local_accuracy_min", "local min"),
    ("local_accuracy_max", "local max"),
)


def figures(result: ClairResult, out_dir: Path) -> dict[str, Path]:
    config, summary = result.config, result.summary
    files: dict[str, Path] = {}
    groups = [f"{s['contamination']} {round(s['fraction'] * 100)}%" for s in summary]
    files["accuracy_plot"] = plot_bars(
        groups,
        {
            "CLAIR": [_number(s["clair_accuracy"]) for s in summary],
            "FedAvg": [_number(s["fedavg_accuracy"]) for s in summary],
            "local only": [_number(s["local_accuracy"]) for s in summary],
        },
        out_dir / "accuracy.png",
        title=f"final test accuracy, {config.hospitals} hospitals",
        ylabel="test accuracy",
    )
    files["detection_plot"] = plot_bars(
        groups,
        {
            "precision": [_number(s["precision"]) for s in summary],
            "recall": [_number(s["recall"]) for s in summary],
        },
        out_dir / "detection.png",
        title="CLAIR's detection, pooled over rounds (missing bar: undefined)",
        ylabel="share",
    )
    return files


def _number(value: float | None) -> float:
    return float("nan") if value is None else value


def results_markdown(result: ClairResult) -> str:
    config, sim = result.config, result.config.simulation
    layers = "4, 5" if sim.layers_to_transform is None else ", ".join(map(str, sim.layers_to_transform))
    return (
        "# CLAIR against contaminated hospitals\n\n"
        + markdown_table(result.summary, SUMMARY_COLUMNS)
        + f"\n{config.hospitals} hospitals, each its own edge (a CLAIR row), no encryption, no client-level "
        f"noise; {sim.partition} split of at most {sim.max_train_examples:,} Rotten Tomatoes snippets, "
        f"{sim.max_test_examples:,} test. {sim.rounds} round(s) of {sim.steps} local SGD step(s), batch "
        f"{sim.batch_size} (a hospital's whole share when it holds fewer), lr {sim.learning_rate:g}, FFA-LoRA "
        f"rank {sim.rank} on `value` of MiniLM's layer(s) {layers}, sequence {sim.max_seq_length}, DP-SGD "
        f"{'off' if sim.epsilon is None else f'epsilon {sim.epsilon:g}'}, seed {sim.seed}. Contaminated "
        "hospitals (drawn from the seed) train on flipped labels or upload Gaussian noise at their benign "
        f"update's norm times {config.contamination_scale:g}. Precision and recall pool CLAIR's flags over "
        "the rounds (— : undefined, nothing flagged). FedAvg is FFA-LoRA's plain mean over the same "
        "uploads; local-only is each benign hospital trained alone for the same rounds and steps, evaluated "
        f"on the same test set. One seed. {result.seconds:.0f} s in all.\n"
    )
