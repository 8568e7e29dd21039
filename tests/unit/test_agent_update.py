"""What a hospital uploads: its delta clipped, weighted at most 1, its noise share added, its DP history."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from client_agent.agent import AgentState, ClientAgent, held_out_split
from client_agent.data import Dataset
from client_agent.errors import PlanRefusedError
from client_agent.releases import COUNT_ENTRY
from client_agent.update import contribution
from fedlora.seeded_sampler import SeededSampler
from protocol.crypto import CKKSParams, PaillierParams, generate_scheme
from protocol.ffa import AdapterLayout
from protocol.messages import LocalSpend, NoiseShare, RoundPlan, Weighting
from tests.hospitals import hospital_agent


@pytest.fixture(scope="module")
def scheme():
    return generate_scheme(CKKSParams())


def agent(tmp_path) -> ClientAgent:
    return hospital_agent(tmp_path)


def plan(**overrides) -> RoundPlan:
    values = {
        "federation_id": "onco",
        "round": 3,
        "adapter_version": 3,
        "basis_version": 0,
        "deadline": datetime(2026, 1, 1, tzinfo=UTC),
        "client_ranks": {"hosp-a": 2},
        "clip_norm": 0.5,
    }
    return RoundPlan(**(values | overrides))


def test_the_upload_is_the_clipped_weighted_delta_plus_the_noise_share(tmp_path, scheme) -> None:
    delta = np.random.default_rng(0).normal(0, 1, 500)  # norm ~22, far above the clip
    share = NoiseShare(mechanism="gaussian", std=0.2, clients=4, noise_multiplier=0.8)
    the_plan = plan(noise_share=share, weighting=Weighting.CAPPED_EXAMPLES, weight_cap=400)
    spend = LocalSpend(epsilon=2.5, delta=1e-5, history=((0.9, 0.04, 48),), budget=8.0)

    update = agent(tmp_path).make_update(
        the_plan,
        scheme,
        delta,
        num_examples=100,
        spend=spend,
        sampler=SeededSampler(np.random.default_rng(42)),
    )

    # The share is the seeded sampler's draw in steps of the CKKS noise lattice.
    weight = 100 / 400
    step = scheme.params.noise_step
    share_draw = SeededSampler(np.random.default_rng(42)).discrete_gaussian(sigma=0.2 / step, size=500)
    expected = weight * delta * (0.5 / np.linalg.norm(delta)) + share_draw * step
    decrypted = scheme.decrypt(scheme.deserialize(update.ciphertext, expected_length=500))
    np.testing.assert_allclose(decrypted, expected, atol=1e-6)
    assert update.weight == weight and update.noise_share_std == 0.2
    assert update.local_privacy == spend and update.local_epsilon == 2.5
    assert update.round == 3 and update.rank == 2
    # The plan it trained under travels inside the signed payload, for its edge to compare.
    assert update.plan_sha256 == the_plan.sha256 and the_plan.sha256.encode() in update.signing_payload()


def test_without_distributed_noise_nothing_is_added_and_a_short_delta_is_not_scaled(tmp_path, scheme) -> None:
    delta = np.full(100, 0.01)  # norm 0.1, under the clip
    update = agent(tmp_path).make_update(plan(), scheme, delta, num_examples=5, spend=None)
    decrypted = scheme.decrypt(scheme.deserialize(update.ciphertext, expected_length=100))
    np.testing.assert_allclose(decrypted, delta, atol=1e-6)
    assert update.weight == 1.0 and update.noise_share_std is None and update.local_privacy is None


def test_the_held_out_split_is_the_same_every_round_never_trained_on_and_decided_per_example() -> None:
    data = Dataset(
        texts=[f"note {i}" for i in range(400)],
        labels=[i % 2 for i in range(400)],
        label_names=("a", "b"),
        name="t",
    )
    key = bytes(range(32))
    train, held_out = held_out_split(data, 0.1, key)
    again_train, again_held_out = held_out_split(data, 0.1, key)
    assert held_out is not None and again_held_out is not None
    assert held_out.texts == again_held_out.texts and train.texts == again_train.texts
    assert not set(held_out.texts) & set(train.texts) and len(train) + len(held_out) == 400
    assert 40 - 4 * 6 <= len(held_out) <= 40 + 4 * 6  # Binomial(400, 0.1): mean 40, std 6
    # One example added moves no other example between the parts (what parallel composition needs).
    grown = Dataset([*data.texts, "a new note"], [*data.labels, 1], ("a", "b"), "t")
    grown_train, grown_held_out = held_out_split(grown, 0.1, key)
    assert grown_held_out is not None
    assert set(grown_train.texts) - {"a new note"} == set(train.texts)
    assert set(grown_held_out.texts) - {"a new note"} == set(held_out.texts)
    # Another hospital's key gives another split; no fraction, no split.
    other = held_out_split(data, 0.1, bytes(32 * [7]))[1]
    assert other is not None and other.texts != held_out.texts
    assert held_out_split(data, None, key) == (data, None)


def test_the_count_a_hospital_sends_is_drawn_once_with_noise_and_charged(tmp_path) -> None:
    # Prepare: forty hospitals of 300 examples each.
    counts = []
    for index in range(40):
        hospital = agent(tmp_path / str(index))

        # Execute: the count is asked for twice, as enrolment and every round do.
        first, again = hospital.public_count(300), hospital.public_count(300)

        # Assert: the same draw both times, saved with its charge before anything is sent.
        assert first == again
        saved = AgentState.load(hospital.state_path)
        assert saved.public_examples == first
        assert saved.privacy == [COUNT_ENTRY] and saved.held_out_privacy == [COUNT_ENTRY]
        counts.append(first)
    # Std 10 around 300: 40 exact counts would happen with probability about 1e-56.
    assert counts.count(300) < 10
    assert np.std(counts) == pytest.approx(10.0, rel=0.5)  # 4.5 standard errors of a 40-draw std


def test_a_contribution_clips_in_l1_for_laplace_refuses_what_the_scheme_cannot_hold_and_none_clips_nothing(
    scheme,
) -> None:
    """A coordinate outside the scheme's range is refused, never clamped (issue 20, item 5)."""
    # Prepare: a delta of L1 norm 10 and L2 norm 5.
    delta = np.array([5.0, -5.0, 0.0, 0.0])

    # Execute: clipped in L1 to 2 and weighted by a half; unclipped; too wide for a scheme of range 1.
    l1 = contribution(scheme, delta, weight=0.5, clip_norm=2.0, clip_ord=1)
    unclipped = contribution(scheme, delta, weight=1.0, clip_norm=None)
    narrow = generate_scheme(PaillierParams(clip=1.0))
    with pytest.raises(PlanRefusedError, match="2 coordinates outside") as refused:
        contribution(narrow, delta, weight=1.0, clip_norm=4.0)  # 4 / 5 * delta = (4, -4): past 1

    # Assert: worked out by hand.
    np.testing.assert_allclose(l1, [0.5, -0.5, 0.0, 0.0])
    np.testing.assert_allclose(unclipped, delta)
    assert refused.value.field == "delta"


