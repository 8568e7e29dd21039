"""Retention at the cloud: a finished round's bulky keys expire after the retention window, adapter vectors
older than the last `retain_versions` are pruned (410 `version_pruned`), the audit trail stays, and
`/metrics` reports the store's memory use."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from cloud_server.retention import round_bulky_keys
from protocol.messages import ErrorCode, RoundState
from services import keyspace
from services.store import StateStore
from tests.cloud.harness import Cloud, Federation, running_cloud, small_spec
from tests.metrics_text import store_memory

pytestmark = pytest.mark.anyio
ROUNDS = 12
WINDOW_S = 0.001  # the bulky keys of a round are gone (almost) as soon as it ends
KEEP_VERSIONS = 2


async def run_round(cloud: Cloud, fed: Federation, round_: int, rng: np.random.Generator) -> None:
    deltas = fed.deltas(rng)
    for edge_id in fed.edges:
        response = await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, round_, deltas[edge_id]))
        assert response.status_code == 202, response.text
    assert (await cloud.status(fed.fid, round_)).state.value == "closed"


async def bulky_keys(store: StateStore, fid: str) -> list[str]:
    """The keys that grow with the adapter: edge sums (and the digests beside them), adapter vectors."""
    keys = await store.scan(f"cloud:{fid}:")  # a SCAN also drops the expired keys it meets
    return [
        k
        for k in keys
        if k.endswith((":aggregates", ":aggregate-digests")) or (":adapter:" in k and k.count(":") == 3)
    ]


async def settled_bulky_keys(store: StateStore, fid: str, *, at_most: int) -> list[str]:
    """The bulky keys once those that expired are gone (Redis removes an expired key when it meets it)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10.0
    while len(found := await bulky_keys(store, fid)) > at_most and loop.time() < give_up:
        await asyncio.sleep(0.01)
    return found


async def used_memory(url: str) -> int:
    """The bytes Redis holds for the keys themselves (`MEMORY USAGE` of each): `INFO`'s `used_memory` also
    counts client buffers and allocator slack, which move with the machine's load by more than one sum."""
    client = aioredis.Redis.from_url(url)
    try:
        total = 0
        async for key in client.scan_iter(count=1000):
            total += int(await client.memory_usage(key, samples=0) or 0)
        return total
    finally:
        await client.aclose()


