"""Round deadlines: close with the edges that forwarded, fail an empty round and reopen, background checks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest

from protocol.messages import RoundPlan, RoundState
from tests.cloud.harness import Federation, running_cloud, small_spec, weighted_mean

pytestmark = pytest.mark.anyio


async def test_at_the_deadline_the_round_closes_with_the_edges_that_forwarded() -> None:
    rng = np.random.default_rng(11)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(round_deadline_s=600.0))
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"]))
        ).status_code == 202

        cloud.clock.advance(599)
        await cloud.tick()
        assert (await cloud.status(fed.fid, 0)).state is RoundState.COLLECTING
        cloud.clock.advance(1)
        await cloud.tick()

        status = await cloud.status(fed.fid, 0)
        assert status.state is RoundState.CLOSED and status.clients_contributed == 2
        assert {e.edge_id: e.forwarded for e in status.edges} == {"edge-1": True, "edge-2": False}
        expected = weighted_mean(deltas["edge-1"])
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6
        plan = RoundPlan.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}/plan")).content)
        assert plan.round == 1 and plan.adapter_version == 1


async def test_a_round_with_no_aggregate_at_its_deadline_fails_and_the_next_reopens_from_the_same_adapter() -> (
    None
):
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(round_deadline_s=60.0, upload_deadline_s=30.0, forward_budget_s=20.0)
        )
        await fed.start(cloud.http)

        cloud.clock.advance(61)
        await cloud.tick()
        await cloud.tick()  # a second check changes nothing

        failed = await cloud.status(fed.fid, 0)
        assert failed.state is RoundState.FAILED and "no edge aggregate" in (failed.failure or "")
        assert failed.adapter_version_out is None
        plan = RoundPlan.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}/plan")).content)
        assert plan.round == 1 and plan.adapter_version == 0
        assert plan.deadline == cloud.clock() + timedelta(seconds=30)
        assert (await cloud.status(fed.fid, 1)).state is RoundState.OPEN
        # A late aggregate for the failed round is refused.
        late = await fed.post(
            cloud.http,
            await fed.aggregate(cloud, "edge-1", 0, fed.deltas(np.random.default_rng(0))["edge-1"]),
        )
        assert late.status_code == 409 and late.json()["code"] == "round_closed"


async def test_the_background_deadline_check_fails_an_expired_round() -> None:
    async with running_cloud(deadline_check_s=0.02) as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(round_deadline_s=60.0, upload_deadline_s=30.0, forward_budget_s=20.0)
        )
        await fed.start(cloud.http)
        cloud.clock.advance(3600)

        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10.0
        while (await cloud.status(fed.fid, 0)).state is not RoundState.FAILED:
            assert loop.time() < give_up, "the deadline task never failed the round"
            await asyncio.sleep(0.01)
