"""The privacy ledger over the API: both layers per round and per client, budgets, distributed noise.

Expected epsilons come from libraries that share no code with fedlora: Google's `dp_accounting` for the
client-level layer and Opacus' RDP accountant (what hospitals run) for the example-level layer.
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from protocol.crypto.params import PaillierParams
from protocol.messages import (
    CentralDPConfig,
    FederationInfo,
    FederationState,
    LocalSpend,
    NoiseMechanism,
    NoiseSchedule,
    PrivacyReport,
    RoundPlan,
    RoundState,
)
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio
DELTA = 1e-5


def ckks_reach(clip_norm: float) -> float:
    """One upload's reach in clip norms under CKKS: encoding may move each of the d coordinates by
    2^(18 - 40) (its error bound for one summand), so the L2 norm by sqrt(d) 2^-22."""
    return 1.0 + math.sqrt(LAYOUT_SIZE) * 2.0**-22 / clip_norm


def google_gaussian_epsilon(multipliers: list[float], delta: float = DELTA) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    for z in multipliers:
        accountant.compose(dp_accounting.GaussianDpEvent(z))
    return float(accountant.get_epsilon(delta))


def opacus_epsilon(history: tuple[tuple[float, float, int], ...], delta: float = DELTA) -> float:
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


def spend(history: tuple[tuple[float, float, int], ...]) -> LocalSpend:
    """What a hospital reports: its history and (here) Opacus' epsilon for it."""
    return LocalSpend(epsilon=opacus_epsilon(history), delta=DELTA, history=history, budget=8.0)


async def privacy(cloud, fid: str) -> PrivacyReport:
    response = await cloud.http.get(f"/federations/{fid}/privacy")
    assert response.status_code == 200, response.text
    return PrivacyReport.model_validate_json(response.content)


async def run_round(cloud, fed: Federation, round_: int, rng, *, histories=None, edges=("edge-1", "edge-2")):
    deltas = fed.deltas(rng)
    for edge_id in edges:
        body = await fed.aggregate(cloud, edge_id, round_, deltas[edge_id], local_privacy=histories)
        response = await fed.post(cloud.http, body)
        assert response.status_code == 202, response.text
    return deltas


async def test_the_ledger_shows_both_layers_per_round_and_client_and_agrees_with_independent_accountants() -> (
    None
):
    rng = np.random.default_rng(5)
    dp = CentralDPConfig(noise_multiplier=1.2, schedule=NoiseSchedule.LOOSE_TO_STRICT, delta=DELTA)
    # Each hospital runs 16 DP-SGD steps a round at its own sampling rate (different dataset sizes).
    rates = {"client-a": 1 / 24, "client-b": 1 / 10, "client-c": 1 / 40, "client-d": 1 / 16}
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=3))
        await fed.start(cloud.http)
        zs = [0.6, 1.2, 1.8]  # z / 2 to 3 z / 2
        for t in range(3):
            histories = {cid: spend(((0.9, q, 16 * (t + 1)),)) for cid, q in rates.items()}
            await run_round(cloud, fed, t, rng, histories=histories)
            report = await privacy(cloud, fed.fid)

            assert [r.noise_multiplier for r in report.central_rounds] == pytest.approx(zs[: t + 1])
            for r, expected_z in zip(report.central_rounds, zs, strict=False):
                assert r.realised_noise_multiplier == pytest.approx(expected_z / ckks_reach(1.0))
                assert r.clients == 4 and not r.distributed
            assert report.central_epsilon == pytest.approx(google_gaussian_epsilon(zs[: t + 1]), rel=0.01)
            assert report.central_rounds[-1].epsilon_after == pytest.approx(report.central_epsilon)
            if t < 2:
                assert report.next_round_epsilon == pytest.approx(
                    google_gaussian_epsilon(zs[: t + 2]), rel=0.01
                )
            else:
                assert report.next_round_epsilon is None
        assert report.planned_epsilon == pytest.approx(google_gaussian_epsilon(zs), rel=0.01)
        assert report.state is FederationState.COMPLETED

        assert [c.client_id for c in report.clients] == sorted(rates)
        for client in report.clients:
            assert [r.round for r in client.rounds] == [0, 1, 2]
            for r in client.rounds:
                expected = opacus_epsilon(((0.9, rates[client.client_id], 16 * (r.round + 1)),))
                assert r.local_epsilon == pytest.approx(expected, rel=0.01)
                assert r.reported_epsilon == pytest.approx(expected)
                assert r.steps == 16 * (r.round + 1) and r.noise_multiplier == 0.9
            assert client.local_budget == 8.0
        # More sampling (client-b) spends more.
        by_id = {c.client_id: c.local_epsilon for c in report.clients}
        assert by_id["client-b"] > by_id["client-d"] > by_id["client-a"] > by_id["client-c"]


