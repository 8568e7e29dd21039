"""A strategy's seams: the constraints the spec validator reads from it, and its client-side hook.

The validator must follow the strategy class, not its name: a constraint switched on a strategy that has
none today refuses that strategy's spec, with the strategy named in the message.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from protocol.crypto.params import CKKSParams, PlainParams
from protocol.messages import (
    CentralDPConfig,
    ConvergenceConfig,
    FederationSpec,
    LateUploadConfig,
    RankPolicy,
    Strategy,
)
from protocol.strategies import (
    AggregationStrategy,
    ClairStrategy,
    FedITStrategy,
    FedRotStrategy,
    FFAStrategy,
    strategy_class,
    strategy_for,
)


def test_every_strategy_name_has_a_class_of_that_kind() -> None:
    assert {kind: strategy_class(kind) for kind in Strategy} == {
        Strategy.FFA: FFAStrategy,
        Strategy.FEDIT: FedITStrategy,
        Strategy.FEDROT: FedRotStrategy,
        Strategy.CLAIR: ClairStrategy,
    }
    assert all(strategy_class(kind).kind is kind for kind in Strategy)


def test_only_clair_states_constraints_on_the_spec() -> None:
    constraints = {
        kind: (cls.requires_plaintext, cls.allows_central_noise, cls.allows_late_uploads)
        for kind in Strategy
        for cls in [strategy_class(kind)]
    }
    assert constraints == {
        Strategy.FFA: (False, True, True),
        Strategy.FEDIT: (False, True, True),
        Strategy.FEDROT: (False, True, True),
        Strategy.CLAIR: (True, False, False),
    }


def test_the_validator_reads_requires_plaintext_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: FedIT runs under CKKS today.
    FederationSpec(federation_id="f", strategy=Strategy.FEDIT, he=CKKSParams())
    # Execute: FedIT now says it needs plaintext.
    monkeypatch.setattr(FedITStrategy, "requires_plaintext", True)
    # Assert
    with pytest.raises(ValidationError, match="strategy 'fedit' needs per-client plaintext updates"):
        FederationSpec(federation_id="f", strategy=Strategy.FEDIT, he=CKKSParams())
    FederationSpec(federation_id="f", strategy=Strategy.FEDIT, he=PlainParams())


def test_the_validator_reads_allows_central_noise_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    noisy = CentralDPConfig(noise_multiplier=1.0)
    FederationSpec(federation_id="f", strategy=Strategy.FFA, central_dp=noisy)
    monkeypatch.setattr(FFAStrategy, "allows_central_noise", False)
    with pytest.raises(ValidationError, match="strategy 'ffa' aggregates with a robust decomposition"):
        FederationSpec(federation_id="f", strategy=Strategy.FFA, central_dp=noisy)
    FederationSpec(federation_id="f", strategy=Strategy.FFA)  # no noise: accepted


def test_the_validator_reads_allows_late_uploads_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    late, he = LateUploadConfig(), CKKSParams()  # late uploads: a federation that does not mask
    FederationSpec(federation_id="f", strategy=Strategy.FEDROT, late_uploads=late, he=he)
    monkeypatch.setattr(FedRotStrategy, "allows_late_uploads", False)
    with pytest.raises(ValidationError, match="late_uploads with strategy 'fedrot'"):
        FederationSpec(federation_id="f", strategy=Strategy.FEDROT, late_uploads=late, he=he)


def test_clair_accepts_a_plaintext_spec_without_noise_or_late_uploads() -> None:
    spec = FederationSpec(federation_id="f", strategy=Strategy.CLAIR, he=PlainParams())
    assert isinstance(strategy_for(spec), ClairStrategy)


class RecordingModel:
    """A trained model whose `delta_from` after `align_to` is the rotated delta, recording the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int | None]] = []

    def align_to(self, global_vector: np.ndarray, *, round_index: int) -> None:
        self.calls.append(("align_to", float(global_vector[0]), round_index))

    def delta_from(self, global_vector: np.ndarray) -> np.ndarray:
        self.calls.append(("delta_from", float(global_vector[0]), None))
        return np.full(global_vector.shape, 7.0)


@pytest.mark.parametrize("strategy", [FFAStrategy(), FedITStrategy(), ClairStrategy()])
def test_the_default_hook_uploads_the_delta_as_trained(strategy: AggregationStrategy) -> None:
    model, delta = RecordingModel(), np.array([1.0, -2.0, 3.0])
    out = strategy.prepare_delta(model, delta, global_vector=np.zeros(3), round_index=4)
    assert out is delta and model.calls == []


def test_fedrot_aligns_to_the_global_vector_then_takes_the_delta_again() -> None:
    model = RecordingModel()
    out = FedRotStrategy().prepare_delta(model, np.ones(3), global_vector=np.full(3, 0.5), round_index=4)
    assert model.calls == [("align_to", 0.5, 4), ("delta_from", 0.5, None)]
    np.testing.assert_array_equal(out, np.full(3, 7.0))


def test_strategy_for_builds_the_spec_s_strategy_with_its_settings() -> None:
    spec = FederationSpec(federation_id="f", strategy=Strategy.FEDROT, normalize_rank_columns=True)
    strategy = strategy_for(spec)
    assert isinstance(strategy, FedRotStrategy) and strategy.normalize_rank_columns


def test_the_validator_reads_can_rebase_from_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {"rank_policy": RankPolicy(rebase_rank=4), "convergence": ConvergenceConfig(min_delta=0.01)}
    with pytest.raises(ValidationError, match=r"needs strategy 'ffa' .*got 'fedit'"):
        FederationSpec(federation_id="f", strategy=Strategy.FEDIT, **fields)
    monkeypatch.setattr(FedITStrategy, "can_rebase", True)
    FederationSpec(federation_id="f", strategy=Strategy.FEDIT, **fields)
    with pytest.raises(ValidationError, match=r"needs strategy 'ffa' or 'fedit' .*got 'fedrot'"):
        FederationSpec(federation_id="f", strategy=Strategy.FEDROT, **fields)


def test_fedit_and_fedrot_train_a_and_only_ffa_re_bases() -> None:
    assert {kind for kind in Strategy if strategy_class(kind).trains_a} == {Strategy.FEDIT, Strategy.FEDROT}
    assert {kind for kind in Strategy if strategy_class(kind).can_rebase} == {Strategy.FFA}
