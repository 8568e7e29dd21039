"""Hospitals of a round compare plans through their edge: each signs the digest of the plan it trained under
into its upload, the edge refuses an upload made under another plan than the one it holds for that round
(409 `plan_mismatch`), and forwards the digests of the plans it held with its sums. It follows only plans
signed with the federation's plan key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from client_agent.agent import ClientAgent
from protocol.messages import ClientInfo, LateUploadConfig, TrainingConfig
from services.http import Peer
from services.identity import SigningKey
from services.settings import ClientSettings
from tests.clock import T0
from tests.edge.harness import EID, FID, LENGTH, World, into_round_one, running_edge, until

pytestmark = pytest.mark.anyio


async def test_a_cloud_that_serves_two_hospitals_different_plans_is_caught_by_the_edge(
    make_world: Callable[..., World], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: the cloud publishes round 0's plan to the edge and hospital a, and serves hospital b a
    # crafted one for the same round (batch 1, one step: one note's gradient in b's update), signed with
    # the federation's own plan key, so that b alone cannot tell.
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]
    crafted = world.plan(0, training=TrainingConfig(batch_size=1, local_steps=1))
    assert crafted.sha256 != world.cloud.plan_sha256(0)

    async with running_edge(world) as edge:
        # Execute
        with caplog.at_level(logging.ERROR, logger="edge_aggregator"):
            honest = await edge.upload(world.update(a))
            served_another = await edge.upload(world.update(b, plan_sha256=crafted.sha256))
        progress = await edge.progress(0)

    # Assert: a is in the sum; b is refused before anything of it is stored, and the edge says why.
    assert honest.status_code == 202, honest.text
    assert served_another.status_code == 409
    assert (served_another.json()["code"], served_another.json()["field"]) == ("plan_mismatch", "plan_sha256")
    assert crafted.sha256 in served_another.json()["message"]
    assert progress["uploads_accepted"] == 1 and progress["uploads_refused"] == 1
    assert any("served different plans" in record.getMessage() for record in caplog.records)


async def test_an_upload_that_names_no_plan_is_refused(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]
    unsigned = world.update(a).model_copy(update={"plan_sha256": None})
    nameless = unsigned.model_copy(update={"signature": a.key.sign(unsigned.signing_payload())})

    async with running_edge(world) as edge:
        response = await edge.upload(nameless)

    assert response.status_code == 409
    assert response.json()["code"] == "plan_mismatch"


async def test_the_forwarded_sums_carry_the_digests_of_their_plans_and_late_uploads_are_checked_against_theirs(
    make_world: Callable[..., World],
) -> None:
    # Prepare: round 0 closes with a and b; c and d upload late for round 0 while round 1 is open, d under
    # another plan than round 0's.
    world = make_world(clients=4, k=2, quorum=0.5, late_uploads=LateUploadConfig(max_staleness=1))
    h = world.hospitals
    async with running_edge(world) as edge:
        await into_round_one(world, edge)

        # Execute
        late_c = await edge.upload(world.update(h["hosp-c"], round_=0))
        late_d = await edge.upload(world.update(h["hosp-d"], round_=0, plan_sha256=world.plan(1).sha256))
        late_d_again = await edge.upload(world.update(h["hosp-d"], round_=0))
        for cid in ("hosp-a", "hosp-b"):
            assert (await edge.upload(world.update(h[cid], round_=1))).status_code == 202
        await until(lambda: len(world.cloud.attempts) == 2, what="round 1's forward")

    # Assert
    assert late_c.status_code == 202 and late_d_again.status_code == 202
    assert late_d.status_code == 409 and late_d.json()["code"] == "plan_mismatch"
    first, second = world.cloud.attempts
    assert first.plan_sha256 == world.cloud.plan_sha256(0)
    assert second.plan_sha256 == world.cloud.plan_sha256(1)
    (bucket,) = second.late
    assert bucket.origin_round == 0 and bucket.plan_sha256 == world.cloud.plan_sha256(0)


async def test_the_edge_follows_only_plans_signed_with_the_federations_key(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3)
    async with running_edge(world) as edge:
        forged = world.plan(1)
        forged = forged.model_copy(update={"signature": SigningKey.generate().sign(forged.signing_payload())})
        adopted_forged = await edge.core.adopt(forged)
        adopted_real = await edge.core.adopt(world.plan(1))

    assert (adopted_forged, adopted_real) == (False, True)


async def test_the_edge_follows_only_its_own_view_of_the_round_plan(make_world: Callable[..., World]) -> None:
    """Property: a view the cloud signed for another edge (or the whole round's plan) is not followed here,
    though its signature verifies: the edge id is part of what is signed, so a view for edge-1 cannot be
    replayed as edge-2's, and this edge's hospitals, served its own view, would all be refused under it."""
    world = make_world(clients=3)
    async with running_edge(world) as edge:
        others = await edge.core.adopt(world.plan(1, edge_id="edge-south"))
        whole = world.plan(1).model_copy(update={"edge_id": None, "signature": b""})
        whole = whole.model_copy(update={"signature": world.plan_key.sign(whole.signing_payload())})
        adopted_whole = await edge.core.adopt(whole)
        renamed = world.plan(1, edge_id="edge-south").model_copy(update={"edge_id": EID})
        adopted_renamed = await edge.core.adopt(renamed)
        adopted_own = await edge.core.adopt(world.plan(1))

    assert (others, adopted_whole, adopted_renamed, adopted_own) == (False, False, False, True)


async def test_an_agent_served_another_plan_than_its_edge_skips_the_round_and_says_why(
    make_world: Callable[..., World], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a real hospital agent enrolled at this edge, and a crafted plan for round 0 that only it got.
    world = make_world(clients=2)
    settings = ClientSettings(
        client_id="hosp-z",
        federation_id=FID,
        edge_id=EID,
        cloud_url="https://cloud.example",
        enrolment_token="enrol-token-0123456789abcdef",
        state_dir=tmp_path / "hosp-z",
        allow_unmasked=True,  # the world's federation is CKKS
    )
    agent = ClientAgent(settings, model_path=tmp_path)
    world.cloud.clients["hosp-z"] = ClientInfo(
        client_id="hosp-z",
        edge_id=EID,
        public_key=agent.key.public_bytes,
        num_examples=100,
        rank=4,
        enrolled_at=T0,
    )
    world.cloud.set_plan(world.plan(0, clients=["hosp-a", "hosp-b", "hosp-z"]))
    crafted = world.plan(0, clients=["hosp-a", "hosp-b", "hosp-z"], training=TrainingConfig(batch_size=1))

    async with running_edge(world) as edge:
        peer = Peer("http://edge-north.test", transport=httpx.ASGITransport(app=edge.app), give_up_after_s=5)
        try:
            # Execute: the agent's own upload, made under the crafted plan, then under the edge's.
            with caplog.at_level(logging.ERROR, logger="client_agent"):
                under_crafted = await agent.upload(
                    peer,
                    agent.make_update(crafted, world.public, np.zeros(LENGTH), num_examples=100, spend=None),
                )
            honest_plan = edge.core.plan
            assert honest_plan is not None
            under_honest = await agent.upload(
                peer,
                agent.make_update(honest_plan, world.public, np.zeros(LENGTH), num_examples=100, spend=None),
            )
        finally:
            await peer.close()

    # Assert: the first is not held (the agent goes on to the next plan, it does not crash); the second is.
    assert (under_crafted, under_honest) == (False, True)
    assert any("another plan for this round" in record.getMessage() for record in caplog.records)
