"""The centralised yardstick: the federation's model trained on the union of the hospitals' data in one place.

Same data path as the demo and `fedlora simulate` (`fedlora.simulation.prepared_data`: the seeded task split,
de-identification, MiniLM's frozen lower layers encoded once), the same FFA-LoRA adapter and head, trained
with the agent's own `train_local` on the examples the federation's hospitals hold together (the union of
their shares, `PreparedRun.parts`: a label split leaves out the rows its class proportions cannot use), for
no more example-gradients than the federation computes in all: every hospital's step takes a batch of
`min(batch, its share)`, so the central run takes `rounds x steps x sum(min(batch, share))` examples, in
steps of its own batch (`central_steps`). Three rows, all on the demo's held-out set:

- a linear probe: logistic regression on the frozen, mean-pooled embeddings (no adapter, no DP), the
  weakest centralised model;
- the adapter without DP, its learning rate chosen on a validation part of the hospitals' union (a tenth,
  seeded) among `learning_rates`;
- the adapter with DP-SGD at the federation's example-level epsilon, at the recipe's learning rates.

The adapter rows train on the other nine tenths of the union, so they see slightly less data than the
federation's hospitals together; the probe is fitted on the same nine tenths.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from client_agent.model import FFAClassifier
from client_agent.train import DPSettings, Features, LocalConfig, evaluate, on_device, train_local
from fedlora.experiments.sim_report import markdown_table, write_csv
from fedlora.simulation import PreparedRun, SimulationConfig, prepared_run


@dataclass(frozen=True)
class CentralConfig:
    """The federation to measure against (the demo's by default) and how the central model is tuned."""

    federation: SimulationConfig = field(
        default_factory=lambda: SimulationConfig(scheme="none", steps=16, insecure_reproducible=True)
    )
    #: Candidates for the no-DP adapter's learning rate with the recipe's SGD (the head's weight at the
    #: federation's head rate, the batch gradient clipped to 1), chosen on the validation part.
    learning_rates: tuple[float, ...] = (0.5, 2.0, 8.0)
    #: More candidates: Adam at these rates for every parameter, no clipping (the usual non-private
    #: fine-tuning recipe, which DP-SGD's clipped, noisy steps do not suit).
    adam_learning_rates: tuple[float, ...] = (1e-3, 3e-3)
    validation_fraction: float = 0.1
    #: Steps at the federation's batch; None: as many example-gradients as the federation's hospitals
    #: compute in all (`central_steps`).
    steps: int | None = None

    @classmethod
    def quick(cls) -> CentralConfig:
        """The smoke-test size: 60 training examples, 2 steps, one candidate rate."""
        federation = SimulationConfig(
            scheme="none",
            hospitals=2,
            edges=1,
            rounds=1,
            steps=2,
            batch_size=16,
            max_train_examples=60,
            max_test_examples=40,
            insecure_reproducible=True,
        )
        return cls(federation=federation, learning_rates=(2.0,), adam_learning_rates=())

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["federation"] = {
            k: str(v) if isinstance(v, Path) else v for k, v in values["federation"].items()
        }
        return values


@dataclass(frozen=True)
class CentralRow:
    model: str
    learning_rate: float | None
    head_learning_rate: float | None
    validation_accuracy: float
    test_accuracy: float
    epsilon: float | None
    steps: int
    seconds: float
    optimizer: str | None = None
    batch_size: int | None = None  # the adapters' (None: the probe)
    examples: int = 0  # trained on: the union of the hospitals' shares less the validation part


def run_central(config: CentralConfig, out_dir: Path) -> tuple[list[CentralRow], dict[str, Path]]:
    """Train the three centralised models and write results.md, results.csv and config.json."""
    with warnings.catch_warnings():
        # Opacus and transformers warn on every pass; the figures go to the table.
        warnings.simplefilter("ignore")
        rows, majority = _measure(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "config": out_dir / "config.json",
        "csv": write_csv([asdict(r) for r in rows], out_dir / "results.csv"),
        "markdown": out_dir / "results.md",
    }
    files["config"].write_text(json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    files["markdown"].write_text(report(config, rows, majority))
    return rows, files


def _measure(config: CentralConfig) -> tuple[list[CentralRow], float]:
    return measure_on(config, prepared_run(config.federation))


def federation_example_gradients(federation: SimulationConfig, parts: Sequence[np.ndarray]) -> int:
    """Examples the federation's hospitals take a gradient of in all: each of a hospital's `rounds x steps`
    steps takes a batch of at most its share (`fedlora.simulation_hospitals`: `min(batch, examples)`)."""
    per_step = sum(min(federation.batch_size, len(part)) for part in parts)
    return federation.rounds * federation.steps * per_step


def central_batch(federation: SimulationConfig, fit_examples: int) -> int:
    """The central run's batch: the federation's, or all of the examples it fits on when they are fewer."""
    return max(1, min(federation.batch_size, fit_examples))


def central_steps(federation: SimulationConfig, parts: Sequence[np.ndarray], *, batch_size: int) -> int:
    """Steps of `batch_size` that take no more example-gradients than the federation's hospitals (at least
    one step)."""
    return max(1, federation_example_gradients(federation, parts) // batch_size)


def central_split(
    parts: Sequence[np.ndarray], *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the train set of the central models' fit and validation parts: the union of the
    hospitals' shares, a seeded `fraction` of it held out for validation."""
    union = np.unique(np.concatenate(parts))
    order = np.random.default_rng([seed, 0xCE]).permutation(len(union))
    cut = max(1, round(fraction * len(union)))
    return union[order[cut:]], union[order[:cut]]


def measure_on(config: CentralConfig, run: PreparedRun) -> tuple[list[CentralRow], float]:
    """The three rows (probe, tuned no-DP adapter, DP adapter) on `run`, prepared from `config.federation`,
    and the test set's majority rate."""
    fed = config.federation
    model, test_features, start = run.model, run.test, run.start
    fit_idx, validation_idx = central_split(run.parts, fraction=config.validation_fraction, seed=fed.seed)
    fit, validation = _rows(run.train, fit_idx), _rows(run.train, validation_idx)
    steps = (
        config.steps
        if config.steps is not None
        else central_steps(fed, run.parts, batch_size=central_batch(fed, len(fit)))
    )
    majority = float(np.bincount(test_features.labels.numpy()).max() / len(test_features))

    rows = [_probe(model, start, fit, validation, test_features)]
    candidates = [
        _adapter(model, start, fit, validation, test_features, config, learning_rate=lr, dp=None, steps=steps)
        for lr in config.learning_rates
    ] + [
        _adapter(
            model,
            start,
            fit,
            validation,
            test_features,
            config,
            learning_rate=lr,
            dp=None,
            optimizer="adam",
            steps=steps,
        )
        for lr in config.adam_learning_rates
    ]
    rows.append(max(candidates, key=lambda r: r.validation_accuracy))
    dp = (
        DPSettings(epsilon=fed.epsilon, delta=fed.delta, max_grad_norm=fed.max_grad_norm)
        if fed.epsilon is not None
        else None
    )
    if dp is not None:
        rows.append(
            _adapter(
                model,
                start,
                fit,
                validation,
                test_features,
                config,
                learning_rate=fed.learning_rate,
                dp=dp,
                steps=steps,
            )
        )
    return rows, majority


def _rows(features: Features, indices: np.ndarray) -> Features:
    return features.subset(indices)


@torch.no_grad()
def _embeddings(model: FFAClassifier, features: Features) -> np.ndarray:
    parts = []
    for s in range(0, len(features), 256):
        hidden, mask = on_device(model.device, features.hidden[s : s + 256], features.mask[s : s + 256])
        parts.append(model.embedding_from(hidden, mask).cpu().numpy())
    return np.concatenate(parts)


def _probe(
    model: FFAClassifier, start: np.ndarray, fit: Features, validation: Features, test: Features
) -> CentralRow:
    """Logistic regression (scikit-learn, L2, C = 1) on the frozen pooled embeddings."""
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    model.load_global(start)
    probe = LogisticRegression(max_iter=2000).fit(_embeddings(model, fit), fit.labels.numpy())
    score = lambda f: float(probe.score(_embeddings(model, f), f.labels.numpy()))  # noqa: E731
    return CentralRow(
        model="linear probe (frozen embeddings, no DP)",
        learning_rate=None,
        head_learning_rate=None,
        validation_accuracy=score(validation),
        test_accuracy=score(test),
        epsilon=None,
        steps=0,
        seconds=time.perf_counter() - started,
        examples=len(fit),
    )


def _adapter(
    model: FFAClassifier,
    start: np.ndarray,
    fit: Features,
    validation: Features,
    test: Features,
    config: CentralConfig,
    *,
    learning_rate: float,
    dp: DPSettings | None,
    optimizer: Literal["sgd", "adam"] = "sgd",
    steps: int,
) -> CentralRow:
    """The adapter and head trained in one place for `steps` steps of the federation's batch (`fit`'s size
    when smaller): with the recipe's SGD, or with Adam at one rate for every parameter and no clipping (no
    DP only). DP-SGD's noise and batches come from the OS unless the federation is
    `insecure_reproducible`, as the federation's own hospitals' do."""
    fed = config.federation
    adam = optimizer == "adam"
    local = LocalConfig(
        steps=steps,
        batch_size=central_batch(fed, len(fit)),
        learning_rate=learning_rate,
        head_learning_rate=None if adam else fed.head_learning_rate,
        optimizer=optimizer,
        max_grad_norm=None if adam else LocalConfig.max_grad_norm,
        insecure_seed=fed.seed if fed.insecure_reproducible else None,
        threads=fed.threads,
        progress=False,
        dp=dp,
    )
    started = time.perf_counter()
    result = train_local(model, fit, global_vector=start, config=local, evaluation=validation)
    model.load_global(start + result.delta)
    return CentralRow(
        model="FFA-LoRA adapter, no DP" if dp is None else f"FFA-LoRA adapter, DP-SGD epsilon {dp.epsilon:g}",
        learning_rate=learning_rate,
        head_learning_rate=None if adam else result.head_learning_rate,  # as trained: lowered under DP noise
        validation_accuracy=result.accuracy_after,
        test_accuracy=evaluate(model, test)[1],
        epsilon=result.epsilon,
        steps=steps,
        seconds=time.perf_counter() - started,
        optimizer=optimizer,
        batch_size=local.batch_size,
        examples=len(fit),
    )


def report(config: CentralConfig, rows: list[CentralRow], majority: float) -> str:
    fed = config.federation
    columns = [
        ("model", "model"),
        ("optimizer", "optimiser"),
        ("learning_rate", "lr (adapter)"),
        ("head_learning_rate", "lr (head)"),
        ("validation_accuracy", "validation accuracy"),
        ("test_accuracy", "test accuracy"),
        ("epsilon", "epsilon"),
        ("steps", "steps"),
        ("seconds", "seconds"),
    ]
    adapter = rows[-1]
    return (
        "# The centralised yardstick\n\n"
        f"`fedlora experiment central`: {fed.task}, the union of the {fed.hospitals} hospitals' shares of the "
        f"federation's {fed.partition} split of at most {fed.max_train_examples} training snippets (a tenth "
        f"of it held out to choose the no-DP learning rate among {candidates(config)}; {adapter.examples} "
        f"trained on), MiniLM with FFA-LoRA rank {fed.rank} on `{', '.join(fed.target_modules)}` of layers "
        f"{fed.layers_to_transform}, {adapter.steps} steps of batch {adapter.batch_size}: no more "
        f"example-gradients than the federation's hospitals take in all ({fed.rounds} rounds x {fed.steps} "
        f"steps, each of a batch of {fed.batch_size} or the hospital's whole share when smaller), sequences "
        f"of {fed.max_seq_length} tokens, seed {fed.seed}. Test set: {fed.max_test_examples} held-out "
        f"snippets at most (majority class {majority:.3f}).\n\n"
        + markdown_table([asdict(r) for r in rows], columns)
    )


def with_federation(config: CentralConfig, **changes: Any) -> CentralConfig:
    return replace(config, federation=replace(config.federation, **changes))


def candidates(config: CentralConfig) -> str:
    """The no-DP candidates in words, for the reports."""
    sgd = [f"SGD {lr:g}" for lr in config.learning_rates]
    adam = [f"Adam {lr:g}" for lr in config.adam_learning_rates]
    return ", ".join(sgd + adam)
