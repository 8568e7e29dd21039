"""Experiments that `fedlora experiment NAME` runs, by name.

Each entry names a run function and says in one line what it measures. The run functions import their
experiment module when called, so listing the registry imports neither torch nor the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fedlora.simulation_engines import EngineName

if TYPE_CHECKING:
    from fedlora.experiments.sim_runs import SimSettings


@dataclass(frozen=True)
class Engine:
    """Where an experiment's simulated federations run their hospitals (`fedlora.simulation_engines`):
    the results are the same either way, so config.json records it beside the settings."""

    name: EngineName = "process"
    ray_address: str | None = None


class ExperimentEngineError(ValueError):
    """The experiment cannot run its hospitals on the engine asked for."""


class ExperimentRun(Protocol):
    def __call__(self, out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
        """Run the experiment into ``out_dir`` (a tiny configuration if ``quick``, its federations' hospitals
        on ``engine``); return its results.md."""
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


def on_engine(settings: SimSettings, engine: Engine) -> SimSettings:
    return replace(settings, engine=engine.name, ray_address=engine.ray_address)


def in_process_only(name: str, what: str, engine: Engine) -> None:
    """Refuse an engine other than `process` for an experiment that does not run `fedlora simulate`."""
    if engine.name != "process":
        raise ExperimentEngineError(
            f"{name} {what} in one process; engine {engine.name!r} applies to the experiments built on "
            "`fedlora simulate`"
        )


def _vit_baseline(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.vit_baseline import ViTBaselineConfig, run_vit_baseline

    in_process_only("vit-baseline", "trains its own small federation", engine)
    config = ViTBaselineConfig.quick() if quick else ViTBaselineConfig()
    return run_vit_baseline(config, out_dir).files["markdown"]


#: The experiments whose settings `fedlora experiment NAME --set KEY=VALUE` may change.
PAPER_TABLES = ("privacy", "heterogeneity", "rank", "alpha")


class ExperimentSettingError(ValueError):
    """A `--set` names no setting of the experiment, or an experiment that takes none."""


def run_paper_table(
    name: str, out_dir: Path, *, settings: Mapping[str, Any], quick: bool, engine: Engine = Engine()
) -> Path:
    """One of the paper tables with some of its settings changed (`TableConfig`'s fields, e.g. `methods`,
    `epsilons`, `head_learning_rate`, `seeds`): a variant, or a rerun of a results folder's config.json."""
    from fedlora.experiments.paper_tables import TableConfig, TableConfigError, run_table

    if name not in PAPER_TABLES:
        raise ExperimentSettingError(
            f"--set applies to {', '.join(PAPER_TABLES)}; {name!r} takes no settings"
        )
    config = TableConfig.quick(name) if quick else TableConfig.default(name)  # type: ignore[arg-type]
    values = config.to_dict()
    unknown = sorted(set(settings) - set(values) - {"experiment"})
    if unknown or "experiment" in settings:
        raise ExperimentSettingError(
            f"{name} has no setting {', '.join(unknown) or 'experiment'}; settings: {', '.join(sorted(values))}"
        )
    values.update(settings, engine=engine.name, ray_address=engine.ray_address)
    try:
        changed = TableConfig.from_dict(values)
    except (TableConfigError, TypeError, ValueError) as e:
        raise ExperimentSettingError(f"{name}: {e}") from e
    return run_table(changed, out_dir).files["markdown"]


