"""What every aggregation strategy must do (STYLE rule 1: one base test class, one subclass per strategy).

Expected values are worked out by hand: `k` clients at full rank and weight 1 each sending the same delta
`d` sum to `k d`, and any mean of identical updates is `d`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import pytest

from protocol.crypto.params import CKKSParams, PlainParams
from protocol.ffa import AdapterLayout
from protocol.messages import Contribution, FederationSpec, Strategy
from protocol.strategies import (
    AggregationError,
    AggregationStrategy,
    ClairStrategy,
    FedITStrategy,
    FedRotStrategy,
    FFAStrategy,
    RoundSum,
)

R_MAX = 2
LAYOUT = AdapterLayout.build(lora_out_features={"m.0": 3}, r_max=R_MAX, head_shapes={"head": (2,)})


def contributions(count: int) -> list[Contribution]:
    return [
        Contribution(
            client_id=f"client-{i}",
            weight=1.0,
            num_examples=10,
            rank=R_MAX,
            nonce=f"{i:032x}",
            ciphertext_sha256=f"{i:064x}",
        )
        for i in range(count)
    ]


class FixedDeltaModel:
    """A trained model whose delta is `delta` before and after any alignment."""

    def __init__(self, delta: np.ndarray) -> None:
        self.delta = delta

    def align_to(self, global_vector: np.ndarray, *, round_index: int) -> None:
        pass

    def delta_from(self, global_vector: np.ndarray) -> np.ndarray:
        return self.delta


class StrategyContract(ABC):
    kind: ClassVar[Strategy]

    @abstractmethod
    def make_strategy(self) -> AggregationStrategy:
        """The strategy under test (the abstract factory)."""

    def test_the_mean_of_identical_updates_is_that_update(self) -> None:
        # Prepare: three clients at full rank, weight 1, the same delta d.
        previous = np.linspace(-1.0, 1.0, LAYOUT.size)
        d = np.arange(LAYOUT.size, dtype=np.float64) / 10
        round_sum = RoundSum(3 * d, contributions(3), LAYOUT)
        # Execute
        after = self.make_strategy().next_global(previous, round_sum)
        # Assert
        np.testing.assert_allclose(after, previous + d, atol=1e-12)

    def test_a_zero_sum_leaves_the_adapter_unchanged(self) -> None:
        previous = np.linspace(-1.0, 1.0, LAYOUT.size)
        after = self.make_strategy().next_global(
            previous, RoundSum(np.zeros(LAYOUT.size), contributions(2), LAYOUT)
        )
        np.testing.assert_array_equal(after, previous)

    def test_a_sum_of_another_shape_is_refused(self) -> None:
        round_sum = RoundSum(np.zeros(LAYOUT.size + 1), contributions(2), LAYOUT)
        with pytest.raises(AggregationError, match=rf"the sum has shape \({LAYOUT.size + 1},\)"):
            self.make_strategy().next_global(np.zeros(LAYOUT.size), round_sum)

    def test_the_hook_uploads_what_the_model_holds_after_it(self) -> None:
        delta = np.full(LAYOUT.size, 0.5)
        out = self.make_strategy().prepare_delta(
            FixedDeltaModel(delta), delta.copy(), global_vector=np.zeros(LAYOUT.size), round_index=1
        )
        np.testing.assert_array_equal(out, delta)

    def test_a_spec_naming_it_builds_it(self) -> None:
        strategy = self.make_strategy()
        he = PlainParams() if strategy.requires_plaintext else CKKSParams()
        spec = FederationSpec(federation_id="f", strategy=self.kind, he=he)
        built = type(strategy).from_spec(spec)
        assert type(built) is type(strategy) and built.kind is self.kind


class TestFFA(StrategyContract):
    kind = Strategy.FFA

    def make_strategy(self) -> AggregationStrategy:
        return FFAStrategy(normalize_rank_columns=True)


class TestFedIT(StrategyContract):
    kind = Strategy.FEDIT

    def make_strategy(self) -> AggregationStrategy:
        return FedITStrategy()


class TestFedRot(StrategyContract):
    kind = Strategy.FEDROT

    def make_strategy(self) -> AggregationStrategy:
        return FedRotStrategy()


class TestClair(StrategyContract):
    kind = Strategy.CLAIR

    def make_strategy(self) -> AggregationStrategy:
        return ClairStrategy()


def test_every_strategy_has_a_contract_subclass() -> None:
    assert {cls.kind for cls in StrategyContract.__subclasses__()} == set(Strategy)
