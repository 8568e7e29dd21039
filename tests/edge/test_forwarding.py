"""When the edge forwards, and that it forwards once: deadlines, k, retries, plans that move on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_aggregator.ledger import ForwardStatus
from protocol.messages import FederationState
from tests.edge.harness import World, running_edge, until

pytestmark = pytest.mark.anyio
ATOL = 1e-5


async def test_fewer_than_k_at_the_deadline_forwards_nothing(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3, k=2)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(a))).status_code == 202
        await edge.core.tick()  # before the deadline: nothing happens
        assert await edge.core.ledger.closure(0) is None
        world.clock.advance(61)
        await edge.core.tick()
        await edge.core.tick()
        late = await edge.upload(world.update(b))
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)

    assert world.cloud.attempts == []
    assert outcome is not None and outcome.status is ForwardStatus.SKIPPED and outcome.count == 1
    assert (late.status_code, late.json()["code"]) == (409, "round_closed")
    assert progress["forwarded"] is False and progress["uploads_accepted"] == 1


async def test_k_clients_at_the_deadline_are_forwarded(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3, k=2)
    a, b, c = (world.hospitals[f"hosp-{x}"] for x in "abc")

    async with running_edge(world) as edge:
        for hospital in (a, b):
            assert (await edge.upload(world.update(hospital))).status_code == 202
        world.clock.advance(61)
        late_before_tick = await edge.upload(world.update(c))  # the deadline passed, even before a tick
        await edge.core.tick()
        await edge.core.tick()

    assert late_before_tick.json()["code"] == "round_closed"
    assert len(world.cloud.attempts) == 1
    aggregate = next(iter(world.cloud.delivered.values()))
    assert [x.client_id for x in aggregate.contributions] == ["hosp-a", "hosp-b"]
    np.testing.assert_allclose(world.decrypt(aggregate.ciphertext), a.vector + b.vector, atol=ATOL)


async def test_a_failed_forward_is_retried_by_the_next_tick_and_delivered_once(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2)
    world.cloud.fail_forwards = 1

    async with running_edge(world) as edge:
        for hospital in world.hospitals.values():
            assert (await edge.upload(world.update(hospital))).status_code == 202
        await until(lambda: len(world.cloud.attempts) == 1, what="the first (failing) forward")
        assert world.cloud.delivered == {}
        assert await edge.core.ledger.pending() == [0]
        closed_upload = await edge.upload(world.update(world.hospitals["hosp-a"]))
        await edge.core.tick()
        await edge.core.tick()
        pending = await edge.core.ledger.pending()

    assert closed_upload.json()["code"] == "round_closed"  # closed when it first tried, not when it succeeded
    assert len(world.cloud.attempts) == 2 and len(world.cloud.delivered) == 1
    first, second = world.cloud.attempts
    assert first.signing_payload() == second.signing_payload() and first.signature == second.signature
    assert pending == []
    expected = sum(h.vector for h in world.hospitals.values())
    np.testing.assert_allclose(world.decrypt(second.ciphertext), expected, atol=ATOL)


async def test_edge_follows_a_new_plan_and_closes_the_old_round(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3, k=2)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(a))).status_code == 202
        assert (await edge.upload(world.update(b))).status_code == 202
        await world.cloud.publish(world.plan(1))
        await until(lambda: edge.core.plan is not None and edge.core.plan.round == 1, what="round 1")
        await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
        old = await edge.upload(world.update(world.hospitals["hosp-c"]))
        new = await edge.upload(world.update(a, round_=1))
        health = (await edge.http.get("/healthz")).json()

    aggregate = world.cloud.attempts[0]
    assert aggregate.round == 0 and aggregate.count == 2  # superseded with k contributions: still forwarded
    assert old.json()["code"] == "round_closed"
    assert new.status_code == 202 and new.json()["count"] == 1
    assert health["round"] == 1 and health["enrolled"] is True and health["ready"] is True


async def test_an_upload_for_a_later_round_makes_the_edge_ask_for_the_plan(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]

    async with running_edge(world) as edge:
        await world.cloud.publish(world.plan(1), notify=False)  # the long-poll does not see it
        response = await edge.upload(world.update(a, round_=1))
        current = edge.core.plan

    assert response.status_code == 202, response.text
    assert current is not None and current.round == 1


async def test_an_ended_federation_refuses_uploads(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)

    async with running_edge(world) as edge:
        await world.cloud.end(FederationState.COMPLETED)
        await until(lambda: edge.core.ended is not None, what="the edge to see the end")
        response = await edge.upload(world.update(world.hospitals["hosp-a"]))
        health = (await edge.http.get("/healthz")).json()

    assert (response.status_code, response.json()["code"]) == (410, "federation_not_active")
    assert health["federation_ended"] == "completed"
