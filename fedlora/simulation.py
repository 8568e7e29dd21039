"""A whole federation without HTTP: hospitals train, encrypt and upload; edges add; the cloud decrypts the sum.

This is a launcher, like the CLI: the one layer allowed to know every tier. It runs the same code paths as
the services (the model, DP-SGD and FedRot's alignment from `client_agent`, `HEScheme` from
`protocol.crypto`, the wire envelope bytes, the cloud's `strategy_for`, `aggregate` and privacy ledger)
without HTTP, so that experiments and the demo are fast and reproducible:

1. the run is a `FederationSpec` (strategy, encryption, central DP), checked by the spec's own validator;
   the cloud generates the keys; hospitals and edges get the public material only;
2. each hospital trains from the global adapter (`A` too for fedit and fedrot; fedrot then rotates its
   factors toward the global ones, as the agent does) and seals its delta with the agent's own
   `client_agent.update` (`contribution`, then `seal`): clipped to `C` when one is set, uniformly weighted,
   its share of the round's noise added under distributed DP, encrypted; `contaminated` hospitals flip their labels or send noise;
   the hospitals run one after another in this process or in parallel in Ray workers
   (`fedlora.simulation_engines`, `SimulationConfig.engine`), with the same results for the same seed;
3. each edge reads and adds it into one running sum with the edge's own `edge_aggregator.fold`, holding no
   secret;
4. the cloud closes the round as `cloud_server.closing` does: the round's noise (`round_noise`), the
   strategy over the decrypted total (or over each edge's plaintext sum for clair), the ledger's epsilon.

Only here are every hospital's plaintext factors visible, so each round also reports FedIT's aggregation
mismatch `mean(B_i) mean(A_i) - mean(B_i A_i)`, which under encryption nobody can observe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import AutoTokenizer

from client_agent.data import Dataset, client_class_counts, partition, plot_heatmap, task_split
from client_agent.data.tasks import QA_TASKS
from client_agent.deid import Deidentifier
from client_agent.device import training_device
from client_agent.model import default_model_path
from client_agent.recipe import HEAD_LEARNING_RATE
from client_agent.releases import COUNT_ENTRY, noisy_count
from client_agent.tasks import TaskKind, task_for
from client_agent.train import DPSettings, Features, PrivacyHistory, encode
from cloud_server.plans import planned_share
from cloud_server.privacy import Ledger
from fedlora import specs
from fedlora.cohorts import InProcessCohort
from fedlora.seeded_sampler import SeededSampler
from fedlora.simulation_engines import (
    EngineName,
    HospitalEngine,
    InProcessEngine,
    RayEngine,
    check_ray,
)
from fedlora.simulation_hospitals import (
    WEIGHT,
    HospitalJob,
    HospitalOutcome,
    HospitalRound,
    HospitalSettings,
    HospitalSite,
)
from fedlora.simulation_ranks import RankPlanner, RoundSeen
from fedlora.simulation_rounds import (
    CentralNoise,
    ClosedRound,
    Contamination,
    EdgeSums,
    class_probabilities,
    close_round,
    contaminated_hospitals,
    factor_mismatch,
    frozen_factors,
    macro_auc,
)
from protocol.crypto import HEScheme, generate_scheme, scheme_from_public
from protocol.crypto.params import HEKind, PlainParams
from protocol.ffa import rebase_adapter, seeded_bases
from protocol.messages import CentralDPConfig, Contribution, FederationSpec, NoiseShare, TaskType
from protocol.reach import planned_hold, published_rank
from protocol.samplers import OpenDPSampler
from protocol.secagg import CohortId
from protocol.strategies import strategy_for

log = logging.getLogger("fedlora.simulation")

Partitioning = Literal["iid", "mild", "severe", "dirichlet"]
StrategyName = Literal["ffa", "fedit", "fedrot", "clair"]
# The cloud draws each round's noise from (seed, round, this): a stream no hospital's training uses.
NOISE_STREAM = 0x401CE


#: The services' clip norm when a spec names none (`CentralDPConfig.clip_norm`): every plan clips to it.
DEFAULT_CLIP_NORM: float = CentralDPConfig.model_fields["clip_norm"].default


class SimulationError(ValueError):
    """The simulation cannot run as configured."""


def simulation_clip_norm(given: float | None, *, scheme: str) -> float | None:
    """`fedlora simulate`'s clip norm: `given` (0: no clip); unset, none except under packed Paillier,
    whose bounded range holds only clipped deltas, where the services' default."""
    if given is None:
        return DEFAULT_CLIP_NORM if scheme == "paillier" else None
    return given if given > 0 else None


