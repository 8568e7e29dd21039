"""FedRot-LoRA vs FedIT vs FFA-LoRA for 3 and 10 hospitals: test accuracy per round and FedIT's factor
mismatch.

Every cell runs the same data, seed and encryption (CKKS, as the services do); only the aggregation
rule and the number of hospitals change. The mismatch `||mean(B_i) mean(A_i) - mean(B_i A_i)||_F /
||mean(B_i A_i)||_F` is the simulation's (`fedlora.simulation_rounds.factor_mismatch`): zero up to
rounding for FFA-LoRA, whose `A` is frozen and shared (Sun et al. 2024); FedRot-LoRA (Zhang et al. 2026)
rotates each hospital's factors toward the global ones before uploading, from round 2 on, to shrink it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedlora.experiments.sim_report import markdown_table, plot_lines
from fedlora.experiments.sim_runs import SimRun, SimSettings, run_grid, write_outputs

StrategyName = Literal["fedrot", "fedit", "ffa"]
STRATEGIES: tuple[StrategyName, ...] = ("fedrot", "fedit", "ffa")
CLIENTS: tuple[int, ...] = (3, 10)
log = logging.getLogger("fedlora.experiments.strategies")


@dataclass(frozen=True)
class StrategiesConfig:
    simulation: SimSettings = field(default_factory=SimSettings)
    clients: tuple[int, ...] = CLIENTS
    strategies: tuple[StrategyName, ...] = STRATEGIES
    edges: int = 2
    scheme: Literal["ckks", "paillier", "none"] = "ckks"

    def __post_init__(self) -> None:
        if not self.clients or min(self.clients) < 1:
            raise ValueError(f"`clients` must be a non-empty tuple of counts >= 1, got {self.clients}")
        if not self.strategies or any(s not in STRATEGIES for s in self.strategies):
            raise ValueError(
                f"`strategies` must be a non-empty subset of {STRATEGIES}, got {self.strategies}"
            )
        if self.edges < 1:
            raise ValueError(f"`edges` must be at least 1, got {self.edges}")

    @classmethod
    def quick(cls) -> StrategiesConfig:
        # 60 examples: 20 a hospital at 3, 6 at 10 (the simulation's partition needs a few each).
        return cls(simulation=SimSettings.quick())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StrategiesConfig:
        fields_ = dict(values)
        fields_["simulation"] = SimSettings.from_dict(fields_.get("simulation", {}))
        fields_["clients"] = tuple(fields_.get("clients", CLIENTS))
        fields_["strategies"] = tuple(fields_.get("strategies", STRATEGIES))
        return cls(**fields_)

    def grid(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, the cell's SimulationConfig fields): every strategy at every client count."""
        return [
            (
                f"{strategy}-{clients}",
                dict(
                    strategy=strategy,
                    hospitals=clients,
                    edges=min(self.edges, clients),
                    scheme=self.scheme,
                ),
            )
            for clients in self.clients
            for strategy in self.strategies
        ]


@dataclass
class StrategiesResult:
    config: StrategiesConfig
    rows: list[dict[str, Any]]  # one per (strategy, clients, round), round 0 the starting adapter
    summary: list[dict[str, Any]]  # one per (strategy, clients)
    files: dict[str, Path]
    seconds: float


def round_rows(run: SimRun, *, strategy: str, clients: int) -> list[dict[str, Any]]:
    start = {
        "strategy": strategy,
        "clients": clients,
        "round": 0,
        "accuracy": run.report.accuracy_before,
        "loss": None,
        "mismatch": None,
        "update_norm": None,
        "round_s": None,
    }
    return [start] + [
        {
            "strategy": strategy,
            "clients": clients,
            "round": r.round + 1,
            "accuracy": r.accuracy,
            "loss": r.loss,
            "mismatch": r.mismatch,
            "update_norm": r.update_norm,
            "round_s": r.seconds,
        }
        for r in run.report.rounds
    ]


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    keys = list(dict.fromkeys((r["strategy"], r["clients"]) for r in rows))
    out = []
    for strategy, clients in keys:
        mine = [r for r in rows if r["strategy"] == strategy and r["clients"] == clients]
        trained = [r for r in mine if r["round"] > 0]
        out.append(
            {
                "strategy": strategy,
                "clients": clients,
                "final_accuracy": mine[-1]["accuracy"],
                "best_accuracy": max(r["accuracy"] for r in trained) if trained else None,
                "accuracy_per_round": [round(r["accuracy"], 3) for r in trained],
                "mismatch_per_round": [f"{r['mismatch']:.3g}" for r in trained],
            }
        )
    return out


