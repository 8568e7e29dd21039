"""What an edge's 202 to a hospital promises: the update reaches a model, or a visible record says why not
(issue 19). A sum the cloud refuses because it had closed the round (the edge forwarded past the cloud's
deadline, or the round was superseded here) and a late bucket smaller than k are carried into a later round
while the federation takes late uploads; otherwise each upload is counted as dropped, with its reason, in
the round's status at the edge and in `fedlora_uploads_dropped_total`.

The in-memory cloud refuses a forward for a round it has closed as the real one does (409 `round_closed`,
cloud_server/rounds.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.cloud_link import HttpCloudLink
from edge_aggregator.config import EdgeConfig
from protocol.messages import ClientUpdate, EdgeEnrolment, FederationState, LateUploadConfig, RoundState
from services.store import StateStore
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec
from tests.edge.harness import FID, World, alone_late_through_round_one, running_edge, until
from tests.edge.test_metrics import parse, value

pytestmark = pytest.mark.anyio

ATOL = 1e-5
LATE = LateUploadConfig(max_staleness=1, decay=0.5)


def dropped_metric(text: str, reason: str) -> float:
    return value(parse(text), "fedlora_uploads_dropped_total", service="edge", federation=FID, reason=reason)


async def a_and_b_then_the_cloud_closes_round_zero(world: World, edge: Any) -> None:
    """hosp-a and hosp-b upload for round 0 (of 3 hospitals, quorum 1.0: the round stays open here), and
    the cloud closes round 0 before this edge forwards it."""
    for cid in ("hosp-a", "hosp-b"):
        assert (await edge.upload(world.update(world.hospitals[cid]))).status_code == 202
    world.cloud.closed_rounds.add(0)


async def round_one_forwarded(world: World, edge: Any) -> None:
    """The cloud opens round 1; all three hospitals upload for it, which closes it here at quorum."""
    await world.cloud.publish(world.plan(1))
    await until(lambda: edge.core.plan is not None and edge.core.plan.round == 1, what="round 1")
    for hospital in world.hospitals.values():
        assert (await edge.upload(world.update(hospital, round_=1))).status_code == 202
    await until(lambda: any(a.round == 1 for a in world.cloud.attempts), what="round 1's forward")


async def test_a_sum_forwarded_after_the_cloud_closed_the_round_joins_the_next_round(
    make_world: Callable[..., World],
) -> None:
    """With late uploads on, round 0's sum, refused as closed, is forwarded with round 1 as a late bucket
    for round 0 holding exactly hosp-a and hosp-b: it reaches round 1's model."""
    # Prepare
    world = make_world(clients=3, k=2, quorum=1.0, late_uploads=LATE)
    h = world.hospitals
    async with running_edge(world) as edge:
        await a_and_b_then_the_cloud_closes_round_zero(world, edge)

        # Execute: the edge reaches round 0's deadline and forwards; the cloud refuses it as closed.
        world.clock.advance(61)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)
        await round_one_forwarded(world, edge)

    # Assert: round 1's aggregate holds round 0's sum as its late bucket, and the edge records where it went.
    aggregate = next(a for a in world.cloud.attempts if a.round == 1)
    assert [b.origin_round for b in aggregate.late] == [0]
    (bucket,) = aggregate.late
    assert [c.client_id for c in bucket.contributions] == ["hosp-a", "hosp-b"]
    np.testing.assert_allclose(
        world.decrypt(bucket.ciphertext), h["hosp-a"].vector + h["hosp-b"].vector, atol=ATOL
    )
    assert bucket.plan_sha256 == world.cloud.plan_sha256(0)
    assert outcome is not None and outcome.status.value == "carried" and outcome.carried_into == 1
    assert outcome.dropped == ()
    assert progress["carried_into_round"] == 1 and progress["uploads_dropped"] == {}


async def test_without_late_uploads_a_sum_the_cloud_refused_as_closed_is_counted_as_dropped(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2, quorum=1.0)
    async with running_edge(world) as edge:
        await a_and_b_then_the_cloud_closes_round_zero(world, edge)
        world.clock.advance(61)
        await edge.core.tick()
        await edge.core.tick()  # a second tick neither forwards again nor counts again
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)
        metrics = (await edge.http.get("/metrics")).text

    assert progress.get("uploads_dropped") == {"too_late": 2} and progress["carried_into_round"] is None
    assert dropped_metric(metrics, "too_late") == 2.0
    assert outcome is not None and outcome.status.value == "refused"
    assert len([a for a in world.cloud.attempts if a.round == 0]) == 1


