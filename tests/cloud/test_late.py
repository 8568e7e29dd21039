"""Late uploads at the cloud: each staleness is decrypted on its own and weighted by decay ** s, the ledger
counts a hospital released both in time and late with sensitivity (1 + decay ** s) C."""

from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from protocol.messages import CentralDPConfig, LateUploadConfig, NoiseMechanism, PrivacyReport
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec
from tests.cloud.test_metrics import parse

pytestmark = pytest.mark.anyio

TOPOLOGY = {"edge-1": ("client-a", "client-b", "client-c", "client-d"), "edge-2": ("client-e", "client-f")}
DECAY = 0.5


def deltas_for(rng: np.random.Generator, ids: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ids}


async def in_time(cloud, fed: Federation, round_: int, rng: np.random.Generator) -> None:
    """Round `round_`'s sums, accepted: a and b at edge-1, e and f at edge-2 (c and d upload late, if at all)."""
    for edge_id, ids in {"edge-1": ("client-a", "client-b"), "edge-2": ("client-e", "client-f")}.items():
        body = await fed.aggregate(cloud, edge_id, round_, deltas_for(rng, ids))
        assert (await fed.post(cloud.http, body)).status_code == 202


def by_reason(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> dict[str, float]:
    """The samples of `name` with these labels, by their `reason`."""
    return {
        dict(sample_labels)["reason"]: v
        for (n, sample_labels), v in samples.items()
        if n == name and labels.items() <= dict(sample_labels).items()
    }


def google(multipliers: list[float], delta: float = 1e-5) -> float:
    """Epsilon of Gaussian rounds of these multipliers, by dp_accounting's RDP accountant."""
    accountant = rdp.RdpAccountant()
    for m in multipliers:
        accountant.compose(dp_event.GaussianDpEvent(m))
    return float(accountant.get_epsilon(delta))


async def test_a_late_bucket_is_weighted_by_decay_to_the_staleness_after_decryption() -> None:
    # Prepare: round 0 closes with a, b (edge-1) and e, f (edge-2); c and d upload for round 0 too late
    # and their bucket rides on edge-1's round-1 aggregate.
    rng = np.random.default_rng(5)
    spec = small_spec(rounds=3, late_uploads=LateUploadConfig(max_staleness=2, decay=DECAY))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, TOPOLOGY)
        await fed.start(cloud.http)
        r0 = {
            "edge-1": deltas_for(rng, ("client-a", "client-b")),
            "edge-2": deltas_for(rng, ("client-e", "client-f")),
        }
        for edge_id, d in r0.items():
            assert (await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, d))).status_code == 202
        v1 = await cloud.vector(fed.fid, 1)
        r1 = {
            "edge-1": deltas_for(rng, ("client-a", "client-b")),
            "edge-2": deltas_for(rng, ("client-e", "client-f")),
        }
        late = deltas_for(rng, ("client-c", "client-d"))

        # Execute
        with_late = await fed.aggregate(cloud, "edge-1", 1, r1["edge-1"], late={0: late})
        assert (await fed.post(cloud.http, with_late)).status_code == 202
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 1, r1["edge-2"]))
        ).status_code == 202
        v2 = await cloud.vector(fed.fid, 2)
        status = await cloud.status(fed.fid, 1)

    # Assert: the mean of 4 fresh updates and 2 late ones at weight 0.5 each, worked out here in numpy.
    fresh = sum(d for edge in r1.values() for d in edge.values())
    expected = (fresh + DECAY * sum(late.values())) / (4 + DECAY * 2)
    np.testing.assert_allclose(v2 - v1, expected, atol=1e-6)
    assert status.late_contributions == 2 and status.total_weight == pytest.approx(5.0)
    assert status.metrics["late_contributions"] == 2


