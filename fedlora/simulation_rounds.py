"""The pieces of one simulated round: a hospital's training (FedRot's alignment included) and an optional
contamination, the edges' running sums held in one process, the cloud's close without a store, and FedIT's
aggregation mismatch.

Everything that decides a number goes through the services' own code: `client_agent.train` and the model's
`align_to` through the strategy's `prepare_delta` (as the agent's `_train`), `client_agent.update` (the
agent's `make_update`: clip, weight, noise share, encrypt), `edge_aggregator.fold` (the edge's running
sum), `protocol.aggregation` (noise and strategy), the cloud's ledger (`cloud_server.privacy_budget.
settle_round`, the ledger's epsilon), `protocol.ffa.fedit_mismatch`. What is here only wires them together
the way the agent and `cloud_server.closing` do around HTTP and a store.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from client_agent.model import FFAClassifier
from client_agent.tasks import SequenceClassification, TaskKind
from client_agent.train import Features, LocalConfig, LocalResult, PrivacyHistory, on_device
from cloud_server.central_ledger import Ledger
from cloud_server.privacy_budget import settle_round
from edge_aggregator.fold import fold, parse_upload
from fedlora.seeded_sampler import SeededSampler
from protocol.aggregation import Aggregated, RoundNoise, aggregate, draw_central, round_noise
from protocol.crypto import HEScheme
from protocol.crypto.params import HEParams
from protocol.ffa import A_SUFFIX, AdapterLayout, fedit_mismatch
from protocol.messages import Contribution, FederationSpec, schedule_multiplier
from protocol.samplers import LatticeSampler
from protocol.strategies import AggregationStrategy

Contamination = Literal["flip", "random"]
# A hospital draws its noise share from (seed, round, hospital index, this).
SHARE_STREAM = 0x5BA2E
# ... and its randomised rounding onto the quantisation lattice from (seed, round, hospital index, this).
ROUNDING_STREAM = 0x20D


def training_seed(seed: int, *, round_: int, hospital: int) -> int:
    """`LocalConfig.insecure_seed` of hospital number `hospital` in round `round_` of a run that must repeat
    (the simulation's `insecure_reproducible`, its local-only baseline, tests that train as its hospitals)."""
    return seed * 1000 + round_ * 100 + hospital


def share_sampler(seed: int, *, round_: int, hospital: int) -> SeededSampler:
    """The sampler hospital number `hospital` draws its round-`round_` noise share from in a run that must
    repeat (the `sampler` of `client_agent.update.contribution`)."""
    return SeededSampler(np.random.default_rng([seed, round_, hospital, SHARE_STREAM]))


def rounding_rng(seed: int, *, round_: int, hospital: int) -> np.random.Generator:
    """The generator hospital number `hospital` rounds its round-`round_` update with in a run that must
    repeat (the `rounding_rng` of `client_agent.update.contribution`)."""
    return np.random.default_rng([seed, round_, hospital, ROUNDING_STREAM])


class CentralNoise:
    """The cloud's noise on one simulated round, drawn once on the lattice of the cloud's scheme
    (`protocol.aggregation.draw_central`) and handed to every close of the round, the plaintext reference's
    too (moved to its lattice, to within half of its step), so that two closes differ only by what the
    encryption did to the sums."""

    def __init__(self, sampler: LatticeSampler, params: HEParams, *, size: int) -> None:
        self._sampler, self._params, self._size = sampler, params, size
        self._drawn: list[npt.NDArray[np.int64] | None] = []

    def __call__(self, noise: RoundNoise, params: HEParams) -> npt.NDArray[np.int64] | None:
        if not self._drawn:
            self._drawn.append(draw_central(noise, self._params, size=self._size, sampler=self._sampler))
        drawn = self._drawn[0]
        if drawn is None or params.noise_step == self._params.noise_step:
            return drawn
        return np.rint(drawn * (self._params.noise_step / params.noise_step)).astype(np.int64)


def flipped(features: Features, *, num_labels: int) -> Features:
    """A label-flipping hospital's training set: every label `y` becomes `num_labels - 1 - y` (`1 - y` for
    a binary task)."""
    return Features(features.hidden, features.mask, (num_labels - 1) - features.labels)


def random_update(delta: np.ndarray, *, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random update in place of a trained one: Gaussian noise with `scale` times the norm of `delta`
    (the hospital's own benign delta, so that norm alone does not give it away at `scale` 1)."""
    noise = rng.standard_normal(delta.shape)
    norm = float(np.linalg.norm(noise))
    target = scale * float(np.linalg.norm(delta))
    return (noise * (target / norm if norm > 0 else 0.0)).astype(delta.dtype)


def contaminate(
    delta: np.ndarray, kind: Contamination, *, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A contaminated hospital's upload: its (label-flipped) delta scaled, or a `random_update`."""
    return random_update(delta, scale=scale, rng=rng) if kind == "random" else delta * scale


def contaminated_hospitals(names: Sequence[str], count: int, *, seed: int) -> tuple[str, ...]:
    """Which `count` hospitals are contaminated, drawn from `seed` (in the hospitals' order)."""
    if not 0 <= count <= len(names):
        raise ValueError(f"contaminated must lie in [0, {len(names)}], got {count}")
    chosen = np.random.default_rng([seed, 0xC0]).choice(len(names), size=count, replace=False)
    return tuple(names[i] for i in sorted(int(i) for i in chosen))


def frozen_factors(model: FFAClassifier) -> dict[str, np.ndarray]:
    """Each LoRA module's current `A` (`rank x in_features`): the shared, frozen basis when the strategy
    does not train it."""
    return {
        name: layer.lora_A["default"].weight.detach().cpu().numpy().copy()
        for name, layer in model.lora_layers().items()
    }


def factor_mismatch(
    layout: AdapterLayout,
    vectors: Sequence[np.ndarray],
    *,
    rank: int,
    frozen_a: Mapping[str, np.ndarray] | None = None,
    weights: Sequence[float] | None = None,
) -> float:
    """FedIT's aggregation error over every LoRA module, relative: `||mean(B_i) mean(A_i) - mean(B_i A_i)||_F
    / ||mean(B_i A_i)||_F` with the Frobenius norms taken over all modules together.

    `vectors` are the hospitals' adapters as they enter the sum (the global vector plus each uploaded
    delta); `A_i` comes from them when the layout trains `A`, else from `frozen_a`, the same for all, which
    makes the error zero up to rounding (FFA-LoRA, Sun et al. 2024, section 3).
    """
    if not vectors:
        raise ValueError("factor_mismatch needs at least one hospital's adapter")
    if not layout.trains_a and frozen_a is None:
        raise ValueError("the layout does not carry A: pass the frozen A as frozen_a")
    w = np.full(len(vectors), 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    tensors = [layout.unflatten(v, rank=rank) for v in vectors]
    error_sq = reference_sq = 0.0
    for entry in layout.lora:
        b_list = [np.asarray(t[entry.name], dtype=np.float64) for t in tensors]
        a_list = (
            [np.asarray(t[entry.name + A_SUFFIX], dtype=np.float64) for t in tensors]
            if layout.trains_a
            else [np.asarray(frozen_a[entry.name], dtype=np.float64)] * len(tensors)  # type: ignore[index]
        )
        error_sq += float(np.sum(fedit_mismatch(b_list, a_list, list(w)) ** 2))
        product = sum(wi * (b @ a) for wi, b, a in zip(w, b_list, a_list, strict=True))
        reference_sq += float(np.sum(np.asarray(product) ** 2))
    return math.sqrt(error_sq / reference_sq) if reference_sq > 0 else 0.0


def local_update(
    model: Any,
    features: Any,
    *,
    global_vector: np.ndarray,
    config: LocalConfig,
    history: PrivacyHistory,
    strategy: AggregationStrategy,
    round_: int,
    public_examples: int | None = None,
    task: TaskKind | None = None,
) -> LocalResult:
    """One hospital's round as the agent's `_train` runs it: local training (at the sample rate of its
    public count), then the strategy's client-side hook on the delta (FedRot: the rotation of the trained
    factors toward the global ones, `B A` unchanged). `task`: the federation's task type (None: the
    classifier's)."""
    result = (task or SequenceClassification()).train(
        model,
        features,
        global_vector=global_vector,
        config=config,
        history=history,
        public_examples=public_examples,
    )
    delta = strategy.prepare_delta(model, result.delta, global_vector=global_vector, round_index=round_)
    return dataclasses.replace(result, delta=delta)


@dataclass
class EdgeSums:
    """Every edge's running ciphertext sum, as the edges keep it: each upload read and added by the edge's
    own `parse_upload` and `fold` (checking the ciphertext against the federation's key, holding no
    secret), the sum kept serialised as an edge's store keeps it."""

    scheme: HEScheme[Any]
    length: int
    sums: dict[str, bytes] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    add_s: float = 0.0

    def add(self, edge: str, upload: bytes, weight: float) -> None:
        started = time.perf_counter()
        incoming = parse_upload(self.scheme, upload, length=self.length)
        self.sums[edge] = fold(self.scheme, self.sums.get(edge), incoming, length=self.length)
        self.add_s += time.perf_counter() - started
        self.weights[edge] = self.weights.get(edge, 0.0) + weight

    def forwarded(self) -> tuple[list[bytes], list[tuple[str, float]]]:
        """What the edges send the cloud: their serialised sums and, in the same order, (edge, weight)."""
        edges = list(self.sums)
        return [self.sums[e] for e in edges], [(e, self.weights[e]) for e in edges]


@dataclass(frozen=True)
class ClosedRound:
    aggregated: Aggregated
    noise: RoundNoise
    ledger: Ledger
    central_epsilon: float | None
    seconds: float  # the whole of `aggregate`: deserialise, add, decrypt, noise, strategy


def close_round(
    spec: FederationSpec,
    scheme: HEScheme[Any],
    ciphertexts: Sequence[bytes],
    *,
    rows: Sequence[tuple[str, float]],
    global_vector: np.ndarray,
    contributions: Sequence[Contribution],
    layout: AdapterLayout,
    strategy: AggregationStrategy,
    ledger: Ledger,
    round_: int,
    central: CentralNoise,
    shares_planned: int | None = None,
    sums: Sequence[Sequence[Contribution]] | None = None,
    corrections: Sequence[bytes] | None = None,
) -> ClosedRound:
    """The cloud's close of round `round_` (the `round_`-th closed round, so also its place on the noise
    schedule), as `cloud_server.closing` runs it: the round's noise (the hospitals' `shares_planned` noise
    shares, if the round asked for them, topped up to the target; `sums`: the contributions inside each
    edge's sum), `aggregate`, then the ledger."""
    dp = spec.central_dp
    noise = round_noise(
        spec,
        multiplier=schedule_multiplier(dp, round_index=round_, rounds=spec.rounds),
        contributions=contributions,
        layout_size=layout.size,
        shares_planned=shares_planned,
        sums=sums,
    )
    started = time.perf_counter()
    result = aggregate(
        scheme,
        ciphertexts,
        global_vector=global_vector,
        contributions=contributions,
        layout=layout,
        strategy=strategy,
        noise=noise,
        central=central(noise, scheme.params),
        k=spec.min_clients_per_edge,
        rows=rows,
        corrections=corrections,
    )
    seconds = time.perf_counter() - started
    settled = settle_round(
        spec,
        ledger,
        round_=round_,
        noise=noise,
        contributions=list(contributions),
        total_weight=float(sum(c.weight for c in contributions)),
        layout_size=layout.size,
        rounds_closed_after=round_ + 1,
    )
    return ClosedRound(result, noise, settled.ledger, settled.epsilon, seconds)


@torch.no_grad()
def class_probabilities(model: FFAClassifier, features: Features, *, batch_size: int = 256) -> np.ndarray:
    """The model's softmax over the classes for every example, `(examples, classes)`, float64."""
    parts = []
    for s in range(0, len(features), batch_size):
        hidden, mask = on_device(
            model.device, features.hidden[s : s + batch_size], features.mask[s : s + batch_size]
        )
        parts.append(torch.softmax(model.forward_from(hidden, mask), -1).double().cpu().numpy())
    return np.concatenate(parts)


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC (scikit-learn's `roc_auc_score(multi_class="ovr", average="macro")`; for two
    classes its binary AUC of class 1). A class absent from `labels` has no AUC: the mean is then over the
    one-vs-rest AUCs of the classes present, each computed as the macro average computes it. None when
    fewer than two classes are present."""

    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    n_classes = probabilities.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if n_classes == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    if len(present) == n_classes:
        return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    return float(np.mean([roc_auc_score(labels == c, probabilities[:, c]) for c in present]))
