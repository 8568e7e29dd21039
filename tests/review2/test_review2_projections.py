"""Review 2: projections the ledger reports (and the budget checks use) that are below what the rounds
then really spend.

`planned_epsilons` composes `scheduled_event` for every planned round but skips a round whose event is None,
and None is what `scheduled_event` answers when nothing bounds the round (the noise a hospital or the
colluders know is all of it). An unbounded round is thereby counted as free: `planned_epsilon` reports 0,
and `check_budget` (which reads the same projection) accepts any budget at creation.

The decryptor projection without a plan (before round 0, and once the federation ended) takes
`shares_planned = shares_for(k)`: k shares in all, of which the smallest sum holds k, so the cloud is
assumed to see the whole target noise. With more hospitals each share is smaller and an edge sum of k of
them carries less: the projection is the *least* conservative choice for that column.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.messages import CentralDPConfig, PrivacyReport
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec
from tests.review2.test_review2_failed_rounds import CKKS_SLACK, DELTA, clipped, gaussian_epsilon, privacy

pytestmark = pytest.mark.anyio


async def test_planned_epsilon_counts_an_unbounded_scheduled_round_as_free() -> None:
    """Distributed shares, k = 2, dropout_margin 0.5, 3 hospitals behind one edge: each round plans
    floor(3 x 0.5) = 1 share (std z C), and all three arrive. Round 0 really spends a public epsilon of
    eps(z sqrt(2)) (released sqrt(3) z C less the share a hospital knows). GET /privacy reports
    planned_epsilon, "all planned rounds as scheduled, same worst case", as 0.0: the projection with one
    planned share leaves nothing unknown, answers None (unbounded), and `planned_epsilons` skips it."""
    rng = np.random.default_rng(31)
    z, clip = 1.0, 0.5
    dp = CentralDPConfig(
        noise_multiplier=z, clip_norm=clip, distributed=True, dropout_margin=0.5, delta=DELTA
    )
    topology = {"edge-1": ("client-a", "client-b", "client-c")}
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=5), topology)
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None and plan.noise_share.clients == 1
        share = plan.noise_share.std
        ids = topology["edge-1"]
        deltas = {c: clipped(rng, clip) for c in ids}
        body = await fed.aggregate(
            cloud,
            "edge-1",
            0,
            deltas,
            ciphertext=fed.encrypt_sum([d + rng.normal(0.0, share, LAYOUT_SIZE) for d in deltas.values()]),
            noise_share_std=share,
        )
        assert (await fed.post(cloud.http, body)).status_code == 202
        report = await privacy(cloud, fed.fid)

    spent = gaussian_epsilon([z * math.sqrt(2) / (1 + CKKS_SLACK / clip)])
    assert report.central_epsilon == pytest.approx(spent, rel=1e-3)
    assert report.planned_epsilon is not None
    assert report.planned_epsilon >= report.central_epsilon, (
        f"planned_epsilon {report.planned_epsilon} for 5 rounds, below the {report.central_epsilon:.3f} "
        "that the first round already spent"
    )


async def test_a_budget_no_round_can_meet_is_accepted_at_creation_when_the_projection_is_unbounded() -> None:
    """docs/privacy.md, Budget: "At creation, a spec whose first round alone exceeds the budget is refused".
    With k = 2 and dropout_margin 0.5 (or colluding_clients >= k), the first round's projection is None
    (unbounded) and counted as 0, so a budget of 0.001 is accepted; hospitals then train and upload round
    0, which the check before decryption refuses."""
    dp = CentralDPConfig(
        noise_multiplier=1.0, distributed=True, dropout_margin=0.5, delta=DELTA, epsilon_budget=0.001
    )
    async with running_cloud() as cloud:
        response = await cloud.http.post(
            "/federations", json=small_spec(central_dp=dp, rounds=5).model_dump(mode="json")
        )
    assert response.status_code == 422, (
        f"{response.status_code}: a budget of 0.001 accepted; no distributed round at z = 1 meets it"
    )


async def test_decryptor_next_round_epsilon_before_round_0_assumes_only_k_shares() -> None:
    """Distributed shares, z = 2, C = 0.5, k = 2, edges of 2 and 3 hospitals (5 planned shares). Before
    start, GET /privacy projects the next round against the decrypting cloud with k = 2 shares in all, so
    the smallest sum holds all of the noise: eps(z) = 2.17. Round 0 then runs as planned and the column
    against the cloud is eps(z sqrt(2/5)) = 3.62."""
    rng = np.random.default_rng(32)
    z, clip = 2.0, 0.5
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA)
    topology = {"edge-1": ("client-a", "client-b"), "edge-2": ("client-c", "client-d", "client-e")}
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=3), topology)
        before: PrivacyReport = await privacy(cloud, fed.fid)
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None
        share = plan.noise_share.std
        for edge_id, ids in topology.items():
            deltas = {c: clipped(rng, clip) for c in ids}
            body = await fed.aggregate(
                cloud,
                edge_id,
                0,
                deltas,
                ciphertext=fed.encrypt_sum(
                    [d + rng.normal(0.0, share, LAYOUT_SIZE) for d in deltas.values()]
                ),
                noise_share_std=share,
            )
            assert (await fed.post(cloud.http, body)).status_code == 202
        after = await privacy(cloud, fed.fid)

    assert after.decryptor_epsilon is not None and before.decryptor_next_round_epsilon is not None
    assert before.decryptor_next_round_epsilon >= after.decryptor_epsilon * (1 - 1e-9), (
        f"projected {before.decryptor_next_round_epsilon:.3f} for round 0 against the cloud, "
        f"spent {after.decryptor_epsilon:.3f}"
    )
