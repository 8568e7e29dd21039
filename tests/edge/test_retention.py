"""Retention at the edge: a nonce marker is written with its TTL in the upload's own transaction, a round
forwarded and acknowledged keeps its sum and manifest only for the edge's retention window (its single
uploads not at all), and `/metrics` reports the store's memory use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from services import keyspace
from services.store import StoreError
from tests.edge.harness import EID, FID, POLL_S, World, into_round_one, running_edge
from tests.metrics_text import store_memory

pytestmark = pytest.mark.anyio
WINDOW_S = 30.0


@pytest.mark.parametrize("state_store", ["redis"], indirect=True)
async def test_a_nonce_marker_has_its_ttl_as_soon_as_the_upload_commits(
    make_world: Callable[..., World], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the connection to Redis drops right after the upload's transaction (any later write of a
    # nonce key fails), as a crash between two commands would leave it.
    world = make_world(clients=3, k=2)
    update = world.update(world.hospitals["hosp-a"])
    set_value = world.store.set

    async def dropped_after_commit(key: str, value: bytes, *, ttl_s: float | None = None) -> None:
        if ":nonce:" in key:
            raise StoreError("redis unreachable after EXEC")
        await set_value(key, value, ttl_s=ttl_s)

    monkeypatch.setattr(world.store, "set", dropped_after_commit)

    # Execute
    async with running_edge(world) as edge:
        await edge.upload(update)

    # Assert: the marker is there and expires (PTTL read by another client), it does not live forever.
    raw = aioredis.Redis.from_url(redis_url)
    try:
        key = keyspace.edge_nonce(EID, FID, update.nonce)
        assert json.loads(await raw.get(key) or b"null") == {"client_id": "hosp-a", "round": 0}
        assert 0 < await raw.pttl(key) <= keyspace.NONCE_TTL_S * 1000
    finally:
        await raw.aclose()


async def test_an_acknowledged_round_is_kept_for_the_retention_window_only(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=2, k=2)
    world.settings_overrides["retain_round_s"] = WINDOW_S
    store = world.store
    kept = [
        keyspace.edge_sum(EID, FID, 0),
        keyspace.edge_manifest(EID, FID, 0),
    ]
    async with running_edge(world) as edge:
        await into_round_one(world, edge)  # round 0 forwarded, the cloud acknowledged it
        # The edge writes the outcome, then sets the retention TTLs: wait for it to finish before stopping it.
        give_up = asyncio.get_running_loop().time() + POLL_S
        while await store.ttl_s(kept[0]) is None:
            assert asyncio.get_running_loop().time() < give_up, "the acknowledged round's sum never got a TTL"
            await asyncio.sleep(0.002)

    for key in kept:
        assert await store.get(key) is not None, key
        assert 0 < (await store.ttl_s(key) or 0) <= WINDOW_S, key
    # The plan (small; a later bucket of late uploads for round 0 names it) keeps the edge's longer TTL.
    assert WINDOW_S < (await store.ttl_s(keyspace.edge_plan(EID, FID, 0)) or 0) <= keyspace.EDGE_ROUND_TTL_S
    assert await store.scan(keyspace.edge_uploads_prefix(EID, FID, 0)) == []
    nonces = await store.scan(f"edge:{EID}:{FID}:nonce:")
    assert len(nonces) == 2
    for key in nonces:
        assert WINDOW_S < (await store.ttl_s(key) or 0) <= keyspace.NONCE_TTL_S


async def test_a_round_s_progress_still_counts_its_uploads_after_its_sum_and_manifest_expired(
    make_world: Callable[..., World],
) -> None:
    """Property: an operator reading `GET /federations/{fid}/rounds/{n}` at the edge after round n was
    forwarded reads the uploads it took, also once the retention window removed its sum and manifest (the
    forward's outcome, which records the count, is kept `EDGE_ROUND_TTL_S`); it read 0 with `forwarded: true`."""
    world = make_world(clients=2, k=2)
    async with running_edge(world) as edge:
        await into_round_one(world, edge)  # round 0 forwarded with hosp-a and hosp-b, acknowledged
        give_up = asyncio.get_running_loop().time() + POLL_S
        while not (before := await edge.progress(0))["forwarded"]:  # the outcome is written after the answer
            assert asyncio.get_running_loop().time() < give_up, "round 0's outcome was never recorded"
            await asyncio.sleep(0.002)
        # What the retention window's expiry removes.
        await world.store.delete(keyspace.edge_sum(EID, FID, 0), keyspace.edge_manifest(EID, FID, 0))
        after = await edge.progress(0)

    assert before["uploads_accepted"] == 2, before
    assert after == before


async def test_the_edge_memory_gauge_grows_when_a_big_value_is_stored(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2)

    async with running_edge(world) as edge:
        before = store_memory((await edge.http.get("/metrics")).text)
        await world.store.set(f"edge:{EID}:{FID}:test:big", bytes(3_000_000))
        after = store_memory((await edge.http.get("/metrics")).text)

    assert before["fedlora_store_used_memory_bytes"] > 0
    assert after["fedlora_store_used_memory_bytes"] - before["fedlora_store_used_memory_bytes"] >= 2_900_000
    assert after["fedlora_store_max_memory_bytes"] == 0
