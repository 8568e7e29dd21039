"""Review 19c of issue 19: each test reproduced a promise of the fixes made after reviews 19 and 19b that did
not hold when the review ran; all seven hold now. Run on the memory store and a real Redis
(tests/adversarial/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

import httpx
import numpy as np
import pytest

from cloud_server.closing import RoundCloser
from edge_aggregator.ledger import ForwardStatus
from protocol.messages import (
    DropReason,
    EdgeEnrolment,
    FederationState,
    Role,
    RoundState,
)
from services.identity import SigningKey
from tests.clock import FakeClock
from tests.cloud.harness import (
    Federation,
    SlowAnswers,
    edge_link,
    issue_enrolment_token,
    running_cloud,
    small_spec,
)
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import World, running_edge

pytestmark = pytest.mark.anyio


async def test_a_stop_racing_a_close_seals_the_round_it_fails_and_counts_its_sums(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: stopping a federation seals its open round and fails it with the sums it holds shown
    forwarded and their uploads counted dropped; no 202 is left out of a model uncounted.

    Round 0 holds edge-1's sum; the admin stops the federation while the deadline check closes round 0 (the
    close commits between `RoundCloser.stop`'s read of the record and `fail`'s transaction, as when the stop
    arrives while the close decrypts). Round 1 opens and edge-1 forwards its round-1 sum at once (202).
    `fail` finds `current_round` moved on and returns False; `RoundCloser.stop` goes on to round 1, seals it
    and fails it with edge-1's sum shown forwarded and its uploads counted dropped. (It used to fall back to
    `FederationService.stop`, which failed round 1 unsealed, its sum uncounted; that fallback now fails
    only a sealed round.)"""
    async with running_cloud() as cloud:
        spec = small_spec(rounds=3)
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        deltas = fed.deltas(np.random.default_rng(3))
        body = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
        assert (await fed.post(cloud.http, body)).status_code == 202
        real_fail = RoundCloser.fail
        forwards = []

        async def close_meanwhile(self, fid, round_, now, **kw):  # type: ignore[no-untyped-def]
            if kw.get("ends") is FederationState.STOPPED and not forwards:
                cloud.clock.advance(spec.round_deadline_s + 1)
                await cloud.tick()  # round 0 closes; round 1 opens
                assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
                late = await fed.aggregate(cloud, "edge-1", 1, deltas["edge-1"])
                forwards.append(await fed.post(cloud.http, late))
            return await real_fail(self, fid, round_, now, **kw)

        monkeypatch.setattr(RoundCloser, "fail", close_meanwhile)
        stop = await cloud.http.post(f"/federations/{fed.fid}/stop")
        assert stop.status_code == 200, stop.text
        assert forwards and forwards[0].status_code == 202, forwards
        status = await cloud.status(fed.fid, 1)

    assert status.state is RoundState.FAILED, status.state
    assert sum(status.uploads_dropped.values()) == 2, (status.uploads_dropped, status.edges)
    assert [e.edge_id for e in status.edges if e.forwarded] == ["edge-1"], status.edges


async def test_a_replica_whose_kek_does_not_unwrap_the_keys_can_stop_a_federation() -> None:
    """Property: a wrong-KEK replica backs off and shows the failure; the admin's stop ends the federation
    (it seals and fails the open round; no plan is signed, so no key is needed).

    A federation created by a cloud with one KEK is served by a replica with another (a misconfigured
    rollout, the case `KeyBackoff` exists for). The admin stops the federation there: `RoundCloser.stop`
    seals the open round and calls `fail(ends=STOPPED)`, which opens the plan-signing key only to open a
    next round (`RoundCloser._reopening`), so the stop answers 200 and the round is failed. (`fail` used to
    open the key first: `KeyStoreError`, a 500, the federation still active, its round sealed, not failed.)"""
    async with running_cloud() as first:
        store, clock = first.store, first.clock
        fed = await Federation.create(first.http, small_spec())
        await fed.start(first.http)
    async with running_cloud(store=store, clock=clock, kek=bytes(range(32))) as cloud:
        try:
            stop: object = (await cloud.http.post(f"/federations/{fed.fid}/stop")).status_code
        except Exception as e:  # the in-process transport raises what a server answers 500 for
            stop = repr(e)[:200]
        status = await cloud.status(fed.fid, 0)

    assert stop == 200, (stop, status.state)
    assert status.state is RoundState.FAILED, status.state


