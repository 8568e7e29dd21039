"""Nothing that matters lives only in process memory: a new cloud on the same store finishes a round."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from protocol.messages import CentralDPConfig, FederationInfo, NoiseMechanism, RoundState
from services import keyspace
from services.store import StateStore
from tests.clock import FakeClock
from tests.cloud.harness import Federation, running_cloud, small_spec, weighted_mean

pytestmark = pytest.mark.anyio
WRONG_KEK = bytes(range(32))


async def test_a_restarted_cloud_closes_a_round_whose_aggregates_a_failed_process_stored(
    state_store: StateStore,
) -> None:
    rng = np.random.default_rng(41)
    store, clock = state_store, FakeClock()
    async with running_cloud(store=store, clock=clock) as first:
        fed = await Federation.create(first.http, small_spec())
        await fed.start(first.http)
    deltas = fed.deltas(rng)

    # A cloud started with the wrong key-encryption key accepts and stores both sums but cannot decrypt.
    async with running_cloud(store=store, clock=clock, kek=WRONG_KEK) as broken:
        for edge_id in ("edge-1", "edge-2"):
            assert (
                await fed.post(broken.http, await fed.aggregate(broken, edge_id, 0, deltas[edge_id]))
            ).status_code == 202
        # Sealed for closing (it takes no more sums), and still to be closed.
        assert (await broken.status(fed.fid, 0)).state is RoundState.AGGREGATING
        assert await broken.store.get(keyspace.fed_round_sealed(fed.fid, 0)) is not None
        assert (await broken.store.get(keyspace.fed_round_closing(fed.fid, 0))) is None  # lease released

    # The next cloud's first deadline check, at start-up, finishes the round from the store.
    async with running_cloud(store=store, clock=clock) as restarted:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10.0
        while (await restarted.status(fed.fid, 0)).state is not RoundState.CLOSED:
            assert loop.time() < give_up, "the restarted cloud never closed the round"
            await asyncio.sleep(0.01)
        expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
        assert np.max(np.abs(await restarted.vector(fed.fid, 1) - expected)) < 1e-6
        info = FederationInfo.model_validate_json(
            (await restarted.http.get(f"/federations/{fed.fid}")).content
        )
        assert info.current_round == 1 and info.adapter_version == 1


async def test_concurrent_closers_commit_the_round_once() -> None:
    rng = np.random.default_rng(42)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        # As if a process died right after storing both sums and before closing the round.
        await fed.store_sums(cloud, 0, deltas)

        await asyncio.gather(*(cloud.tick() for _ in range(4)))

        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        assert info.current_round == 1 and info.adapter_version == 1
        assert await cloud.store.get(keyspace.fed_adapter(fed.fid, 2)) is None
        clients = (await cloud.http.get(f"/federations/{fed.fid}/clients")).json()
        assert {c["rounds_contributed"] for c in clients} == {1}
        expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6


async def test_a_closer_that_dies_after_decrypting_leaves_the_same_noisy_update_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Central noise on: without a per-round seed kept in the store, the second closer would draw other
    # noise and the round's published update would depend on whether a process crashed.
    import cloud_server.closing as closing

    computed: list[np.ndarray] = []
    real_aggregate = closing.aggregate

    def dies_after_the_first_decryption(*args, **kwargs):
        result = real_aggregate(*args, **kwargs)
        computed.append(result.vector.copy())
        if len(computed) == 1:
            raise RuntimeError("the process died after decrypting, before committing")
        return result

    monkeypatch.setattr(closing, "aggregate", dies_after_the_first_decryption)
    rng = np.random.default_rng(43)
    dp = CentralDPConfig(mechanism=NoiseMechanism.GAUSSIAN, noise_multiplier=1.0, clip_norm=0.5)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
        for _ in range(5):
            if (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED:
                break
            cloud.clock.advance(cloud.context.settings.close_retry_s)  # the failed attempt's back-off
            await cloud.tick()
        assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED, "the round never closed"
        published = await cloud.vector(fed.fid, 1)
        assert await cloud.store.get(keyspace.fed_round_noise(fed.fid, 0)) is None  # spent

    assert len(computed) == 2
    np.testing.assert_array_equal(computed[0], computed[1])
    np.testing.assert_array_equal(published, computed[1].astype(np.float64))
    mean = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
    assert np.std(published - mean) > 0.01  # there is noise, and it is the same noise twice
