"""The closing lease is fenced and renewed, and a close that keeps failing ends the round after a bounded
number of attempts (issue 19). Real crypto and a real Redis: each decryption runs for real, only held back
until the test lets it go, so that a closer can be made to outlive its lease without waiting for it."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from cloud_server import closing
from cloud_server.close_attempts import ClosePolicy
from cloud_server.closing import RoundCloser
from cloud_server.plans import PlanBoard
from cloud_server.retention import Retention, RetentionPolicy
from cloud_server.sum_checks import SumChecks
from protocol.messages import FederationInfo, RoundState
from services import keyspace
from services.store import MemoryStore, StateStore
from tests.clock import FakeClock, Turns
from tests.cloud.harness import Cloud, Federation, running_cloud, small_spec, weighted_mean
from tests.redis_server import RedisServer, redis_client

pytestmark = pytest.mark.anyio
BOUND_S = 30.0  # the longest any step here may take before the test gives up


class HeldDecryptions:
    """`protocol.aggregation.aggregate` as the closer calls it (in a worker thread), each call held until the
    test lets it go."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self._started: queue.Queue[threading.Event] = queue.Queue()
        self._all: list[threading.Event] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        go = threading.Event()
        self._all.append(go)
        self._started.put(go)
        if not go.wait(timeout=BOUND_S):
            raise TimeoutError("the test never let the decryption go")
        return self._real(*args, **kwargs)

    async def next(self) -> threading.Event:
        """The next decryption to start, once it has."""
        return await asyncio.to_thread(self._started.get, True, BOUND_S)

    def none_waiting(self) -> bool:
        return self._started.empty()

    def let_all_go(self) -> None:
        for go in self._all:
            go.set()


class CountedDecryptions:
    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real(*args, **kwargs)


def store_on(state_store: StateStore, clock: FakeClock) -> StateStore:
    """The test's store: the in-memory one counts TTLs on the test's clock; Redis keeps its own time."""
    return MemoryStore(clock=clock.seconds) if isinstance(state_store, MemoryStore) else state_store


async def lapse(store: StateStore, key: str, clock: FakeClock) -> None:
    """The lease on `key` runs out, as when its holder stalls for longer than its TTL."""
    clock.advance(keyspace.ROUND_CLOSE_LEASE_TTL_S + 1)
    if not isinstance(store, MemoryStore):
        held = await store.get(key)
        assert held is not None
        await store.set(key, held, ttl_s=0.01)
        give_up = asyncio.get_running_loop().time() + BOUND_S
        while await store.get(key) is not None:
            assert asyncio.get_running_loop().time() < give_up, "a 10 ms TTL did not expire"
            await asyncio.sleep(0.01)


async def closing_by_request(
    cloud: Cloud, rng: np.random.Generator
) -> tuple[Federation, dict[str, dict[str, np.ndarray]], asyncio.Task[httpx.Response]]:
    """A started federation whose two edges forward round 0's sums: edge-1's answered, edge-2's request
    running, which closes the round (each edge's clients' deltas, and that request)."""
    fed = await Federation.create(cloud.http, small_spec())
    await fed.start(cloud.http)
    deltas = fed.deltas(rng)
    first_sum = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
    assert (await fed.post(cloud.http, first_sum)).status_code == 202
    last_sum = await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"])
    return fed, deltas, asyncio.create_task(fed.post(cloud.http, last_sum))


async def info(cloud: Cloud, fid: str) -> FederationInfo:
    return FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fid}")).content)