async def test_an_edge_follows_a_step_of_its_own_clock_at_its_next_polls() -> None:
    """Property: an edge's cloud time stays within the error bound it reports (`OffsetClock.error_s`, at
    most the spec's `max_clock_skew_s`); a genuine clock step is followed.

    The edge's clock agrees with the cloud's; it polls for the plan every 25 s (`long_poll_s`), answers
    coming back in 50 ms. Then its host's NTP daemon steps the local clock back by 30 s (a genuine step:
    every later sample measures +30 s, each good to 50-100 ms). The pre-step samples came back a little
    faster (50 ms against 100 ms), so the smallest round trip among the last eight would keep the old
    offset for up to seven more polls, 30 s off while reporting an error of 25 ms. The first post-step
    sample cannot agree with the offset in use (30 s apart, bounds 25 + 50 ms): `OffsetClock` takes it as
    a step and drops the older samples, so from that poll on (the test checks three) the edge's cloud
    time is right."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        local = FakeClock(cloud.clock.now)
        transport = SlowAnswers(cloud.app, local)
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3")
        link, edge_time = edge_link(fed, transport, local, token)
        key = SigningKey.generate()
        errors: list[tuple[float, float | None]] = []
        try:
            await link.enrol(
                EdgeEnrolment(edge_id="edge-3", url="http://edge-3.test:8710", public_key=key.public_bytes),
                key,
            )
            transport.delay_s = 0.05
            for _ in range(3):
                await link.plan(None, 0.0)
                cloud.clock.advance(25.0)
                local.advance(25.0)
            local.advance(-30.0)  # the host's clock is stepped back
            transport.delay_s = 0.1
            for _ in range(3):
                await link.plan(None, 0.0)
                errors.append(((edge_time() - cloud.clock.now).total_seconds(), edge_time.error_s))
                cloud.clock.advance(25.0)
                local.advance(25.0)
        finally:
            await link.close()

    assert all(abs(e) <= small_spec().max_clock_skew_s for e, _ in errors), errors


async def test_a_round_failing_at_its_deadline_on_a_wrong_kek_replica_shows_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: a wrong-KEK replica backs off and shows the failure in the round's status
    (`close_attempts`, `close_error`); nothing loops on every deadline check unseen.

    A federation created with one KEK is served by a replica with another. No edge forwards; the round's
    deadline passes. The deadline check calls `RoundCloser.expire`, whose `fail` seals the round and opens
    the plan-signing key (to sign the next round's plan): `KeyStoreError`. It is recorded like a close
    failing on the key (`record_failure(..., of_key=True)`: the round's `close_attempts` and `close_error`)
    and this replica backs off (`KeyBackoff`), so 30 checks open the key at most five times. (It used to
    raise out of `advance` on every check, unbacked-off, the status showing nothing.)"""
    from cloud_server.federations import FederationService

    async with running_cloud() as first:
        store, clock = first.store, first.clock
        spec = small_spec()
        fed = await Federation.create(first.http, spec)
        await fed.start(first.http)
    opened: list[int] = []
    real = FederationService.plan_signer

    async def counted(self, fid):  # type: ignore[no-untyped-def]
        opened.append(1)
        return await real(self, fid)

    monkeypatch.setattr(FederationService, "plan_signer", counted)
    async with running_cloud(store=store, clock=clock, kek=bytes(range(32))) as cloud:
        cloud.clock.advance(spec.round_deadline_s + 1)
        for _ in range(30):
            cloud.clock.advance(1.0)
            await cloud.tick()
        status = await cloud.status(fed.fid, 0)

    assert status.close_attempts > 0 or status.state is RoundState.FAILED, (len(opened), status.state)
    assert len(opened) <= 5, (len(opened), status.close_attempts, status.close_error)


async def test_a_retried_forward_of_a_counted_sum_is_recognised_after_the_retention_window() -> None:
    """Property: an upload answered 202 is in a model or counted dropped, exactly once; a retried forward
    is byte-identical so that the cloud "counts it once by idempotency key and digest" (forwarder.py).

    Both edges forward round 0 and it closes with their sums in the model. edge-2's 202 never reached it
    (its process died after sending, the link broke), so its round stays pending and it retries when it is
    back, after the cloud's retention window (`retain_round_s`, an hour by default) expired the round's
    sums. The cloud keeps each taken sum's mark (idempotency key and ciphertext digest,
    `keyspace.fed_round_forwards`) for good and answers the retry 200 with the round's status, as it does a
    repeat inside the window: the edge records it delivered. (Review 19c found it answered 409
    `round_closed`, which the edge takes as a sum never counted: uploads in round 0's model counted
    dropped, or carried into a later round and refused there as a replay.)"""
    async with running_cloud(retain_round_s=0.2) as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3))
        await fed.start(cloud.http)
        bodies = {
            edge_id: await fed.aggregate(cloud, edge_id, 0, deltas)
            for edge_id, deltas in fed.deltas(np.random.default_rng(23)).items()
        }
        for body in bodies.values():
            assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
        await asyncio.sleep(0.5)
        retry = await fed.post(cloud.http, bodies["edge-2"])

    assert retry.status_code == 200, (retry.status_code, retry.text[:300])
    assert retry.json()["state"] == RoundState.CLOSED.value


