"""Plans are the cloud's word, bound to what they start from: every plan the cloud publishes is signed with
the federation's plan key (sealed under the KEK like the HE secret) and names the SHA-256 of the adapter and
basis bytes it serves; an edge aggregate made under another plan than its edge's view of the stored one is
refused."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from protocol.crypto import KeyStoreError, open_bytes
from protocol.messages import FederationInfo, LateUploadConfig, RoundPlan
from services import keyspace
from services.identity import SigningKey, verify
from tests.cloud.harness import KEK, LAYOUT_SIZE, Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_every_plan_is_signed_and_names_the_bytes_it_starts_from() -> None:
    # Prepare: a three-round federation; round 0 closes, round 1 fails at its deadline, round 2 opens.
    rng = np.random.default_rng(3)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3))
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)
        plans = [await fed.start(cloud.http)]
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id])
            assert (await fed.post(cloud.http, body)).status_code == 202
        plans.append(await cloud.context.rounds.plan(fed.fid, 1))
        cloud.clock.advance(fed.spec.round_deadline_s + 1)
        await cloud.tick()  # round 1: deadline, no aggregate -> failed, round 2 opens from the same adapter
        plans.append(await cloud.context.rounds.plan(fed.fid, 2))
        served = {
            v: (await cloud.http.get(f"/federations/{fed.fid}/adapters/{v}/vector")).content for v in (0, 1)
        }
        basis = (await cloud.http.get(f"/federations/{fed.fid}/basis/0")).content
        sealed = await cloud.store.get(keyspace.fed_plan_key(fed.fid))

    # Assert: opened by start, close and fail, each plan verifies with the published key and names the
    # digests of the bytes the cloud serves for its adapter version and basis.
    assert info.plan_public_key is not None
    assert [(p.round, p.adapter_version) for p in plans] == [(0, 0), (1, 1), (2, 1)]
    for plan in plans:
        verify(info.plan_public_key, plan.signing_payload(), plan.signature)
        assert plan.vector_sha256 == sha256(served[plan.adapter_version])
        assert plan.basis_sha256 == sha256(basis)
    # The signing key is in the store only sealed under the KEK, and opens to the published key's pair.
    assert sealed is not None
    label = keyspace.fed_plan_key(fed.fid).encode()
    private = open_bytes(sealed, KEK, label=label)
    assert private not in sealed and SigningKey.from_bytes(private).public_bytes == info.plan_public_key
    with pytest.raises(KeyStoreError):
        open_bytes(sealed, bytes(32), label=label)


async def test_an_aggregate_made_under_another_plan_is_refused() -> None:
    # Prepare: round 0 open; another plan for round 0 (batch 1, one step) that the cloud never stored.
    rng = np.random.default_rng(4)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        plan = await fed.start(cloud.http)
        other = RoundPlan.model_validate(
            plan.model_dump()
            | {"training": plan.training.model_copy(update={"batch_size": 1, "local_steps": 1})}
        )
        deltas = fed.deltas(rng)

        # Execute: edge-1 forwards a sum made under the other plan, then one whose plan digest is missing.
        wrong = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"], plan_sha256=other.sha256)
        )
        honest = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
        unsigned = honest.model_copy(update={"plan_sha256": None})
        missing = await fed.post(
            cloud.http,
            unsigned.model_copy(
                update={"signature": fed.edges["edge-1"].key.sign(unsigned.signing_payload())}
            ),
        )
        accepted = await fed.post(cloud.http, honest)
        stored = await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0))

    # Assert: 409 plan_mismatch naming the field, nothing stored for them; the honest sum is taken.
    for refused in (wrong, missing):
        assert refused.status_code == 409, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("plan_mismatch", "plan_sha256")
    assert accepted.status_code == 202, accepted.text
    assert list(stored) == ["edge-1"]


async def test_a_late_bucket_made_under_another_plan_than_its_rounds_is_refused() -> None:
    # Prepare: late uploads on; round 0 closes with two clients per edge, so round 1 is open and
    # client-c and client-d of edge-1 are late for round 0.
    rng = np.random.default_rng(5)
    topology = {
        "edge-1": ("client-a", "client-b", "client-c", "client-d"),
        "edge-2": ("client-e", "client-f"),
    }
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(rounds=3, late_uploads=LateUploadConfig()), topology=topology
        )
        await fed.start(cloud.http)
        for edge_id, ids in (("edge-1", ("client-a", "client-b")), ("edge-2", ("client-e", "client-f"))):
            body = await fed.aggregate(cloud, edge_id, 0, {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in ids})
            assert (await fed.post(cloud.http, body)).status_code == 202
        late = {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in ("client-c", "client-d")}
        fresh = {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in ("client-a", "client-b")}
        honest = await fed.aggregate(cloud, "edge-1", 1, fresh, late={0: late})
        bucket = honest.late[0].model_copy(update={"plan_sha256": "0" * 64})
        tampered = honest.model_copy(update={"late": (bucket,)})
        tampered = tampered.model_copy(
            update={"signature": fed.edges["edge-1"].key.sign(tampered.signing_payload())}
        )

        refused = await fed.post(cloud.http, tampered)
        accepted = await fed.post(cloud.http, honest)
        round_0 = (await cloud.context.rounds.plan(fed.fid, 0)).view("edge-1")

    assert honest.late[0].plan_sha256 == round_0.sha256
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["field"]) == ("plan_mismatch", "late.0.plan_sha256")
    assert accepted.status_code == 202, accepted.text
