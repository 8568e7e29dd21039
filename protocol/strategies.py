"""How a round's decrypted sum becomes the next global adapter: one seam per aggregation rule.

In the spirit of Flower's `Strategy`: an abstract base whose template method (`next_global`) runs the
round's aggregation in fixed steps (the divisor of every coordinate, the mean step, the update rule), and
concrete strategies that fill in the steps. Under encryption the cloud only ever holds the *sum* of the
clients' weighted deltas (noise included), so a strategy works on that sum and the public manifest: who
contributed, at which rank and with which weight.

A strategy is also what the other parties ask about it: its client-side hook (`prepare_delta`, run by the
agent and the simulation on each trained model) and its constraints on a federation (`requires_plaintext`,
`allows_central_noise`, `allows_late_uploads`, `can_rebase`, read by `FederationSpec`'s validator;
`trains_a`, read where the adapter's layout and model are built). So adding a strategy
is one class here and one entry in `_STRATEGIES`; nothing else branches on its name.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from protocol.clair import ClairError, decompose
from protocol.ffa import AdapterLayout, column_weights
from protocol.messages import Contribution, FederationSpec, Strategy


class AggregationError(ValueError):
    """A round's sum cannot be aggregated as given (shapes, weights or rows that do not fit)."""


class TrainedModel(Protocol):
    """What a strategy's client-side hook may ask of a hospital's trained model (`FFAClassifier`)."""

    def align_to(self, global_vector: np.ndarray, *, round_index: int) -> None: ...

    def delta_from(self, global_vector: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RoundSum:
    """What the cloud knows of a closed round: the decrypted noisy sum and the manifests' contributions."""

    noisy_sum: np.ndarray  # float64, the layout's length
    contributions: Sequence[Contribution]
    layout: AdapterLayout

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))


