"""Records the edge reads back from the store that no longer parse (issue 20, item 1; its second review):
each is moved to its quarantine key and the edge goes on from what it holds. The review's own tests
(tests/adversarial/test_review_issue20_r2.py) show that nothing answers a 5xx or stalls; these check what
is kept, counted and refused on the way, on the memory store and a real Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from edge_aggregator.ledger import ForwardStatus
from protocol.messages import DropReason
from services import keyspace
from tests.edge.harness import EID, FID, Edge, World, running_edge, until

pytestmark = pytest.mark.anyio
ATOL = 1e-5


async def test_a_running_sum_that_does_not_read_back_is_quarantined_and_the_round_sums_the_uploads_again(
    make_world: Callable[..., World],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Property: a stored running sum that does not deserialise goes to quarantine alone; the manifest stays,
    and the folder sums the round's stored uploads again from an empty sum, so no acknowledged upload is
    dropped for it and the round forwards all of them. Whether the folder had folded hospital a's upload
    before the sum was altered or not, the outcome is the same. (Before the streaming edge a's upload lived
    only in the sum and was counted dropped; once each upload was stored on its own, quarantining the sum with
    its manifest dropped b's acknowledged upload too, and the round forwarded nothing: CI, 2026-12-07.)"""
    # Prepare: hospital a's upload stored, then the sum overwritten.
    world = make_world(clients=3, k=2, quorum=0.5)
    k_sum, k_manifest = keyspace.edge_sum(EID, FID, 0), keyspace.edge_manifest(EID, FID, 0)
    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(world.hospitals["hosp-a"]))).status_code == 202
        await world.store.set(k_sum, b"not a ciphertext")

        # Execute: hospital b's upload reaches the quorum of 2.
        answer = await edge.upload(world.update(world.hospitals["hosp-b"]))
        await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
        dropped = await world.ledger().dropped(0)
        kept = [await world.store.get(keyspace.quarantine_of(key)) for key in (k_sum, k_manifest)]

    # Assert: a and b forwarded, their sum exact; nothing dropped; the altered sum kept for the operator.
    assert answer.status_code == 202, answer.text
    forwarded = world.cloud.attempts[0]
    assert sorted(c.client_id for c in forwarded.contributions) == ["hosp-a", "hosp-b"]
    expected = world.hospitals["hosp-a"].vector + world.hospitals["hosp-b"].vector
    np.testing.assert_allclose(world.decrypt(forwarded.ciphertext), expected, atol=ATOL)
    assert dropped == {}
    assert kept == [b"not a ciphertext", None]
    lines = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert lines and lines[0].__dict__["data"]["key"] == k_sum
    assert lines[0].__dict__["data"]["uploads_dropped"] == 0


async def _refused_upload(world: World, edge: Edge) -> tuple[str, int]:
    """One upload refused (a replay of hospital b's): the round counts one refused upload."""
    update = world.update(world.hospitals["hosp-b"])
    assert (await edge.upload(update)).status_code == 202
    answer = await edge.upload(update)
    assert (answer.status_code, answer.json()["code"]) == (409, "replay"), answer.text
    return keyspace.edge_refused(EID, FID, 0), 1


async def _accepted_upload(world: World, edge: Edge) -> tuple[str, int]:
    """Hospital b's upload accepted: the round counts its ciphertext's bytes."""
    update = world.update(world.hospitals["hosp-b"])
    assert (await edge.upload(update)).status_code == 202
    return keyspace.edge_bytes(EID, FID, 0), len(update.ciphertext)


async def _skipped_round(world: World, edge: Edge) -> tuple[str, int]:
    """Round 0 given up at its deadline with hospital a's upload alone (fewer than k): one drop counted."""
    world.clock.advance(3600)
    await edge.core.tick()
    outcome = await edge.core.ledger.outcome(0)
    assert outcome is not None and outcome.status is ForwardStatus.SKIPPED, outcome
    return keyspace.edge_dropped(EID, FID, 0, DropReason.TOO_FEW_CLIENTS.value), 1


#: name: (the counter's key, what adds to it and returns the key and the count expected after)
COUNTERS: dict[str, tuple[str, Callable[[World, Edge], Awaitable[tuple[str, int]]]]] = {
    "refused": (keyspace.edge_refused(EID, FID, 0), _refused_upload),
    "bytes": (keyspace.edge_bytes(EID, FID, 0), _accepted_upload),
    "dropped": (keyspace.edge_dropped(EID, FID, 0, DropReason.TOO_FEW_CLIENTS.value), _skipped_round),
}


