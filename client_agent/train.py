"""Local training of FFA-LoRA's `B` and the head, with Opacus DP-SGD or without DP.

DP-SGD (Abadi et al., 2016): Poisson sampling with rate `q`, per-example clipping to `max_grad_norm`,
Gaussian noise of std `sigma * max_grad_norm`. `sigma` is derived once from the client's target
`(epsilon, delta)` over *all* planned rounds (`steps_per_round * rounds` steps at rate `q`, after what the
history already holds at the start, such as the public count: `client_agent.releases`), and the history is
carried from round to round, so the epsilon reported after round `t` is what the hospital has spent so far.

`q` is one over the number of batches of the *public* example count (Opacus' convention), so the sample
rate reveals no more about the data size than the public count does.

Every random draw that protects privacy (the Poisson batch selection and the Gaussian noise) comes from a
generator seeded from the operating system's entropy, passed to Opacus explicitly; nothing reads torch's
global generator. `LocalConfig.insecure_seed` replaces that entropy with a seed for experiments and tests
that must repeat a run: whoever knows the seed regenerates the noise and subtracts it, so the services never
set it.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from opacus import GradSampleModule
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizer
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from client_agent.model import FFAClassifier
from client_agent.recipe import head_rate_under_noise
from client_agent.releases import BUDGET_ROUNDING, History, appended, calibrate, epsilon_of


class TrainingError(ValueError):
    """Local training cannot run as configured."""


@dataclass(frozen=True)
class DPSettings:
    """Example-level DP target of one hospital over the whole federation."""

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    rounds: int = 1
    accountant: Literal["rdp", "prv"] = "rdp"
    #: What the hospital released before its first round (its public count, `client_agent.releases`): the
    #: calibration leaves room for it, and a history started afresh starts with it.
    spent_before: History = ()

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise TrainingError(f"epsilon must be positive, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise TrainingError(f"delta must lie in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise TrainingError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.rounds < 1:
            raise TrainingError(f"rounds must be at least 1, got {self.rounds}")


@dataclass(frozen=True)
class LocalConfig:
    steps: int = 20
    batch_size: int = 32
    learning_rate: float = 0.5
    #: The head's own learning rate; None: `learning_rate`. Its input is a unit-norm embedding whose
    #: coordinates are small, so at `B`'s rate its weight grows too slowly to move the decision off the class
    #: prior (docs/results.md, "a recipe that learns"). A per-group rate changes no DP accounting: the
    #: clipping and the noise act on the gradients, before any rate.
    head_learning_rate: float | None = None
    optimizer: Literal["sgd", "adam"] = "sgd"
    #: Reproducible randomness for experiments and tests ONLY: the batch sampling and the DP-SGD noise are
    #: drawn from this seed instead of the operating system's entropy, so whoever knows it can subtract the
    #: noise. The hospital agent never sets it.
    insecure_seed: int | None = None
    threads: int = 1
    eval_batch_size: int = 256
    progress: bool = True
    dp: DPSettings | None = None
    #: Without DP, the batch gradient is clipped to this norm (DP-SGD clips per example instead): the
    #: learning rates that suit DP-SGD's clipped, averaged updates otherwise make B diverge.
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TrainingError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise TrainingError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise TrainingError(f"head_learning_rate must be positive, got {self.head_learning_rate}")
        if self.threads < 1:
            raise TrainingError(f"threads must be at least 1, got {self.threads}")


@dataclass
class PrivacyHistory:
    """Opacus accountant history `(noise_multiplier, sample_rate, steps)`, carried across rounds."""

    entries: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(entry[2] for entry in self.entries)


@dataclass(frozen=True)
class Features:
    """Cached inputs of the trainable part of the model: hidden states at the split layer and masks."""

    hidden: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.hidden[rows], self.mask[rows], self.labels[rows]

    def subset(self, indices: Any) -> Features:
        """The examples at `indices` (an index array or tensor), in that order."""
        idx = torch.as_tensor(indices)
        return Features(self.hidden[idx], self.mask[idx], self.labels[idx])


def on_device(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`tensors` moved to `device` (the model's): features stay on the CPU, each batch moves."""
    return tuple(tensor.to(device) for tensor in tensors)


@dataclass(frozen=True)
class LocalResult:
    delta: np.ndarray
    num_examples: int
    steps: int
    loss_before: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    seconds: float
    epsilon: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    #: The rate the head's weight trained at (after `run_steps` lowered it for the noise); None: no head.
    head_learning_rate: float | None = None


