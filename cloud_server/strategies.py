"""How a round's decrypted sum becomes the next global adapter: one seam per aggregation rule.

In the spirit of Flower's `Strategy`: an abstract base whose template method (`next_global`) runs the
round's aggregation in fixed steps (the divisor of every coordinate, the mean step, the update rule), and
concrete strategies that fill in the steps. Under encryption the cloud only ever holds the *sum* of the
clients' weighted deltas (noise included), so a strategy works on that sum and the public manifest: who
contributed, at which rank and with which weight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cloud_server.errors import UnprocessableError
from protocol.ffa import AdapterLayout, column_weights
from protocol.messages import Contribution, FederationSpec, Strategy


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
    """One aggregation rule. Subclasses define the per-coordinate divisor and, if needed, the update rule."""

    kind: ClassVar[Strategy]

    def next_global(self, previous: np.ndarray, round_sum: RoundSum) -> np.ndarray:
        """The next global vector (float64): `apply(previous, sum / divisor)`, coordinates that nobody
        could reach (divisor 0) left unchanged."""
        if round_sum.noisy_sum.shape != previous.shape:
            raise ValueError(f"the sum has shape {round_sum.noisy_sum.shape}, the adapter {previous.shape}")
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


class MeanStrategy(AggregationStrategy):
    """The weighted mean of the deltas; with `normalize_rank_columns`, each LoRA column (of `B`) and row (of
    `A`) is averaged over the clients whose rank reaches it."""

    def __init__(self, *, normalize_rank_columns: bool = False) -> None:
        self.normalize_rank_columns = normalize_rank_columns

    def divisor(self, round_sum: RoundSum) -> np.ndarray:
        if self.normalize_rank_columns:
            return column_weights(round_sum.layout, [(c.rank, c.weight) for c in round_sum.contributions])
        return np.full(round_sum.layout.size, round_sum.total_weight)


class FFAStrategy(MeanStrategy):
    """FFA-LoRA (Sun et al. 2024): `A` frozen and shared, so the mean of the `B` deltas is the exact mean
    of the clients' `dW = dB A`. Mixed ranks are exact too: a rank-`r` client's delta is zero beyond column
    `r`."""

    kind = Strategy.FFA


class FedITStrategy(MeanStrategy):
    """FedIT (Zhang et al. 2024): vanilla LoRA, `A` and `B` both trained and averaged separately. The product
    of the means is not the mean of the products; the error, `mean(B_i) mean(A_i) - mean(B_i A_i)`, needs
    per-client factors, so under encryption nobody can observe it (`protocol.ffa.fedit_mismatch` computes it
    where they are visible, as in the simulation). The baseline the other strategies improve on."""

    kind = Strategy.FEDIT


class FedRotStrategy(MeanStrategy):
    """FedRot-LoRA (Zhang, Kim, Cha, Vikalo 2026): both factors trained; before encrypting, each client
    rotates its factors toward the broadcast global ones (`protocol.fedrot.align`: an orthogonal Procrustes
    rotation that leaves its `B A` unchanged), so factor averaging interferes less. The cloud's rule stays a
    plain mean, which is what lets it run under additive encryption."""

    kind = Strategy.FEDROT


_STRATEGIES: dict[Strategy, type[MeanStrategy]] = {
    Strategy.FFA: FFAStrategy,
    Strategy.FEDIT: FedITStrategy,
    Strategy.FEDROT: FedRotStrategy,
}


def strategy_for(spec: FederationSpec) -> AggregationStrategy:
    """The strategy a federation aggregates with; 422 for one this cloud cannot run yet."""
    strategy = _STRATEGIES.get(spec.strategy)
    if strategy is None:
        raise UnprocessableError(
            f"strategy {spec.strategy.value!r} is not served by this cloud yet; use 'ffa', 'fedit' or 'fedrot'",
            field="strategy",
        )
    return strategy(normalize_rank_columns=spec.normalize_rank_columns)
