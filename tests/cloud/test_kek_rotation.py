"""Rotating the KEK without downtime: a cloud given the new KEK and the previous one opens what the old one
sealed, `fedlora kek rotate` (`fedlora.kek_rotation.rotate`) re-seals every record under the new one, and
then the new KEK alone runs the federation while the old one alone opens nothing."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from fedlora.kek_rotation import RecordState, SealedKind, rotate
from protocol.aggregation import RoundNoise
from protocol.crypto import KekRing, KeyBindingError, WrongKekError
from protocol.messages import CentralDPConfig, NoiseMechanism, RoundState
from services import keyspace
from services.store import StateStore
from tests.clock import FakeClock
from tests.cloud.harness import Cloud, Federation, running_cloud, small_spec, weighted_mean
from tests.keks import KEK, NEXT_KEK

pytestmark = pytest.mark.anyio
NOISE = RoundNoise(NoiseMechanism.GAUSSIAN, 1.0, 1.0, False, 0.0, 1.0)
CKKS_TOLERANCE = 1e-5


async def _close_round(cloud: Cloud, fed: Federation, round_: int, deltas: Mapping[str, dict]) -> np.ndarray:
    """Both edges' sums of `round_` posted; the mean they carry (what the round adds to the adapter)."""
    for edge_id in ("edge-1", "edge-2"):
        body = await fed.aggregate(cloud, edge_id, round_, deltas[edge_id])
        assert (await fed.post(cloud.http, body)).status_code == 202
    assert (await cloud.status(fed.fid, round_)).state is RoundState.CLOSED
    return weighted_mean(deltas["edge-1"] | deltas["edge-2"])


async def _noise(cloud: Cloud, fed: Federation) -> np.ndarray | None:
    return await cloud.context.federations.central_noise(fed.fid, 0, NOISE, fed.spec.he, size=64)


async def test_a_rotated_kek_keeps_rounds_closing_and_retires_the_old_kek(state_store: StateStore) -> None:
    """Property: no record needs the old KEK after a rotation, and none was lost on the way.

    Two federations under the old KEK: one running, one whose round has its central noise sealed. A cloud
    rolled onto the new KEK with the old one as previous closes a round (the HE secret and the plan-signing
    key open under the previous KEK) and reads the same sealed noise; `rotate` re-seals all five records,
    and run again finds them current. Then a cloud with the new KEK alone closes the next round with the
    right decrypted sum and the same noise, and a cloud with the old KEK alone gets `WrongKekError` for
    each record."""
    rng = np.random.default_rng(61)
    store, clock = state_store, FakeClock()
    async with running_cloud(store=store, clock=clock) as old:
        fed = await Federation.create(old.http, small_spec("fed-a", rounds=3))
        await fed.start(old.http)
        noisy = await Federation.create(old.http, small_spec("fed-b"))
        drawn = await _noise(old, noisy)

    async with running_cloud(store=store, clock=clock, kek=NEXT_KEK, kek_previous=KEK) as rolled:
        expected = await _close_round(rolled, fed, 0, fed.deltas(rng))
        np.testing.assert_array_equal(await _noise(rolled, noisy), drawn)

    keks = KekRing(current=NEXT_KEK, previous=KEK)
    first = await rotate(store, keks, write=True)
    again = await rotate(store, keks, write=True)
    check = await rotate(store, KekRing(current=NEXT_KEK), write=False)

    assert sorted((r.federation_id, r.kind) for r in first.records) == sorted(
        [(fid, SealedKind.HE_SECRET) for fid in ("fed-a", "fed-b")]
        + [(fid, SealedKind.PLAN_KEY) for fid in ("fed-a", "fed-b")]
        + [("fed-b", SealedKind.ROUND_NOISE)]
    )
    assert first.count(RecordState.RESEALED) == 5
    assert again.count(RecordState.CURRENT) == 5 and again.count(RecordState.RESEALED) == 0
    assert check.complete

    async with running_cloud(store=store, clock=clock, kek=NEXT_KEK) as new:
        expected += await _close_round(new, fed, 1, fed.deltas(rng))
        assert np.max(np.abs(await new.vector(fed.fid, 2) - expected)) < 2 * CKKS_TOLERANCE
        np.testing.assert_array_equal(await _noise(new, noisy), drawn)

    async with running_cloud(store=store, clock=clock) as retired:
        federations = retired.context.federations
        with pytest.raises(WrongKekError, match=KekRing(NEXT_KEK).current_id.hex()):
            await federations.secret_scheme(fed.fid)
        with pytest.raises(WrongKekError):
            await federations.plan_signer(fed.fid)
        with pytest.raises(WrongKekError):
            await _noise(retired, noisy)