@dataclass(frozen=True)
class SimulationConfig:
    task: str = "rt_sentiment"
    hospitals: int = 4
    edges: int = 2
    partition: Partitioning = "mild"
    dirichlet_alpha: float = 0.5
    rounds: int = 3
    steps: int = 24
    batch_size: int = 256
    learning_rate: float = 2.0
    #: The head's own rate (`LocalConfig.head_learning_rate`); None: `learning_rate`, the old recipe.
    head_learning_rate: float | None = HEAD_LEARNING_RATE
    max_seq_length: int = 32
    max_train_examples: int | None = 8000
    test_fraction: float = 0.1
    max_test_examples: int | None = 1000
    epsilon: float | None = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    scheme: Literal["ckks", "paillier", "none"] = "ckks"
    #: paillier only: hospitals mask their uploads below the encryption in per-edge cohorts (protocol.secagg)
    masking: bool = False
    #: paillier only: each coordinate's fixed-point range `[-he_clip, he_clip]` (None: the scheme's default,
    #: 1); a hospital whose update leaves it refuses to upload, as the agent does
    he_clip: float | None = None
    #: paillier only: bits per coordinate of the fixed-point encoding (None: the scheme's default, 16)
    he_quant_bits: int | None = None
    target_modules: tuple[str, ...] = ("value",)
    layers_to_transform: tuple[int, ...] | None = (4, 5)
    rank: int = 2
    alpha: float = 8.0
    seed: int = 0
    threads: int = 2
    deidentify: bool = True
    out_dir: Path = Path("runs/demo")
    strategy: StrategyName = "ffa"
    #: Client-level DP (DP-FedAvg): `z` of the Gaussian noise the cloud adds to each round's sum; needs
    #: `clip_norm`.
    central_noise: float = 0.0
    #: `C`: every hospital's delta is clipped to this L2 norm before encrypting. None: no clip (no noise).
    clip_norm: float | None = None
    central_delta: float = 1e-5
    #: Distributed DP: every hospital adds its share of the round's `central_noise` before encrypting, as
    #: the agent does when its plan names a noise share, and the cloud only tops it up.
    distributed_noise: bool = False
    #: How many hospitals (drawn from `seed`) are contaminated, and how: `flip` trains on flipped labels,
    #: `random` uploads Gaussian noise with the norm of its benign delta; either is scaled by
    #: `contamination_scale`.
    contaminated: int = 0
    contamination: Contamination = "flip"
    contamination_scale: float = 1.0
    #: The base model folder (default: all-MiniLM-L6-v2 from its PyPI package); tests pass a tiny one.
    model_path: Path | None = None
    #: INSECURE, for experiments that must repeat exactly: the hospitals' DP-SGD noise and batch sampling,
    #: their noisy example counts and noise shares and the cloud's central noise are drawn from `seed`
    #: instead of the operating system's entropy, so anyone who knows the seed can subtract the noise. The services have
    #: no such switch.
    insecure_reproducible: bool = False
    #: Where the hospitals run: one after another in this process, or in parallel in Ray workers
    #: (`fedlora.simulation_engines`); the same seed gives the same global vector either way.
    engine: EngineName = "process"
    #: ray only: the cluster's address (host:port, ray://host:port or auto); None: RAY_ADDRESS if set,
    #: else a Ray instance started on this machine for the run.
    ray_address: str | None = None
    #: ray only: how many workers share the hospitals; None: the cluster's CPUs over `threads`.
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("process", "ray"):
            raise SimulationError(f"engine must be 'process' or 'ray', got {self.engine!r}")
        if self.engine != "ray" and (self.ray_address is not None or self.workers is not None):
            raise SimulationError(
                f"ray_address {self.ray_address!r} and workers {self.workers!r} need engine 'ray', "
                f"got {self.engine!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise SimulationError(f"workers must be at least 1, got {self.workers}")
        if self.hospitals < 1:
            raise SimulationError(f"hospitals must be at least 1, got {self.hospitals}")
        if not 1 <= self.edges <= self.hospitals:
            raise SimulationError(f"edges must lie in [1, hospitals={self.hospitals}], got {self.edges}")
        if not 0 <= self.contaminated <= self.hospitals:
            raise SimulationError(
                f"contaminated must lie in [0, hospitals={self.hospitals}], got {self.contaminated}"
            )
        if not self.contamination_scale > 0:
            raise SimulationError(f"contamination_scale must be positive, got {self.contamination_scale}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise SimulationError(f"clip_norm must be positive, got {self.clip_norm}")
        if self.central_noise < 0:
            raise SimulationError(f"central_noise must be non-negative, got {self.central_noise}")
        if self.scheme == "paillier" and self.clip_norm is None:
            raise SimulationError(
                "scheme 'paillier' packs each value into a bounded fixed-point range, which an unclipped delta "
                "can leave (the hospitals would refuse to upload): set clip_norm, as every plan of the "
                f"services does (their default is {DEFAULT_CLIP_NORM:g})"
            )
        if self.central_noise > 0 and self.clip_norm is None:
            raise SimulationError(
                f"central_noise {self.central_noise} is calibrated to the clip norm: set clip_norm too"
            )
        if self.task in QA_TASKS and self.contaminated and self.contamination == "flip":
            raise SimulationError(
                f"contamination 'flip' flips class labels; task {self.task!r} answers in text: use 'random'"
            )
        # The strategy, scheme and noise must make a federation the services would accept (the label count
        # only sizes the head, so any will do here).
        spec = federation_spec(self, num_labels=2)
        # Every edge's sum and the cloud's total of them hold every hospital (`_Run._edge_of`).
        capacity = spec.he.max_summands
        if capacity is not None and self.hospitals > capacity:
            raise SimulationError(
                f"hospitals={self.hospitals} (behind edges={self.edges}) is more than one sum of scheme "
                f"{self.scheme!r} holds (he.max_summands={capacity}): the cloud's total of the edges' sums "
                "would overflow mid-round"
            )
        smallest_edge = self.hospitals // self.edges  # hospital i goes to edge i % edges
        if self.masking and smallest_edge < spec.min_clients_per_edge:
            raise SimulationError(
                f"masking needs at least {spec.min_clients_per_edge} hospitals behind every edge (a cohort "
                f"of one is no cohort), but hospitals={self.hospitals} behind edges={self.edges} leave an "
                f"edge {smallest_edge}: lower edges or add hospitals"
            )


@dataclass
class RoundReport:
    round: int
    accuracy: float
    loss: float
    max_epsilon: float | None
    he_max_abs_error: float
    seconds: float
    hospitals: list[HospitalRound] = field(default_factory=list)
    central_epsilon: float | None = None  # client-level, at `central_delta`, after this round (the ledger's)
    # The noise on the mean step, per coordinate: the largest (with `normalize_rank_columns` it differs by
    # LoRA column, `Aggregated.column_noise_std`).
    noise_std: float = 0.0
    mismatch: float = 0.0  # FedIT's relative aggregation error (`fedlora.simulation_rounds.factor_mismatch`)
    flagged: list[str] = field(default_factory=list)  # edges the strategy judged contaminated
    flagged_hospitals: list[str] = field(default_factory=list)  # the hospitals behind them
    update_norm: float = 0.0  # L2 norm of the change to the global adapter
    upload_bytes: int = 0  # all hospitals together
    encrypt_s: float = 0.0  # all hospitals together
    add_s: float = 0.0  # all edges together
    decrypt_s: float = 0.0  # the cloud's decryption of the total (clair: its whole per-edge aggregation)
    ranks: dict[str, int] = field(default_factory=dict)  # the rank each hospital trained at this round
    #: Adapter values the hospitals trained and uploaded this round, all together: each hospital's first
    #: `rank` columns of every `B` and the head, less what the plan held back. (On the wire each upload is
    #: padded to `r_max`, so its bytes do not shrink with the rank.)
    values_sent: int = 0
    rebased_rank: int | None = None  # the common rank the adapter was re-based to after this round
    rebase_kept_energy: float | None = None  # the share of `B A`'s energy the re-basing kept
    macro_auc: float | None = None  # on the test set, one-vs-rest (`simulation_rounds.macro_auc`)


@dataclass
class SimulationReport:
    task: str
    scheme: str
    hospitals: dict[str, int]
    majority_rate: float
    accuracy_before: float
    accuracy_after: float
    rounds: list[RoundReport] = field(default_factory=list)
    adapter_dir: str = ""
    heatmap: str = ""
    config: dict[str, object] = field(default_factory=dict)
    strategy: str = "ffa"
    contaminated: list[str] = field(default_factory=list)
    central_epsilon: float | None = None
    macro_auc_before: float | None = None
    macro_auc_after: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def prepared_data(config: SimulationConfig) -> tuple[FederationSpec, Dataset, Dataset, list[np.ndarray]]:
    """The run's spec, its train and test sets (de-identified when asked) and each hospital's indices into
    the train set: what every run of `config` (and a local-only baseline of it) starts from."""
    train, test = task_split(
        config.task,
        seed=config.seed,
        test_fraction=config.test_fraction,
        max_train_examples=config.max_train_examples,
        max_test_examples=config.max_test_examples,
    )
    spec = federation_spec(config, num_labels=train.n_classes)
    if config.deidentify:
        # Each hospital de-identifies its own texts before tokenising; the evaluation set goes the same way.
        train, test = _deidentified_pair(train, test)
    kind = config.partition if config.partition != "dirichlet" else f"dirichlet-{config.dirichlet_alpha}"
    parts = partition(train.label_array(), kind=kind, n_clients=config.hospitals, seed=config.seed)
    return spec, train, test, list(parts)


@dataclass(frozen=True)
class PreparedRun:
    """What a baseline of a run trains from: the run's spec, a model for it, the encoded train and test
    sets, each hospital's indices into the train set and the adapter's version-0 vector."""

    spec: FederationSpec
    model: Any  # the task's model (`client_agent.tasks`)
    train: Any
    test: Any
    parts: list[np.ndarray]
    start: np.ndarray


def prepared_run(config: SimulationConfig) -> PreparedRun:
    """`prepared_data` with the model built and both sets encoded, as the run's hospitals encode them."""
    device = training_device()  # DeviceError names FEDLORA_DEVICE before anything loads
    torch.set_num_threads(config.threads)
    spec, train, test, parts = prepared_data(config)
    model_path = config.model_path or default_model_path()
    task = task_for(spec)
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = task.build_model(model_path, spec, rank=config.rank).to(device)
    train_features = encoded(model, tokenizer, model_path, train, config.max_seq_length, task=task)
    test_features = encoded(model, tokenizer, model_path, test, config.max_seq_length, task=task)
    start = model.layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version)
    return PreparedRun(spec, model, train_features, test_features, parts, start)


# The de-identified texts of the last few train/test pairs of this process: an experiment runs many
# federations (and baselines) over the same split, and the NER pass is slower than the encoding.
_DEIDENTIFIED: dict[str, tuple[Dataset, Dataset]] = {}


def _deidentified_pair(train: Dataset, test: Dataset) -> tuple[Dataset, Dataset]:
    """`train` and `test` de-identified, memoised on everything they hold (the recognisers are fixed)."""
    parts = [[d.name, d.label_names, d.texts, d.labels, dict(d.meta)] for d in (train, test)]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    if key not in _DEIDENTIFIED:
        if len(_DEIDENTIFIED) >= _ENCODED_KEEP:
            _DEIDENTIFIED.pop(next(iter(_DEIDENTIFIED)))
        deidentifier = Deidentifier()  # one spaCy model load for both
        _DEIDENTIFIED[key] = (_deidentified(train, deidentifier), _deidentified(test, deidentifier))
    return _DEIDENTIFIED[key]


def _deidentified(dataset: Dataset, deidentifier: Deidentifier) -> Dataset:
    texts, _ = deidentifier.deidentify_many(dataset.texts)
    return Dataset(texts, dataset.labels, dataset.label_names, dataset.name, dataset.meta)


def federation_spec(config: SimulationConfig, *, num_labels: int) -> FederationSpec:
    """The federation the run simulates, through the spec's own validator (which refuses, e.g., clair with
    encryption or central noise)."""
    causal = config.task in QA_TASKS
    flat = specs.FlatSpec(
        federation_id="simulation",
        task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQUENCE_CLASSIFICATION,
        num_labels=num_labels,
        target_modules=config.target_modules,
        layers_to_transform=config.layers_to_transform,
        rank=config.rank,
        alpha=config.alpha,
        seed=config.seed,
        strategy=config.strategy,
        scheme=config.scheme,
        masking=config.masking,
        epsilon=config.epsilon,
        delta=config.delta,
        max_grad_norm=config.max_grad_norm,
        central_noise=config.central_noise,
        clip_norm=config.clip_norm,
        central_delta=config.central_delta,
        distributed=config.distributed_noise,
        learning_rate=config.learning_rate,
        # The head's rate is a classifier's: a causal LM has no head, and its spec refuses one.
        head_learning_rate=None if causal else config.head_learning_rate,
        steps=config.steps,
        batch_size=config.batch_size,
        max_seq_length=config.max_seq_length,
        rounds=config.rounds,
        # k = 2, the least any spec allows: an edge of the run with one hospital still sums it (the
        # simulation forwards every edge's sum), as the experiments with one hospital per edge ask.
        min_clients_per_edge=2,
    )
    # Only packed Paillier has a fixed-point encoding; other schemes ignore these.
    if config.he_clip is not None:
        flat["he_clip"] = config.he_clip
    if config.he_quant_bits is not None:
        flat["quant_bits"] = config.he_quant_bits
    try:
        return specs.federation_spec(**flat)
    except specs.SpecError as e:
        raise SimulationError(f"the simulated federation is not a valid FederationSpec: {e}") from e


def simulate(
    config: SimulationConfig,
    *,
    on_hospital: Callable[[int, HospitalRound], None] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
    on_global: Callable[[int, np.ndarray], None] | None = None,
    progress: bool = False,
    ranks: RankPlanner | None = None,
) -> SimulationReport:
    """Run the federation; `on_global(round, vector)` sees the global adapter after each round. `ranks`
    plans every hospital's rank round by round (seed 001's dynamic ranks, `fedlora.simulation_ranks`);
    None: every hospital at `config.rank`."""
    device = training_device()  # DeviceError names FEDLORA_DEVICE before anything loads
    if config.engine == "ray":
        check_ray(config.ray_address)
    torch.set_num_threads(config.threads)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    if config.insecure_reproducible:
        log.warning(
            "insecure_reproducible: DP noise and noise shares, DP sampling and the noisy counts come from seed "
            "%d; the privacy figures do not hold against anyone who knows it",
            config.seed,
        )
    spec, train, test, parts = prepared_data(config)
    names = hospital_names(config.hospitals)
    heatmap = plot_heatmap(
        client_class_counts(parts, train.label_array(), train.n_classes),
        train.label_names,
        config.out_dir / "hospitals_by_class.png",
        title=f"{config.task}: {config.partition} split",
    )

    model_path = config.model_path or default_model_path()
    task = task_for(spec)
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    # One model object stands in for every hospital's copy: each round starts with load_global.
    model = task.build_model(model_path, spec, rank=config.rank).to(device)
    train_features = encoded(
        model, tokenizer, model_path, train, config.max_seq_length, progress=progress, task=task
    )
    test_features = encoded(
        model, tokenizer, model_path, test, config.max_seq_length, progress=progress, task=task
    )
    run = _Run(
        config,
        spec,
        model,
        names,
        [task.rows(train_features, part) for part in parts],
        contaminated_hospitals(names, config.contaminated, seed=config.seed),
        num_labels=train.n_classes,
        progress=progress,
        ranks=ranks,
    )

    # Adapter version 0 as the cloud makes it: B and the head zero, A (when trained) at the seeded basis.
    global_vector = run.layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version)
    model.load_global(global_vector)
    _, accuracy_before = task.evaluate(model, test_features)
    auc_before = _auc(spec, model, test_features)
    counts = np.bincount(test.label_array(), minlength=test.n_classes)
    report = SimulationReport(
        task=config.task,
        scheme=config.scheme,
        hospitals={name: len(part) for name, part in zip(names, parts, strict=True)},
        majority_rate=float(counts.max() / counts.sum()),
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_before,
        macro_auc_before=auc_before,
        macro_auc_after=auc_before,
        heatmap=str(heatmap),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        strategy=config.strategy,
        contaminated=list(run.contaminated),
    )
    engine = run.engine()
    try:
        for round_ in range(config.rounds):
            global_vector = _round(run, engine, report, round_, global_vector, test_features, on_hospital)
            global_vector = run.plan_ranks(report.rounds[-1], global_vector)
            if on_global is not None:
                on_global(round_, global_vector.copy())
            if on_round is not None:
                on_round(report.rounds[-1])
    finally:
        engine.close()

    adapter_dir = task.export(
        model,
        global_vector,
        config.out_dir / "adapter",
        base_model=spec.base_model,
        label_names=spec.label_names,
        max_length=spec.training.max_seq_length,
    )
    report.adapter_dir = str(adapter_dir)
    (config.out_dir / "report.json").write_text(report.to_json())
    return report


