"""A whole federation in one process: hospitals train, encrypt and upload; edges add; the cloud decrypts the sum.

This is a launcher, like the CLI: the one layer allowed to know every tier. It runs the same code paths as
the services (FFA-LoRA model and DP-SGD from `client_agent`, `HEScheme` from `protocol.crypto`, the wire
envelope bytes) without HTTP, so that experiments and the demo are fast and reproducible:

1. the cloud generates the keys; hospitals and edges get the public material only;
2. each hospital trains from the global adapter, encrypts its (uniformly weighted) delta and serialises it;
3. each edge deserialises (checking the ciphertext against the federation's key) and adds it into one
   running sum, holding no secret;
4. the cloud adds the edge sums, decrypts only the global sum, divides by the total weight and updates
   the global `B` and head.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import AutoTokenizer

from client_agent.data import Dataset, client_class_counts, partition, plot_heatmap, task_split
from client_agent.deid import Deidentifier
from client_agent.export import export_adapter
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import DPSettings, LocalConfig, PrivacyHistory, encode, evaluate, train_local
from protocol.crypto import generate_scheme, scheme_from_public
from protocol.crypto.params import CKKSParams, PaillierParams, PlainParams

Partitioning = Literal["iid", "mild", "severe", "dirichlet"]


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
    max_seq_length: int = 32
    max_train_examples: int | None = 8000
    test_fraction: float = 0.1
    max_test_examples: int | None = 1000
    epsilon: float | None = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    scheme: Literal["ckks", "paillier", "none"] = "ckks"
    target_modules: tuple[str, ...] = ("value",)
    layers_to_transform: tuple[int, ...] | None = (4, 5)
    rank: int = 2
    alpha: float = 8.0
    seed: int = 0
    threads: int = 2
    deidentify: bool = True
    out_dir: Path = Path("runs/demo")


@dataclass
class HospitalRound:
    hospital: str
    edge: str
    examples: int
    accuracy_local: float
    epsilon: float | None
    upload_bytes: int
    seconds: float


@dataclass
class RoundReport:
    round: int
    accuracy: float
    loss: float
    max_epsilon: float | None
    he_max_abs_error: float
    seconds: float
    hospitals: list[HospitalRound] = field(default_factory=list)


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def _deidentified(dataset: Dataset) -> Dataset:
    texts, _ = Deidentifier().deidentify_many(dataset.texts)
    return Dataset(texts, dataset.labels, dataset.label_names, dataset.name, dataset.meta)


def _he_params(name: str) -> CKKSParams | PaillierParams | PlainParams:
    if name == "ckks":
        return CKKSParams()
    if name == "paillier":
        return PaillierParams()
    return PlainParams()


def simulate(
    config: SimulationConfig,
    *,
    on_hospital: Callable[[int, HospitalRound], None] | None = None,
    on_round: Callable[[RoundReport], None] | None = None,
    progress: bool = False,
) -> SimulationReport:
    torch.set_num_threads(config.threads)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    train, test = task_split(
        config.task,
        seed=config.seed,
        test_fraction=config.test_fraction,
        max_train_examples=config.max_train_examples,
        max_test_examples=config.max_test_examples,
    )
    if config.deidentify:
        # Each hospital de-identifies its own texts before tokenising; the evaluation set goes the same way.
        train, test = _deidentified(train), _deidentified(test)
    kind = config.partition if config.partition != "dirichlet" else f"dirichlet-{config.dirichlet_alpha}"
    parts = partition(train.label_array(), kind=kind, n_clients=config.hospitals, seed=config.seed)
    names = [f"hospital-{chr(ord('a') + i)}" for i in range(config.hospitals)]
    heatmap = plot_heatmap(
        client_class_counts(parts, train.label_array(), train.n_classes),
        train.label_names,
        config.out_dir / "hospitals_by_class.png",
        title=f"{config.task}: {config.partition} split",
    )

    encoder = load_encoder(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    spec = AdapterSpec(
        num_labels=train.n_classes,
        target_modules=config.target_modules,
        layers_to_transform=config.layers_to_transform,
        r_max=config.rank,
        alpha=config.alpha,
        seed=config.seed,
    )
    # One model object stands in for every hospital's copy: each round starts with load_global.
    model = FFAClassifier(encoder, spec, rank=config.rank)
    kwargs = dict(max_length=config.max_seq_length, progress=progress)
    train_features = encode(model, tokenizer, train.texts, train.labels, **kwargs)  # type: ignore[arg-type]
    test_features = encode(model, tokenizer, test.texts, test.labels, **kwargs)  # type: ignore[arg-type]

    # Keys: the cloud holds the secret; hospitals and edges only ever see the public material.
    params = _he_params(config.scheme)
    cloud_scheme = generate_scheme(params)
    public_scheme = scheme_from_public(params, cloud_scheme.public_bytes())

    dp = (
        DPSettings(
            epsilon=config.epsilon,
            delta=config.delta,
            max_grad_norm=config.max_grad_norm,
            rounds=config.rounds,
        )
        if config.epsilon is not None
        else None
    )
    histories = {name: PrivacyHistory() for name in names}
    global_vector = np.zeros(model.layout.size, dtype=np.float32)
    model.load_global(global_vector)
    _, accuracy_before = evaluate(model, test_features)
    counts = np.bincount(test.label_array(), minlength=test.n_classes)
    report = SimulationReport(
        task=config.task,
        scheme=config.scheme,
        hospitals={name: len(part) for name, part in zip(names, parts, strict=True)},
        majority_rate=float(counts.max() / counts.sum()),
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_before,
        heatmap=str(heatmap),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    )

    for round_ in range(config.rounds):
        started = time.perf_counter()
        edge_sums: dict[str, object] = {}
        edge_weights: dict[str, float] = {}
        plain_sum = np.zeros_like(global_vector, dtype=np.float64)
        hospital_rows: list[HospitalRound] = []
        for index, (name, part) in enumerate(zip(names, parts, strict=True)):
            t0 = time.perf_counter()
            local = LocalConfig(
                steps=config.steps,
                batch_size=min(config.batch_size, len(part)),
                learning_rate=config.learning_rate,
                seed=config.seed * 1000 + round_ * 100 + index,
                threads=config.threads,
                progress=progress,
                dp=dp,
            )
            idx = torch.as_tensor(part)
            own = type(train_features)(
                train_features.hidden[idx], train_features.mask[idx], train_features.labels[idx]
            )
            result = train_local(
                model, own, global_vector=global_vector, config=local, history=histories[name]
            )
            weight = 1.0  # uniform weights keep the client-level sensitivity bounded
            # Packed Paillier encodes a bounded range: clamp to it (CKKS' range is far wider than any delta).
            contribution = public_scheme.clip_vector(weight * result.delta.astype(np.float64))
            public_scheme.precompute(len(contribution))
            upload = public_scheme.serialize(public_scheme.encrypt(contribution))
            plain_sum += contribution
            # The edge: check the ciphertext against the federation's key, then add it into the running sum.
            edge = f"edge-{index % config.edges + 1}"
            incoming = public_scheme.deserialize(upload, expected_length=len(global_vector))
            if edge in edge_sums:
                public_scheme.add_into(edge_sums[edge], incoming)  # type: ignore[arg-type]
            else:
                edge_sums[edge] = incoming
            edge_weights[edge] = edge_weights.get(edge, 0.0) + weight
            row = HospitalRound(
                name,
                edge,
                len(part),
                result.accuracy_after,
                result.epsilon,
                len(upload),
                time.perf_counter() - t0,
            )
            hospital_rows.append(row)
            if on_hospital is not None:
                on_hospital(round_, row)
        # The cloud: the edges forward their sums; only the global sum is ever decrypted.
        forwarded = [
            cloud_scheme.deserialize(public_scheme.serialize(s), expected_length=len(global_vector))  # type: ignore[arg-type]
            for s in edge_sums.values()
        ]
        total = cloud_scheme.sum(forwarded)
        mean_delta = cloud_scheme.decrypt(total) / sum(edge_weights.values())
        he_error = float(np.abs(mean_delta - plain_sum / sum(edge_weights.values())).max())
        global_vector = (global_vector + mean_delta).astype(np.float32)
        model.load_global(global_vector)
        loss, accuracy = evaluate(model, test_features)
        epsilons = [r.epsilon for r in hospital_rows if r.epsilon is not None]
        round_report = RoundReport(
            round=round_,
            accuracy=accuracy,
            loss=loss,
            max_epsilon=max(epsilons) if epsilons else None,
            he_max_abs_error=he_error,
            seconds=time.perf_counter() - started,
            hospitals=hospital_rows,
        )
        report.rounds.append(round_report)
        report.accuracy_after = accuracy
        if on_round is not None:
            on_round(round_report)

    adapter_dir = export_adapter(
        model, global_vector, config.out_dir / "adapter", base_model="sentence-transformers/all-MiniLM-L6-v2"
    )
    report.adapter_dir = str(adapter_dir)
    (config.out_dir / "report.json").write_text(report.to_json())
    return report