@pytest.mark.parametrize("state_store", ["redis"], indirect=True)
async def test_keys_and_redis_memory_stop_growing_after_the_retention_window(
    state_store: StateStore, redis_url: str
) -> None:
    # Prepare: a cloud that keeps a finished round's sums for 1 ms and the last 2 adapter vectors.
    rng = np.random.default_rng(19)
    async with running_cloud(
        store=state_store, retain_round_s=WINDOW_S, retain_versions=KEEP_VERSIONS
    ) as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=ROUNDS + 1))
        await fed.start(cloud.http)
        one_round = await fed.aggregate(cloud, "edge-1", 0, fed.deltas(rng)["edge-1"])
        edge_sum_bytes = len(one_round.ciphertext)

        # Execute: a few rounds past the window, a measure, as many rounds again, a second measure.
        for round_ in range(ROUNDS // 2):
            await run_round(cloud, fed, round_, rng)
        first = await settled_bulky_keys(cloud.store, fed.fid, at_most=KEEP_VERSIONS)
        memory_first = await used_memory(redis_url)
        for round_ in range(ROUNDS // 2, ROUNDS):
            await run_round(cloud, fed, round_, rng)
        second = await settled_bulky_keys(cloud.store, fed.fid, at_most=KEEP_VERSIONS)
        memory_second = await used_memory(redis_url)

        # Assert: only the last 2 adapter vectors are left of the bulky keys, each time; Redis grew by the
        # audit trail (statuses, plans, ledgers), far less than one edge sum, never mind the 12 rounds x 2
        # edges the store held without retention.
        assert first == [keyspace.fed_adapter(fed.fid, v) for v in (ROUNDS // 2 - 1, ROUNDS // 2)]
        assert second == [keyspace.fed_adapter(fed.fid, v) for v in (ROUNDS - 1, ROUNDS)]
        assert memory_second - memory_first < edge_sum_bytes, (memory_first, memory_second, edge_sum_bytes)
        # The audit trail stays: every round's status and plan, every version's meta.
        for round_ in range(ROUNDS):
            assert (await cloud.status(fed.fid, round_)).state.value == "closed"
            assert await cloud.store.get(keyspace.fed_round_plan(fed.fid, round_)) is not None
            assert await cloud.store.get(keyspace.fed_adapter_meta(fed.fid, round_)) is not None


async def test_a_pruned_version_answers_410_version_pruned_and_the_kept_ones_are_served(
    state_store: StateStore,
) -> None:
    # Prepare: 4 rounds closed with the last 2 versions kept.
    rng = np.random.default_rng(20)
    async with running_cloud(store=state_store, retain_versions=KEEP_VERSIONS) as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=5))
        await fed.start(cloud.http)
        for round_ in range(4):
            await run_round(cloud, fed, round_, rng)

        # Execute
        answers = {
            (version, what): await cloud.http.get(f"/federations/{fed.fid}/adapters/{version}{what}")
            for version in range(5)
            for what in ("/vector", "")
        }

        # Assert: versions 0-2 are pruned (vector and PEFT zip), 3 and 4 (the current one) are served, and
        # every version is still listed with its meta (the audit trail).
        for (version, _), response in answers.items():
            if version < 3:
                assert response.status_code == 410, response.text
                assert response.json()["code"] == ErrorCode.VERSION_PRUNED.value
                assert str(version) in response.json()["message"]
            else:
                assert response.status_code == 200, response.text
        listed = (await cloud.http.get(f"/federations/{fed.fid}/adapters")).json()
        assert [v["version"] for v in listed] == [0, 1, 2, 3, 4]
        unknown = await cloud.http.get(f"/federations/{fed.fid}/adapters/9/vector")
        assert unknown.status_code == 404


async def test_the_memory_gauge_grows_when_a_big_value_is_stored(state_store: StateStore) -> None:
    async with running_cloud(store=state_store) as cloud:
        await cloud.store.set("cloud:test:small", b"x")
        before = store_memory((await cloud.http.get("/metrics")).text)
        await cloud.store.set("cloud:test:big", np.random.default_rng(3).bytes(4_000_000))
        after = store_memory((await cloud.http.get("/metrics")).text)

    assert before["fedlora_store_used_memory_bytes"] > 0
    assert after["fedlora_store_used_memory_bytes"] - before["fedlora_store_used_memory_bytes"] >= 3_900_000
    # No limit on the memory store nor on the test's Redis: 0 says "none".
    assert after["fedlora_store_max_memory_bytes"] == 0


async def test_a_forward_retried_after_a_stop_and_the_window_is_answered_as_taken(
    state_store: StateStore,
) -> None:
    """A sum the cloud held when the federation stopped is in the failed round (counted `round_failed`
    there); its edge, which never got the 202, retries after the window expired the sum. The identical
    retry is answered 200 with the failed round's status, so that the edge records it delivered and does
    not count the same uploads dropped `refused` as well; another sum of the same edge is 409
    `duplicate_upload`, as inside the window. Expiry is done here as retention does it, by deleting the
    round's bulky keys."""
    # Prepare: edge-1 forwards round 0 (202), then the admin stops the federation and the window passes.
    rng = np.random.default_rng(37)
    async with running_cloud(store=state_store) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)["edge-1"]
        body = await fed.aggregate(cloud, "edge-1", 0, deltas)
        assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.http.post(f"/federations/{fed.fid}/stop")).status_code == 200
        await cloud.store.delete(*round_bulky_keys(fed.fid, 0))

        # Execute
        retry = await fed.post(cloud.http, body)
        other = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-1", 0, {h: 2 * d for h, d in deltas.items()})
        )
        status = await cloud.status(fed.fid, 0)

    # Assert
    assert retry.status_code == 200, retry.text
    assert retry.json()["state"] == RoundState.FAILED.value
    assert other.status_code == 409, other.text
    assert other.json()["code"] == ErrorCode.DUPLICATE_UPLOAD.value
    assert status.state is RoundState.FAILED
    assert [e.edge_id for e in status.edges if e.forwarded] == ["edge-1"]
