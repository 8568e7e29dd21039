"""Many hospitals uploading to one edge at once (`bench/edge_load.py` found this at 100 connections).

Every upload rewrites the round's one running sum in an optimistic store transaction (Redis WATCH/MULTI):
uploads that the edge's own process handles at the same time must not make each other start over, or the
work grows with the square of the concurrency and uploads run out of transaction attempts (503
`store_unavailable`) while nobody else writes to the store. Replicas of one edge still race through the
store, which the transaction settles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from services.store import RedisStore
from tests.edge.harness import World, running_edge

pytestmark = pytest.mark.anyio

CONCURRENT = 12


@pytest.mark.parametrize("state_store", ["redis"], indirect=True)
async def test_concurrent_uploads_to_one_edge_process_never_run_out_of_transaction_attempts(
    make_world: Callable[..., World], redis_url: str
) -> None:
    # Prepare: a store that gives a transaction two attempts, as a contended one would run out of its 64.
    world = make_world(clients=CONCURRENT, k=2, quorum=1.0)
    world.store = RedisStore(redis_url, max_transaction_attempts=2)
    try:
        async with running_edge(world) as edge:
            updates = [world.update(h) for h in world.hospitals.values()]

            # Execute: every hospital uploads at once.
            answers = await asyncio.gather(*(edge.upload(u) for u in updates))

            # Assert: all taken, and the sum is theirs.
            assert [a.status_code for a in answers] == [202] * CONCURRENT, [a.text for a in answers]
            expected = np.sum([h.vector for h in world.hospitals.values()], axis=0)
            np.testing.assert_allclose(await world.stored_sum(), expected, atol=1e-4)
    finally:
        await world.store.close()
