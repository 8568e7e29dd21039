"""Review 19b of issue 19: each test reproduced a promise of the issue's fix that did not hold when the review
ran; all seven hold now. Run on the memory store and a real Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import numpy as np
import pytest

from edge_aggregator.cloud_link import HttpCloudLink
from edge_aggregator.ledger import ForwardStatus
from protocol.messages import (
    ClientEnrolment,
    DropReason,
    EdgeAggregate,
    EdgeEnrolment,
    FederationState,
    LateUploadConfig,
    Role,
    RoundState,
)
from services.clock import OffsetClock
from services.http import PeerRefusedError
from services.identity import SigningKey
from tests.clock import FakeClock
from tests.cloud.harness import (
    LAYOUT_SIZE,
    Federation,
    SlowAnswers,
    edge_link,
    issue_enrolment_token,
    post_enrolment,
    running_cloud,
    small_spec,
)
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import World, running_edge, until

pytestmark = pytest.mark.anyio


MOVE_TOPOLOGY = {
    "edge-1": ("client-a", "client-b", "client-c", "client-x"),
    "edge-2": ("client-d", "client-e"),
    "edge-3": ("client-g", "client-h"),
}


@pytest.mark.parametrize("then", ["re-enrols at edge-2", "moves on to edge-3"])
async def test_a_late_bucket_from_the_edge_a_hospital_left_is_taken_after_it_re_enrols(then: str) -> None:
    """Property: a hospital is in exactly one edge's aggregate per round, and moving waits until no round is
    open for it; so a sum for round r is checked against the edge the hospital had in round r, however
    often it re-enrolled or moved since (the cloud keeps the edges it had back to the oldest round a late
    bucket may come from, `ClientInfo.edges_before`).

    c asks to move edge-1 -> edge-2 while round 1 (c in its plan) is open: the move is pending after round
    1. c's round-1 upload reaches edge-1 late (after edge-1 forwarded), and edge-1 acknowledges it into a
    late bucket for round 1 (with x's). Round 1 closes; in round 2 c is edge-2's and re-enrols there (its
    agent restarted, a new token), or moves on to edge-3 (two moves in a row). Either way the cloud still
    knows c was edge-1's in round 1, and takes edge-1's round-2 aggregate carrying the round-1 bucket of c
    and x (both uploaded to edge-1 for round 1, where the cloud placed them) with a and b's on-time sum.
    (Before, `placed` kept one step of move history and wrote over it, and the sum was refused 422
    `unknown_client`.)"""
    rng = np.random.default_rng(7)
    spec = small_spec(rounds=4, late_uploads=LateUploadConfig(max_staleness=2, decay=0.5))

    def d() -> np.ndarray:
        return rng.normal(0, 0.01, LAYOUT_SIZE)

    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, MOVE_TOPOLOGY)
        await fed.start(cloud.http)

        async def enrol_c(edge_id: str) -> httpx.Response:
            body = ClientEnrolment(
                client_id="client-c",
                edge_id=edge_id,
                public_key=fed.client_keys["client-c"].public_bytes,
                num_examples=100,
            )
            return await post_enrolment(cloud.http, fed.fid, body, fed.client_keys["client-c"], token=None)

        for r in (0,):
            for edge_id, ids in MOVE_TOPOLOGY.items():
                body = await fed.aggregate(cloud, edge_id, r, {c: d() for c in ids})
                assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
        # Round 1 is open, c is in its plan at edge-1: the move waits until round 1 is over.
        moved = await enrol_c("edge-2")
        assert moved.status_code == 200, moved.text
        assert moved.json()["moving_after_round"] == 1
        for edge_id, ids in {
            "edge-1": ("client-a", "client-b"),
            "edge-2": ("client-d", "client-e"),
            "edge-3": ("client-g", "client-h"),
        }.items():
            body = await fed.aggregate(cloud, edge_id, 1, {c: d() for c in ids})
            assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.status(fed.fid, 1)).state is RoundState.CLOSED
        # Round 2: c is edge-2's now, and re-enrols there (a restarted agent), or moves on to edge-3.
        again = await enrol_c("edge-2" if then == "re-enrols at edge-2" else "edge-3")
        assert again.status_code == 200, again.text
        # edge-1 forwards a and b for round 2 with c's and x's late round-1 uploads, which it acknowledged.
        body = await fed.aggregate(
            cloud,
            "edge-1",
            2,
            {"client-a": d(), "client-b": d()},
            late={1: {"client-c": d(), "client-x": d()}},
        )
        forward = await fed.post(cloud.http, body)

    assert forward.status_code == 202, forward.text


async def test_an_edge_with_a_clock_days_off_keeps_polling_for_plans() -> None:
    """Property: edges check deadlines in cloud time, measured on plan polls; the skew is reported and
    alerted, not a reason to cut the edge off.

    An edge whose clock reads two days behind the cloud's (an RTC reset at boot) polls for the plan: the
    first poll measures an offset of +172800 s and takes the plan. Every later poll reports that offset in
    `clock_offset_s`, which the route takes whatever its size (only NaN and infinities are refused): the
    edge keeps getting plans, and the cloud records its skew and raises the alert for it."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        local = FakeClock(cloud.clock.now - timedelta(days=2))
        link = HttpCloudLink(
            "http://cloud",
            federation_id=fed.fid,
            enrolment_token=await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3"),
            transport=httpx.ASGITransport(app=cloud.app),
            clock=OffsetClock(local),
            attempts=1,
        )
        key = SigningKey.generate()
        try:
            await link.enrol(
                EdgeEnrolment(edge_id="edge-3", url="http://edge-3.test:8710", public_key=key.public_bytes),
                key,
            )
            first = await link.plan(None, 0.0)
            assert first is not None and first.round == 0
            errors = []
            try:
                await link.plan(None, 0.0)
            except Exception as e:
                errors.append(repr(e))
            edges = (await cloud.http.get(f"/federations/{fed.fid}/edges")).json()
        finally:
            await link.close()

    assert errors == [], errors
    clocks = [e["clock"] for e in edges if e["edge_id"] == "edge-3"]
    assert clocks and clocks[0] is not None, edges
    assert clocks[0]["offset_s"] == 172800.0 and clocks[0]["alert"] is True, clocks


async def test_a_hospital_taken_out_of_a_refused_sum_is_counted_as_dropped(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: a 202 means "in the model, or in an explicit visible record of why not": every acknowledged
    upload that reaches no model is in the round's `uploads_dropped` (and `fedlora_uploads_dropped_total`).

    Three hospitals upload to the edge for round 0 (202 each). The cloud refuses the sum naming hosp-c
    (422 `unknown_client`, detail.client_ids: a hospital that is another edge's in that round, as the cloud
    says of one whose move history it holds differently, see the test above). The edge takes c out and
    forwards a and b (delivered); `RoundLedger.exclude` counts c as dropped (`client_refused`) in the same
    transaction that takes it out of the sum, so the round's `uploads_dropped` shows the one acknowledged
    upload that is in no model."""
    world = make_world(clients=3, k=2)
    honest = world.cloud.forward

    async def forward(aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        if any(c.client_id == "hosp-c" for c in aggregate.contributions):
            raise PeerRefusedError(
                422,
                "unknown_client",
                "client 'hosp-c' is edge 'edge-south''s in round 0, not 'edge-north''s",
                detail={"round": 0, "client_ids": ["hosp-c"]},
            )
        await honest(aggregate, within_s=within_s)

    world.cloud.forward = forward  # type: ignore[method-assign]
    async with running_edge(world) as edge:
        for hospital in world.hospitals.values():
            assert (await edge.upload(world.update(hospital))).status_code == 202
        world.clock.advance(61)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        progress = await edge.progress(0)

    assert outcome is not None and outcome.status is ForwardStatus.DELIVERED, outcome
    assert outcome.count == 2
    # 3 acknowledged, 2 in the forwarded sum: the third must be counted somewhere.
    assert sum(progress["uploads_dropped"].values()) == 1, progress
    assert progress["uploads_dropped"] == {DropReason.CLIENT_REFUSED.value: 1}, progress


async def test_the_last_round_s_refused_sum_is_counted_as_dropped_when_the_federation_ends(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Property: a 202 means "in the model, or in an explicit visible record of why not", also when the
    federation ends.

    rounds = 1 with late uploads on: hosp-a and hosp-b upload for round 0, the federation's only round
    (202 each); the cloud closes it before this edge forwards (409 `round_closed`). The edge carries the sum
    into round 1's bucket for round 0 (outcome CARRIED), and the federation completes: round 1 never opens.
    Once the edge learns the federation ended (its plan poll answers 410), it closes every round that still
    holds uploads and counts them dropped (`federation_ended`): the two acknowledged uploads are in round
    0's `uploads_dropped`."""
    world = make_world(clients=3, k=2, quorum=1.0, rounds=1, late_uploads=LateUploadConfig(max_staleness=1))
    async with running_edge(world) as edge:
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(world.hospitals[cid]))).status_code == 202
        world.cloud.closed_rounds.add(0)
        world.clock.advance(61)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        await world.cloud.end(FederationState.COMPLETED)
        await until(lambda: edge.core.ended is not None, what="the edge to learn the federation ended")
        world.clock.advance(3600)
        for _ in range(3):
            await edge.core.tick()
        dropped = dict(await edge.core.ledger.dropped(0))
        dropped_1 = dict(await edge.core.ledger.dropped(1))

    assert outcome is not None, outcome
    # Either not carried past the last round, or counted as dropped once the federation ended.
    assert outcome.carried_into is None or sum(dropped.values()) + sum(dropped_1.values()) == 2, (
        outcome,
        dropped,
        dropped_1,
    )
    assert dropped == {DropReason.FEDERATION_ENDED: 2}, dropped