async def test_a_federation_stops_with_budget_exhausted_when_the_next_round_would_exceed_it() -> None:
    rng = np.random.default_rng(6)
    two, three = google_gaussian_epsilon([1.0] * 2), google_gaussian_epsilon([1.0] * 3)
    budget = (two + three) / 2
    dp = CentralDPConfig(noise_multiplier=1.0, epsilon_budget=budget, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=5))
        await fed.start(cloud.http)
        await run_round(cloud, fed, 0, rng)
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        assert info.state is FederationState.ACTIVE and info.current_round == 1

        await run_round(cloud, fed, 1, rng)

        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        assert info.state is FederationState.BUDGET_EXHAUSTED
        assert "above the budget" in (info.reason or "") and f"{budget:g}" in (info.reason or "")
        assert (await cloud.status(fed.fid, 1)).state is RoundState.CLOSED  # round 1 itself was affordable
        assert info.adapter_version == 2
        report = await privacy(cloud, fed.fid)
        assert report.state is FederationState.BUDGET_EXHAUSTED
        assert len(report.central_rounds) == 2
        assert report.central_epsilon == pytest.approx(two, rel=0.01) and report.central_epsilon <= budget
        assert (
            report.next_round_epsilon == pytest.approx(three, rel=0.01) and report.next_round_epsilon > budget
        )
        # No round 2: clients are told the federation is over, edges' aggregates are refused.
        plan = await cloud.http.get(f"/federations/{fed.fid}/plan", params={"after_round": 1})
        assert plan.status_code == 410 and plan.json()["code"] == "federation_not_active"
        late = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 2, fed.deltas(rng)["edge-1"]))
        assert late.status_code == 410 and late.json()["code"] == "federation_not_active"


async def test_a_budget_the_first_round_already_exceeds_is_refused_at_creation() -> None:
    dp = CentralDPConfig(noise_multiplier=0.5, epsilon_budget=1.0)
    async with running_cloud() as cloud:
        response = await cloud.http.post(
            "/federations", json=small_spec(central_dp=dp).model_dump(mode="json")
        )
        assert response.status_code == 422
        body = response.json()
        assert body["field"] == "central_dp.epsilon_budget"
        assert body["detail"]["first_round_epsilon"] == pytest.approx(
            google_gaussian_epsilon([0.5]), rel=0.01
        )


async def test_with_central_dp_a_weight_above_one_is_refused() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        await fed.start(cloud.http)
        deltas = fed.deltas(np.random.default_rng(0))["edge-1"]
        response = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-1", 0, deltas, weights={"client-a": 3.0})
        )
        assert response.status_code == 422
        assert response.json()["field"] == "contributions.0.weight"


