"""One time for deadlines (issue 19): the cloud's replicas open rounds and check deadlines on the store's
clock (Redis `TIME`), whatever their own clocks say; an edge measures the offset of its clock to the cloud's
time on every plan poll, checks the upload deadline in the cloud's time, and reports the offset, which the
cloud shows per edge (admin view, gauge) and flags when it exceeds half the deadline margin."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import numpy as np
import pytest

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.errors import RoundClosedError
from protocol.messages import ClientUpdate, EdgeInfo, RoundState
from services.clock import OffsetClock, utc_now
from services.http import Peer
from services.store import StateStore
from tests.clock import FakeClock
from tests.cloud.harness import (
    LAYOUT_SIZE,
    Cloud,
    Federation,
    SlowAnswers,
    edge_core,
    running_cloud,
    small_spec,
)
from tests.hospitals import hospital_agent

pytestmark = pytest.mark.anyio

ON_REDIS = pytest.mark.parametrize("state_store", ["redis"], indirect=True)


def upload(fed: Federation, edge: EdgeAggregator, client_id: str) -> ClientUpdate:
    """`client_id`'s signed upload for the round `edge` follows (a zero delta: only its timing matters)."""
    plan = edge.plan
    assert plan is not None
    unsigned = ClientUpdate(
        federation_id=fed.fid,
        round=plan.round,
        basis_version=plan.basis_version,
        client_id=client_id,
        rank=plan.client_ranks[client_id],
        weight=1.0,
        num_examples=100,
        nonce=secrets.token_hex(16),
        ciphertext=fed.scheme.serialize(fed.scheme.encrypt(np.zeros(LAYOUT_SIZE))),
        plan_sha256=plan.sha256,
    )
    return unsigned.signed(fed.client_keys[client_id].sign)


@contextlib.asynccontextmanager
async def skewed_edge(
    store: StateStore, skew_s: float
) -> AsyncIterator[tuple[Cloud, Federation, EdgeAggregator, FakeClock]]:
    """A cloud whose time (standing for its store's clock) stands still at T0 with a federation's round 0
    open, and edge-1's core on its own clock (the last item) `skew_s` seconds off the cloud's."""
    cloud_clock = FakeClock()
    edge_clock = FakeClock(cloud_clock.now + timedelta(seconds=skew_s))
    async with running_cloud(store=store, clock=cloud_clock) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        key = fed.edges["edge-1"].key
        async with edge_core(cloud, fed.created, "edge-1", key=key, clock=edge_clock) as edge:
            await fed.start(cloud.http)
            yield cloud, fed, edge, edge_clock


@ON_REDIS
async def test_replicas_with_skewed_clocks_open_and_check_deadlines_on_the_stores_clock(
    state_store: StateStore,
) -> None:
    # Prepare: two replicas of the cloud on one Redis, one's own clock 15 minutes behind, the other's 15
    # minutes ahead (more than the round deadline of 10 minutes each way).
    def behind():
        return utc_now() - timedelta(minutes=15)

    def ahead():
        return utc_now() + timedelta(minutes=15)

    rng = np.random.default_rng(19)
    async with (
        running_cloud(store=state_store, own_clock=behind) as first,
        running_cloud(store=state_store, own_clock=ahead) as second,
    ):
        fed = await Federation.create(first.http, small_spec())
        # Execute: the replica behind opens round 0; edge-1 forwards to the replica ahead (edge-2 has not).
        before = await state_store.time()
        plan = await fed.start(first.http)
        after = await state_store.time()
        aggregate = await fed.aggregate(second, "edge-1", 0, fed.deltas(rng)["edge-1"])
        answer = await fed.post(second.http, aggregate)
        status = await second.status(fed.fid, 0)

    # Assert: the deadline is the store's time at opening plus the upload deadline, and the replica whose
    # clock is past it neither refuses the aggregate nor closes the round early without edge-2.
    upload_deadline = timedelta(seconds=fed.spec.upload_deadline_s)
    assert before + upload_deadline <= plan.deadline <= after + upload_deadline
    assert before <= status.opened_at <= after
    assert answer.status_code == 202, answer.text
    assert status.state is RoundState.COLLECTING


@ON_REDIS
@pytest.mark.parametrize("skew_s", [5.0, -5.0], ids=["edge-ahead", "edge-behind"])
async def test_an_edge_with_a_skewed_clock_checks_the_upload_deadline_in_the_clouds_time(
    state_store: StateStore, skew_s: float
) -> None:
    # Prepare: the cloud's time stands still at T0 (its store's clock); the edge's own clock is `skew_s`
    # seconds off it. The edge follows round 0, whose upload deadline is T0 + 540 s in the cloud's time.
    async with skewed_edge(state_store, skew_s) as (cloud, fed, edge, edge_clock):
        assert await edge.refresh_plan()
        assert edge.plan is not None
        deadline = edge.plan.deadline

        # Execute: one upload 2 s before the deadline, one 2 s after it, both in the cloud's time.
        for clock in (cloud.clock, edge_clock):
            clock.advance(fed.spec.upload_deadline_s - 2)
        in_time = await edge.accept(upload(fed, edge, "client-a"), federation_id=fed.fid, round_=0)
        for clock in (cloud.clock, edge_clock):
            clock.advance(4)
        with pytest.raises(RoundClosedError) as late:
            await edge.accept(upload(fed, edge, "client-b"), federation_id=fed.fid, round_=0)

    # Assert: the edge measured the offset exactly (an in-process cloud answers at once) and took the first
    # upload, which its own clock alone would have refused (edge ahead), and refused the second, which its
    # own clock alone would have taken (edge behind).
    assert edge_clock.now - timedelta(seconds=skew_s) == cloud.clock.now == deadline + timedelta(seconds=2)
    assert in_time.accepted and in_time.count == 1
    assert "deadline" in str(late.value)


