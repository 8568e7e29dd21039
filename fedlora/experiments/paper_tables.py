"""The FFA-LoRA paper's tables (Sun et al., 2024, "Improving LoRA in privacy-preserving federated
learning", seed 000) as simulated federations on the bundled Rotten Tomatoes sentiment data with MiniLM.

Each experiment is one axis swept over a fixed base federation, every setting run once per method:

- ``privacy`` (Table 1): example-level DP-SGD at epsilon 1, 3, 6 and without DP;
- ``heterogeneity`` (Table 2): IID, mild and severe label-proportion splits;
- ``rank`` (Table 4): LoRA rank 2, 4, 8, 16 at epsilon 1;
- ``alpha`` (Table 7): the scaling factor alpha with the learning rate scaled by it.

The methods are FFA-LoRA (``ffa``: ``A`` frozen at the seeded basis, only ``B`` trained and averaged) and
LoRA as FedIT aggregates it (``fedit``: both factors trained and averaged separately). Every run goes
through :func:`fedlora.simulation.simulate`, so the numbers come from the services' own training,
DP-SGD, CKKS encryption, aggregation strategies and ledger.

The paper fine-tunes RoBERTa-large for many rounds on GLUE; these runs are sized so that each table's
three seeds take 17-26 minutes of CPU time here (2 rounds of 8 local steps, 1,500 training and 400 test examples,
sequences cut to 32 tokens, LoRA on the value projections of MiniLM's last two layers only; DP-SGD's noise
calibration is a good part of it), so they reproduce the paper's comparisons in kind, not its numbers.
Every setting runs once per seed in ``seeds`` (the seed draws the data split, the hospitals' shares and
batches, the DP-SGD noise and FFA-LoRA's frozen ``A``), and the table gives the mean and spread over them:
at this size one run's gap between the methods is often within run-to-run noise. Everything is seeded: a
rerun of the same ``config.json`` with the same thread count gives the same numbers on CPU.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from client_agent.recipe import HEAD_LEARNING_RATE
from fedlora.simulation import (
    Partitioning,
    RoundReport,
    SimulationConfig,
    simulate,
    simulation_clip_norm,
)
from fedlora.simulation_engines import EngineName

Experiment = Literal["privacy", "heterogeneity", "rank", "alpha"]
Method = Literal["ffa", "fedit"]
EXPERIMENT_NAMES: tuple[Experiment, ...] = get_args(Experiment)
METHODS: tuple[Method, ...] = ("ffa", "fedit")
#: LoRA's (FedIT's) learning rate in the tables: at FFA-LoRA's 2.0 its IID runs ended at the majority class;
#: at 0.5 they learn (docs/results.md, "LoRA's own learning rate").
FEDIT_LEARNING_RATE = 0.5
METHOD_LABELS: dict[str, str] = {"ffa": "FFA-LoRA", "fedit": "LoRA (FedIT)"}
PAPER_TABLES: dict[Experiment, str] = {"privacy": "1", "heterogeneity": "2", "rank": "4", "alpha": "7"}
log = logging.getLogger(__name__)


class TableConfigError(ValueError):
    """A table's configuration is not one this module can run."""


@dataclass(frozen=True)
class Setting:
    """One row of a table: the value on the experiment's axis and the federation it makes."""

    label: str
    epsilon: float | None
    partition: Partitioning
    rank: int
    alpha: float
    learning_rate: float

    @property
    def slug(self) -> str:
        """A folder name for the setting's runs."""
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in self.label)