def _paper_table(name: Literal["privacy", "heterogeneity", "rank", "alpha"]) -> ExperimentRun:
    """One of the FFA-LoRA paper's tables as simulated federations (`fedlora.experiments.paper_tables`)."""

    def run(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
        from fedlora.experiments.paper_tables import TableConfig, run_table

        config = TableConfig.quick(name) if quick else TableConfig.default(name)
        config = replace(config, engine=engine.name, ray_address=engine.ray_address)
        return run_table(config, out_dir).files["markdown"]

    return run


def _secagg(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.secagg import SecAggConfig, run_secagg

    config = SecAggConfig.quick() if quick else SecAggConfig()
    return run_secagg(replace(config, simulation=on_engine(config.simulation, engine)), out_dir).files[
        "markdown"
    ]


def _strategies(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.strategies import StrategiesConfig, run_strategies

    config = StrategiesConfig.quick() if quick else StrategiesConfig()
    return run_strategies(replace(config, simulation=on_engine(config.simulation, engine)), out_dir).files[
        "markdown"
    ]


def _clair(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.robustness import ClairConfig, run_clair

    config = ClairConfig.quick() if quick else ClairConfig()
    return run_clair(replace(config, simulation=on_engine(config.simulation, engine)), out_dir).files[
        "markdown"
    ]


def _central(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.central import CentralConfig, run_central

    in_process_only("central", "trains one model", engine)
    config = CentralConfig.quick() if quick else CentralConfig()
    return run_central(config, out_dir)[1]["markdown"]


def _hospitals(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.hospitals import HospitalsConfig, run_hospitals

    config = HospitalsConfig.quick() if quick else HospitalsConfig()
    return run_hospitals(replace(config, simulation=on_engine(config.simulation, engine)), out_dir).files[
        "markdown"
    ]


def _yardstick(out_dir: Path, *, quick: bool, engine: Engine = Engine()) -> Path:
    from fedlora.experiments.yardstick import YardstickConfig, run_yardstick

    config = YardstickConfig.quick() if quick else YardstickConfig()
    config = replace(
        config, federation=replace(config.federation, engine=engine.name, ray_address=engine.ray_address)
    )
    return run_yardstick(config, out_dir).files["markdown"]


EXPERIMENTS: dict[str, ExperimentSpec] = {
    "yardstick": ExperimentSpec(
        run=_yardstick,
        description="issue 23's table: centralised (no DP, DP) vs federated FFA-LoRA (IID, mild, severe), "
        "LoRA and each hospital alone, one test set, three seeds",
    ),
    "central": ExperimentSpec(
        run=_central,
        description="the yardstick: the demo's adapter trained on all the hospitals' data in one place, "
        "no DP (tuned) and DP-SGD",
    ),
    "vit-baseline": ExperimentSpec(
        run=_vit_baseline,
        description="seed 004: FedAvg (full) vs FedLoRA on a small ViT, 5,000 MNIST digits, Dirichlet(0.5)",
    ),
    "privacy": ExperimentSpec(
        run=_paper_table("privacy"),
        description="FFA-LoRA Table 1: FFA-LoRA vs LoRA at example-level epsilon 1, 3, 6 and without DP",
    ),
    "heterogeneity": ExperimentSpec(
        run=_paper_table("heterogeneity"),
        description="FFA-LoRA Table 2: FFA-LoRA vs LoRA over IID, mild and severe label splits (epsilon 6)",
    ),
    "rank": ExperimentSpec(
        run=_paper_table("rank"),
        description="FFA-LoRA Table 4: FFA-LoRA vs LoRA at rank 2, 4, 8, 16 under epsilon 1",
    ),
    "alpha": ExperimentSpec(
        run=_paper_table("alpha"),
        description="FFA-LoRA Table 7: alpha 2 to 128 with lr * alpha fixed, FFA-LoRA vs LoRA (epsilon 6)",
    ),
    "secagg": ExperimentSpec(
        run=_secagg,
        description="secure aggregation cost: round seconds, bytes per upload; plaintext, CKKS, Paillier",
    ),
    "strategies": ExperimentSpec(
        run=_strategies,
        description="FedRot-LoRA vs FedIT vs FFA-LoRA, 3 and 10 hospitals: accuracy, FedIT's factor mismatch",
    ),
    "clair": ExperimentSpec(
        run=_clair,
        description="CLAIR vs 20-30% contaminated hospitals: precision, recall; accuracy vs FedAvg, local-only",
    ),
    "hospitals": ExperimentSpec(
        run=_hospitals,
        description="seed 001: five skewed hospitals on drug_condition, DP epsilon 8, dynamic vs fixed ranks; "
        "macro AUC vs central and each hospital alone",
    ),
}


def get_experiment(name: str) -> ExperimentSpec:
    try:
        return EXPERIMENTS[name]
    except KeyError as e:
        raise UnknownExperimentError(name) from e