def _round(
    run: _Run,
    engine: HospitalEngine,
    report: SimulationReport,
    round_: int,
    global_vector: np.ndarray,
    test_features: Any,
    on_hospital: Callable[[int, HospitalRound], None] | None,
) -> np.ndarray:
    """One round, evaluated on the test set and appended to `report`; the next global vector."""
    started = time.perf_counter()
    round_report, global_vector = run.round(round_, global_vector, engine, on_hospital=on_hospital)
    model = run.model
    model.load_global(global_vector)
    round_report.loss, round_report.accuracy = task_for(run.spec).evaluate(model, test_features)
    round_report.macro_auc = _auc(run.spec, model, test_features)
    round_report.seconds = time.perf_counter() - started
    log.info(
        "round closed",
        extra={
            "round": round_,
            "data": {
                "accuracy": round_report.accuracy,
                "mismatch": round_report.mismatch,
                "central_epsilon": round_report.central_epsilon,
                "flagged": round_report.flagged_hospitals,
            },
        },
    )
    report.rounds.append(round_report)
    report.accuracy_after = round_report.accuracy
    report.macro_auc_after = round_report.macro_auc
    report.central_epsilon = round_report.central_epsilon
    return global_vector


# The frozen prefix's outputs of the last few data sets encoded in this process: an experiment runs many
# federations over the same texts, and encoding them is a good part of a short run.
_ENCODED: dict[tuple[str, int, int, str], Features] = {}
_ENCODED_KEEP = 4


