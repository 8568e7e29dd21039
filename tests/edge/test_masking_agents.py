"""The hospital agent's side of the cohort (`client_agent.masking.CohortSession`, as the agent runs it) against
the in-process edge: the two sides, built apart, agree on every path, body and code, and the forwarded sum
unmasks to the survivors' sum."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from protocol.crypto import PaillierParams
from services.http import Peer
from tests.edge.harness import EID, FID, World, running_edge, until
from tests.edge.masking_cohort import HOSPITALS, cohort_sessions, join_upload_close, unmasked_sum

pytestmark = pytest.mark.anyio


async def test_agents_cohort_sessions_run_a_cohort_with_one_dropping_after_sharing(
    make_masking_world: Callable[..., World],
) -> None:
    # Prepare: ten hospitals join (advertise, share, read their inbox) before "training"; hosp-09 never
    # uploads, so the round closes at its deadline and the other nine are the survivors.
    world = make_masking_world()
    plan = world.cloud.published[0]
    survivors = HOSPITALS[:9]
    expected = np.sum([world.hospitals[c].vector for c in survivors], axis=0)

    async with running_edge(world) as edge:
        peer = Peer("http://edge-north.test", attempts=1, transport=httpx.ASGITransport(app=edge.app))
        sessions = cohort_sessions(world, plan, peer, HOSPITALS)
        # Execute
        await join_upload_close(world, edge, sessions, survivors)
        await asyncio.gather(*(sessions[cid].finish() for cid in survivors))
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")
        await peer.close()

    # Assert
    aggregate = world.cloud.delivered[f"{FID}:0:{EID}"]
    assert [c.client_id for c in aggregate.contributions] == survivors
    params = world.spec.he
    assert isinstance(params, PaillierParams)
    total = unmasked_sum(world.secret, aggregate)
    assert np.max(np.abs(total - expected)) <= len(survivors) * params.encoding_error


async def test_agents_join_a_round_their_edge_has_not_fetched_yet_once_it_has(
    make_masking_world: Callable[..., World], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the edge follows round 0; the cloud opens round 1 and serves its plan to the hospitals, but
    # the edge's next plan poll does not get through (a cloud it cannot reach for a moment).
    world = make_masking_world()
    async with running_edge(world) as edge:
        await until(lambda: world.cloud.polls_waiting > 0, what="the edge's long-poll")
        plan = world.plan(1)
        await world.cloud.publish(plan, notify=False)
        world.cloud.fail_plans = 1
        peer = Peer("http://edge-north.test", attempts=1, transport=httpx.ASGITransport(app=edge.app))
        sessions = cohort_sessions(world, plan, peer, HOSPITALS)
        # Execute: every hospital joins round 1's cohort at once.
        with caplog.at_level(logging.INFO):
            await asyncio.gather(*(session.join() for session in sessions.values()))
        await peer.close()
        followed = edge.core.plan

    # Assert: the edge answered round_not_open_yet first (not "wrong round"), then took the round's plan,
    # and every hospital is in the cohort instead of sitting the round out.
    refused = [r for r in caplog.records if getattr(r, "code", None) == "round_not_open_yet"]
    assert refused
    assert followed is not None and followed.round == 1
    joined = [r for r in caplog.records if r.getMessage() == "joined the round's masking cohort"]
    assert len(joined) == len(HOSPITALS)