async def test_a_sealed_key_moved_to_another_federation_stays_refused_across_a_rotation(
    state_store: StateStore,
) -> None:
    """Property: a rotation never launders a record into another federation. A federation's sealed HE secret
    copied over another's is left as it is by `rotate` (reported unreadable, by key) and refused by the
    cloud with `KeyBindingError` under the new KEK, as it was under the old one."""
    store = state_store
    async with running_cloud(store=store) as old:
        await Federation.create(old.http, small_spec("fed-a"))
        await Federation.create(old.http, small_spec("fed-b"))
    moved = await store.get(keyspace.fed_secret("fed-a"))
    assert moved is not None
    await store.set(keyspace.fed_secret("fed-b"), moved)

    report = await rotate(store, KekRing(current=NEXT_KEK, previous=KEK), write=True)

    (refused,) = [r for r in report.records if r.state is RecordState.UNREADABLE]
    assert refused.key == keyspace.fed_secret("fed-b") and "fed-a" in (refused.reason or "")
    assert await store.get(keyspace.fed_secret("fed-b")) == moved
    async with running_cloud(store=store, kek=NEXT_KEK) as new:
        await new.context.federations.secret_scheme("fed-a")
        with pytest.raises(KeyBindingError, match="belongs to federation 'fed-a'"):
            await new.context.federations.secret_scheme("fed-b")
    # Moved after the rotation, the re-sealed key is refused the same way.
    resealed = await store.get(keyspace.fed_secret("fed-a"))
    assert resealed is not None
    await store.set(keyspace.fed_secret("fed-b"), resealed)
    async with running_cloud(store=store, kek=NEXT_KEK) as new:
        with pytest.raises(KeyBindingError, match="belongs to federation 'fed-a'"):
            await new.context.federations.secret_scheme("fed-b")


async def test_during_the_roll_a_replica_on_the_old_kek_backs_off_a_round_whose_noise_it_cannot_open(
    state_store: StateStore,
) -> None:
    """Property: a round's central noise is never deleted or drawn again because of a KEK mismatch.

    During a roll (docs/operations.md, "Rotating the KEK") a replica on the new KEK draws round 0's noise,
    sealed under the new KEK. Both edges' sums then reach a replica still on the old KEK alone, which opens
    the federation's secret but not that noise (`WrongKekError`): its close backs off, counted as a failure
    of the key (never the round's), leaving the sealed noise byte for byte and quarantining nothing. The
    replica on the new KEK then closes the round."""
    store, clock = state_store, FakeClock()
    dp = CentralDPConfig(mechanism=NoiseMechanism.GAUSSIAN, noise_multiplier=1.0, clip_norm=1.0, delta=1e-5)
    async with running_cloud(store=store, clock=clock) as old:
        fed = await Federation.create(old.http, small_spec(central_dp=dp))
        await fed.start(old.http)
        key = keyspace.fed_round_noise(fed.fid, 0)
        async with running_cloud(store=store, clock=clock, kek=NEXT_KEK, kek_previous=KEK) as rolled:
            await _noise(rolled, fed)
            sealed = await store.get(key)
            for edge_id, deltas in fed.deltas(np.random.default_rng(71)).items():
                body = await fed.aggregate(old, edge_id, 0, deltas)
                assert (await fed.post(old.http, body)).status_code == 202
            backed_off = await old.status(fed.fid, 0)
            kept = await store.get(key)
            quarantined = await store.get(keyspace.quarantine_of(key))
            clock.advance(60.0)
            await rolled.tick()
            closed = await rolled.status(fed.fid, 0)

    assert sealed is not None and quarantined is None
    assert kept == sealed, "the old replica deleted or replaced the noise the rolled one drew"
    assert backed_off.state is not RoundState.FAILED and backed_off.close_attempts >= 1, backed_off
    assert backed_off.close_error is not None and KekRing(NEXT_KEK).current_id.hex() in backed_off.close_error
    assert closed.state is RoundState.CLOSED, closed