def encode(
    model: FFAClassifier,
    tokenizer: object,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    max_length: int,
    batch_size: int = 256,
    progress: bool = False,
) -> Features:
    """Tokenise and run the frozen prefix once: every later step starts from these hidden states."""
    if len(texts) != len(labels):
        raise TrainingError(f"got {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise TrainingError("no examples to encode")
    hidden_parts, mask_parts = [], []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="encoding", unit="batch", disable=not progress, leave=False):
        batch = tokenizer(  # type: ignore[operator]
            list(texts[start : start + batch_size]),
            padding="max_length",
            # Right padding keeps the real tokens at absolute positions 0..n-1, as a text tokenised
            # alone (the pipeline's way) has them; a left-padding tokenizer would shift them.
            padding_side="right",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        mask = batch["attention_mask"]
        # Kept on the CPU: a training step moves only its batch to the model's device.
        hidden_parts.append(model.embed_frozen(batch["input_ids"], mask).cpu())
        mask_parts.append(mask)
    return Features(
        hidden=torch.cat(hidden_parts), mask=torch.cat(mask_parts), labels=torch.as_tensor(list(labels))
    )


@torch.no_grad()
def evaluate(model: FFAClassifier, features: Features, *, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(features), batch_size):
        hidden, mask, labels = on_device(model.device, *features.rows(slice(start, start + batch_size)))
        logits = model.forward_from(hidden, mask)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(-1) == labels).sum())
    return total_loss / len(features), correct / len(features)


@torch.no_grad()
def example_losses(model: FFAClassifier, features: Features, *, batch_size: int = 256) -> np.ndarray:
    """Each example's cross-entropy under the model as it is (float64, one per example)."""
    parts = []
    for start in range(0, len(features), batch_size):
        hidden, mask, labels = on_device(model.device, *features.rows(slice(start, start + batch_size)))
        logits = model.forward_from(hidden, mask)
        parts.append(F.cross_entropy(logits, labels, reduction="none").double().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros(0)


def sample_rate_for(num_examples: int, batch_size: int) -> float:
    """Opacus' Poisson sampling rate for a loader of this size: one over the number of batches.

    Give it the public example count: the rate is released in the accountant history."""
    return 1.0 / math.ceil(num_examples / batch_size)


def noise_multiplier_for(dp: DPSettings, *, sample_rate: float, steps_per_round: int) -> float:
    """`sigma` that spends exactly the target epsilon over every planned round, after `dp.spent_before`."""
    return calibrate(
        epsilon=dp.epsilon,
        delta=dp.delta,
        accountant=dp.accountant,
        fixed=dp.spent_before,
        sample_rate=sample_rate,
        steps=steps_per_round * dp.rounds,
    )


class BudgetExhaustedError(TrainingError):
    """Another round would take the hospital past its example-level budget."""


def projected_epsilon(
    history: PrivacyHistory, dp: DPSettings, *, sample_rate: float, noise_multiplier: float, steps: int
) -> float:
    """The epsilon Opacus' accountant would report after `steps` more steps at `(noise_multiplier,
    sample_rate)`: asked before training, so that a hospital never runs past its budget."""
    entry = (noise_multiplier, sample_rate, steps)
    return epsilon_of([*history.entries, entry], delta=dp.delta, accountant=dp.accountant)


def check_budget(
    history: PrivacyHistory, dp: DPSettings, *, num_examples: int, batch_size: int, steps_per_round: int
) -> float:
    """The epsilon after one more round as `train_local` would run it (`num_examples`: the public count);
    raises `BudgetExhaustedError` if that exceeds `dp.epsilon`. `sigma` spends the budget over `dp.rounds`
    rounds, so this refuses only rounds beyond them (failed rounds that were retried, or a federation that
    runs longer than planned)."""
    rate = sample_rate_for(num_examples, batch_size)
    sigma = noise_multiplier_for(dp, sample_rate=rate, steps_per_round=steps_per_round)
    after = projected_epsilon(history, dp, sample_rate=rate, noise_multiplier=sigma, steps=steps_per_round)
    # The calibration never lands above the target, so nothing but float rounding is allowed past it: a
    # plan that changes steps, batch or rates between rounds is refused before it overspends.
    if after > dp.epsilon * (1.0 + BUDGET_ROUNDING):
        raise BudgetExhaustedError(
            f"one more round would bring the example-level epsilon to {after:.3f}, above the budget "
            f"{dp.epsilon:g} (spent {history.steps} DP-SGD steps so far; delta {dp.delta:g})"
        )
    return after


def generators(
    insecure_seed: int | None, *, noise_device: torch.device | None = None
) -> tuple[torch.Generator, torch.Generator]:
    """(batch sampling, noise) generators: seeded from the operating system's entropy, or, for experiments
    and tests that must repeat a run, from `insecure_seed`. The sampler draws on the CPU; the noise is drawn
    where the gradients are (Opacus draws it on their device), so its generator lives on `noise_device`."""
    seeds = (
        (secrets.randbits(63), secrets.randbits(63))
        if insecure_seed is None
        else (insecure_seed, insecure_seed + 0x5EED)
    )
    noise = torch.Generator(device=noise_device or torch.device("cpu"))
    return torch.Generator().manual_seed(seeds[0]), noise.manual_seed(seeds[1])


#: The key of an optimiser group whose rate `run_steps` lowers as the DP noise grows (the head's weight).
NOISE_SCALED = "fedlora_noise_scaled"


def parameter_groups(model: FFAClassifier, config: LocalConfig) -> list[dict[str, object]]:
    """The optimiser's parameter groups, in the model's parameter order (DP-SGD draws its noise in that
    order): the adapter and the head's bias at `learning_rate`, the head's weight at `head_learning_rate`
    (under DP-SGD, lowered by `run_steps` as the noise grows: `client_agent.recipe`).
    The bias keeps the adapter's rate: its curvature does not shrink with the embedding's coordinates, and at
    the weight's rate its steps overshoot."""
    weight, bias = model.head.weight, model.head.bias
    adapter = [p for p in model.trainable_parameters() if p is not weight and p is not bias]
    head_lr = config.head_learning_rate if config.head_learning_rate is not None else config.learning_rate
    return [
        {"params": adapter, "lr": config.learning_rate},
        {"params": [weight], "lr": head_lr, NOISE_SCALED: True},
        {"params": [bias], "lr": config.learning_rate},
    ]


#: The mean loss of a batch (the loader's tensors, in the dataset's order) under `model`: each example's loss
#: averaged over the batch, so that Opacus' "mean" reduction gives every example's own gradient.
BatchLoss = Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor]