@dataclass(frozen=True)
class TableConfig:
    """Every setting of one experiment; ``config.json`` holds it and :meth:`from_dict` reads it back.

    The ``*s`` tuples are the axes; only the experiment's own is swept, the other fields are the base
    federation every setting shares. ``epsilon`` None means no DP.
    """

    experiment: Experiment
    methods: tuple[Method, ...] = METHODS
    # The axes.
    epsilons: tuple[float | None, ...] = (1.0, 3.0, 6.0, None)
    partitions: tuple[Partitioning, ...] = ("iid", "mild", "severe")
    ranks: tuple[int, ...] = (2, 4, 8, 16)
    alphas: tuple[float, ...] = (2.0, 8.0, 32.0, 128.0)
    # The base federation.
    epsilon: float | None = 6.0
    partition: Partitioning = "mild"
    rank: int = 8
    alpha: float = 8.0
    #: The learning rate at `alpha`; the alpha experiment keeps `learning_rate * alpha` fixed.
    learning_rate: float = 2.0
    #: The head's own rate, the same in every setting (the alpha axis scales `B`'s step, not the head's);
    #: None: `learning_rate`, the recipe these tables were first run with.
    head_learning_rate: float | None = HEAD_LEARNING_RATE
    #: LoRA's (FedIT's) own rate at `alpha`, which the alpha experiment scales as `learning_rate`; None:
    #: `learning_rate`, as these tables were first run. FedIT also trains `A`, and at FFA-LoRA's rate its IID
    #: runs ended at the majority class (docs/results.md, "LoRA's own learning rate").
    fedit_learning_rate: float | None = FEDIT_LEARNING_RATE
    hospitals: int = 3
    edges: int = 3
    rounds: int = 2
    steps: int = 8
    batch_size: int = 64
    max_seq_length: int = 32
    max_train_examples: int | None = 1500
    max_test_examples: int | None = 400
    test_fraction: float = 0.1
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    layers_to_transform: tuple[int, ...] = (4, 5)
    target_modules: tuple[str, ...] = ("value",)
    scheme: Literal["ckks", "paillier", "none"] = "ckks"
    task: str = "rt_sentiment"
    #: Each setting runs once per seed; the table reports the mean and the spread over them.
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 1
    deidentify: bool = False
    model_path: str | None = None  # None: all-MiniLM-L6-v2 from its PyPI package
    engine: EngineName = "process"  # where each federation's hospitals run; the results are the same
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENT_NAMES:
            raise TableConfigError(f"`experiment` must be one of {EXPERIMENT_NAMES}, got {self.experiment!r}")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise TableConfigError(f"`methods` must be a non-empty subset of {METHODS}, got {self.methods}")
        axis = {
            "privacy": self.epsilons,
            "heterogeneity": self.partitions,
            "rank": self.ranks,
            "alpha": self.alphas,
        }[self.experiment]
        if not axis:
            raise TableConfigError(f"the {self.experiment} experiment needs at least one setting on its axis")
        for name, values in (("ranks", self.ranks), ("alphas", self.alphas)):
            if any(not v > 0 for v in values):
                raise TableConfigError(f"`{name}` must all be positive, got {values}")
        if any(e is not None and not e > 0 for e in self.epsilons):
            raise TableConfigError(f"`epsilons` must be positive or None (no DP), got {self.epsilons}")
        if not self.alpha > 0:
            raise TableConfigError(f"`alpha` must be positive, got {self.alpha}")
        if self.fedit_learning_rate is not None and not 0 < self.fedit_learning_rate <= 1000:
            raise TableConfigError(
                f"`fedit_learning_rate` must lie in (0, 1000] or be None, got {self.fedit_learning_rate}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise TableConfigError(f"`seeds` must be distinct non-negative integers, got {self.seeds}")
        # Every setting must make a federation the simulation (and the services' spec) accepts.
        for setting in expand(self):
            for method in self.methods:
                simulation_config(self, setting, method, seed=self.seeds[0], out_dir=Path("."))

    @classmethod
    def default(cls, experiment: Experiment) -> TableConfig:
        """The full run: three seeds of every setting, each table 17-26 minutes of one CPU thread here."""
        if experiment == "privacy":
            return cls(experiment)
        if experiment == "heterogeneity":
            return cls(experiment, epsilon=6.0)
        if experiment == "rank":
            return cls(experiment, epsilon=1.0)
        return cls(experiment, epsilon=6.0)

    @classmethod
    def quick(cls, experiment: Experiment) -> TableConfig:
        """A smoke test: the real MiniLM, one seed, 1 round of 2 steps on 60 examples, no encryption."""
        return replace(
            cls.default(experiment),
            seeds=(0,),
            rounds=1,
            steps=2,
            batch_size=16,
            max_train_examples=60,
            max_test_examples=30,
            scheme="none",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TableConfig:
        fields = dict(values)
        if "seed" in fields:  # written before tables ran several seeds
            fields["seeds"] = (fields.pop("seed"),)
        # Written before the head had its own rate: those tables ran the head at the adapter's rate.
        fields.setdefault("head_learning_rate", None)
        # Written before LoRA had its own rate: both methods ran at `learning_rate`.
        fields.setdefault("fedit_learning_rate", None)
        for name in ("methods", "epsilons", "partitions", "ranks", "alphas", "seeds"):
            if name in fields:
                fields[name] = tuple(fields[name])
        for name in ("layers_to_transform", "target_modules"):
            if fields.get(name) is not None:
                fields[name] = tuple(fields[name])
        return cls(**fields)


def expand(config: TableConfig) -> list[Setting]:
    """The table's rows, in the paper's order."""
    base = Setting(
        label="",
        epsilon=config.epsilon,
        partition=config.partition,
        rank=config.rank,
        alpha=config.alpha,
        learning_rate=config.learning_rate,
    )
    if config.experiment == "privacy":
        return [
            replace(base, label="no DP" if e is None else f"eps={e:g}", epsilon=e) for e in config.epsilons
        ]
    if config.experiment == "heterogeneity":
        return [replace(base, label=p, partition=p) for p in config.partitions]
    if config.experiment == "rank":
        return [replace(base, label=f"r={r}", rank=r) for r in config.ranks]
    # Table 7: under DP-SGD's per-example clipping (and the batch clip without DP) the step on `B A` is
    # proportional to `lr * alpha / r`, so FFA-LoRA should not care about alpha once `lr * alpha` is fixed;
    # LoRA's `A` step adds a term in `lr * alpha**2` that this scaling does not absorb (paper, section 4).
    return [
        replace(
            base,
            label=f"alpha={a:g}",
            alpha=a,
            learning_rate=config.learning_rate * config.alpha / a,
        )
        for a in config.alphas
    ]


def method_learning_rate(config: TableConfig, setting: Setting, method: Method) -> float:
    """The rate `method` trains `setting` at: the setting's, or for FedIT its own `fedit_learning_rate` scaled
    the same way (the alpha experiment divides both by `alpha / config.alpha`)."""
    if method == "fedit" and config.fedit_learning_rate is not None:
        return setting.learning_rate * config.fedit_learning_rate / config.learning_rate
    return setting.learning_rate


def simulation_config(
    config: TableConfig, setting: Setting, method: Method, *, seed: int, out_dir: Path
) -> SimulationConfig:
    return SimulationConfig(
        task=config.task,
        hospitals=config.hospitals,
        edges=config.edges,
        partition=setting.partition,
        rounds=config.rounds,
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=method_learning_rate(config, setting, method),
        head_learning_rate=config.head_learning_rate,
        max_seq_length=config.max_seq_length,
        max_train_examples=config.max_train_examples,
        test_fraction=config.test_fraction,
        max_test_examples=config.max_test_examples,
        epsilon=setting.epsilon,
        delta=config.delta,
        max_grad_norm=config.max_grad_norm,
        scheme=config.scheme,
        # The tables set no clip norm: none, except under packed Paillier, whose fixed-point range holds
        # only clipped deltas (the services' default, as `fedlora simulate` clips).
        clip_norm=simulation_clip_norm(None, scheme=config.scheme),
        target_modules=config.target_modules,
        layers_to_transform=config.layers_to_transform,
        rank=setting.rank,
        alpha=setting.alpha,
        seed=seed,
        threads=config.threads,
        deidentify=config.deidentify,
        out_dir=out_dir,
        strategy=method,
        # An experiment must repeat exactly (its config.json reruns it), so its noise comes from the seed.
        insecure_reproducible=True,
        model_path=Path(config.model_path) if config.model_path is not None else None,
        engine=config.engine,
        ray_address=config.ray_address,
    )


@dataclass(frozen=True)
class Row:
    """One cell of a table: a setting run with one method."""

    setting: str
    method: str
    accuracy_before: float
    accuracies: tuple[float, ...]  # test accuracy after each round
    epsilon: float | None  # the largest hospital's example-level epsilon spent (None: no DP)
    mismatch: float  # FedIT's relative aggregation error in the last round (0 for FFA-LoRA)
    seconds: float
    seed: int = 0

    @property
    def final_accuracy(self) -> float:
        return self.accuracies[-1] if self.accuracies else self.accuracy_before


@dataclass
class TableResult:
    config: TableConfig
    rows: list[Row]
    majority_rate: float  # of the test set, the mean over the seeds
    hospital_sizes: dict[str, dict[str, int]]  # per setting: examples per hospital
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def run_table(
    config: TableConfig, out_dir: Path, *, clock: Callable[[], float] = time.perf_counter
) -> TableResult:
    """Run every setting with every method and write the table's files into ``out_dir``."""
    from fedlora.experiments.paper_tables_report import write_outputs

    out_dir.mkdir(parents=True, exist_ok=True)
    started = clock()
    rows: list[Row] = []
    sizes: dict[str, dict[str, int]] = {}
    majorities: dict[int, float] = {}  # each seed draws its own test set
    settings = expand(config)
    runs = [(s, m, seed) for s in settings for m in config.methods for seed in config.seeds]
    for i, (setting, method, seed) in enumerate(runs):
        run_started = clock()
        sim = simulation_config(
            config, setting, method, seed=seed, out_dir=out_dir / "runs" / f"{setting.slug}-{method}-s{seed}"
        )
        with warnings.catch_warnings():
            # Opacus and transformers warn on every hospital's round; the figures go to the table.
            warnings.simplefilter("ignore")
            report = simulate(sim)
        rows.append(_row(setting, method, seed, report.accuracy_before, report.rounds, clock() - run_started))
        sizes[setting.label] = report.hospitals
        majorities[seed] = report.majority_rate
        log.info(
            "%s [%d/%d] %s %s seed %d: accuracy %s, epsilon %s, %.0f s",
            config.experiment, i + 1, len(runs), setting.label, method, seed,
            " -> ".join(f"{a:.3f}" for a in (rows[-1].accuracy_before, *rows[-1].accuracies)),
            "-" if rows[-1].epsilon is None else f"{rows[-1].epsilon:.2f}", rows[-1].seconds,
        )  # fmt: skip
    majority = sum(majorities.values()) / len(majorities)
    result = TableResult(config, rows, majority, sizes, clock() - started)
    write_outputs(result, out_dir)
    return result


def _row(
    setting: Setting, method: str, seed: int, before: float, rounds: list[RoundReport], seconds: float
) -> Row:
    return Row(
        setting=setting.label,
        method=method,
        accuracy_before=before,
        accuracies=tuple(r.accuracy for r in rounds),
        epsilon=rounds[-1].max_epsilon if rounds else None,
        mismatch=rounds[-1].mismatch if rounds else 0.0,
        seconds=seconds,
        seed=seed,
    )
