"""Local-only training: each hospital of a simulated federation trains alone, with the agent's own
`train_local`, on the same share of the same data the simulation would give it.

The data path is the simulation's (`services.simulation.simulate`): the seeded `task_split`, the
de-identification, the seeded `partition`, MiniLM's frozen lower layers encoded once. A hospital starts
from adapter version 0, runs `rounds` rounds of `steps` steps with the simulation's per-round seeds (its
round `r` is seeded as the simulation's), keeps its own adapter between rounds (there is nobody to
average with), and its final adapter is evaluated on the federation's test set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from transformers import AutoTokenizer

from client_agent.data import Dataset, partition, task_split
from client_agent.deid import Deidentifier
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import Features, LocalConfig, encode, evaluate, train_local
from services.simulation import SimulationConfig, federation_spec


def _deidentified(dataset: Dataset) -> Dataset:
    texts, _ = Deidentifier().deidentify_many(dataset.texts)
    return Dataset(texts, dataset.labels, dataset.label_names, dataset.name, dataset.meta)


def _names(count: int) -> list[str]:
    # The simulation's hospital names (`services.simulation._hospital_names`).
    if count <= 26:
        return [f"hospital-{chr(ord('a') + i)}" for i in range(count)]
    return [f"hospital-{i + 1:03d}" for i in range(count)]


def local_only(config: SimulationConfig, *, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
    """(hospital, test accuracy after training alone) for every hospital not in `exclude`."""
    torch.set_num_threads(config.threads)
    train, test = task_split(
        config.task,
        seed=config.seed,
        test_fraction=config.test_fraction,
        max_train_examples=config.max_train_examples,
        max_test_examples=config.max_test_examples,
    )
    spec = federation_spec(config, num_labels=train.n_classes)
    if config.deidentify:
        train, test = _deidentified(train), _deidentified(test)
    kind = config.partition if config.partition != "dirichlet" else f"dirichlet-{config.dirichlet_alpha}"
    parts = partition(train.label_array(), kind=kind, n_clients=config.hospitals, seed=config.seed)
    model_path = config.model_path or default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = FFAClassifier(load_encoder(model_path), AdapterSpec.from_federation(spec), rank=config.rank)
    train_features = encode(model, tokenizer, train.texts, train.labels, max_length=config.max_seq_length)
    test_features = encode(model, tokenizer, test.texts, test.labels, max_length=config.max_seq_length)
    start = model.layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version)
    results = []
    for index, (name, part) in enumerate(zip(_names(config.hospitals), parts, strict=True)):
        if name in exclude:
            continue
        idx = torch.as_tensor(part)
        own = Features(train_features.hidden[idx], train_features.mask[idx], train_features.labels[idx])
        vector = start.copy()
        for round_ in range(config.rounds):
            local = LocalConfig(
                steps=config.steps,
                batch_size=min(config.batch_size, len(own)),
                learning_rate=config.learning_rate,
                seed=config.seed * 1000 + round_ * 100 + index,
                threads=config.threads,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = train_local(model, own, global_vector=vector, config=local)
            vector = vector + result.delta
        model.load_global(vector)
        results.append((name, evaluate(model, test_features)[1]))
    return results