def encoded(
    model: Any,
    tokenizer: object,
    model_path: Path,
    dataset: Dataset,
    max_length: int,
    *,
    progress: bool = False,
    task: TaskKind | None = None,
) -> Any:
    """`dataset` as the task's model reads it. A classifier's (`client_agent.train.encode`) is memoised on
    what decides its output: the base model, the layer the frozen prefix ends at, the sequence length and
    the texts and labels themselves; a causal LM's token ids are cheap, and computed each time."""
    if task is not None and task.task_type is not TaskType.SEQUENCE_CLASSIFICATION:
        return task.encode(model, tokenizer, dataset, max_length=max_length)
    folder = Path(model_path).resolve()
    # The weights' files by name, size and modification time: a folder rewritten in place is another model.
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
    digest = hashlib.sha256(json.dumps([files, dataset.texts, dataset.labels]).encode()).hexdigest()
    key = (str(folder), model.split_layer, max_length, digest)
    if key not in _ENCODED:
        if len(_ENCODED) >= _ENCODED_KEEP:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = encode(
            model, tokenizer, dataset.texts, dataset.labels, max_length=max_length, progress=progress
        )
    return _ENCODED[key]


def hospital_names(count: int) -> list[str]:
    """`hospital-a`, `hospital-b`, ... up to 26 hospitals; `hospital-001`, ... beyond (client ids are
    lower-case letters, digits and `_.-`)."""
    if count <= 26:
        return [f"hospital-{chr(ord('a') + i)}" for i in range(count)]
    return [f"hospital-{i + 1:03d}" for i in range(count)]