@pytest.mark.parametrize("name", sorted(COUNTERS))
async def test_a_counter_that_is_not_a_count_is_quarantined_and_counts_again_from_0(
    make_world: Callable[..., World],
    name: str,
) -> None:
    """Property: the edge's counters (refused uploads, accepted bytes, drops by reason) are bookkeeping: a
    value that is not a count never blocks what it counts. It is copied to its quarantine key and the
    counter starts again from 0 in the write that adds to it. Failed before the fix: the refusal and the
    upload answered 503 `store_unavailable` (INCRBY on a non-integer), and the round's outcome was never
    recorded (`int()` of the drop counter raised in its transaction, at every check)."""
    world = make_world(clients=3, k=2, quorum=1.0)
    key, add = COUNTERS[name]
    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(world.hospitals["hosp-a"]))).status_code == 202
        await world.store.set(key, b"{")

        counted, expected = await add(world, edge)
        value = await world.store.get(key)
        kept = await world.store.get(keyspace.quarantine_of(key))

    assert counted == key
    assert value == str(expected).encode()
    assert kept == b"{"


async def _forwarded_then_spoiled(world: World, edge: Edge, key: str) -> None:
    """Hospitals a and b upload, round 0 is forwarded with its outcome recorded, then `key` is spoiled."""
    for cid in ("hosp-a", "hosp-b"):
        assert (await edge.upload(world.update(world.hospitals[cid]))).status_code == 202
    await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
    await edge.core.tick()  # waits for the forward in flight (one at a time): its outcome is recorded
    await world.store.set(key, b"{")


async def test_an_unreadable_closure_of_a_forwarded_round_does_not_reopen_it(
    make_world: Callable[..., World],
) -> None:
    """Property: a round the edge forwarded takes no upload, even when its closure record no longer reads
    back: the record goes to quarantine, the upload is refused as closed (the sum is final, an upload
    would reach no model), and the next check closes the round again. Failed before the fix: the upload
    answered 409 `stored_record_corrupt`, and every check stopped at the record."""
    world = make_world(clients=4, k=2, quorum=0.5)
    key = keyspace.edge_closed(EID, FID, 0)
    async with running_edge(world) as edge:
        await _forwarded_then_spoiled(world, edge, key)

        late = await edge.upload(world.update(world.hospitals["hosp-c"]))
        await edge.core.tick()
        closure = await edge.core.ledger.closure(0)
        manifest = await edge.core.ledger.manifest(0)
        kept = await world.store.get(keyspace.quarantine_of(key))

    assert (late.status_code, late.json()["code"]) == (409, "round_closed"), late.text
    assert sorted(manifest) == ["hosp-a", "hosp-b"]
    assert closure is not None and kept == b"{"
    assert len(world.cloud.attempts) == 1


@pytest.mark.parametrize("name", ["forwarded", "plan"])
async def test_an_unreadable_plan_or_outcome_of_a_delivered_round_is_made_again(
    make_world: Callable[..., World],
    name: str,
) -> None:
    """Property: the round's plan (the cloud's, which the edge holds while it follows the round) is stored
    again from the edge's copy, and an outcome that does not read back is made again by forwarding the same
    sum: the cloud takes a repeat of it once (same idempotency key and bytes), so nothing is counted twice.
    Failed before the fix: the record stayed where it was and every read of it raised `StoredRecordError`
    (for the outcome, every check stopped at it)."""
    world = make_world(clients=2, k=2, quorum=1.0)
    key = (keyspace.edge_forwarded if name == "forwarded" else keyspace.edge_plan)(EID, FID, 0)
    async with running_edge(world) as edge:
        await _forwarded_then_spoiled(world, edge, key)

        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)
        plan = await edge.core.ledger.plan(0)
        kept = await world.store.get(keyspace.quarantine_of(key))

    assert outcome is not None and outcome.status is ForwardStatus.DELIVERED, outcome
    assert plan == edge.core.plan
    assert kept == b"{"
    attempts = world.cloud.attempts
    assert {a.signing_payload() for a in attempts} == {attempts[0].signing_payload()}
    assert len(world.cloud.delivered) == 1