async def test_a_hospital_in_time_and_late_doubles_its_reach_in_the_ledger() -> None:
    # Prepare: Gaussian central noise z; client-c is late for round 0 and in time for round 1, so one
    # hospital can move round 1's sum by (1 + DECAY) C.
    z, delta = 2.0, 1e-5
    rng = np.random.default_rng(6)
    dp = CentralDPConfig(mechanism=NoiseMechanism.GAUSSIAN, noise_multiplier=z, clip_norm=1.0, delta=delta)
    spec = small_spec(rounds=3, central_dp=dp, late_uploads=LateUploadConfig(max_staleness=1, decay=DECAY))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, TOPOLOGY)
        await fed.start(cloud.http)
        await in_time(cloud, fed, 0, rng)

        # Execute
        fresh = deltas_for(rng, ("client-a", "client-b", "client-c"))
        late = deltas_for(rng, ("client-c", "client-d"))
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 1, fresh, late={0: late}))
        ).status_code == 202
        other = await fed.aggregate(cloud, "edge-2", 1, deltas_for(rng, ("client-e", "client-f")))
        assert (await fed.post(cloud.http, other)).status_code == 202
        response = await cloud.http.get(f"/federations/{fed.fid}/privacy")
        report = PrivacyReport.model_validate_json(response.content)

    # Assert: round 0 at z, round 1 at z / 1.5, composed by Google's accountant. CKKS's encoding may move
    # each of an upload's d coordinates by 2^(18 - 40), so each upload reaches C (1 + sqrt(d) 2^-22).
    reach = 1.0 + np.sqrt(LAYOUT_SIZE) * 2.0**-22
    first, second = report.central_rounds
    assert (first.sensitivity, second.sensitivity) == (
        pytest.approx(reach),
        pytest.approx((1.0 + DECAY) * reach),
    )
    assert second.realised_noise_multiplier == pytest.approx(z / ((1.0 + DECAY) * reach))
    accountant = rdp.RdpAccountant(orders=list(range(2, 257)))
    accountant.compose(dp_event.GaussianDpEvent(z / reach))
    accountant.compose(dp_event.GaussianDpEvent(z / ((1.0 + DECAY) * reach)))
    assert second.epsilon_after == pytest.approx(accountant.get_epsilon(delta), rel=0.01)


async def test_late_buckets_are_refused_when_not_allowed_too_late_or_counted_twice() -> None:
    rng = np.random.default_rng(7)
    async with running_cloud() as cloud:
        off = await Federation.create(cloud.http, small_spec("fed-off", rounds=3), TOPOLOGY)
        on = await Federation.create(
            cloud.http,
            small_spec("fed-on", rounds=4, late_uploads=LateUploadConfig(max_staleness=1)),
            TOPOLOGY,
        )
        for fed in (off, on):
            await fed.start(cloud.http)
            for edge_id, ids in {
                "edge-1": ("client-a", "client-b"),
                "edge-2": ("client-e", "client-f"),
            }.items():
                assert (
                    await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas_for(rng, ids)))
                ).status_code == 202
        fresh = deltas_for(rng, ("client-a", "client-b"))

        # Execute
        not_allowed = await off.post(
            cloud.http,
            await off.aggregate(
                cloud, "edge-1", 1, fresh, late={0: deltas_for(rng, ("client-c", "client-d"))}
            ),
        )
        twice = await on.post(
            cloud.http,
            await on.aggregate(
                cloud, "edge-1", 1, fresh, late={0: deltas_for(rng, ("client-a", "client-c"))}
            ),
        )
        too_few = await on.post(
            cloud.http,
            await on.aggregate(cloud, "edge-1", 1, fresh, late={0: deltas_for(rng, ("client-c",))}),
        )
        # Close round 1 and open round 2; then a bucket of round 0 is two rounds late.
        await in_time(cloud, on, 1, rng)
        too_late = await on.post(
            cloud.http,
            await on.aggregate(
                cloud, "edge-1", 2, fresh, late={0: deltas_for(rng, ("client-c", "client-d"))}
            ),
        )

    # Assert
    assert not_allowed.status_code == 422 and not_allowed.json()["field"] == "late.0"
    assert twice.status_code == 409 and twice.json()["code"] == "duplicate_upload"
    assert "client-a" in twice.json()["message"] and twice.json()["field"] == "late.0.contributions"
    assert too_few.status_code == 422 and too_few.json()["code"] == "too_few_clients"
    assert too_few.json()["field"] == "late.0.contributions"
    assert too_late.status_code == 422 and too_late.json()["field"] == "late.0.origin_round"


def test_the_spec_refuses_late_uploads_with_distributed_noise_or_clair() -> None:
    from pydantic import ValidationError

    from protocol.crypto import CKKSParams, PlainParams
    from protocol.messages import FederationSpec, Strategy

    late = LateUploadConfig()
    with pytest.raises(ValidationError, match=r"late_uploads with central_dp\.distributed"):
        FederationSpec(
            federation_id="f-1",
            he=CKKSParams(),  # a federation that does not mask (masking refuses late uploads first)
            central_dp=CentralDPConfig(noise_multiplier=1.0, distributed=True),
            late_uploads=late,
        )
    with pytest.raises(ValidationError, match="late_uploads with strategy 'clair'"):
        FederationSpec(federation_id="f-1", strategy=Strategy.CLAIR, he=PlainParams(), late_uploads=late)


