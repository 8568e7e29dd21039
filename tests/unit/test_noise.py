"""Noise draws and shares: many draws have the target standard deviation; shares add up to the target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlora.seeded_sampler import SeededSampler
from protocol.crypto.params import CKKSParams, PaillierParams, PlainParams
from protocol.distributions import Distribution
from protocol.messages import (
    CentralDPConfig,
    FederationSpec,
    NoiseMechanism,
    NoiseSchedule,
    RoundPlan,
    Weighting,
    schedule_multiplier,
)
from protocol.noise import NoiseError, add_share, clip, distribution_for, draw, share_for
from protocol.sensitivity import lattice_sensitivities, upload_sensitivity

N = 200_000  # draws per check: the sample std is then within ~0.5% of the true one (3 sigma)


@pytest.mark.parametrize("mechanism", list(Distribution))
def test_many_draws_have_the_target_standard_deviation(mechanism: Distribution) -> None:
    sampler = SeededSampler(np.random.default_rng(7))
    std, step = 0.3, 0.3 / 50
    noise = draw(mechanism, std=std, size=N, sampler=sampler, step=step)
    assert np.std(noise) == pytest.approx(std, rel=0.01)
    assert abs(np.mean(noise)) < 4 * std / math.sqrt(N)
    if mechanism is Distribution.LAPLACE:
        # A Laplace distribution of scale b has mean absolute value b = std / sqrt(2).
        assert np.mean(np.abs(noise)) == pytest.approx(std / math.sqrt(2), rel=0.01)
    assert np.allclose(noise / step, np.rint(noise / step))  # every distribution: on the lattice


@pytest.mark.parametrize(
    "he", [CKKSParams(), PaillierParams(clip=8.0)], ids=["ckks-gaussian", "paillier-skellam"]
)
def test_the_shares_of_all_planned_clients_add_up_to_z_c(he) -> None:
    dp = CentralDPConfig(noise_multiplier=1.5, clip_norm=0.5, distributed=True)
    share = share_for(dp, he, multiplier=1.5, planned_clients=5)
    assert share.mechanism == ("skellam" if isinstance(he, PaillierParams) else "gaussian")
    sampler = SeededSampler(np.random.default_rng(11))
    step = he.noise_step
    total = sum(draw(share.mechanism, std=share.std, size=N, sampler=sampler, step=step) for _ in range(5))
    assert np.std(total) == pytest.approx(1.5 * 0.5, rel=0.01)


def test_each_scheme_says_what_noise_added_before_encryption_must_be() -> None:
    # Packed Paillier with 6 quantisation bits and clip 3: the largest code is 2^5 - 1 = 31, a step 3 / 31.
    paillier = PaillierParams(clip=3.0, quant_bits=6)
    assert paillier.lattice_step == pytest.approx(3.0 / 31)
    assert paillier.value_bound == 3.0
    assert paillier.noise_distribution(distributed=True) is Distribution.SKELLAM
    assert paillier.noise_distribution(distributed=False) is None  # the cloud's own draw, after decrypting
    for real in (CKKSParams(), PlainParams()):
        assert real.lattice_step is None and real.value_bound is None
        assert real.noise_distribution(distributed=True) is None
        assert real.noise_distribution(distributed=False) is None


@pytest.mark.parametrize(
    ("mechanism", "he", "distributed", "expected"),
    [
        (NoiseMechanism.GAUSSIAN, CKKSParams(), True, Distribution.GAUSSIAN),
        (NoiseMechanism.GAUSSIAN, PaillierParams(), True, Distribution.SKELLAM),
        (NoiseMechanism.GAUSSIAN, PaillierParams(), False, Distribution.GAUSSIAN),
        (NoiseMechanism.LAPLACE, PaillierParams(), False, Distribution.LAPLACE),
        (NoiseMechanism.LAPLACE, PlainParams(), False, Distribution.LAPLACE),
    ],
)
def test_the_drawn_distribution_is_the_schemes_requirement_or_the_mechanisms_own(
    mechanism: NoiseMechanism, he, distributed: bool, expected: Distribution
) -> None:
    assert distribution_for(mechanism, he, distributed=distributed) is expected


def test_mechanism_none_has_no_distribution() -> None:
    with pytest.raises(NoiseError, match="mechanism 'none' draws no noise"):
        distribution_for(NoiseMechanism.NONE, CKKSParams(), distributed=False)


def test_the_distributions_keep_their_wire_values() -> None:
    assert [d.value for d in Distribution] == ["gaussian", "laplace", "skellam"]
    share = share_for(
        CentralDPConfig(noise_multiplier=1.0, distributed=True),
        PaillierParams(clip=64.0),
        multiplier=1.0,
        planned_clients=4,
    )
    assert '"mechanism":"skellam"' in share.model_dump_json()


def test_a_dropout_margin_sizes_shares_for_fewer_clients() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0, clip_norm=1.0, distributed=True, dropout_margin=0.25)
    share = share_for(dp, CKKSParams(), multiplier=1.0, planned_clients=8)
    assert share.clients == 6  # floor(8 * 0.75)
    assert share.std == pytest.approx(1 / math.sqrt(6))
    # Two of eight may drop and the six left still carry the whole target variance.
    assert 6 * share.std**2 == pytest.approx(1.0)


def test_a_paillier_share_outside_the_fixed_point_range_is_refused_not_clipped() -> None:
    he = PaillierParams(clip=1.0)
    share = share_for(
        CentralDPConfig(noise_multiplier=5.0, distributed=True), he, multiplier=5.0, planned_clients=2
    )
    with pytest.raises(NoiseError, match=r"outside he.clip 1.0"):
        add_share(np.zeros(1000), share, he, sampler=SeededSampler(np.random.default_rng(0)))


def test_a_spec_without_room_for_skellam_shares_names_he_clip() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0, clip_norm=1.0, distributed=True)
    with pytest.raises(ValueError, match=r"he.clip 1.0 leaves no room"):
        FederationSpec(federation_id="f", he=PaillierParams(clip=1.0), central_dp=dp)
    # C + 8 * z C / sqrt(k): 1 + 8 / sqrt(2) = 6.66
    FederationSpec(federation_id="f", he=PaillierParams(clip=6.7), central_dp=dp)


def test_skellam_sensitivity_bounds_the_rounded_vector() -> None:
    rng = np.random.default_rng(3)
    he = PaillierParams(quant_bits=9, clip=2.55)  # step 0.01
    clip_norm, size = 1.0, 400
    # One upload rounded to the Paillier lattice, in steps: ||q||_2 <= (C + sqrt(d) e) / step.
    reach = upload_sensitivity(he, clip_norm=clip_norm, size=size, ord=2)
    l1, l2 = lattice_sensitivities(l2=reach / he.step, size=size)
    for _ in range(200):
        x = clip(rng.normal(0, 1, size), max_norm=clip_norm)
        q = np.rint(x / he.step)
        assert np.linalg.norm(q) <= l2 and np.abs(q).sum() <= l1


def test_l1_clip_for_laplace_and_capped_weights() -> None:
    v = np.array([3.0, -4.0])
    assert np.abs(clip(v, max_norm=1.0, ord=1)).sum() == pytest.approx(1.0)
    plan = RoundPlan.model_validate(
        {
            "federation_id": "f",
            "round": 0,
            "adapter_version": 0,
            "basis_version": 0,
            "deadline": "2026-01-01T00:00:00Z",
            "client_ranks": {"a": 1},
            "clip_norm": 1.0,
            "weighting": Weighting.CAPPED_EXAMPLES,
            "weight_cap": 500,
        }
    )
    assert [plan.weight_for(n) for n in (50, 500, 5000)] == [0.1, 1.0, 1.0]


def test_the_loose_to_strict_schedule_ramps_around_its_mean() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0, schedule=NoiseSchedule.LOOSE_TO_STRICT)
    assert [schedule_multiplier(dp, round_index=t, rounds=3) for t in range(3)] == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epsilon_budget": 5.0}, "epsilon_budget 5.0 needs central noise"),
        ({"noise_multiplier": 1.0, "mechanism": "laplace", "accountant": "prv"}, "Gaussian mechanism only"),
        ({"noise_multiplier": 1.0, "mechanism": "laplace", "distributed": True}, "cannot be split"),
    ],
)
def test_central_dp_configs_that_cannot_work_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CentralDPConfig.model_validate(overrides)


def test_distributed_noise_needs_encryption() -> None:
    with pytest.raises(ValueError, match="protects only an encrypted sum"):
        FederationSpec.model_validate(
            {
                "federation_id": "f",
                "he": {"kind": "none"},
                "central_dp": {"noise_multiplier": 1, "distributed": True},
            }
        )
