"""What the edge does when the cloud refuses its sum because of some of its hospitals: the manifest line is
checked at upload, and a refusal naming hospitals (`detail.client_ids`) takes them out of the sum they are
in and forwards the others again, as long as `k` still holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_aggregator.ledger import ForwardStatus, Outcome
from protocol.messages import EdgeAggregate, LateUploadConfig
from services import keyspace
from services.http import PeerRefusedError
from services.identity import SigningKey
from tests.edge.harness import EID, FID, World, into_round_one, running_edge
from tests.edge.masking_cohort import HOSPITALS, HttpCohort

pytestmark = pytest.mark.anyio

ATOL = 1e-5


def refusing(world: World, client_id: str, *, round_: int, code: str = "duplicate_upload") -> list[int]:
    """Make the cloud refuse every aggregate that names `client_id` for `round_` (in its own sum or a late
    bucket), as the real one answers a hospital counted at another edge; the sizes of the sums it saw."""
    seen: list[int] = []
    honest = world.cloud.forward

    async def forward(aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        sums = [(aggregate.round, aggregate.contributions)]
        sums += [(bucket.origin_round, bucket.contributions) for bucket in aggregate.late]
        seen.append(sum(len(lines) for _, lines in sums))
        if any(r == round_ and any(c.client_id == client_id for c in lines) for r, lines in sums):
            raise PeerRefusedError(
                409,
                code,
                f"clients ['{client_id}'] are already in round {round_}'s sums",
                detail={"round": round_, "client_ids": [client_id], "counted_at": {client_id: "edge-south"}},
            )
        await honest(aggregate, within_s=within_s)

    world.cloud.forward = forward  # type: ignore[method-assign]
    return seen


async def everyone_past_the_deadline(world: World, edge: Any) -> Outcome | None:
    """Every hospital uploads for round 0, the deadline passes, the edge ticks: round 0's outcome."""
    for hospital in world.hospitals.values():
        assert (await edge.upload(world.update(hospital))).status_code == 202
    world.clock.advance(61)
    await edge.core.tick()
    return await edge.core.ledger.outcome(0)


async def test_an_upload_whose_manifest_line_is_not_signed_by_its_hospital_is_refused(
    make_world: Callable[..., World],
) -> None:
    """The cloud refuses a whole sum for one line that does not verify; the edge checks it at upload, so an
    honest edge never forwards such a line."""
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]
    honest = world.update(a)
    other_line = honest.model_copy(
        update={"contribution_signature": SigningKey.generate().sign(b"not a's line")}
    )
    forged = other_line.model_copy(update={"signature": a.key.sign(other_line.signing_payload())})

    async with running_edge(world) as edge:
        response = await edge.upload(forged)
        stored = await world.store.get(keyspace.edge_sum(EID, FID, 0))

    assert response.status_code == 401, response.text
    assert (response.json()["code"], response.json()["field"]) == ("bad_signature", "contribution_signature")
    assert stored is None


async def test_a_hospital_the_cloud_refuses_in_a_late_bucket_is_taken_out_of_that_bucket_only(
    make_world: Callable[..., World],
) -> None:
    """Round 0 closes with a and b; c, d and e upload late for round 0 and join round 1's bucket. The cloud
    refuses round 1's aggregate because c is counted for round 0 elsewhere: the edge forwards again with the
    bucket of d and e (still k = 2) and round 1's own sum untouched."""
    world = make_world(clients=5, k=2, quorum=0.4, late_uploads=LateUploadConfig(max_staleness=1))
    h = world.hospitals
    async with running_edge(world) as edge:
        await into_round_one(world, edge)
        seen = refusing(world, "hosp-c", round_=0)
        for cid in ("hosp-c", "hosp-d", "hosp-e"):
            assert (await edge.upload(world.update(h[cid], round_=0))).status_code == 202
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(h[cid], round_=1))).status_code == 202
        outcome = await edge.core.maybe_forward(1)
        leftovers = await world.store.scan(keyspace.edge_uploads_prefix(EID, FID, 1))

    assert outcome is not None and outcome.status is ForwardStatus.DELIVERED, outcome
    assert seen == [5, 4] and (outcome.count, outcome.late_forwarded) == (2, 2)
    (aggregate,) = [a for a in world.cloud.delivered.values() if a.round == 1]
    assert [c.client_id for c in aggregate.contributions] == ["hosp-a", "hosp-b"]
    (bucket,) = aggregate.late
    assert [c.client_id for c in bucket.contributions] == ["hosp-d", "hosp-e"]
    np.testing.assert_allclose(
        world.decrypt(bucket.ciphertext), h["hosp-d"].vector + h["hosp-e"].vector, atol=ATOL
    )
    np.testing.assert_allclose(
        world.decrypt(aggregate.ciphertext), h["hosp-a"].vector + h["hosp-b"].vector, atol=ATOL
    )
    assert leftovers == []


async def test_a_sum_left_below_k_is_not_forwarded_again(make_world: Callable[..., World]) -> None:
    """k = 2 and two hospitals: without the one the cloud refuses, the sum would be one hospital's update.
    The edge takes it out and records the round skipped (too few clients) instead of forwarding it."""
    world = make_world(clients=2, k=2)
    seen = refusing(world, "hosp-a", round_=0, code="bad_contribution_signature")
    async with running_edge(world) as edge:
        outcome = await everyone_past_the_deadline(world, edge)
        manifest = await edge.core.ledger.manifest(0)

    assert outcome is not None and outcome.status is ForwardStatus.SKIPPED, outcome
    assert seen == [2] and list(manifest) == ["hosp-b"] and not world.cloud.delivered


async def test_a_refusal_that_names_no_hospital_of_the_sum_records_the_round_refused(
    make_world: Callable[..., World],
) -> None:
    """A refusal naming a hospital this edge does not hold (or naming none) is the sum's own: the edge
    records it refused, as before, and does not forward again."""
    world = make_world(clients=3, k=2)
    seen: list[int] = []

    async def refuse_all(aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        seen.append(aggregate.count)
        raise PeerRefusedError(
            409, "duplicate_upload", "clients ['hosp-z'] ...", detail={"round": 0, "client_ids": ["hosp-z"]}
        )

    world.cloud.forward = refuse_all  # type: ignore[method-assign]
    async with running_edge(world) as edge:
        outcome = await everyone_past_the_deadline(world, edge)

    assert outcome is not None and outcome.status is ForwardStatus.REFUSED, outcome
    assert seen == [3]


async def test_a_masked_sum_is_not_rebuilt_without_a_hospital_the_cloud_names(
    make_masking_world: Callable[..., World],
) -> None:
    """In a masking federation the cohort's correction covers exactly the survivors it unmasked: without one
    of them the rest would not unmask. The edge records the round refused instead of forwarding a sum whose
    masks no longer cancel."""
    world = make_masking_world()
    seen = refusing(world, "hosp-03", round_=0)
    async with running_edge(world) as edge:
        cohort = HttpCohort(world, edge)
        await cohort.advertise(HOSPITALS)
        await cohort.share(HOSPITALS)
        await cohort.upload(HOSPITALS)
        await edge.core.tick()
        await cohort.consent(HOSPITALS)
        await cohort.unmask(HOSPITALS)
        await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)

    assert outcome is not None and outcome.status is ForwardStatus.REFUSED, outcome
    assert seen == [len(HOSPITALS)] and not world.cloud.delivered
