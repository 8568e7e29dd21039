"""An upload for a round the cloud has opened but this edge has not fetched yet is the hospital being
ahead of its edge, not late: the edge answers a retryable 409 `round_not_open_yet` (with `Retry-After`),
asking the cloud for the plan before it answers, and the hospital's agent sends the upload again within its
upload deadline instead of skipping the round (issue 19)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest

from services.clock import utc_now
from services.http import Peer
from tests.edge.harness import Edge, World, running_edge, until
from tests.hospitals import hospital_agent

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def round_one_unfetched(world: World, *, failing_polls: int) -> AsyncIterator[tuple[Edge, Peer]]:
    """The edge following round 0 while the cloud has opened round 1 and serves its plan to the hospitals;
    the edge's next `failing_polls` plan polls do not get through (a cloud it cannot reach for a while).
    With a hospital's HTTP peer on the edge."""
    async with running_edge(world) as edge:
        # Once the edge's plan loop is parked in its long-poll: it must not see round 1 on its own.
        await until(lambda: world.cloud.polls_waiting > 0, what="the edge's long-poll")
        await world.cloud.publish(world.plan(1), notify=False)
        world.cloud.fail_plans = failing_polls
        peer = Peer("http://edge-north.test", transport=httpx.ASGITransport(app=edge.app), give_up_after_s=5)
        try:
            yield edge, peer
        finally:
            await peer.close()


async def test_an_upload_ahead_of_the_edges_plan_is_retryable_and_the_agents_retry_lands(
    make_world: Callable[..., World], tmp_path
) -> None:
    # Prepare: the edge follows round 0; the cloud opens round 1 and serves its plan to the hospitals, but
    # the edge's next plan poll does not get through (a cloud it cannot reach for a moment).
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]
    agent = hospital_agent(tmp_path, federation_id=world.spec.federation_id, poll_s=0.01)
    async with round_one_unfetched(world, failing_polls=1) as (edge, peer):
        # Execute: a hospital's upload for round 1 straight away, then the agent's (the edge's plan poll
        # fails once more before the agent's second try gets through).
        ahead = await edge.upload(world.update(a, round_=1))
        world.cloud.fail_plans = 1
        held = await agent.upload(peer, world.update(b, round_=1), deadline=utc_now() + timedelta(seconds=60))
        progress = await edge.progress(1)

    # Assert: the first is told to come back (not that it is too late); the agent's retry is in the sum.
    assert ahead.status_code == 409
    assert ahead.json()["code"] == "round_not_open_yet"
    assert ahead.headers["Retry-After"] == "2"
    assert held is True
    assert progress["uploads_accepted"] == 1
    assert edge.core.plan is not None and edge.core.plan.round == 1


async def test_the_agent_stops_retrying_at_its_upload_deadline(
    make_world: Callable[..., World], tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: round 1 is opened at the cloud, but the edge cannot fetch its plan at all.
    world = make_world(clients=3)
    agent = hospital_agent(tmp_path, federation_id=world.spec.federation_id, poll_s=0.01)
    async with round_one_unfetched(world, failing_polls=1_000) as (_, peer):
        # Execute: the agent's upload, its deadline already passed.
        with caplog.at_level(logging.WARNING, logger="client_agent"):
            held = await agent.upload(
                peer, world.update(world.hospitals["hosp-a"], round_=1), deadline=utc_now()
            )

    # Assert: given up as too late after the one refusal, not retried past the deadline.
    assert held is False
    assert [r.getMessage() for r in caplog.records if r.name == "client_agent"] == ["upload too late"]