def classification_loss(model: torch.nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of a batch of `(hidden, mask, labels)` rows (`Features`)."""
    hidden, mask, labels = batch
    logits = model(hidden, mask)
    return F.cross_entropy(logits, labels, reduction="sum") / labels.numel()


def train_local(
    model: FFAClassifier,
    train: Features,
    *,
    global_vector: np.ndarray,
    config: LocalConfig,
    evaluation: Features | None = None,
    history: PrivacyHistory | None = None,
    public_examples: int | None = None,
) -> LocalResult:
    """One round of local training from the global adapter. Returns the padded delta and the figures.

    `history` (DP only) is extended in place with this round's accounting. `public_examples` is the size of
    the training part as the federation knows it (`client_agent.releases`): it sets the sample rate and the
    expected batch. None: `len(train)`, for a run whose count is released nowhere (a local pre-flight).
    """
    torch.set_num_threads(config.threads)
    model.load_global(global_vector)
    held_out = evaluation if evaluation is not None else train
    loss_before, acc_before = evaluate(model, held_out, batch_size=config.eval_batch_size)
    started = time.perf_counter()

    dataset = TensorDataset(train.hidden, train.mask, train.labels)
    groups = parameter_groups(model, config)
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(groups, lr=config.learning_rate)
        if config.optimizer == "sgd"
        else torch.optim.Adam(groups, lr=config.learning_rate)
    )
    spent = run_steps(
        model,
        optimizer,
        dataset,
        config,
        history=history,
        public_examples=public_examples if public_examples is not None else len(train),
    )
    epsilon, sigma, rate = spent if spent is not None else (None, None, None)
    seconds = time.perf_counter() - started
    loss_after, acc_after = evaluate(model, held_out, batch_size=config.eval_batch_size)
    return LocalResult(
        delta=model.delta_from(global_vector),
        num_examples=len(train),
        steps=config.steps,
        loss_before=loss_before,
        loss_after=loss_after,
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        seconds=seconds,
        epsilon=epsilon,
        noise_multiplier=sigma,
        sample_rate=rate,
        head_learning_rate=next(float(g["lr"]) for g in optimizer.param_groups if g.get(NOISE_SCALED)),
    )


def run_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: TensorDataset,
    config: LocalConfig,
    *,
    history: PrivacyHistory | None,
    public_examples: int,
    batch_loss: BatchLoss = classification_loss,
) -> tuple[float, float, float] | None:
    """`config.steps` steps of any task's model on `dataset` (whose rows `batch_loss` reads): DP-SGD when
    `config.dp` is set, accounted in `history` (extended in place); returns `(epsilon, sigma, sample_rate)`,
    or None without DP. `public_examples` is the count that sets the sample rate and the expected batch."""
    sampling, noise = generators(config.insecure_seed, noise_device=device_of(model))
    if config.dp is None:
        sampler = RandomSampler(
            dataset, replacement=True, num_samples=config.steps * config.batch_size, generator=sampling
        )
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler)
        _run_steps(model, optimizer, loader, config, clip_norm=config.max_grad_norm, batch_loss=batch_loss)
        return None
    if history is None:
        history = PrivacyHistory(list(config.dp.spent_before))
    rate = sample_rate_for(public_examples, config.batch_size)
    sigma = noise_multiplier_for(config.dp, sample_rate=rate, steps_per_round=config.steps)
    expected_batch = divided_by(public_examples * rate)
    if isinstance(optimizer, torch.optim.SGD):  # Adam scales its steps by the gradients' own size
        for group in optimizer.param_groups:
            if group.get(NOISE_SCALED):
                group["lr"] = head_rate_under_noise(
                    group["lr"], config.learning_rate, noise_multiplier=sigma, expected_batch=expected_batch
                )
    count = StepCount()
    try:
        _dp_steps(
            model,
            optimizer,
            dataset,
            config,
            sample_rate=rate,
            sigma=sigma,
            expected_batch=public_examples * rate,
            sampling=sampling,
            noise=noise,
            count=count,
            batch_loss=batch_loss,
        )
    finally:
        # Every step that ran is spent, even if a later one failed.
        if count.done:
            history.entries[:] = appended(history.entries, (sigma, rate, count.done))
    return epsilon_of(history.entries, delta=config.dp.delta, accountant=config.dp.accountant), sigma, rate


def _dp_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: TensorDataset,
    config: LocalConfig,
    *,
    sample_rate: float,
    sigma: float,
    expected_batch: float,
    sampling: torch.Generator,
    noise: torch.Generator,
    count: StepCount,
    batch_loss: BatchLoss = classification_loss,
) -> None:
    """`config.steps` DP-SGD steps with Opacus' parts wired by hand, so that both random sources are ours:
    per-example gradients (hooks), a Poisson loader on `sampling`, clipping and Gaussian noise on `noise`.
    The noisy sum is divided by the expected batch of the public count (Opacus' "mean" reduction)."""
    assert config.dp is not None
    with warnings.catch_warnings():
        # torchcsprng cannot be installed here, so Opacus warns about secure_mode; and the first adapted
        # layer's input is a cached tensor that needs no gradient, which torch notes.
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
        model.train()
        gs_model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        gs_model.forbid_grad_accumulation()
        dp_optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=sigma,
            max_grad_norm=config.dp.max_grad_norm,
            expected_batch_size=divided_by(expected_batch),
            loss_reduction="mean",
            generator=noise,
        )
        loader = DPDataLoader(dataset, sample_rate=sample_rate, generator=sampling)
        try:
            _run_steps(gs_model, dp_optimizer, loader, config, count=count, batch_loss=batch_loss)
        finally:
            # Unhook so that the next round can wrap the same model again.
            gs_model._close()


def divided_by(expected_batch: float) -> int:
    """The batch DP-SGD divides its noisy sum by: the expected batch, whole (Opacus takes an int)."""
    return max(1, int(expected_batch))


@dataclass
class StepCount:
    """Steps taken so far: read after a failure too, so that the history holds every step that ran."""

    done: int = 0


def _run_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    config: LocalConfig,
    *,
    clip_norm: float | None = None,
    count: StepCount | None = None,
    batch_loss: BatchLoss = classification_loss,
) -> None:
    model.train()
    count = count if count is not None else StepCount()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    bar = tqdm(total=config.steps, desc="training", unit="step", disable=not config.progress, leave=False)
    while count.done < config.steps:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            if batch[0].shape[0] == 0:
                # An empty Poisson batch is still a DP step: no example, only the noise. The encoder cannot
                # run on zero rows, so the per-example gradients are set empty by hand.
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]
                optimizer.step()
            else:
                loss = batch_loss(model, on_device(device, *batch))
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
            count.done += 1
            bar.update(1)
            if count.done >= config.steps:
                break
    bar.close()
    model.eval()


def device_of(model: torch.nn.Module) -> torch.device:
    """Where `model`'s parameters live (the noise of its DP steps is drawn there)."""
    return next(model.parameters()).device