class AggregationStrategy(ABC):
    """One aggregation rule. Subclasses define the per-coordinate divisor and, if needed, the update rule,
    the client-side hook and the constraints a federation using them must meet."""

    kind: ClassVar[Strategy]
    per_edge: ClassVar[bool] = False  # True: `combine_rows` over each edge's sum (RowStrategy)
    #: The rule reads each edge's sum in the clear: the spec must not encrypt (`he.kind` 'none').
    requires_plaintext: ClassVar[bool] = False
    #: The rule is a clipped sum, so central_dp's noise bounds one hospital's influence on it.
    allows_central_noise: ClassVar[bool] = True
    #: The rule can fold a late bucket (a sum of uploads for an earlier round) into a round.
    allows_late_uploads: ClassVar[bool] = True
    #: Clients train both LoRA factors, so `A` travels in the update beside `B`.
    trains_a: ClassVar[bool] = False
    #: `A` is frozen and shared, so the cloud can re-base the adapter to a common rank
    #: (`rank_policy.rebase_rank`).
    can_rebase: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: FederationSpec) -> AggregationStrategy:
        """The strategy as the spec configures it (the default reads nothing from it)."""
        return cls()

    def next_global(self, previous: np.ndarray, round_sum: RoundSum) -> np.ndarray:
        """The next global vector (float64): `apply(previous, sum / divisor)`, coordinates that nobody
        could reach (divisor 0) left unchanged."""
        if round_sum.noisy_sum.shape != previous.shape:
            raise AggregationError(
                f"the sum has shape {round_sum.noisy_sum.shape}, the adapter {previous.shape}"
            )
        divisor = self.divisor(round_sum)
        step = np.divide(
            round_sum.noisy_sum, divisor, out=np.zeros_like(round_sum.noisy_sum), where=divisor > 0
        )
        return self.apply(previous.astype(np.float64), step)

    @abstractmethod
    def divisor(self, round_sum: RoundSum) -> np.ndarray:
        """Per coordinate, what the sum is divided by to give the mean step."""

    def apply(self, previous: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The update rule: FedAvg's `previous + mean step`."""
        return previous + step

    def prepare_delta(
        self, model: TrainedModel, delta: np.ndarray, *, global_vector: np.ndarray, round_index: int
    ) -> np.ndarray:
        """The client-side hook: what a hospital uploads (before clipping and weighting) after training
        `model` from `global_vector` to `delta`. The default uploads the delta as trained."""
        return delta


@dataclass(frozen=True)
class EdgeRow:
    """One edge's plaintext sum (strategies that look at regions: federations without encryption only)."""

    edge_id: str
    vector: np.ndarray
    weight: float


class RowStrategy(AggregationStrategy):
    """A strategy that needs each edge's sum on its own, not only the total."""

    per_edge: ClassVar[bool] = True

    @abstractmethod
    def combine_rows(
        self, previous: np.ndarray, rows: Sequence[EdgeRow]
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """The next global vector and the edges flagged as contaminated."""

    def divisor(self, round_sum: RoundSum) -> np.ndarray:
        return np.full(round_sum.layout.size, round_sum.total_weight)


# With two rows nothing can be told apart from disagreement; from three on a row can be the odd one out.
MIN_CLAIR_ROWS = 3


class ClairStrategy(RowStrategy):
    """CLAIR (He, Chen, Feng 2026) over regional aggregates: each edge's mean update is a row; a low-rank
    plus row-sparse decomposition (`protocol.clair`) recovers the shared subspace and flags rows that do
    not fit it, and the global update is the weighted mean of the unflagged rows inside that subspace.
    Per-row plaintext is needed, so the spec validator allows it only without encryption (every party may
    then see updates) and without central noise (the rule is not a clipped sum). With fewer than three edges
    there is nothing to compare, and when the decomposition recovers no shared subspace there is no shared
    structure: then the plain mean is applied and nothing is flagged."""

    kind = Strategy.CLAIR
    requires_plaintext = True
    allows_central_noise = False
    allows_late_uploads = False

    def combine_rows(
        self, previous: np.ndarray, rows: Sequence[EdgeRow]
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        means = np.stack([row.vector / row.weight for row in rows])
        weights = np.array([row.weight for row in rows])
        plain = previous + weights @ means / weights.sum()
        if len(rows) < MIN_CLAIR_ROWS or not np.any(means):
            return plain, ()
        try:
            result = decompose(means)
            return previous + result.shared_update(weights), tuple(rows[i].edge_id for i in result.flagged)
        except ClairError:
            # No shared subspace: no structure to recover this round, so nothing is singled out and the plain
            # mean (FedAvg) is applied rather than stalling the federation.
            return plain, ()


class MeanStrategy(AggregationStrategy):
    """The weighted mean of the deltas; with `normalize_rank_columns`, each LoRA column (of `B`) and row (of
    `A`) is averaged over the clients whose rank reaches it instead, a different estimator: with mixed ranks
    it scales the columns only high-rank clients reach by `W / W_j` against the weighted mean, and their
    noise with them (`protocol.aggregation.noise_on_mean`)."""

    def __init__(self, *, normalize_rank_columns: bool = False) -> None:
        self.normalize_rank_columns = normalize_rank_columns

    @classmethod
    def from_spec(cls, spec: FederationSpec) -> AggregationStrategy:
        return cls(normalize_rank_columns=spec.normalize_rank_columns)

    def divisor(self, round_sum: RoundSum) -> np.ndarray:
        if self.normalize_rank_columns:
            return column_weights(round_sum.layout, [(c.rank, c.weight) for c in round_sum.contributions])
        return np.full(round_sum.layout.size, round_sum.total_weight)


class FFAStrategy(MeanStrategy):
    """FFA-LoRA (Sun et al. 2024): `A` frozen and shared, so the mean of the `B` deltas is the exact mean
    of the clients' `dW = dB A`. Mixed ranks are exact too (a rank-`r` client's delta is zero beyond column
    `r`) as long as every column is divided by the total weight; `normalize_rank_columns` gives up that
    exactness for undiluted high-rank columns."""

    kind = Strategy.FFA
    can_rebase = True


class FedITStrategy(MeanStrategy):
    """FedIT (Zhang et al. 2024): vanilla LoRA, `A` and `B` both trained and averaged separately. The product
    of the means is not the mean of the products; the error, `mean(B_i) mean(A_i) - mean(B_i A_i)`, needs
    per-client factors, so under encryption nobody can observe it (`protocol.ffa.fedit_mismatch` computes it
    where they are visible, as in the simulation). The baseline the other strategies improve on."""

    kind = Strategy.FEDIT
    trains_a = True


class FedRotStrategy(MeanStrategy):
    """FedRot-LoRA (Zhang, Kim, Cha, Vikalo 2026): both factors trained; before encrypting, each client
    rotates its factors toward the broadcast global ones (`protocol.fedrot.align`: an orthogonal Procrustes
    rotation that leaves its `B A` unchanged), so factor averaging interferes less. The cloud's rule stays a
    plain mean, which is what lets it run under additive encryption."""

    kind = Strategy.FEDROT
    trains_a = True

    def prepare_delta(
        self, model: TrainedModel, delta: np.ndarray, *, global_vector: np.ndarray, round_index: int
    ) -> np.ndarray:
        """Rotate the trained factors toward the global ones, then take the delta again (`B A` unchanged)."""
        model.align_to(global_vector, round_index=round_index)
        return model.delta_from(global_vector)


_STRATEGIES: dict[Strategy, type[AggregationStrategy]] = {
    Strategy.FFA: FFAStrategy,
    Strategy.FEDIT: FedITStrategy,
    Strategy.FEDROT: FedRotStrategy,
    Strategy.CLAIR: ClairStrategy,
}


def strategy_class(kind: Strategy) -> type[AggregationStrategy]:
    """The class behind a spec's `strategy`: its rule, its client-side hook and its constraints."""
    return _STRATEGIES[kind]


def strategy_for(spec: FederationSpec) -> AggregationStrategy:
    """The strategy a federation aggregates with (the spec's validator has refused impossible ones)."""
    return _STRATEGIES[spec.strategy].from_spec(spec)
