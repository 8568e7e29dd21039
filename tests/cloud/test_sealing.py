"""Sealing: a round is sealed before its aggregates are read to close or fail it; no sum is stored into a
sealed round (409 `round_closed`), and nothing is committed unless the stored sums are those decrypted."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest

from cloud_server.closing import RoundCloser
from cloud_server.federations import FederationService
from cloud_server.rounds import RoundService
from protocol.messages import RoundState
from services import keyspace
from tests.cloud.harness import Federation, one_sum_in, running_cloud, small_spec, weighted_mean

pytestmark = pytest.mark.anyio


async def test_an_aggregate_arriving_while_its_round_fails_is_refused_not_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline passes with no sum in; the deadline check fails the round. An edge's forward that
    arrives while the failure is written is refused (409 `round_closed`) rather than acknowledged and
    left out of a failed round."""
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(round_deadline_s=60.0, upload_deadline_s=30.0, forward_budget_s=20.0)
        )
        await fed.start(cloud.http)
        body = await fed.aggregate(cloud, "edge-1", 0, fed.deltas(np.random.default_rng(5))["edge-1"])
        sealed, proceed = asyncio.Event(), asyncio.Event()
        real_signer = FederationService.plan_signer

        async def held_signer(self: FederationService, fid: str):  # fail() asks for it after sealing
            sealed.set()
            await proceed.wait()
            return await real_signer(self, fid)

        monkeypatch.setattr(FederationService, "plan_signer", held_signer)
        cloud.clock.advance(61)
        failing = asyncio.create_task(cloud.tick())
        await asyncio.wait_for(sealed.wait(), 10)
        forward = await fed.post(cloud.http, body)
        proceed.set()
        await failing

        assert forward.status_code == 409, forward.text
        assert forward.json()["code"] == "round_closed"
        assert "being closed" in forward.json()["message"]
        failed = await cloud.status(fed.fid, 0)
        assert failed.state is RoundState.FAILED and not any(e.forwarded for e in failed.edges)
        assert await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0)) == {}


async def test_an_aggregate_stored_before_a_failing_round_is_sealed_closes_it_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline check saw no sum and goes to fail the round; an edge's sum is stored before the seal.
    The round is not failed: it closes with that sum."""
    rng = np.random.default_rng(6)
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(round_deadline_s=60.0, upload_deadline_s=30.0, forward_budget_s=20.0)
        )
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        body = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
        real_fail, real_advance = RoundCloser.fail, RoundService.advance
        answers = []

        async def fail_after_a_forward(self: RoundCloser, *args, **kwargs) -> bool:
            if not answers:
                # The forward's own deadline check is held back, as if it ran a moment later.
                monkeypatch.setattr(RoundService, "advance", lambda *_: asyncio.sleep(0))
                answers.append(await fed.post(cloud.http, body))
                monkeypatch.setattr(RoundService, "advance", real_advance)
            return await real_fail(self, *args, **kwargs)

        monkeypatch.setattr(RoundCloser, "fail", fail_after_a_forward)
        cloud.clock.advance(61)
        await cloud.tick()

        assert answers[0].status_code == 202, answers[0].text
        status = await cloud.status(fed.fid, 0)
        assert status.state is RoundState.CLOSED and status.failure is None
        assert {e.edge_id: e.forwarded for e in status.edges} == {"edge-1": True, "edge-2": False}
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - weighted_mean(deltas["edge-1"]))) < 1e-6


async def test_a_round_sealed_between_receives_checks_and_its_store_refuses_the_sum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seal is checked in the same atomic step as the store (a seal written after `receive`'s first
    look at the round still refuses the sum)."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        body = await fed.aggregate(cloud, "edge-1", 0, fed.deltas(np.random.default_rng(7))["edge-1"])
        real_check = RoundService._check_mask_correction

        async def sealed_meanwhile(self: RoundService, fid: str, agg) -> None:
            await cloud.store.set(keyspace.fed_round_sealed(fid, 0), b"{}")
            await real_check(self, fid, agg)

        monkeypatch.setattr(RoundService, "_check_mask_correction", sealed_meanwhile)
        forward = await fed.post(cloud.http, body)

        assert (forward.status_code, forward.json()["code"]) == (409, "round_closed")
        assert await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0)) == {}
        assert await cloud.store.get(keyspace.fed_round_aggregate_digests(fed.fid, 0)) is None
        assert await cloud.store.scan(f"cloud:{fed.fid}:ciphertext:") == []  # no claim taken either


async def test_a_round_whose_stored_aggregates_changed_after_decrypting_is_not_committed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit reads, in its transaction, which sums the round holds; if they are not those it decrypted
    (a write that bypassed the seal), it writes nothing and says so. Once they are, the next check closes."""
    rng = np.random.default_rng(8)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        digests_key = keyspace.fed_round_aggregate_digests(fed.fid, 0)
        real_release = RoundCloser._release
        held: list[bytes] = []

        async def changed_after_decrypting(self: RoundCloser, fid: str, *args, **kwargs):
            raw = await cloud.store.get(digests_key)
            assert raw is not None
            held.append(raw)
            await cloud.store.set(digests_key, json.dumps(json.loads(raw) | {"edge-9": "0" * 64}).encode())
            return await real_release(self, fid, *args, **kwargs)

        monkeypatch.setattr(RoundCloser, "_release", changed_after_decrypting)
        with caplog.at_level(logging.ERROR, logger="fedlora.cloud"):
            for edge_id in ("edge-1", "edge-2"):
                forward = await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
                assert forward.status_code == 202, forward.text

        assert any("round not committed" in r.getMessage() for r in caplog.records)
        assert (await cloud.status(fed.fid, 0)).state is RoundState.AGGREGATING
        assert await cloud.store.get(keyspace.fed_adapter(fed.fid, 1)) is None

        monkeypatch.setattr(RoundCloser, "_release", real_release)
        await cloud.store.set(digests_key, held[0])
        await cloud.tick()
        assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
        expected = weighted_mean(deltas["edge-1"] | deltas["edge-2"])
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) < 1e-6


async def test_changing_a_federation_s_state_alone_never_fails_an_unsealed_round() -> None:
    """`FederationService.stop` (the stop's fallback, which changes the federation's state alone) fails an
    open round only if it is sealed: an unsealed round may hold a sum answered 202, and a failed status
    written without the seal and the sums shows it neither forwarded nor counted dropped. Round 0 holds
    edge-1's sum, unsealed; the fallback stops the federation and leaves round 0 as it was."""
    async with running_cloud() as cloud:
        fed = await one_sum_in(cloud, np.random.default_rng(8))
        before = await cloud.status(fed.fid, 0)
        info = await cloud.context.federations.stop(fed.fid)
        after = await cloud.status(fed.fid, 0)

    assert info.state.value == "stopped", info
    assert after.state is before.state is RoundState.COLLECTING, (before.state, after.state)
    assert after.failure is None, after.failure