class _Run:
    """The parties of one simulated federation: the hospitals' data and DP histories, the keys (the cloud
    holds the secret; hospitals and edges only ever see the public material), the cloud's ledger."""

    def __init__(
        self,
        config: SimulationConfig,
        spec: FederationSpec,
        model: Any,
        names: list[str],
        features: list[Any],
        contaminated: tuple[str, ...],
        *,
        num_labels: int,
        progress: bool,
        ranks: RankPlanner | None = None,
    ) -> None:
        self.config, self.spec, self.model = config, spec, model
        self.layout = model.layout
        self.names, self.features, self.contaminated = names, features, contaminated
        self.num_labels, self.progress = num_labels, progress
        # Each hospital releases its example count once, with noise, as the agent does; DP-SGD's sample rate,
        # the batch and the manifest's `num_examples` come from it.
        counts = (
            SeededSampler(np.random.default_rng([config.seed, 0xC0C0]))
            if config.insecure_reproducible
            else None
        )
        self.public = {
            name: noisy_count(len(own), sampler=counts) for name, own in zip(names, features, strict=True)
        }
        self.histories = {name: PrivacyHistory([COUNT_ENTRY]) for name in names}
        self.cloud_scheme = generate_scheme(spec.he)
        self.public_scheme = scheme_from_public(spec.he, self.cloud_scheme.public_bytes())
        # The same close over plaintext sums, to measure what the encryption changed.
        self.plain_scheme = generate_scheme(PlainParams()) if spec.he.kind is not HEKind.NONE else None
        self.strategy = strategy_for(spec)
        # Every hospital trains at `config.rank` (r_max) unless a planner assigns ranks; the basis is the
        # seeded one until a re-basing broadcasts another.
        self.planner = ranks
        self.ranks = (
            ranks.initial(self.public, layout=self.layout)
            if ranks is not None
            else {name: config.rank for name in names}
        )
        self._check_ranks()
        self.bases: dict[str, np.ndarray] | None = None
        self.uploads: dict[str, np.ndarray] = {}  # each hospital's last upload, for the planner
        # The global adapter the last round started from (the planner is shown each round's update).
        self.previous = self.layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version)
        self.ledger = Ledger()
        self.dp = (
            DPSettings(
                epsilon=config.epsilon,
                delta=config.delta,
                max_grad_norm=config.max_grad_norm,
                rounds=config.rounds,
                spent_before=(COUNT_ENTRY,),
            )
            if config.epsilon is not None
            else None
        )
        self.hospital_settings = HospitalSettings(
            spec=spec,
            public_key=self.cloud_scheme.public_bytes(),
            num_labels=num_labels,
            model_path=config.model_path,
            rank=config.rank,
            steps=config.steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            threads=config.threads,
            clip_norm=config.clip_norm,
            dp=self.dp,
            contamination=config.contamination,
            contamination_scale=config.contamination_scale,
            seed=config.seed,
            insecure_reproducible=config.insecure_reproducible,
            progress=progress,
        )

    def engine(self) -> HospitalEngine:
        """Where this run's hospitals train: this process (on the run's own model and scheme) or Ray."""
        if self.config.engine == "ray":
            return RayEngine(
                self.hospital_settings,
                self.features,
                address=self.config.ray_address,
                workers=self.config.workers,
            )
        site = HospitalSite(
            self.hospital_settings,
            self.model,
            dict(enumerate(self.features)),
            scheme=self.public_scheme,
            strategy=self.strategy,
        )
        return InProcessEngine(site)

    def jobs(
        self, round_: int, share: NoiseShare | None
    ) -> tuple[list[HospitalJob], dict[str, InProcessCohort]]:
        """Every hospital's part of round `round_` and the round's masking cohorts by edge: a masking
        federation's cohorts join, and its hospitals draw their masks, before anyone trains."""
        cohorts = self._cohorts(round_)
        bits = self.public_scheme.ring_bits
        # The plan's published rank: the columns at least `k` of the round's hospitals reach.
        held = planned_hold(
            self.layout, published_rank(self.ranks.values(), k=self.spec.min_clients_per_edge)
        )
        jobs = []
        for index, name in enumerate(self.names):
            edge = self._edge_of(index)
            cohort = cohorts.get(edge)
            jobs.append(
                HospitalJob(
                    round_=round_,
                    index=index,
                    name=name,
                    edge=edge,
                    public_examples=self.public[name],
                    history=self.histories[name],
                    share=share,
                    contaminated=name in self.contaminated,
                    encrypt=cohort.seal_for(name, bits=bits, length=self.layout.size)
                    if cohort is not None and bits is not None
                    else None,
                    rank=self.ranks[name],
                    held=held,
                    bases=self.bases,
                )
            )
        return jobs, cohorts

    def round(
        self,
        round_: int,
        global_vector: np.ndarray,
        engine: HospitalEngine,
        *,
        on_hospital: Callable[[int, HospitalRound], None] | None = None,
    ) -> tuple[RoundReport, np.ndarray]:
        """Every hospital trains and uploads (on `engine`), the edges add, the cloud closes: the round's
        report (without the test figures) and the next global vector."""
        edges = EdgeSums(self.public_scheme, self.layout.size)
        plain = self.plain_scheme
        plain_edges = EdgeSums(plain, self.layout.size) if plain is not None else None
        contributions: list[Contribution] = []
        per_edge: dict[str, list[Contribution]] = {}
        uploaded: list[np.ndarray] = []  # each hospital's adapter as it enters the sum
        # Every hospital is in every round's plan; round `round_` is the `round_`-th to close.
        share = planned_share(self.spec, rounds_closed=round_, clients=len(self.names))
        jobs, cohorts = self.jobs(round_, share)
        outcomes: dict[int, HospitalOutcome] = {}
        for outcome in engine.run(jobs, global_vector):
            outcomes[outcome.index] = outcome
            if on_hospital is not None:
                on_hospital(round_, outcome.row)
        # The edges add the uploads in the hospitals' order, whatever order they finished in.
        rows = [outcomes[index].row for index in range(len(jobs))]
        for job in jobs:
            outcome = outcomes[job.index]
            upload = outcome.sealed
            self.histories[job.name] = outcome.history
            edges.add(job.edge, upload.ciphertext, WEIGHT)
            if plain_edges is not None and plain is not None:
                plain_edges.add(job.edge, plain.serialize(plain.encrypt(upload.contribution)), WEIGHT)
            uploaded.append(global_vector.astype(np.float64) + upload.contribution)
            self.uploads[job.name] = np.asarray(upload.contribution, dtype=np.float64)
            contribution = Contribution(
                client_id=job.name,
                weight=WEIGHT,
                num_examples=job.public_examples,
                rank=job.rank,
                nonce=f"{round_:016x}{job.index:016x}",
                ciphertext_sha256=hashlib.sha256(upload.ciphertext).hexdigest(),
                local_epsilon=outcome.row.epsilon,
                noise_share_std=share.std if share is not None else None,
            )
            contributions.append(contribution)
            per_edge.setdefault(job.edge, []).append(contribution)

        frozen_a = None if self.layout.trains_a else frozen_factors(self.model)
        mismatch = factor_mismatch(self.layout, uploaded, rank=self.config.rank, frozen_a=frozen_a)
        # The cloud: the edges forward their sums; only the global sum (clair: each edge's plaintext sum)
        # is ever decrypted.
        ciphertexts, edge_rows = edges.forwarded()
        bits = self.public_scheme.ring_bits
        corrections = (
            [
                cohorts[edge].correction(
                    [c.client_id for c in per_edge[edge]], bits=bits, length=self.layout.size
                )
                for edge, _ in edge_rows
            ]
            if bits is not None
            else None
        )
        sampler = (
            SeededSampler(np.random.default_rng([self.config.seed, round_, NOISE_STREAM]))
            if self.config.insecure_reproducible
            else OpenDPSampler()
        )
        central = CentralNoise(sampler, self.cloud_scheme.params, size=self.layout.size)

        def close(scheme: HEScheme[Any], forwarded: list[bytes]) -> ClosedRound:
            return close_round(
                self.spec,
                scheme,
                forwarded,
                rows=edge_rows,
                global_vector=global_vector,
                contributions=contributions,
                layout=self.layout,
                strategy=self.strategy,
                ledger=self.ledger,
                round_=round_,
                central=central,
                shares_planned=share.clients if share is not None else None,
                sums=[per_edge[edge] for edge, _ in edge_rows],
                corrections=corrections if scheme is self.cloud_scheme else None,
            )

        closed = close(self.cloud_scheme, ciphertexts)
        self.ledger = closed.ledger
        he_error = 0.0
        if plain_edges is not None and plain is not None:
            # The same central noise, so the two closes differ only by what the encryption did to the sums.
            reference = close(plain, plain_edges.forwarded()[0])
            he_error = float(
                np.abs(closed.aggregated.vector.astype(np.float64) - reference.aggregated.vector).max()
            )
        aggregated = closed.aggregated
        epsilons = [r.epsilon for r in rows if r.epsilon is not None]
        flagged = set(aggregated.flagged)
        report = RoundReport(
            round=round_,
            accuracy=0.0,
            loss=0.0,
            max_epsilon=max(epsilons) if epsilons else None,
            he_max_abs_error=he_error,
            seconds=0.0,
            hospitals=rows,
            central_epsilon=closed.central_epsilon,
            noise_std=aggregated.noise_std,
            mismatch=mismatch,
            flagged=sorted(flagged),
            flagged_hospitals=[r.hospital for r in rows if r.edge in flagged],
            update_norm=aggregated.update_norm,
            upload_bytes=sum(r.upload_bytes for r in rows),
            encrypt_s=sum(r.encrypt_s for r in rows),
            add_s=edges.add_s,
            decrypt_s=aggregated.decrypt_s if aggregated.decrypt_s is not None else closed.seconds,
            ranks={job.name: job.rank for job in jobs},
            values_sent=sum(self._values_sent(job.rank, job.held) for job in jobs),
        )
        return report, aggregated.vector

    def _values_sent(self, rank: int, held: np.ndarray | None) -> int:
        reach = self.layout.lora_column_mask(rank) > 0
        return int(np.count_nonzero(reach & ~held if held is not None else reach))

    def _check_ranks(self) -> None:
        bad = {name: r for name, r in self.ranks.items() if not 1 <= r <= self.config.rank}
        if bad or set(self.ranks) != set(self.names):
            raise SimulationError(
                f"ranks must name every hospital with a rank in [1, rank={self.config.rank}] (the run's "
                f"r_max), got {self.ranks}"
            )

    def plan_ranks(self, report: RoundReport, global_vector: np.ndarray) -> np.ndarray:
        """After a round: the planner's ranks for the next one and, when it re-bases, the global adapter in
        the new basis (`protocol.ffa.rebase_adapter`, as the cloud's `round_outcome.rebase_of` does), which
        every model installs. The global vector the next round starts from."""
        if self.planner is None:
            return global_vector
        update = global_vector - self.previous
        step = self.planner.after_round(
            RoundSeen(report.round, dict(self.ranks), update, dict(self.uploads)), layout=self.layout
        )
        self.ranks = dict(step.ranks)
        self._check_ranks()
        if step.rebase_rank is not None:
            bases = self.bases or seeded_bases(
                self.layout,
                self.model.in_features(),
                seed=self.spec.seed,
                basis_version=self.spec.basis_version,
            )
            rebased = rebase_adapter(self.layout, global_vector, bases, rank=step.rebase_rank)
            self.bases, global_vector = rebased.bases, rebased.vector
            self.model.install_basis(rebased.bases)
            report.rebased_rank, report.rebase_kept_energy = step.rebase_rank, rebased.kept_energy
        self.previous = global_vector
        return global_vector

    def _edge_of(self, index: int) -> str:
        return f"edge-{index % self.config.edges + 1}"

    def _cohorts(self, round_: int) -> dict[str, InProcessCohort]:
        """A masking federation's cohorts for `round_`, one per edge, joined before anyone trains (none
        for other federations)."""
        if self.public_scheme.ring_bits is None:
            return {}
        members: dict[str, list[str]] = {}
        for index, name in enumerate(self.names):
            members.setdefault(self._edge_of(index), []).append(name)
        return {
            edge: InProcessCohort(
                CohortId(federation_id=self.spec.federation_id, round=round_, edge_id=edge),
                names,
                min_survivors=self.spec.min_clients_per_edge,
            )
            for edge, names in members.items()
        }


def _auc(spec: FederationSpec, model: Any, test_features: Any) -> float | None:
    """The macro one-vs-rest AUC of a classifier on the test set; None for a causal LM (exact match only)."""
    if spec.task_type is not TaskType.SEQUENCE_CLASSIFICATION:
        return None
    return macro_auc(test_features.labels.numpy(), class_probabilities(model, test_features))