async def test_one_slow_plan_poll_does_not_move_the_edge_s_cloud_time() -> None:
    """Property: edges check deadlines in cloud time, to within the skew the spec allows
    (`max_clock_skew_s`, 5 s by default).

    The edge's clock agrees with the cloud's exactly. A first plan poll answers at once: offset 0. A second
    one's answer takes 40 s to come back (a congested link, a paused process): the on-wire offset of that
    one exchange is -20 s, good only to half its 40 s network round trip. The link keeps the offset of the
    sample with the smallest round trip among the recent ones (NTP's minimum-delay choice,
    `services.clock.OffsetClock`), so the exact measurement stays in use and the edge's deadlines run on
    the cloud's time."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        local = FakeClock(cloud.clock.now)
        transport = SlowAnswers(cloud.app, local)
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3")
        link, edge_time = edge_link(fed, transport, local, token)
        key = SigningKey.generate()
        try:
            await link.enrol(
                EdgeEnrolment(edge_id="edge-3", url="http://edge-3.test:8710", public_key=key.public_bytes),
                key,
            )
            await link.plan(None, 0.0)
            assert edge_time.offset_s == 0.0
            transport.delay_s = 40.0
            await link.plan(None, 0.0)
            cloud.clock.advance(40.0)  # the cloud's time went on as the edge's did
            error_s = (edge_time() - cloud.clock.now).total_seconds()
        finally:
            await link.close()

    assert abs(error_s) <= small_spec().max_clock_skew_s, error_s


async def test_an_edge_sum_that_does_not_unmask_is_counted_as_dropped() -> None:
    """Property: an aggregate the cloud answered 202 is in the model or in the round's `uploads_dropped`.

    Masking federation, two cohorts of four. edge-1 forwards its honest cohort's sum with a crafted chunk
    added (the count kept at four): the cloud answers 202. At close the sum does not unmask
    (`MaskedSumError`); the closer leaves edge-1 out, prepares again from edge-2 alone, and adds edge-1 to
    `flagged`. The round closes with `flagged == ("edge-1",)`, edge-1's four acknowledged uploads counted
    in `uploads_dropped` (`masking_failed`), and edge-1 shown as forwarded."""
    from tests.adversarial.test_cloud_acceptance import deltas_for, resigned
    from tests.adversarial.test_masking import MASKED, TOPOLOGY, cohort, forwarded, masked_spec

    rng = np.random.default_rng(13)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, masked_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        deltas = deltas_for(rng, tuple(c for ids in TOPOLOGY.values() for c in ids))
        run = cohort(fed, "edge-1", {c: deltas[c] for c in TOPOLOGY["edge-1"]})
        honest = await forwarded(cloud, fed, "edge-1", deltas, run)
        scheme = fed.scheme
        crafted = scheme.encrypt_residues(
            np.full(LAYOUT_SIZE, (1 << (MASKED.ring_bits - 1)) + 12345, dtype=np.uint64)
        )
        total = scheme.add(scheme.deserialize(honest.ciphertext), crafted)
        total.count -= 1
        tampered = resigned(fed, honest, ciphertext=scheme.serialize(total))
        response = await fed.post(cloud.http, tampered)
        assert response.status_code == 202, response.text
        other = cohort(fed, "edge-2", {c: deltas[c] for c in TOPOLOGY["edge-2"]})
        assert (
            await fed.post(cloud.http, await forwarded(cloud, fed, "edge-2", deltas, other))
        ).status_code == 202
        status = await cloud.status(fed.fid, 0)

    assert status.state is RoundState.CLOSED, status.failure
    assert status.flagged == ("edge-1",)
    assert status.uploads_dropped == {DropReason.MASKING_FAILED: 4}, (status.uploads_dropped, status.edges)
    assert {e.edge_id for e in status.edges if e.forwarded} == {"edge-1", "edge-2"}, status.edges
    assert status.clients_contributed == 4, status.clients_contributed


async def test_a_close_that_keeps_failing_on_the_key_backs_off_and_shows_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: a round whose close keeps failing is retried with back-off and bounded (failed with a
    reason after `close_max_attempts`, or at least counted and shown); nothing loops forever.

    A federation created by a cloud with one KEK is served by a replica started with another (a
    misconfigured rollout). Both edges forward (202). Every close attempt raises `KeyStoreError` when it
    unwraps the secret key, after sealing the round and reading every edge sum: `close` re-raises it
    without recording a failure, so each deadline check (every `deadline_check_s`) takes the lease, reads
    all sums again and fails again, forever; the round's status said `aggregating` with `close_attempts` 0
    and no `close_error`. Now each such failure is counted (never towards failing the round: the key, not
    the round, is at fault), backs off, and shows in the status."""
    from cloud_server.federations import FederationService

    async with running_cloud() as first:
        store = first.store
        fed = await Federation.create(first.http, small_spec())
        await fed.start(first.http)
        clock = first.clock
    attempts: list[int] = []
    real = FederationService.secret_scheme

    async def counted(self, fid):  # type: ignore[no-untyped-def]
        attempts.append(1)
        return await real(self, fid)

    monkeypatch.setattr(FederationService, "secret_scheme", counted)
    async with running_cloud(store=store, clock=clock, kek=bytes(range(32))) as cloud:
        for edge_id, deltas in fed.deltas(np.random.default_rng(5)).items():
            body = await fed.aggregate(cloud, edge_id, 0, deltas)
            assert (await fed.post(cloud.http, body)).status_code == 202
        for _ in range(30):
            cloud.clock.advance(1.0)
            await cloud.tick()
        status = await cloud.status(fed.fid, 0)

    assert status.close_attempts > 0 or status.state is RoundState.FAILED, (len(attempts), status.state)
    assert len(attempts) <= 5, len(attempts)