async def test_an_answer_whose_stamps_outlast_its_round_trip_does_not_move_the_edge_s_cloud_time() -> None:
    """Property: an edge's cloud time cannot be moved by slow or forged answers beyond the error bound
    (`OffsetClock.error_s`); the filter keeps a fine measurement against coarser ones.

    The edge's clock agrees with the cloud's; a first plan poll measures offset 0 to 25 ms. A second
    answer carries time stamps that cannot be true of it (replayed from a cached long poll, or forged on the
    path): the cloud claims to have held it 20 s while the edge waited 50 ms, stamped 120 s in the past.
    Its round trip, (50 ms - 20 s), is negative; floored at zero, the sample would look exact (error 0),
    beat the genuine one and move the edge's cloud time by 120 s. `OffsetSample.measure` refuses it
    (`ImpossibleStampsError`; `cloud_sample` logs it and gives no sample), so the genuine offset stays."""
    from protocol.messages import CLOUD_ANSWERED_AT_HEADER, CLOUD_RECEIVED_AT_HEADER

    class Forged(SlowAnswers):
        forge = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent = self.local()
            response = await super().handle_async_request(request)
            if self.forge:
                back = timedelta(seconds=-120.0)
                response.headers[CLOUD_RECEIVED_AT_HEADER] = (sent + back - timedelta(seconds=10)).isoformat()
                response.headers[CLOUD_ANSWERED_AT_HEADER] = (
                    self.local() + back + timedelta(seconds=10)
                ).isoformat()
            return response

    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        local = FakeClock(cloud.clock.now)
        transport = Forged(cloud.app, local)
        transport.delay_s = 0.05
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3")
        link, edge_time = edge_link(fed, transport, local, token)
        key = SigningKey.generate()
        try:
            await link.enrol(
                EdgeEnrolment(edge_id="edge-3", url="http://edge-3.test:8710", public_key=key.public_bytes),
                key,
            )
            await link.plan(None, 0.0)
            assert edge_time.error_s == 0.025, edge_time.error_s
            transport.forge = True
            await link.plan(None, 0.0)
            cloud.clock.advance(0.1)  # the cloud's time went on as the edge's did
            error_s = (edge_time() - cloud.clock.now).total_seconds()
        finally:
            await link.close()

    assert abs(error_s) <= 0.025 + 0.1, (error_s, edge_time.offset_s, edge_time.error_s)


async def test_an_edge_killed_while_recording_a_drop_counts_it_after_its_restart(
    make_world: Callable[..., World],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: every upload answered 202 is in a model or counted dropped, exactly once, across
    restarts.

    hosp-a uploads for round 0 (202); the round closes with one upload, fewer than k = 2, and is skipped.
    `RoundLedger.record` writes the outcome and the round's drop counters in one transaction, so an edge
    process killed while recording it (here: any `incr` of the store raises) leaves both or neither: after
    the restart the round has its outcome and `uploads_dropped` counts the acknowledged upload that reaches
    no model. (Review 19c found the outcome written first and the counters in separate calls after it.)"""
    world = make_world(clients=3, k=2)
    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(world.hospitals["hosp-a"]))).status_code == 202
        real = world.store.incr

        async def killed(*args: object, **kwargs: object) -> int:
            raise asyncio.CancelledError("edge process killed")

        monkeypatch.setattr(world.store, "incr", killed)
        world.clock.advance(61)
        with contextlib.suppress(asyncio.CancelledError):
            await edge.core.tick()
        monkeypatch.setattr(world.store, "incr", real)
    async with running_edge(world) as edge:
        world.clock.advance(1)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        dropped = dict(await edge.core.ledger.dropped(0))

    assert outcome is not None and outcome.status is ForwardStatus.SKIPPED, outcome
    assert dropped == {DropReason.TOO_FEW_CLIENTS: 1}, (dropped, outcome.dropped)
