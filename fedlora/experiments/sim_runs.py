"""What the simulation experiments share: the settings every federation of one experiment runs with, one
simulated federation run and timed, a grid of them, and the one writer of an experiment's outputs (the
config.json that records every setting and seed, the CSVs, the figures, results.md).

Each experiment (`strategies`, `clair`, `secagg`) is a grid of `fedlora.simulation.simulate` runs: the
same `SimSettings` with a few fields changed per cell (strategy, clients, scheme, contamination). The
simulation seeds the split, the partition, every hospital's batches and the contaminated hospitals from
`SimSettings.seed`, so a rerun with the same config and thread count gives the same accuracies; the HE
schemes draw their encryption randomness from the OS, which moves a CKKS sum by about 1e-7 (the round's
`he_max_abs_error`) and leaves timings to the machine.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol, TypeVar

from client_agent.recipe import HEAD_LEARNING_RATE
from fedlora.experiments.sim_report import Row, write_csv
from fedlora.simulation import (
    Partitioning,
    SimulationConfig,
    SimulationReport,
    simulate,
    simulation_clip_norm,
)
from fedlora.simulation_engines import EngineName
from fedlora.simulation_ranks import RankPlanner

log = logging.getLogger("fedlora.experiments.sim")
#: The scheme of a cell that names none.
_SCHEME_DEFAULT: str = str(next(f.default for f in fields(SimulationConfig) if f.name == "scheme"))


@dataclass(frozen=True)
class SimSettings:
    """The settings every federation of an experiment shares (`SimulationConfig`'s fields of the same
    names); the grid of each experiment sets the rest. No DP-SGD (`epsilon` None) by default: these
    experiments compare aggregation rules and encryption, and Opacus' calibration costs seconds a hospital.
    `layers_to_transform` None keeps the simulation's default layers (4 and 5 of MiniLM)."""

    rounds: int = 3
    steps: int = 8
    batch_size: int = 64
    learning_rate: float = 2.0
    head_learning_rate: float | None = HEAD_LEARNING_RATE  # None: `learning_rate`, the old recipe
    max_train_examples: int = 2000
    max_test_examples: int = 500
    max_seq_length: int = 32
    partition: Partitioning = "mild"
    epsilon: float | None = None
    rank: int = 2
    seed: int = 0
    threads: int = 1
    deidentify: bool = True
    model_path: str | None = None  # None: all-MiniLM-L6-v2 from its PyPI package
    layers_to_transform: tuple[int, ...] | None = None  # None: the simulation's default (4 and 5)
    engine: EngineName = "process"  # where each federation's hospitals run; the results are the same
    ray_address: str | None = None

    def __post_init__(self) -> None:
        for name in ("rounds", "steps", "batch_size", "max_train_examples", "max_test_examples", "threads"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive, got {self.learning_rate}")

    @classmethod
    def quick(cls, **overrides: Any) -> SimSettings:
        """The smoke-test size: real MiniLM, 1 round of 2 steps, 60 training examples."""
        values: dict[str, Any] = dict(
            rounds=1, steps=2, batch_size=16, max_train_examples=60, max_test_examples=40
        )
        values.update(overrides)
        return cls(**values)

    def simulation(self, out_dir: Path, **cell: Any) -> SimulationConfig:
        """The `SimulationConfig` of one cell of the grid: these settings, then the cell's own fields."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        values["model_path"] = Path(self.model_path) if self.model_path is not None else None
        if values["layers_to_transform"] is None:
            del values["layers_to_transform"]
        values.update(cell)
        if "clip_norm" not in cell:
            # A cell that sets no clip norm clips none, except under packed Paillier, whose fixed-point range
            # holds only clipped deltas (the services' default, as `fedlora simulate` clips).
            scheme = values.get("scheme", _SCHEME_DEFAULT)
            values["clip_norm"] = simulation_clip_norm(None, scheme=scheme)
        # An experiment must repeat exactly (its config.json reruns it), so its noise comes from the seed.
        return SimulationConfig(out_dir=out_dir, insecure_reproducible=True, **values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimSettings:
        fields_ = dict(values)
        # Written before the head had its own rate: those runs trained the head at the adapter's rate.
        fields_.setdefault("head_learning_rate", None)
        if fields_.get("layers_to_transform") is not None:  # a JSON list
            fields_["layers_to_transform"] = tuple(fields_["layers_to_transform"])
        return cls(**fields_)


@dataclass(frozen=True)
class SimRun:
    """One simulated federation: its report, the adapter's length (the vector every hospital encrypts)
    and the wall time of the whole run (data, encoding, rounds)."""

    label: str
    report: SimulationReport
    adapter_size: int
    wall_s: float


def run_simulation(label: str, config: SimulationConfig, *, ranks: RankPlanner | None = None) -> SimRun:
    """`simulate(config)` (its hospitals' ranks planned by `ranks`, if given), timed, its warnings muted."""
    sizes: list[int] = []
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Opacus and transformers warn on every hospital's round; the figures go to the report.
        warnings.simplefilter("ignore")
        report = simulate(config, on_global=lambda _, vector: sizes.append(len(vector)), ranks=ranks)
    wall = time.perf_counter() - started
    log.info(
        "%s: accuracy %.3f -> %.3f over %d round(s), %.0f s",
        label, report.accuracy_before, report.accuracy_after, len(report.rounds), wall,
    )  # fmt: skip
    return SimRun(label, report, sizes[0] if sizes else 0, wall)


def run_grid(
    settings: SimSettings, grid: Sequence[tuple[str, Mapping[str, Any]]], out_dir: Path
) -> list[SimRun]:
    """Every cell of an experiment's grid, in order, each run into `out_dir/runs/<label>`."""
    return [
        run_simulation(label, settings.simulation(out_dir / "runs" / label, **cell)) for label, cell in grid
    ]


class ExperimentConfig(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class GridResult(Protocol):
    """What a grid experiment's result holds: its config, one row per run and round, one summary row per
    cell (the files are filled in by `write_outputs`)."""

    @property
    def config(self) -> ExperimentConfig: ...

    @property
    def rows(self) -> Sequence[Row]: ...

    @property
    def summary(self) -> Sequence[Row]: ...


R = TypeVar("R", bound=GridResult)


def write_outputs(
    result: R,
    out_dir: Path,
    *,
    experiment: str,
    runs: Sequence[SimRun],
    figures: Callable[[R, Path], Mapping[str, Path]],
    markdown: Callable[[R], str],
    tables: Mapping[str, Sequence[Row]] | None = None,
) -> dict[str, Path]:
    """An experiment's outputs in `out_dir`: config.json (its config and every run's `SimulationConfig`),
    results.csv and summary.csv (and one CSV for each of `tables`, by file stem), its `figures` and
    results.md; the paths by name, `markdown` among them."""
    files = {
        "config": write_config(
            out_dir / "config.json",
            experiment=experiment,
            config=result.config.to_dict(),
            runs={run.label: run.report.config for run in runs},
        )
    }
    every_table = {"results": result.rows, "summary": result.summary, **(tables or {})}
    files.update({stem: write_csv(rows, out_dir / f"{stem}.csv") for stem, rows in every_table.items()})
    files.update(figures(result, out_dir))
    files["markdown"] = out_dir / "results.md"
    files["markdown"].write_text(markdown(result))
    return files


def write_config(
    path: Path, *, experiment: str, config: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]
) -> Path:
    """config.json: the experiment's config (what `from_dict` reads back), every federation's full
    `SimulationConfig` as the simulation recorded it (seeds included), and the library versions."""
    path.write_text(
        json.dumps(
            {
                "experiment": experiment,
                "config": dict(config),
                "simulations": {label: dict(values) for label, values in runs.items()},
                "environment": {
                    "python": platform.python_version(),
                    **{pkg: version(pkg) for pkg in ("torch", "numpy", "transformers", "tenseal")},
                },
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    return path
