"""Late uploads at the edge: an upload for a round that closed here joins the open round's bucket for its
round, and each bucket of at least k is forwarded with the open round's aggregate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from protocol.messages import LateUploadConfig
from services.identity import IdentityError, verify
from tests.edge.harness import (
    EID,
    FID,
    World,
    alone_late_through_round_one,
    into_round_one,
    running_edge,
    until,
)
from tests.edge.test_metrics import parse, value

pytestmark = pytest.mark.anyio

ATOL = 1e-5


async def test_late_uploads_are_bucketed_by_their_round_and_forwarded_with_the_next_aggregate(
    make_world: Callable[..., World],
) -> None:
    # Prepare: 5 hospitals, k = 2, late uploads up to 1 round late. Round 0 closes with a and b only
    # (quorum 0.4 of 5 = 2); c and d upload for round 0 after round 1 opened; e uploads late alone for
    # nothing (it also uploads in time for round 1).
    world = make_world(clients=5, k=2, quorum=0.4, late_uploads=LateUploadConfig(max_staleness=1, decay=0.5))
    h = world.hospitals
    async with running_edge(world) as edge:
        await into_round_one(world, edge)

        # Execute
        late_c = await edge.upload(world.update(h["hosp-c"], round_=0))
        late_d = await edge.upload(world.update(h["hosp-d"], round_=0))
        again_a = await edge.upload(world.update(h["hosp-a"], round_=0))  # a is in round 0's own sum
        again_c = await edge.upload(world.update(h["hosp-c"], round_=0))  # c is in the bucket already
        progress = await edge.progress(1)
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(h[cid], round_=1))).status_code == 202
        await until(lambda: len(world.cloud.attempts) == 2, what="round 1's forward")

    # Assert
    assert late_c.status_code == 202 and late_c.json() == {
        "accepted": True,
        "count": 1,
        "folded_into_round": 1,
    }
    assert late_d.json() == {"accepted": True, "count": 2, "folded_into_round": 1}
    assert again_a.status_code == 409 and again_a.json()["code"] == "duplicate_upload"
    assert again_c.status_code == 409 and again_c.json()["code"] == "duplicate_upload"
    assert progress["late_accepted"] == 2 and progress["uploads_accepted"] == 0
    aggregate = world.cloud.attempts[1]
    assert aggregate.round == 1 and [c.client_id for c in aggregate.contributions] == ["hosp-a", "hosp-b"]
    (bucket,) = aggregate.late
    assert bucket.origin_round == 0 and [c.client_id for c in bucket.contributions] == ["hosp-c", "hosp-d"]
    np.testing.assert_allclose(
        world.decrypt(bucket.ciphertext), h["hosp-c"].vector + h["hosp-d"].vector, atol=ATOL
    )
    np.testing.assert_allclose(
        world.decrypt(aggregate.ciphertext), h["hosp-a"].vector + h["hosp-b"].vector, atol=ATOL
    )
    # The late bucket is under the edge's signature: changing it breaks verification.
    verify(world.cloud.edge_public_key(EID), aggregate.signing_payload(), aggregate.signature)
    tampered = aggregate.model_copy(
        update={"late": (bucket.model_copy(update={"ciphertext": aggregate.ciphertext}),)}
    )
    with pytest.raises(IdentityError):
        verify(world.cloud.edge_public_key(EID), tampered.signing_payload(), aggregate.signature)


async def test_a_bucket_below_k_is_dropped_and_uploads_too_late_are_refused(
    make_world: Callable[..., World],
) -> None:
    # Prepare: k = 2, one round of lateness allowed.
    world = make_world(clients=4, k=2, quorum=0.5, late_uploads=LateUploadConfig(max_staleness=1))
    h = world.hospitals
    async with running_edge(world) as edge:
        # Execute: c alone late for round 0 (a bucket of 1 < k); a and b in time for round 1.
        lone = await alone_late_through_round_one(world, edge)
        await edge.core.tick()  # neither forwards again nor counts again
        outcome = await edge.core.ledger.outcome(1)
        progress_0 = await edge.progress(0)
        metrics = (await edge.http.get("/metrics")).text
        await world.cloud.publish(world.plan(2))
        await until(lambda: edge.core.plan is not None and edge.core.plan.round == 2, what="round 2")
        too_late = await edge.upload(world.update(h["hosp-d"], round_=0))  # 2 rounds late

    # Assert: c's bucket cannot be carried past max_staleness: counted as dropped for round 0, once.
    assert lone.status_code == 202
    assert world.cloud.attempts[1].late == ()
    assert progress_0.get("uploads_dropped") == {"too_few_clients": 1}
    labels = {"service": "edge", "federation": FID, "reason": "too_few_clients"}
    assert value(parse(metrics), "fedlora_uploads_dropped_total", **labels) == 1.0
    assert outcome is not None and (outcome.late_forwarded, outcome.late_dropped) == (0, 1)
    assert too_late.status_code == 409 and too_late.json()["code"] == "round_closed"
    assert "up to 1 late" in too_late.json()["message"]


async def test_without_late_uploads_an_upload_for_a_closed_round_is_refused(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3, k=2, quorum=0.6)
    h = world.hospitals
    async with running_edge(world) as edge:
        await into_round_one(world, edge)
        late = await edge.upload(world.update(h["hosp-c"], round_=0))

    assert late.status_code == 409 and late.json()["code"] == "round_closed"
    assert late.json()["message"] == "round 0 is closed at this edge"
