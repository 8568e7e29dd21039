"""A hospital's pre-flight check: train FFA-LoRA on its own data alone, exactly as it would in a federation.

Loads a file (or a bundled task), de-identifies the texts, holds out a stratified test split, builds the
model with the federation's frozen basis, trains `rounds` rounds of `steps` DP-SGD steps (each round
restarts from the adapter the previous one produced, as the global adapter would) and reports held-out
accuracy before and after, the epsilon spent and the time taken.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from client_agent.data import Dataset, load_file, load_task, train_test_split
from client_agent.deid import DeidEngine, Deidentifier, make_finder
from client_agent.device import training_device
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.recipe import HEAD_LEARNING_RATE
from client_agent.train import DPSettings, LocalConfig, PrivacyHistory, encode, train_local


@dataclass(frozen=True)
class LocalRunConfig:
    task: str | None = "rt_sentiment"
    data_file: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    test_fraction: float = 0.1
    max_examples: int | None = None
    deidentify: bool = True
    deid_engine: DeidEngine = "presidio"
    model_path: Path | None = None
    target_modules: tuple[str, ...] = ("value",)
    layers_to_transform: tuple[int, ...] | None = (4, 5)
    rank: int = 1
    alpha: float = 8.0
    seed: int = 0
    basis_seed: int = 0
    rounds: int = 1
    steps: int = 96
    batch_size: int = 492
    learning_rate: float = 2.0
    head_learning_rate: float | None = HEAD_LEARNING_RATE  # None: `learning_rate`
    max_seq_length: int = 32
    epsilon: float | None = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    threads: int = 2
    progress: bool = True


@dataclass
class RoundFigures:
    round: int
    loss: float
    accuracy: float
    epsilon: float | None
    seconds: float


@dataclass
class LocalRunReport:
    data: str
    train_examples: int
    test_examples: int
    majority_rate: float
    accuracy_before: float
    accuracy_after: float
    epsilon: float | None
    noise_multiplier: float | None
    sample_rate: float | None
    seconds_encoding: float
    seconds_training: float
    deid_counts: dict[str, int] = field(default_factory=dict)
    rounds: list[RoundFigures] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def load_data(config: LocalRunConfig) -> Dataset:
    if config.data_file is not None:
        return load_file(config.data_file, text_column=config.text_column, label_column=config.label_column)
    if config.task is None:
        raise ValueError("give either data_file or task")
    return load_task(config.task)


def run_local(config: LocalRunConfig) -> LocalRunReport:
    device = training_device()  # DeviceError names FEDLORA_DEVICE before anything loads
    torch.set_num_threads(config.threads)
    dataset = load_data(config)
    deid_counts: dict[str, int] = {}
    if config.deidentify:
        deidentifier = Deidentifier(finder=make_finder(config.deid_engine))
        texts, counts = deidentifier.deidentify_many(dataset.texts)
        deid_counts = dict(counts)
        dataset = Dataset(
            texts=list(texts),
            labels=dataset.labels,
            label_names=dataset.label_names,
            name=dataset.name,
            meta=dataset.meta,
        )
    train, test = train_test_split(dataset, test_fraction=config.test_fraction, seed=config.seed)
    if config.max_examples is not None and len(train) > config.max_examples:
        rng = np.random.default_rng(config.seed)
        train = train.subset(rng.permutation(len(train))[: config.max_examples])

    model_path = config.model_path or default_model_path()
    encoder = load_encoder(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    spec = AdapterSpec(
        num_labels=dataset.n_classes,
        target_modules=config.target_modules,
        layers_to_transform=config.layers_to_transform,
        r_max=config.rank,
        alpha=config.alpha,
        seed=config.basis_seed,
    )
    model = FFAClassifier(encoder, spec, rank=config.rank).to(device)

    started = time.perf_counter()
    train_features = encode(
        model,
        tokenizer,
        train.texts,
        train.labels,
        max_length=config.max_seq_length,
        progress=config.progress,
    )
    test_features = encode(
        model, tokenizer, test.texts, test.labels, max_length=config.max_seq_length, progress=config.progress
    )
    seconds_encoding = time.perf_counter() - started

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
    local = LocalConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        head_learning_rate=config.head_learning_rate,
        threads=config.threads,
        progress=config.progress,
        dp=dp,
    )
    history = PrivacyHistory()
    adapter = np.zeros(model.layout.size, dtype=np.float32)
    figures: list[RoundFigures] = []
    accuracy_before = None
    result = None
    for round_ in range(config.rounds):
        result = train_local(
            model,
            train_features,
            global_vector=adapter,
            config=local,
            evaluation=test_features,
            history=history,
        )
        accuracy_before = result.accuracy_before if accuracy_before is None else accuracy_before
        adapter = adapter + result.delta
        figures.append(
            RoundFigures(round_, result.loss_after, result.accuracy_after, result.epsilon, result.seconds)
        )
    assert result is not None and accuracy_before is not None  # rounds >= 1
    test_counts = np.bincount(test.label_array(), minlength=test.n_classes)
    return LocalRunReport(
        data=dataset.name,
        train_examples=len(train),
        test_examples=len(test),
        majority_rate=float(test_counts.max() / test_counts.sum()),
        accuracy_before=accuracy_before,
        accuracy_after=result.accuracy_after,
        epsilon=result.epsilon,
        noise_multiplier=result.noise_multiplier,
        sample_rate=result.sample_rate,
        seconds_encoding=seconds_encoding,
        seconds_training=sum(f.seconds for f in figures),
        deid_counts=deid_counts,
        rounds=figures,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    )