async def test_uploads_held_when_the_federation_is_stopped_are_counted_as_dropped(
    make_world: Callable[..., World],
) -> None:
    """The admin stops the federation while round 0 is open here with hosp-a and hosp-b in it (quorum 1.0 of
    3: not closed): once the edge learns it (its plan poll answers 410) it closes the round and counts both
    acknowledged uploads as dropped (`federation_ended`), once, and forwards nothing."""
    world = make_world(clients=3, k=2, quorum=1.0)
    async with running_edge(world) as edge:
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(world.hospitals[cid]))).status_code == 202
        await world.cloud.end(FederationState.STOPPED)
        await until(lambda: edge.core.ended is not None, what="the edge to learn the federation ended")
        await edge.core.tick()
        await edge.core.tick()  # a second tick counts nothing again
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)
        metrics = (await edge.http.get("/metrics")).text

    assert progress.get("uploads_dropped") == {"federation_ended": 2}, progress
    assert dropped_metric(metrics, "federation_ended") == 2.0
    assert outcome is not None and outcome.status.value == "skipped", outcome
    assert world.cloud.attempts == []


@pytest.mark.parametrize("late", [LATE, None], ids=["late-uploads", "no-late-uploads"])
async def test_a_superseded_round_reaches_the_next_model_or_is_counted_as_dropped(
    make_world: Callable[..., World], late: LateUploadConfig | None
) -> None:
    """The cloud opens round 1 before round 0 closed here: the edge closes round 0 as superseded and
    forwards it; the cloud refuses it as closed. Its sum joins round 1 (late uploads on), or its two uploads
    are counted as dropped."""
    world = make_world(clients=3, k=2, quorum=1.0, late_uploads=late)
    h = world.hospitals
    async with running_edge(world) as edge:
        await a_and_b_then_the_cloud_closes_round_zero(world, edge)
        await round_one_forwarded(world, edge)
        closure = await edge.core.ledger.closure(0)
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)
        metrics = (await edge.http.get("/metrics")).text

    assert closure is not None and closure.reason.value == "superseded"
    aggregate = next(a for a in world.cloud.attempts if a.round == 1)
    assert outcome is not None
    if late is not None:
        assert [b.origin_round for b in aggregate.late] == [0]
        assert outcome.status.value == "carried" and progress["carried_into_round"] == 1
        (bucket,) = aggregate.late
        assert [c.client_id for c in bucket.contributions] == ["hosp-a", "hosp-b"]
        np.testing.assert_allclose(
            world.decrypt(bucket.ciphertext), h["hosp-a"].vector + h["hosp-b"].vector, atol=ATOL
        )
        assert dropped_metric(metrics, "too_late") == 0.0
    else:
        assert progress.get("uploads_dropped") == {"too_late": 2}
        assert outcome.status.value == "refused" and aggregate.late == ()
        assert dropped_metric(metrics, "too_late") == 2.0


async def test_a_late_bucket_below_k_is_carried_until_it_reaches_k(make_world: Callable[..., World]) -> None:
    """k = 2, uploads up to 2 rounds late: hosp-c alone late for round 0 in round 1 (a bucket of 1) is
    carried into round 2, where hosp-d's late upload for round 0 completes it; round 2 forwards both."""
    world = make_world(clients=4, k=2, quorum=0.5, late_uploads=LateUploadConfig(max_staleness=2))
    h = world.hospitals
    async with running_edge(world) as edge:
        lone = await alone_late_through_round_one(world, edge)
        await world.cloud.publish(world.plan(2))
        await until(lambda: edge.core.plan is not None and edge.core.plan.round == 2, what="round 2")
        second = await edge.upload(world.update(h["hosp-d"], round_=0))
        again = await edge.upload(world.update(h["hosp-c"], round_=0))  # c is in the carried bucket
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(h[cid], round_=2))).status_code == 202
        await until(lambda: len(world.cloud.attempts) == 3, what="round 2's forward")
        outcome_1 = await edge.core.ledger.outcome(1)
        progress_0 = await edge.progress(0)

    assert lone.json() == {"accepted": True, "count": 1, "folded_into_round": 1}
    assert second.json() == {"accepted": True, "count": 2, "folded_into_round": 2}
    assert again.status_code == 409 and again.json()["code"] == "duplicate_upload"
    assert world.cloud.attempts[1].late == ()
    assert outcome_1 is not None and (outcome_1.late_forwarded, outcome_1.late_dropped) == (0, 0)
    (bucket,) = world.cloud.attempts[2].late
    assert bucket.origin_round == 0 and [c.client_id for c in bucket.contributions] == ["hosp-c", "hosp-d"]
    np.testing.assert_allclose(
        world.decrypt(bucket.ciphertext), h["hosp-c"].vector + h["hosp-d"].vector, atol=ATOL
    )
    assert progress_0["uploads_dropped"] == {}


