"""What survives a restart (everything acknowledged), and what the store holds (one sum per round)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_aggregator.ledger import ForwardStatus
from services import keyspace
from tests.edge.harness import EID, FID, World, running_edge, until

pytestmark = pytest.mark.anyio
ATOL = 1e-5


async def test_a_restarted_edge_keeps_every_acknowledged_upload(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3, k=2, quorum=1.0)
    a, b, c = (world.hospitals[f"hosp-{x}"] for x in "abc")
    first_a = world.update(a)

    async with running_edge(world) as edge:
        assert (await edge.upload(first_a)).status_code == 202
        assert (await edge.upload(world.update(b))).status_code == 202
    assert world.cloud.attempts == []  # 2 of 3: quorum not reached before the "crash"

    async with running_edge(world) as edge:  # a new app on the same store, key file and cloud
        replay = await edge.upload(first_a)
        duplicate = await edge.upload(world.update(b))
        last = await edge.upload(world.update(c))
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward after the restart")

    assert replay.json()["code"] == "replay" and duplicate.json()["code"] == "duplicate_upload"
    assert last.json() == {"accepted": True, "count": 3}
    aggregate = next(iter(world.cloud.delivered.values()))
    assert [x.client_id for x in aggregate.contributions] == ["hosp-a", "hosp-b", "hosp-c"]
    np.testing.assert_allclose(world.decrypt(aggregate.ciphertext), a.vector + b.vector + c.vector, atol=ATOL)
    assert len(world.cloud.attempts) == 1


async def test_a_forward_pending_at_shutdown_is_delivered_after_the_restart(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2)
    world.cloud.fail_forwards = 1

    async with running_edge(world) as edge:
        for hospital in world.hospitals.values():
            assert (await edge.upload(world.update(hospital))).status_code == 202
        await until(lambda: len(world.cloud.attempts) == 1, what="the failing forward")

    async with running_edge(world):
        await until(lambda: len(world.cloud.delivered) == 1, what="the retried forward")

    assert len(world.cloud.attempts) == 2
    aggregate = next(iter(world.cloud.delivered.values()))
    np.testing.assert_allclose(
        world.decrypt(aggregate.ciphertext), sum(h.vector for h in world.hospitals.values()), atol=ATOL
    )


async def test_a_round_the_cloud_moved_past_while_the_edge_was_down_is_still_forwarded(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(a))).status_code == 202
        assert (await edge.upload(world.update(b))).status_code == 202
    world.cloud.set_plan(world.plan(1))

    async with running_edge(world) as edge:
        await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
        current = edge.core.plan

    assert current is not None and current.round == 1
    aggregate = world.cloud.attempts[0]
    assert aggregate.round == 0 and aggregate.count == 2
    np.testing.assert_allclose(world.decrypt(aggregate.ciphertext), a.vector + b.vector, atol=ATOL)


async def test_the_store_holds_one_sum_per_round_whatever_the_number_of_clients(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=12, k=2)

    async with running_edge(world) as edge:
        for hospital in world.hospitals.values():
            assert (await edge.upload(world.update(hospital))).status_code == 202
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")
        # The forward's outcome (awaited behind the forward in flight): each upload is kept until then.
        outcome = await edge.core.maybe_forward(0)
        assert outcome is not None and outcome.status is ForwardStatus.DELIVERED

    keys = await world.store.scan(f"edge:{EID}:")
    sizes = {key: len(await world.store.get(key) or b"") for key in keys}
    sum_key = keyspace.edge_sum(EID, FID, 0)
    sum_bytes = sizes.pop(sum_key)
    assert [k for k in keys if k.endswith(":sum")] == [sum_key]
    assert len([k for k in keys if ":nonce:" in k]) == 12
    # Nothing else comes near the size of a ciphertext: no client's upload is kept on its own once the round
    # is forwarded.
    assert max(sizes.values()) < sum_bytes / 20, sizes
    assert sum(sizes.values()) < sum_bytes / 2
    expected = np.sum([h.vector for h in world.hospitals.values()], axis=0)
    np.testing.assert_allclose(await world.stored_sum(), expected, atol=ATOL)


async def test_ready_once_enrolled_with_a_store_that_answers(make_world: Callable[..., World]) -> None:
    world = make_world(clients=2, k=2)
    async with running_edge(world) as edge:
        ready = await edge.http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "edge_id": EID}