async def test_with_late_uploads_the_budget_is_a_cap_the_ledger_never_passes() -> None:
    # Prepare: z = 2. Two rounds at sensitivity C spend 3.189 (dp_accounting), so a budget of 3.189 looks
    # like it allows round 1; but round 1 can fold in a late upload of a hospital that is also fresh in
    # it, which charges it at (1 + DECAY) C and would bring the spend to 4.199.
    z, delta = 2.0, 1e-5

    budget = 3.189
    assert google([z, z]) == pytest.approx(budget, abs=5e-4)
    assert google([z, z / (1 + DECAY)]) == pytest.approx(4.199, abs=1e-3)
    rng = np.random.default_rng(8)
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=1.0, delta=delta, epsilon_budget=budget)
    spec = small_spec(rounds=3, central_dp=dp, late_uploads=LateUploadConfig(max_staleness=1, decay=DECAY))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, TOPOLOGY)
        await fed.start(cloud.http)
        await in_time(cloud, fed, 0, rng)

        # Execute: client-c late for round 0 and in time for round 1, if round 1 is still open.
        fresh = deltas_for(rng, ("client-a", "client-b", "client-c"))
        late = deltas_for(rng, ("client-c", "client-d"))
        with_late = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 1, fresh, late={0: late}))
        other = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-2", 1, deltas_for(rng, ("client-e", "client-f")))
        )
        info = (await cloud.http.get(f"/federations/{fed.fid}")).json()
        report = PrivacyReport.model_validate_json(
            (await cloud.http.get(f"/federations/{fed.fid}/privacy")).content
        )

    # Assert: the federation stopped within its budget, before the round that could have overspent it.
    assert {with_late.status_code, other.status_code} <= {202, 410}
    assert info["state"] == "budget_exhausted"
    assert report.central_epsilon is not None and report.central_epsilon <= budget
    assert "late" in info["reason"]


async def test_a_round_whose_late_uploads_would_pass_the_budget_is_not_decrypted() -> None:
    # Prepare: late uploads up to two rounds late. After round 0 the projection of round 1 (round number 1:
    # a hospital can be fresh and one round late, (1 + 0.5) C) fits the budget; round 1 then fails, and
    # round 2 can hold a hospital fresh, one and two rounds late: (1 + 0.5 + 0.25) C, which does not fit.
    z, delta = 2.0, 1e-5

    budget = (google([z, z / 1.5]) + google([z, z / 1.75])) / 2
    rng = np.random.default_rng(9)
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=1.0, delta=delta, epsilon_budget=budget)
    spec = small_spec(rounds=4, central_dp=dp, late_uploads=LateUploadConfig(max_staleness=2, decay=DECAY))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, TOPOLOGY)
        await fed.start(cloud.http)
        await in_time(cloud, fed, 0, rng)
        cloud.clock.advance(600)
        await cloud.tick()  # round 1: no edge forwards, it fails and round 2 opens
        assert (await cloud.status(fed.fid, 1)).state.value == "failed"

        # Execute: client-c fresh in round 2 and late for rounds 1 and 0.
        late = {0: deltas_for(rng, ("client-c", "client-d")), 1: deltas_for(rng, ("client-c", "client-d"))}
        fresh = deltas_for(rng, ("client-a", "client-b", "client-c"))
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 2, fresh, late=late))
        ).status_code == 202
        other = await fed.aggregate(cloud, "edge-2", 2, deltas_for(rng, ("client-e", "client-f")))
        assert (await fed.post(cloud.http, other)).status_code == 202
        info = (await cloud.http.get(f"/federations/{fed.fid}")).json()
        status = await cloud.status(fed.fid, 2)
        report = PrivacyReport.model_validate_json(
            (await cloud.http.get(f"/federations/{fed.fid}/privacy")).content
        )
        metrics = (await cloud.http.get("/metrics", headers={"Authorization": ""})).text

    # Assert: round 2 was never decrypted; the ledger holds round 0 alone, within the budget.
    assert info["state"] == "budget_exhausted" and info["adapter_version"] == 1
    assert status.state.value == "failed" and "not decrypted" in (status.failure or "")
    # The two aggregates were acknowledged (202) and reach no model: 3 + 4 late at edge-1, 2 at edge-2.
    assert status.uploads_dropped == {"round_failed": 9}
    dropped = by_reason(parse(metrics), "fedlora_uploads_dropped_total", service="cloud", federation=fed.fid)
    assert dropped == {"round_failed": 9.0}
    assert f"{budget:g}" in info["reason"]
    assert len(report.central_rounds) == 1
    assert report.central_epsilon is not None and report.central_epsilon <= budget