def noisy_sums(
    fed: Federation, plan: RoundPlan, deltas, rng
) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Each client's delta plus its own Gaussian share, and each edge's encrypted sum of them."""
    assert plan.noise_share is not None
    noisy = {
        cid: d + rng.normal(0.0, plan.noise_share.std, d.size)
        for edge in deltas.values()
        for cid, d in edge.items()
    }
    sums = {edge_id: fed.encrypt_sum([noisy[c] for c in edge]) for edge_id, edge in deltas.items()}
    return noisy, sums


async def test_with_distributed_noise_the_cloud_adds_nothing_when_every_share_arrives() -> None:
    rng = np.random.default_rng(8)
    z, clip = 2.0, 0.5
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None and plan.noise_share.mechanism == "gaussian"
        assert plan.noise_share.clients == 4 and plan.noise_share.std == pytest.approx(z * clip / 2)
        deltas = fed.deltas(rng)
        noisy, sums = noisy_sums(fed, plan, deltas, rng)
        for edge_id, edge_deltas in deltas.items():
            body = await fed.aggregate(
                cloud, edge_id, 0, edge_deltas, ciphertext=sums[edge_id], noise_share_std=plan.noise_share.std
            )
            assert (await fed.post(cloud.http, body)).status_code == 202

        # The released mean is exactly the clients' noisy mean (CKKS precision): nothing was added.
        expected = sum(noisy.values()) / 4
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-5
        round_ = (await privacy(cloud, fed.fid)).central_rounds[0]
        assert round_.distributed and round_.shares_planned == 4 and round_.top_up_std == 0.0
        assert round_.realised_noise_multiplier == pytest.approx(z / ckks_reach(clip))
        assert round_.decryptor_noise_multiplier == pytest.approx(z / ckks_reach(clip))
        # Publicly, a participating hospital knows its own share: z sqrt(3 / 4) of the noise is unknown to it.
        public = z * math.sqrt(3 / 4) / ckks_reach(clip)
        assert round_.epsilon_after == pytest.approx(google_gaussian_epsilon([public]), rel=0.01)


async def test_when_clients_drop_out_the_cloud_tops_the_noise_up_and_the_ledger_says_what_it_saw() -> None:
    rng = np.random.default_rng(9)
    z, clip = 2.0, 0.5
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, round_deadline_s=600.0))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None
        deltas = fed.deltas(rng)
        noisy, sums = noisy_sums(fed, plan, deltas, rng)
        body = await fed.aggregate(
            cloud,
            "edge-1",
            0,
            deltas["edge-1"],
            ciphertext=sums["edge-1"],
            noise_share_std=plan.noise_share.std,
        )
        assert (await fed.post(cloud.http, body)).status_code == 202
        cloud.clock.advance(600)
        await cloud.tick()  # edge-2 never forwards: half the shares are missing

        released = await cloud.vector(fed.fid, 1)
        top_up = released * 2 - (noisy["client-a"] + noisy["client-b"])  # the cloud's draw, on the sum
        expected_top_up = z * clip * math.sqrt(2 / 4)
        assert np.std(top_up) == pytest.approx(expected_top_up, rel=0.1)
        round_ = (await privacy(cloud, fed.fid)).central_rounds[0]
        assert round_.clients == 2 and round_.top_up_std == pytest.approx(expected_top_up)
        assert round_.realised_noise_multiplier == pytest.approx(z / ckks_reach(clip))
        assert round_.decryptor_noise_multiplier == pytest.approx(z * math.sqrt(2 / 4) / ckks_reach(clip))


async def test_skellam_shares_under_packed_paillier_are_accounted_with_their_rounding() -> None:
    rng = np.random.default_rng(10)
    z, clip = 1.0, 0.5
    he = PaillierParams(clip=8.0, quant_bits=20)
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, he=he, rounds=1))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None and plan.noise_share.mechanism == "skellam"
        deltas = fed.deltas(rng)  # the shares' values do not change the ledger, their declared std does
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(
                cloud, edge_id, 0, deltas[edge_id], noise_share_std=plan.noise_share.std
            )
            assert (await fed.post(cloud.http, body)).status_code == 202

        epsilon = (await privacy(cloud, fed.fid)).central_epsilon
        # Rounding to the lattice can add sqrt(d) / 2 steps to the sensitivity (d coordinates); the Skellam
        # terms beyond the Gaussian one are ~1e-8 here, so the epsilon is a Gaussian's at the reduced z. A
        # participating hospital knows its own share, one of four: sqrt(3 / 4) of the noise is unknown to it.
        steps_std = z * clip / he.step * math.sqrt(3 / 4)
        sensitivity = clip / he.step + math.sqrt(LAYOUT_SIZE) / 2
        assert epsilon == pytest.approx(google_gaussian_epsilon([steps_std / sensitivity]), rel=0.01)
        assert epsilon > google_gaussian_epsilon([z])


async def test_laplace_noise_under_packed_paillier_is_charged_for_the_rounding_of_each_upload() -> None:
    # Prepare: Laplace noise of scale z C against an L1 clip C, uploads encoded by packed Paillier.
    rng = np.random.default_rng(12)
    z = 2.0
    he = PaillierParams()
    dp = CentralDPConfig(mechanism=NoiseMechanism.LAPLACE, noise_multiplier=z, clip_norm=1.0, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, he=he, rounds=1))
        await fed.start(cloud.http)

        # Execute
        await run_round(cloud, fed, 0, rng)
        report = await privacy(cloud, fed.fid)

    # Assert: rounding to the fixed-point step (clip / (2^15 - 1)) moves each of the d coordinates by up to
    # half a step, so one upload's L1 norm reaches C + d step / 2; Laplace of scale b against an L1
    # sensitivity D is (D / b)-DP (Dwork, McSherry, Nissim, Smith 2006), here below the RDP figure.
    step = 1.0 / (2**15 - 1)
    sensitivity = 1.0 + LAYOUT_SIZE * step / 2
    assert report.central_rounds[0].sensitivity == pytest.approx(sensitivity, rel=1e-9)
    assert report.central_epsilon == pytest.approx(sensitivity / z, rel=1e-9)
    assert report.central_epsilon > 1.02 / z  # what the ledger charged before: 1 / z


@pytest.mark.parametrize("colluding", [0, 1, 2])
async def test_the_ledger_composes_what_the_decrypting_cloud_saw_beside_the_public_figure(
    colluding: int,
) -> None:
    # Prepare: distributed Gaussian shares under CKKS, four hospitals; round 0 all four shares arrive,
    # round 1 edge-2 never forwards (two shares arrive and the cloud tops up the rest).
    rng = np.random.default_rng(13)
    z, clip = 2.0, 0.5
    dp = CentralDPConfig(
        noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA, colluding_clients=colluding
    )
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=3))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None
        std = plan.noise_share.std

        # Execute
        deltas = fed.deltas(rng)
        _, sums = noisy_sums(fed, plan, deltas, rng)
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(
                cloud, edge_id, 0, deltas[edge_id], ciphertext=sums[edge_id], noise_share_std=std
            )
            assert (await fed.post(cloud.http, body)).status_code == 202
        deltas = fed.deltas(rng)
        _, sums = noisy_sums(fed, plan, deltas, rng)
        body = await fed.aggregate(
            cloud, "edge-1", 1, deltas["edge-1"], ciphertext=sums["edge-1"], noise_share_std=std
        )
        assert (await fed.post(cloud.http, body)).status_code == 202
        cloud.clock.advance(600)
        await cloud.tick()
        report = await privacy(cloud, fed.fid)

    # Assert: CKKS can move each coordinate of an upload by 2^-22, so one upload reaches
    # C + sqrt(d) 2^-22 (in clip norms: `reach`). Each share is z C / 2 (four planned). Publicly, the
    # released noise is the full z C (topped up in round 1), less what a participating hospital knows: its
    # own share, or the colluders' (all of them that arrived at most). Against the cloud: it holds each
    # edge's aggregate apart and can decrypt edge-1's alone, two shares, less the colluders' (Kairouz, Liu,
    # Steinke 2021): z sqrt((2 - t) / 4) in both rounds.
    reach = ckks_reach(clip)
    known = [min(max(1, colluding), arrived) for arrived in (4, 2)]
    public = [z * math.sqrt(1 - k / 4) / reach for k in known]
    assert report.central_epsilon == pytest.approx(google_gaussian_epsilon(public), rel=0.01)
    assert report.colluding_clients == colluding and report.budget_against == "public"
    first, second = report.central_rounds
    assert (first.shares_arrived, second.shares_arrived) == (4, 2)
    assert (first.smallest_sum_shares, second.smallest_sum_shares) == (2, 2)
    assert first.share_std == pytest.approx(z * clip / 2) and second.share_std == pytest.approx(z * clip / 2)
    if colluding < 2:
        seen = z * math.sqrt((2 - colluding) / 4) / reach
        expected = google_gaussian_epsilon([seen, seen])
        assert not report.decryptor_unbounded
        assert first.decryptor_epsilon_after == pytest.approx(google_gaussian_epsilon([seen]), rel=0.01)
        assert report.decryptor_epsilon == pytest.approx(expected, rel=0.01)
        assert second.decryptor_epsilon_after == pytest.approx(expected, rel=0.01)
        # Round 2 as planned: the smallest sum an edge may forward holds k = 2 of four shares.
        assert report.decryptor_next_round_epsilon == pytest.approx(
            google_gaussian_epsilon([seen, seen, seen]), rel=0.01
        )
        assert report.decryptor_epsilon > report.central_epsilon
    else:
        # The two colluders know both shares of edge-1's sum: the cloud can see it without noise.
        assert report.decryptor_unbounded
        assert report.decryptor_epsilon is None and second.decryptor_epsilon_after is None
        assert report.decryptor_next_round_epsilon is None


async def test_without_distributed_noise_the_decrypting_cloud_gets_no_client_level_guarantee() -> None:
    rng = np.random.default_rng(14)
    dp = CentralDPConfig(noise_multiplier=1.0, delta=DELTA)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        await fed.start(cloud.http)
        await run_round(cloud, fed, 0, rng)
        response = await cloud.http.get(f"/federations/{fed.fid}/privacy")

    body = response.json()
    assert body["central_epsilon"] > 0
    assert body["decryptor_unbounded"] is True and body["decryptor_epsilon"] is None
    assert body["central_rounds"][0]["decryptor_epsilon_after"] is None
    assert "Infinity" not in response.text and "NaN" not in response.text


async def test_a_budget_against_the_decrypting_cloud_stops_the_federation_before_it_is_passed() -> None:
    # Prepare: the cloud can decrypt one edge's sum alone (two of four shares of z C / 2: z / sqrt(2) per
    # round); the budget allows two such rounds, not three.
    rng = np.random.default_rng(15)
    z, clip = 2.0, 0.5
    seen = z / math.sqrt(2) / ckks_reach(clip)
    budget = (google_gaussian_epsilon([seen] * 2) + google_gaussian_epsilon([seen] * 3)) / 2
    dp = CentralDPConfig(
        noise_multiplier=z,
        clip_norm=clip,
        distributed=True,
        delta=DELTA,
        epsilon_budget=budget,
        budget_against="decrypting_cloud",
    )
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=4))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None
        std = plan.noise_share.std

        # Execute: two rounds in which every share arrives.
        for round_ in (0, 1):
            deltas = fed.deltas(rng)
            _, sums = noisy_sums(fed, plan, deltas, rng)
            for edge_id in ("edge-1", "edge-2"):
                body = await fed.aggregate(
                    cloud, edge_id, round_, deltas[edge_id], ciphertext=sums[edge_id], noise_share_std=std
                )
                assert (await fed.post(cloud.http, body)).status_code == 202
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        report = await privacy(cloud, fed.fid)

    # Assert: the federation ended after round 1, naming the figure the budget caps, under the budget.
    assert info.state is FederationState.BUDGET_EXHAUSTED and info.adapter_version == 2
    assert "decrypting cloud" in (info.reason or "") and f"{budget:g}" in (info.reason or "")
    assert len(report.central_rounds) == 2
    assert report.decryptor_epsilon == pytest.approx(google_gaussian_epsilon([seen] * 2), rel=0.01)
    assert report.decryptor_epsilon is not None and report.decryptor_epsilon <= budget
    assert report.budget_against == "decrypting_cloud"