async def test_a_closer_that_outlives_its_lease_neither_commits_nor_releases_its_successors_lease(
    state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closer whose lease lapsed while it decrypted (a pause longer than the TTL) writes nothing at its
    commit and leaves the lease its successor took; the successor closes the round, once."""
    rng = np.random.default_rng(7)
    clock = FakeClock()
    store = store_on(state_store, clock)
    held = HeldDecryptions(closing.aggregate)
    monkeypatch.setattr(closing, "aggregate", held)
    try:
        async with running_cloud(store=store, clock=clock) as cloud:
            fed, deltas, first = await closing_by_request(cloud, rng)
            lease_key = keyspace.fed_round_closing(fed.fid, 0)
            go_first = await held.next()
            first_lease = await store.get(lease_key)

            await lapse(store, lease_key, clock)
            second = asyncio.create_task(cloud.tick())  # the deadline check takes the lease over
            go_second = await held.next()
            second_lease = await store.get(lease_key)
            assert second_lease is not None and second_lease != first_lease

            go_first.set()
            assert (await first).status_code == 202
            assert await store.get(lease_key) == second_lease  # not deleted by the first closer
            assert (await cloud.status(fed.fid, 0)).state is RoundState.AGGREGATING  # not committed
            assert (await info(cloud, fed.fid)).adapter_version == 0

            go_second.set()
            await second
            assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
            expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
            assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6
            assert (await info(cloud, fed.fid)).adapter_version == 1
            assert await store.get(lease_key) is None  # released by its holder
    finally:
        held.let_all_go()


async def test_the_closer_renews_its_lease_while_it_decrypts(
    state_store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decryption longer than the lease's TTL keeps the lease (renewed every third of the TTL): no second
    closer starts decrypting meanwhile, and the first commits."""
    rng = np.random.default_rng(8)
    clock = FakeClock()
    store = store_on(state_store, clock)
    held = HeldDecryptions(closing.aggregate)
    monkeypatch.setattr(closing, "aggregate", held)
    turns = Turns()
    on_memory = isinstance(store, MemoryStore)
    # On Redis the TTL runs in real time: a 1 s lease, renewed by the closer's own timer, outlived 3 times.
    ttl_s = keyspace.ROUND_CLOSE_LEASE_TTL_S if on_memory else 1.0
    policy = ClosePolicy(lease_ttl_s=ttl_s, max_attempts=5, retry_s=5.0, retry_max_s=300.0)
    try:
        async with running_cloud(store=store, clock=clock) as cloud:
            fed = await Federation.create(cloud.http, small_spec())
            await fed.start(cloud.http)
            deltas = fed.deltas(rng)
            await fed.store_sums(cloud, 0, deltas)  # so that the closer below is the first to close
            context = cloud.context
            closer = RoundCloser(
                store,
                context.federations,
                context.enrolment,
                PlanBoard(),
                telemetry=context.telemetry,
                retention=Retention(store, RetentionPolicy(round_s=3600.0, versions=8)),
                policy=policy,
                checks=SumChecks(store, context.federations, context.enrolment),
                pause=turns.pause if on_memory else asyncio.sleep,
            )
            lease_key = keyspace.fed_round_closing(fed.fid, 0)
            closed = asyncio.create_task(closer.close(fed.fid, 0, clock(), why="test"))
            go = await held.next()
            lease = await store.get(lease_key)
            assert lease is not None

            if on_memory:
                for _ in range(3):
                    turn = await turns.next()
                    clock.advance(ttl_s / 2)
                    assert await store.get(lease_key) == lease
                    turn.set()
                await turns.next()  # the third renewal is done: 1.5 TTLs after the lease was taken
            else:
                loop = asyncio.get_running_loop()
                until = loop.time() + 3 * ttl_s
                while loop.time() < until:
                    assert await store.get(lease_key) == lease
                    await asyncio.sleep(0.05)
            assert await store.get(lease_key) == lease
            await cloud.tick()  # another closer finds the lease held
            assert held.none_waiting()

            go.set()
            await closed
            assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
            expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
            assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6
            assert await store.get(lease_key) is None
    finally:
        held.let_all_go()


async def test_a_close_that_keeps_failing_backs_off_and_fails_the_round_after_the_last_attempt(
    state_store: StateStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A close that raises a non-crypto error every time (here a bug in what the commit decides) is tried
    again only after its back-off (10 s, then 15 s: doubled, capped), counted across a restart, and after
    the third failed attempt the round ends `failed` with the last error as its reason; the next round
    opens from the same adapter."""
    rng = np.random.default_rng(9)
    clock = FakeClock()
    decryptions = CountedDecryptions(closing.aggregate)
    monkeypatch.setattr(closing, "aggregate", decryptions)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("round_outcome bug")

    monkeypatch.setattr(closing, "round_outcome", broken)
    settings = {"close_max_attempts": 3, "close_retry_s": 10.0, "close_retry_max_s": 15.0}
    caplog.set_level(logging.WARNING, logger="fedlora.cloud")
    async with running_cloud(store=state_store, clock=clock, **settings) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):  # the second one's request tries to close the round
            posted = await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            assert posted.status_code == 202
        assert decryptions.calls == 1
        retrying = await cloud.status(fed.fid, 0)
        assert retrying.state is RoundState.AGGREGATING
        assert retrying.close_attempts == 1
        assert retrying.close_error == "RuntimeError: round_outcome bug"
        assert "closing the round failed (attempt 1 of 3)" in caplog.text

        await cloud.tick()
        clock.advance(9.9)
        await cloud.tick()
        assert decryptions.calls == 1  # not before 10 s
        clock.advance(0.1)
        await cloud.tick()
        assert decryptions.calls == 2
        assert (await cloud.status(fed.fid, 0)).close_attempts == 2
        clock.advance(14.9)
        await cloud.tick()
        assert decryptions.calls == 2  # not before 15 s (20 s, capped)

    # A restarted cloud counts on from the stored attempts, and backs off the same.
    async with running_cloud(store=state_store, clock=clock, **settings) as cloud:
        await cloud.tick()
        assert decryptions.calls == 2
        clock.advance(0.1)
        await cloud.tick()
        assert decryptions.calls == 3
        failed = await cloud.status(fed.fid, 0)
        assert failed.state is RoundState.FAILED
        assert failed.failure == (
            "closing the round failed 3 times; the last error: RuntimeError: round_outcome bug"
        )
        assert (await cloud.status(fed.fid, 1)).state is RoundState.OPEN
        record = await info(cloud, fed.fid)
        assert record.current_round == 1 and record.adapter_version == 0
        assert await state_store.get(keyspace.fed_round_closing(fed.fid, 0)) is None
        await cloud.tick()
        assert decryptions.calls == 3  # over: never decrypted again


async def test_a_close_that_a_full_redis_refuses_holds_the_lease_for_its_back_off(
    state_store: StateStore, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis at `maxmemory` with `noeviction` (as the Kubernetes manifests run it) refuses the commit, and
    the write that would count the failed attempt: the closer keeps the lease for the attempt's back-off (a
    TTL, which a full Redis still sets) instead of releasing it, so the next deadline check does not decrypt
    again at once; once the back-off has passed and memory is free, the round closes."""
    if isinstance(state_store, MemoryStore):
        pytest.skip("maxmemory is Redis's")
    rng = np.random.default_rng(10)
    held = HeldDecryptions(closing.aggregate)
    monkeypatch.setattr(closing, "aggregate", held)
    admin = redis_client(redis_server.port)
    policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        async with running_cloud(store=state_store, close_retry_s=1.0) as cloud:
            fed, deltas, first = await closing_by_request(cloud, rng)
            lease_key = keyspace.fed_round_closing(fed.fid, 0)
            go = await held.next()
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)  # full: every write that adds data is refused
            try:
                go.set()
                assert (await first).status_code == 202
                assert await state_store.get(lease_key) is not None  # kept for the back-off
                await cloud.tick()
                assert held.none_waiting()  # not decrypted again
            finally:
                admin.config_set("maxmemory", 0)
                admin.config_set("maxmemory-policy", policy)
            assert (await cloud.status(fed.fid, 0)).state is RoundState.AGGREGATING

            loop = asyncio.get_running_loop()
            give_up = loop.time() + BOUND_S
            while await state_store.get(lease_key) is not None:  # the 1 s back-off
                assert loop.time() < give_up, "the kept lease never lapsed"
                await asyncio.sleep(0.05)
            closed = asyncio.create_task(cloud.tick())
            (await held.next()).set()
            await closed
            assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
            expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
            assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6
    finally:
        held.let_all_go()
        admin.close()