async def _edges(cloud_http, fid: str) -> dict[str, EdgeInfo]:
    response = await cloud_http.get(f"/federations/{fid}/edges")
    assert response.status_code == 200, response.text
    return {e["edge_id"]: EdgeInfo.model_validate(e) for e in response.json()}


@ON_REDIS
@pytest.mark.parametrize(("skew_s", "alert"), [(29.0, False), (-31.0, True)])
async def test_an_edges_skew_shows_in_the_admin_view_and_metrics_and_alerts_past_half_the_margin(
    state_store: StateStore, skew_s: float, alert: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: round deadline 600 s, upload deadline 540 s: a margin of 60 s, an alert past 30 s of offset.
    # The edge's clock is `skew_s` seconds off the cloud's (the offset is the cloud's time less the edge's).
    async with skewed_edge(state_store, skew_s) as (cloud, fed, edge, _):
        # Execute: a first poll measures the offset, the next one reports it.
        with caplog.at_level(logging.WARNING, logger="fedlora.cloud"):
            await edge.refresh_plan()
            await edge.refresh_plan()
        edges = await _edges(cloud.http, fed.fid)
        metrics = (await cloud.http.get("/metrics")).text

    # Assert
    reported = edges["edge-1"].clock
    assert reported is not None
    assert reported.offset_s == -skew_s
    assert reported.alert is alert
    assert reported.reported_at == cloud.clock.now
    assert edges["edge-2"].clock is None  # it never polled
    labels = f'{{edge="edge-1",federation="{fed.fid}"}}'
    assert f"fedlora_edge_clock_offset_seconds{labels} {-skew_s}" in metrics
    assert f"fedlora_edge_clock_skew_alert{labels} {float(alert)}" in metrics
    warned = [r for r in caplog.records if r.getMessage().startswith("edge clock offset exceeds")]
    assert len(warned) == int(alert)


@ON_REDIS
async def test_a_hospital_checks_deadlines_in_the_clouds_time_too(state_store: StateStore, tmp_path) -> None:
    # Prepare: the cloud's time stands at T0, weeks away from the hospital's own (real) clock.
    async with running_cloud(store=state_store) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        agent = hospital_agent(tmp_path, federation_id=fed.fid, client_id="client-a", edge_id="edge-1")
        transport = httpx.ASGITransport(app=cloud.app)
        peer = Peer("http://cloud", token=fed.client_tokens["client-a"], transport=transport)
        try:
            # Execute: the agent polls for the plan as it does between rounds.
            plan = await agent.next_plan(peer)
        finally:
            await peer.close()

    # Assert: its clock now reads the cloud's time (to the in-process round trip), by which the plan's upload
    # deadline is minutes away, not weeks past.
    assert plan is not None
    assert abs((agent.cloud_time() - cloud.clock.now).total_seconds()) < 5
    assert plan.deadline - agent.cloud_time() > timedelta(seconds=fed.spec.upload_deadline_s - 5)


async def test_the_plan_route_takes_any_finite_clock_offset_and_refuses_nan_and_infinities() -> None:
    # Prepare: edge-1 polls with its API token; a clock offset of 30 years is still a clock's offset.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        as_edge = {"Authorization": f"Bearer {fed.edges['edge-1'].token}"}

        # Execute
        async def poll(offset: str) -> httpx.Response:
            params = {"wait": 0, "clock_offset_s": offset}
            return await cloud.http.get(f"/federations/{fed.fid}/plan", params=params, headers=as_edge)

        refused = {offset: await poll(offset) for offset in ("nan", "inf", "-inf")}
        taken = await poll("-946080000")
        edges = await _edges(cloud.http, fed.fid)

    # Assert: refused ones named by field; the huge one recorded and alerted on.
    for offset, response in refused.items():
        assert response.status_code == 422, (offset, response.text)
        assert response.json()["code"] == "invalid_request" and response.json()["field"] == "clock_offset_s"
    assert taken.status_code == 200, taken.text
    reported = edges["edge-1"].clock
    assert reported is not None and reported.offset_s == -946080000.0 and reported.alert


async def test_one_slow_plan_poll_does_not_move_a_hospitals_cloud_time(tmp_path) -> None:
    # Prepare: the hospital's clock agrees with the cloud's; its agent's first poll answers at once.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        agent = hospital_agent(tmp_path, federation_id=fed.fid, client_id="client-a", edge_id="edge-1")
        local = FakeClock(cloud.clock.now)
        agent.cloud_time = OffsetClock(local)
        transport = SlowAnswers(cloud.app, local)
        peer = Peer("http://cloud", token=fed.client_tokens["client-a"], transport=transport)
        try:
            await agent.next_plan(peer)
            # Execute: the next poll's answer takes 40 s to come back (on the wire: an offset of -20 s).
            transport.delay_s = 40.0
            await agent.next_plan(peer)
            cloud.clock.advance(40.0)  # the cloud's time went on as the hospital's did
        finally:
            await peer.close()

    # Assert: the exact first measurement stays in use.
    assert agent.cloud_time.offset_s == 0.0
    assert agent.cloud_time() == cloud.clock.now