async def test_a_round_below_k_at_its_deadline_counts_its_uploads_as_dropped(
    make_world: Callable[..., World],
) -> None:
    """k = 2 and only hosp-a uploads: the edge never forwards the round, and says so for hosp-a's upload."""
    world = make_world(clients=3, k=2, quorum=1.0)
    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(world.hospitals["hosp-a"]))).status_code == 202
        world.clock.advance(61)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)
        metrics = (await edge.http.get("/metrics")).text

    assert outcome is not None and outcome.status.value == "skipped"
    assert outcome.detail == "1 contributions, fewer than min_clients_per_edge=2"
    assert progress.get("uploads_dropped") == {"too_few_clients": 1}
    assert dropped_metric(metrics, "too_few_clients") == 1.0
    assert world.cloud.attempts == []


async def test_a_forward_retries_no_longer_than_the_forward_budget(make_world: Callable[..., World]) -> None:
    """The link is told how long it may retry: the spec's forward budget past the upload deadline, less
    the time already past it; the spec's deadline margin covers that budget plus the allowed clock skew."""
    world = make_world(clients=3, k=2, quorum=1.0, forward_budget_s=20.0, max_clock_skew_s=2.0)
    async with running_edge(world) as edge:
        for hospital in list(world.hospitals.values())[:2]:
            assert (await edge.upload(world.update(hospital))).status_code == 202
        world.cloud.fail_forwards = 1
        world.clock.advance(65)  # 5 s past the upload deadline
        await edge.core.tick()
        world.clock.advance(30)  # past the budget: one attempt, no retries
        await edge.core.tick()

    assert world.cloud.within == [15.0, 0.0]
    assert world.spec.deadline_margin_s >= world.spec.forward_budget_s + world.spec.max_clock_skew_s


async def test_with_the_real_cloud_a_sum_forwarded_after_the_round_closed_is_in_the_next_model(
    state_store: StateStore,
) -> None:
    """The real cloud (in-process, on the test's store) closes round 0 at its deadline with edge-2's sum
    while edge-1, holding client-a's and client-b's uploads, has not forwarded yet. Edge-1's forward then
    gets 409 `round_closed`; the edge carries the sum into round 1, whose aggregate the cloud accepts and
    folds in: round 1's model holds both hospitals' round-0 updates as late contributions."""
    # Prepare: edges edge-1 (client-a, client-b) and edge-2 (client-c, client-d); late uploads on.
    rng = np.random.default_rng(11)
    spec = small_spec(rounds=3, late_uploads=LATE)
    async with running_cloud(store=state_store) as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        key = fed.edges["edge-1"].key
        link = HttpCloudLink(
            "http://cloud",
            federation_id=fed.fid,
            enrolment_token=None,  # edge-1 is enrolled: it re-enrols with its key alone
            transport=httpx.ASGITransport(app=cloud.app),
            attempts=1,
        )
        enrolment = EdgeEnrolment(
            edge_id="edge-1", url="http://edge-1.test:8710", public_key=key.public_bytes
        )
        await link.enrol(enrolment, key)
        edge = EdgeAggregator(
            EdgeConfig(edge_id="edge-1", federation=await link.federation()),
            store=state_store,
            link=link,
            scheme=fed.scheme,
            signing_key=key,
            clock=cloud.clock,
        )
        await edge.refresh_plan()

        async def upload(round_: int) -> None:
            # The hospitals' plan: edge-1's view, as the cloud serves it to them.
            plan = (await cloud.context.rounds.plan(fed.fid, round_)).view("edge-1")
            deltas = {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ("client-a", "client-b")}
            for cid, encrypted in (await fed.uploads(cloud, round_, deltas, {})).items():
                update = ClientUpdate(
                    federation_id=fed.fid,
                    round=round_,
                    basis_version=plan.basis_version,
                    client_id=cid,
                    rank=plan.client_ranks[cid],
                    weight=1.0,
                    num_examples=100,
                    nonce=secrets.token_hex(16),
                    ciphertext=fed.scheme.serialize(encrypted),
                    noise_share_std=plan.noise_share.std if plan.noise_share is not None else None,
                    plan_sha256=plan.sha256,
                ).signed(fed.client_keys[cid].sign)
                await edge.accept(update)

        await upload(0)
        other = {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ("client-c", "client-d")}
        assert (await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 0, other))).status_code == 202
        cloud.clock.advance(spec.round_deadline_s + 1)
        await cloud.tick()  # round 0 closes with edge-2's sum alone
        closed_0 = await cloud.status(fed.fid, 0)

        # Execute: edge-1 forwards round 0 late, then follows round 1.
        await edge.tick()
        outcome_0 = await edge.ledger.outcome(0)
        assert await edge.refresh_plan()
        await upload(1)
        await edge.tick()
        other = {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ("client-c", "client-d")}
        assert (await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 1, other))).status_code == 202
        status_1 = await cloud.status(fed.fid, 1)
        await edge.close()
        await link.close()

    # Assert
    assert closed_0.state is RoundState.CLOSED and closed_0.clients_contributed == 2
    assert outcome_0 is not None and outcome_0.status.value == "carried" and outcome_0.carried_into == 1
    assert status_1.state is RoundState.CLOSED
    assert status_1.late_contributions == 2 and status_1.clients_contributed == 4