def test_columns_the_plan_holds_back_are_zeroed_before_clipping_and_encrypting(tmp_path, scheme) -> None:
    """The cloud must not decrypt a column fewer than `k` planned hospitals reach: a hospital zeroes the
    columns of B from the plan's published rank on before anything else, so its clip norm is spent on what
    is published and the rest encrypts to zero."""
    # Prepare: one module with 3 outputs at r_max 2 (B row-major, column 1 at odd positions) and a head of 2.
    layout = AdapterLayout.build(lora_out_features={"m": 3}, r_max=2, head_shapes={"head": (2,)})
    delta = np.array([3.0, 10.0, 0.0, 10.0, 0.0, 10.0, 4.0, 0.0])
    the_plan = plan(published_rank=1, clip_norm=2.5)

    # Execute
    update = agent(tmp_path).make_update(the_plan, scheme, delta, num_examples=5, spend=None, layout=layout)

    # Assert: column 1 zeroed, then (3, 0, 0, 0, 0, 0, 4, 0) of norm 5 clipped to 2.5.
    decrypted = scheme.decrypt(scheme.deserialize(update.ciphertext, expected_length=8))
    np.testing.assert_allclose(decrypted, [1.5, 0, 0, 0, 0, 0, 2.0, 0], atol=1e-6)
    unpublished = agent(tmp_path / "r2").make_update(
        plan(published_rank=2, clip_norm=100.0), scheme, delta, num_examples=5, spend=None, layout=layout
    )
    np.testing.assert_allclose(
        scheme.decrypt(scheme.deserialize(unpublished.ciphertext, expected_length=8)), delta, atol=1e-5
    )
    with pytest.raises(ValueError, match="layout"):
        agent(tmp_path / "none").make_update(the_plan, scheme, delta, num_examples=5, spend=None)
