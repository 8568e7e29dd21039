"""How CLAIR's flag rule separates honest from contaminated hospitals on real MiniLM updates.

Ten hospitals of the `clair` experiment's federation (`fedlora.experiments.robustness.ClairConfig`: IID,
200 snippets each, FFA-LoRA on MiniLM's last layer, 6 full-batch steps at lr 2) each train one round from
adapter version 0, once on their own labels and once on flipped ones. The script prints, per hospital:

- the share of its honest update outside the shared direction (what makes a fixed cut fail);
- the flipped update's cosine with the honest one (why a subspace test cannot see label flipping);
- for two hospitals replaced by random updates of the honest norm: each row's share in `S`
  (`ClairResult.scores`, the old rule cut it at 0.5) and the share the recovered subspace explains
  (`ClairResult.fit`, the rule now used, relative to the median row);

then who each rule flags, and how much of the honest mean update survives CLAIR's projection on the
recovered subspace. About two minutes on one thread: `.venv/bin/python bench/clair_separation.py`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import Features, LocalConfig, train_local
from fedlora.experiments.robustness import ClairConfig
from fedlora.simulation import encoded, hospital_names, prepared_data
from fedlora.simulation_rounds import flipped, random_update, training_seed
from protocol.clair import DEFAULT_THRESHOLD, decompose

CONTAMINATED = (2, 7)


def updates() -> tuple[np.ndarray, np.ndarray]:
    """(honest, flipped): one row per hospital, the first round's delta from adapter version 0."""
    clair = ClairConfig()
    config = clair.simulation.simulation(
        Path("runs/bench/clair"), hospitals=clair.hospitals, edges=clair.hospitals, scheme="none"
    )
    torch.set_num_threads(1)
    spec, train, _, parts = prepared_data(config)
    model_path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = FFAClassifier(load_encoder(model_path), AdapterSpec.from_federation(spec), rank=config.rank)
    features = encoded(model, tokenizer, model_path, train, config.max_seq_length)
    start = model.layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version)
    honest, flips = [], []
    for index, part in enumerate(parts):
        idx = torch.as_tensor(part)
        own = Features(features.hidden[idx], features.mask[idx], features.labels[idx])
        local = LocalConfig(
            steps=config.steps,
            batch_size=min(config.batch_size, len(own)),
            learning_rate=config.learning_rate,
            insecure_seed=training_seed(config.seed, round_=0, hospital=index),  # the simulation's round 0
            threads=1,
            progress=False,
        )
        for rows, data in ((honest, own), (flips, flipped(own, num_labels=train.n_classes))):
            rows.append(train_local(model, data, global_vector=start, config=local).delta.astype(np.float64))
    return np.stack(honest), np.stack(flips)


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        honest, flips = updates()
    names = hospital_names(len(honest))
    top = np.linalg.svd(honest, full_matrices=False)[2][0]
    norms = np.linalg.norm(honest, axis=1)
    off_share = np.sqrt(np.maximum(0.0, 1.0 - (honest @ top / norms) ** 2))
    cosine = np.sum(honest * flips, axis=1) / (norms * np.linalg.norm(flips, axis=1))

    mixed = honest.copy()
    rng = np.random.default_rng(0)
    for i in CONTAMINATED:
        mixed[i] = random_update(honest[i], scale=1.0, rng=rng)
    result = decompose(mixed)
    median_fit = float(np.median(result.fit))

    table = Table(title="CLAIR on ten hospitals' first-round MiniLM updates (two random rows)")
    for column in (
        "hospital",
        "honest: share off the top direction",
        "flipped vs honest: cosine",
        "row",
        "share in S (old cut 0.5)",
        "share the subspace explains",
        "/ median",
    ):
        table.add_column(column, justify="right")
    for i, name in enumerate(names):
        table.add_row(
            name,
            f"{off_share[i]:.2f}",
            f"{cosine[i]:+.3f}",
            "random" if i in CONTAMINATED else "honest",
            f"{result.scores[i]:.2f}",
            f"{result.fit[i]:.3f}",
            f"{result.fit[i] / median_fit:.3f}",
        )
    console = Console(width=160)
    console.print(table)
    old = [names[i] for i in np.flatnonzero(result.scores > 0.5)]
    new = [names[i] for i in result.flagged]
    benign = np.setdiff1d(np.arange(len(honest)), CONTAMINATED)
    mean = honest[benign].mean(axis=0)
    kept = float(np.linalg.norm(result.subspace.T @ mean) / np.linalg.norm(mean))
    console.print(f"contaminated: {', '.join(names[i] for i in CONTAMINATED)}")
    console.print(f"old rule (share in S > 0.5) flags {len(old)}: {', '.join(old) or 'none'}")
    console.print(
        f"rule now (explained share < {DEFAULT_THRESHOLD} x the median row's) flags {len(new)}: "
        f"{', '.join(new) or 'none'}"
    )
    console.print(
        f"recovered subspace: {result.subspace.shape[1]} dimension(s); it explains {kept:.3f} of the honest "
        f"mean update's norm (the part it drops: {np.sqrt(max(0.0, 1 - kept**2)):.3f})"
    )


if __name__ == "__main__":
    main()