def run_strategies(config: StrategiesConfig, out_dir: Path) -> StrategiesResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    grid = config.grid()
    runs = run_grid(config.simulation, grid, out_dir)
    rows = [
        row
        for run, (_, cell) in zip(runs, grid, strict=True)
        for row in round_rows(run, strategy=cell["strategy"], clients=cell["hospitals"])
    ]
    walls = {run.label: run.wall_s for run in runs}
    summary = summarise(rows)
    for entry in summary:
        entry["run_wall_s"] = walls[f"{entry['strategy']}-{entry['clients']}"]
    result = StrategiesResult(config, rows, summary, {}, time.perf_counter() - started)
    result.files = write_outputs(
        result, out_dir, experiment="strategies", runs=runs, figures=figures, markdown=results_markdown
    )
    return result


SUMMARY_COLUMNS = (
    ("clients", "hospitals"),
    ("strategy", "strategy"),
    ("final_accuracy", "final accuracy"),
    ("best_accuracy", "best accuracy"),
    ("accuracy_per_round", "accuracy per round"),
    ("mismatch_per_round", "factor mismatch per round"),
    ("run_wall_s", "run wall s"),
)


def figures(result: StrategiesResult, out_dir: Path) -> dict[str, Path]:
    config, rows = result.config, result.rows
    files: dict[str, Path] = {}
    for clients in config.clients:
        mine = [r for r in rows if r["clients"] == clients]
        files[f"accuracy_{clients}"] = plot_lines(
            {s: [(r["round"], r["accuracy"]) for r in mine if r["strategy"] == s] for s in config.strategies},
            out_dir / f"accuracy_{clients}_clients.png",
            title=f"test accuracy, {clients} hospitals ({config.simulation.partition} split)",
            xlabel="round (0: the starting adapter)",
            ylabel="test accuracy",
        )
    # FFA's mismatch is zero up to rounding: a log axis would only show rounding, so it is left out.
    files["mismatch"] = plot_lines(
        {
            f"{s}, {c} hospitals": [
                (r["round"], r["mismatch"])
                for r in rows
                if r["strategy"] == s and r["clients"] == c and r["round"] > 0 and r["mismatch"] > 0
            ]
            for c in config.clients
            for s in config.strategies
            if s != "ffa"
        },
        out_dir / "mismatch.png",
        title="relative factor mismatch ||mean(B)mean(A) - mean(BA)|| / ||mean(BA)||",
        xlabel="round",
        ylabel="relative mismatch (log scale)",
        log_y=True,
    )
    return files


def results_markdown(result: StrategiesResult) -> str:
    config, sim = result.config, result.config.simulation
    return (
        "# FedRot-LoRA vs FedIT vs FFA-LoRA\n\n"
        + markdown_table(result.summary, SUMMARY_COLUMNS)
        + f"\nRotten Tomatoes through MiniLM, {sim.partition} split of at most {sim.max_train_examples:,} "
        f"snippets over the hospitals, {sim.max_test_examples:,} test snippets (accuracy of the global "
        f"adapter after each round). {sim.rounds} round(s) of {sim.steps} local SGD step(s), batch "
        f"{sim.batch_size}, lr {sim.learning_rate:g}, rank {sim.rank}, sequence {sim.max_seq_length}, "
        f"DP-SGD {'off' if sim.epsilon is None else f'epsilon {sim.epsilon:g}'}, {config.scheme} sums over "
        f"{config.edges} edge(s), seed {sim.seed}, {sim.threads} thread(s). The factor mismatch is "
        "`||mean(B_i) mean(A_i) - mean(B_i A_i)||_F / ||mean(B_i A_i)||_F` over every LoRA module, from "
        "each hospital's plaintext factors (only a simulation sees them); FFA-LoRA's is rounding. One seed: "
        f"differences of a few points are within run-to-run noise. {result.seconds:.0f} s in all.\n"
    )
