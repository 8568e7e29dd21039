"""A whole round at one edge: uploads in, one signed aggregate out, with the exact sum inside."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_aggregator.config import quorum_target
from protocol.crypto import PlainParams, generate_scheme, scheme_from_public
from protocol.messages import FederationSpec, FederationState
from services.identity import verify
from tests.clock import FakeClock
from tests.edge.cloud import InMemoryCloud
from tests.edge.harness import EID, FID, World, federation_info, running_edge, until

pytestmark = pytest.mark.anyio

# CKKS at scale 2^40 sums three encryptions to within ~1e-7 (protocol/crypto/ckks.py); 1e-5 is loose.
ATOL = 1e-5


async def test_three_clients_are_forwarded_once_with_their_exact_sum(
    make_world: Callable[..., World],
) -> None:
    # Prepare: 3 hospitals, quorum 1.0, k = 2; hospitals pre-weight their vectors before encrypting.
    world = make_world(clients=3, k=2, quorum=1.0)
    weights = {"hosp-a": 1.0, "hosp-b": 2.5, "hosp-c": 0.5}
    for cid, weight in weights.items():
        world.hospitals[cid].weight = weight
        world.hospitals[cid].vector = world.hospitals[cid].vector * weight
    expected = sum(h.vector for h in world.hospitals.values())
    updates = {cid: world.update(h) for cid, h in world.hospitals.items()}

    async with running_edge(world) as edge:
        # Execute
        counts = []
        for update in updates.values():
            response = await edge.upload(update)
            assert response.status_code == 202, response.text
            counts.append(response.json())
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward")
        await edge.core.tick()
        await edge.core.tick()
        late = await edge.upload(world.update(world.hospitals["hosp-a"]))
        progress = await edge.progress(0)

    # Assert
    assert counts == [{"accepted": True, "count": n} for n in (1, 2, 3)]
    assert len(world.cloud.attempts) == 1
    aggregate = world.cloud.delivered[f"{FID}:0:{EID}"]
    assert (aggregate.federation_id, aggregate.round, aggregate.edge_id, aggregate.basis_version) == (
        FID,
        0,
        EID,
        0,
    )
    np.testing.assert_allclose(world.decrypt(aggregate.ciphertext), expected, atol=ATOL)
    assert [c.client_id for c in aggregate.contributions] == ["hosp-a", "hosp-b", "hosp-c"]
    for contribution in aggregate.contributions:
        sent = updates[contribution.client_id]
        assert contribution.weight == weights[contribution.client_id]
        assert contribution.nonce == sent.nonce
        assert contribution.ciphertext_sha256 == sent.ciphertext_sha256
        assert (contribution.rank, contribution.num_examples) == (sent.rank, sent.num_examples)
    assert aggregate.total_weight == pytest.approx(4.0)
    verify(world.cloud.edge_public_key(EID), aggregate.signing_payload(), aggregate.signature)
    assert late.status_code == 409 and late.json()["code"] == "round_closed"
    assert progress == {
        "edge_id": EID,
        "expected_clients": 3,
        "uploads_accepted": 3,
        "uploads_refused": 1,
        "forwarded": True,
        "bytes_received": sum(len(u.ciphertext) for u in updates.values()),
        "late_accepted": 0,
        "forwarded_at": "2026-11-22T12:00:00Z",  # T0: the clock stood still, the third upload forwarded
        "uploads_dropped": {},
        "carried_into_round": None,
    }


async def test_quorum_below_one_forwards_before_everyone_uploaded(make_world: Callable[..., World]) -> None:
    world = make_world(clients=4, k=2, quorum=0.5)
    hospitals = list(world.hospitals.values())

    async with running_edge(world) as edge:
        for hospital in hospitals[:2]:
            assert (await edge.upload(world.update(hospital))).status_code == 202
        await until(lambda: len(world.cloud.delivered) == 1, what="the forward at quorum")
        third = await edge.upload(world.update(hospitals[2]))

    aggregate = next(iter(world.cloud.delivered.values()))
    assert aggregate.count == 2
    np.testing.assert_allclose(
        world.decrypt(aggregate.ciphertext), hospitals[0].vector + hospitals[1].vector, atol=ATOL
    )
    assert third.json()["code"] == "round_closed"


def test_quorum_target_rounds_up_without_float_noise() -> None:
    assert quorum_target(0.7, 10) == 7  # 0.7 * 10 is 7.000000000000001
    assert quorum_target(0.5, 3) == 2
    assert quorum_target(1.0, 3) == 3
    assert quorum_target(0.1, 0) == 1


async def test_an_edge_of_a_plaintext_federation_sums_and_forwards(tmp_path, state_store) -> None:
    """Strategies that read regional sums (CLAIR) run without encryption: the edge must work with it."""
    secret = generate_scheme(PlainParams())
    public = scheme_from_public(secret.params, secret.public_bytes())
    spec = FederationSpec(federation_id=FID, min_clients_per_edge=2, he=PlainParams(), strategy="clair")
    cloud = InMemoryCloud(federation_info(spec, secret, state=FederationState.ACTIVE), secret.public_bytes())
    world = World(tmp_path, secret, public, spec, FakeClock(), state_store, cloud)
    for index in range(2):
        world.enrol(f"hosp-{chr(ord('a') + index)}", seed=index)
    cloud.set_plan(world.plan(0))
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(a))).status_code == 202
        assert (await edge.upload(world.update(b))).status_code == 202
        await until(lambda: len(cloud.delivered) == 1, what="the forward")

    forwarded = cloud.delivered[f"{FID}:0:{EID}"]
    np.testing.assert_allclose(world.decrypt(forwarded.ciphertext), a.vector + b.vector, atol=1e-6)
