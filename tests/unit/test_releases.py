"""What a hospital releases about its data: the noisy count, the calibration that leaves room for it, the
noisy held-out loss, and the epsilon of both parts, checked against Google's dp_accounting."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant as GoogleRdp

from client_agent.releases import (
    COUNT_ENTRY,
    COUNT_NOISE_STD,
    PublicCounts,
    ReleaseError,
    appended,
    calibrate,
    epsilon_of,
    noisy_count,
    release_loss,
    validation_entry,
)
from cloud_server.privacy import local_epsilon
from fedlora.seeded_sampler import SeededSampler
from protocol.messages import LocalSpend


def google_epsilon(history, delta: float) -> float:
    """Epsilon of `(sigma, q, steps)` Gaussian releases by dp_accounting's RDP accountant (no shared code)."""
    accountant = GoogleRdp()
    for sigma, rate, steps in history:
        event = dp_accounting.GaussianDpEvent(sigma)
        if rate < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(rate, event)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return accountant.get_epsilon(delta)


def test_the_noisy_count_has_the_documented_spread_and_is_never_below_one() -> None:
    sampler = SeededSampler(np.random.default_rng(0))
    draws = np.array([noisy_count(500, sampler=sampler) for _ in range(4000)])
    assert abs(draws.mean() - 500) < 4 * COUNT_NOISE_STD / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(COUNT_NOISE_STD, rel=0.05)
    assert min(noisy_count(0, sampler=sampler) for _ in range(200)) == 1
    with pytest.raises(ReleaseError, match="cannot be negative"):
        noisy_count(-1)


def test_two_counts_without_a_sampler_come_from_the_csprng() -> None:
    # Forty draws of std 10 around the same value are all equal with probability far below 1e-30.
    assert len({noisy_count(1000) for _ in range(40)}) > 1


@pytest.mark.parametrize(("epsilon", "rate", "steps"), [(8.0, 0.125, 48), (1.0, 0.05, 200), (3.0, 1.0, 3)])
def test_the_calibration_spends_the_budget_after_the_count_release(epsilon, rate, steps) -> None:
    sigma = calibrate(
        epsilon=epsilon, delta=1e-5, accountant="rdp", fixed=(COUNT_ENTRY,), sample_rate=rate, steps=steps
    )
    spent = google_epsilon([COUNT_ENTRY, (sigma, rate, steps)], 1e-5)
    assert spent <= epsilon * 1.01
    assert spent == pytest.approx(epsilon, rel=0.02)
    # A little less noise would overspend: the multiplier is the smallest that fits.
    less = google_epsilon([COUNT_ENTRY, (sigma * 0.98, rate, steps)], 1e-5)
    assert less > epsilon


def test_a_budget_the_fixed_releases_already_exceed_is_refused() -> None:
    heavy = ((0.5, 1.0, 10),)
    with pytest.raises(ReleaseError, match="what is already spent gives"):
        calibrate(epsilon=0.5, delta=1e-5, accountant="rdp", fixed=heavy, sample_rate=0.1, steps=10)


def test_the_released_loss_is_the_clipped_mean_plus_calibrated_noise() -> None:
    sampler = SeededSampler(np.random.default_rng(1))
    losses = np.array([0.2, 0.7, 5.0, np.nan, 1.0])  # 5.0 and nan clip to 3.0
    draws = np.array(
        [
            release_loss(losses, loss_clip=3.0, noise_multiplier=2.0, public_count=5, sampler=sampler)
            for _ in range(20000)
        ]
    )
    clipped_mean = (0.2 + 0.7 + 3.0 + 3.0 + 1.0) / 5
    # Clamped at 0 only far in the lower tail (1.58 is 1.3 std above 0); the mean stays close.
    assert np.median(draws) == pytest.approx(clipped_mean, abs=0.03)
    assert np.percentile(draws, 84) - np.median(draws) == pytest.approx(2.0 * 3.0 / 5, rel=0.05)


def test_parts_and_histories() -> None:
    assert PublicCounts.derive(1000, 0.1) == PublicCounts(1000, 900, 100)
    assert PublicCounts.derive(1000, None) == PublicCounts(1000, 1000, None)
    assert appended([COUNT_ENTRY], (1.0, 0.1, 5)) == [COUNT_ENTRY, (1.0, 0.1, 5)]
    assert appended([COUNT_ENTRY, (1.0, 0.1, 5)], (1.0, 0.1, 5)) == [COUNT_ENTRY, (1.0, 0.1, 10)]
    assert epsilon_of([], delta=1e-5, accountant="rdp") == 0.0


def test_the_ledger_takes_the_larger_part_and_agrees_with_dp_accounting() -> None:
    train = (COUNT_ENTRY, (0.9, 0.05, 120))
    held_out = (COUNT_ENTRY, validation_entry(1.5), validation_entry(1.5))
    spend = LocalSpend(
        epsilon=1.0, delta=1e-5, history=train, held_out_history=appended(held_out[:2], held_out[2])
    )
    expected = max(google_epsilon(train, 1e-5), google_epsilon(held_out, 1e-5))
    assert local_epsilon(spend) == pytest.approx(expected, rel=0.01)
    # Without a held-out part, the training part alone.
    alone = LocalSpend(epsilon=1.0, delta=1e-5, history=train)
    assert local_epsilon(alone) == pytest.approx(google_epsilon(train, 1e-5), rel=0.01)
