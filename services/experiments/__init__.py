"""Experiments that `fedlora experiment NAME` runs, by name.

Each entry names a run function and says in one line what it measures. The run functions import their
experiment module when called, so listing the registry imports neither torch nor the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ExperimentRun(Protocol):
    def __call__(self, out_dir: Path, *, quick: bool) -> Path:
        """Run the experiment into ``out_dir`` (a tiny configuration if ``quick``); return its results.md."""
        ...


@dataclass(frozen=True)
class ExperimentSpec:
    run: ExperimentRun
    description: str


class UnknownExperimentError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown experiment {self.name!r}; known: {', '.join(sorted(EXPERIMENTS))}"


def _vit_baseline(out_dir: Path, *, quick: bool) -> Path:
    from services.experiments.vit_baseline import ViTBaselineConfig, run_vit_baseline

    config = ViTBaselineConfig.quick() if quick else ViTBaselineConfig()
    return run_vit_baseline(config, out_dir).files["markdown"]


EXPERIMENTS: dict[str, ExperimentSpec] = {
    "vit-baseline": ExperimentSpec(
        run=_vit_baseline,
        description="seed 004: FedAvg (full) vs FedLoRA on a small ViT, 5,000 MNIST digits, Dirichlet(0.5)",
    ),
}


def get_experiment(name: str) -> ExperimentSpec:
    try:
        return EXPERIMENTS[name]
    except KeyError as e:
        raise UnknownExperimentError(name) from e
