"""`services.lease.Lease` on the in-memory store and the tests' clock: renewal, loss, release."""

from __future__ import annotations

import asyncio

import pytest

from services.lease import Lease
from services.store import MemoryStore
from tests.clock import FakeClock, Turns


def test_a_renewed_lease_outlives_its_ttl_and_is_released_on_exit() -> None:
    clock, turns = FakeClock(), Turns()
    store = MemoryStore(clock=clock.seconds)

    async def scenario() -> None:
        lease = await Lease.take(store, "lease", ttl_s=30.0, pause=turns.pause)
        assert lease is not None
        assert await Lease.take(store, "lease", ttl_s=30.0) is None  # held
        async with lease.renewed():
            for _ in range(4):
                turn = await turns.next()
                clock.advance(20.0)  # 80 s in all, with a 30 s TTL
                turn.set()
            await turns.next()
            assert await store.get("lease") == lease.token
            assert not lease.lost
        assert await store.get("lease") is None

    asyncio.run(scenario())


def test_a_lapsed_holder_stops_renewing_and_leaves_its_successors_lease() -> None:
    clock, turns = FakeClock(), Turns()
    store = MemoryStore(clock=clock.seconds)

    async def scenario() -> None:
        first = await Lease.take(store, "lease", ttl_s=30.0, pause=turns.pause)
        assert first is not None
        async with first.renewed():
            turn = await turns.next()
            clock.advance(31.0)  # the holder stalled past its TTL
            second = await Lease.take(store, "lease", ttl_s=30.0)
            assert second is not None and second.token != first.token
            turn.set()
            for _ in range(100):  # the renewal finds another holder's token and stops
                if first.lost:
                    break
                await asyncio.sleep(0)
            assert first.lost
            assert not first.holds({"lease": await store.get("lease")})
        assert await store.get("lease") == second.token  # not released by the first

    asyncio.run(scenario())


def test_a_lease_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_s must be positive, got 0"):
        asyncio.run(Lease.take(MemoryStore(), "lease", ttl_s=0))


def test_a_kept_lease_lapses_after_the_time_it_was_kept_for() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock.seconds)

    async def scenario() -> None:
        lease = await Lease.take(store, "lease", ttl_s=30.0, pause=Turns().pause)
        assert lease is not None
        async with lease.renewed():
            lease.keep_for(5.0)
        clock.advance(4.9)
        assert await store.get("lease") == lease.token  # not released: kept
        clock.advance(0.1)
        assert await store.get("lease") is None
        with pytest.raises(ValueError, match="seconds must be positive, got 0"):
            lease.keep_for(0)

    asyncio.run(scenario())
