"""The hospital agent's side of the cohort (`client_agent.masking.CohortSession`, as the agent runs it) against
the in-process edge: the two sides, built apart, agree on every path, body and code, and the forwarded sum
unmasks to the survivors' sum."""

from __future__ import annotations

import asyncio
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
