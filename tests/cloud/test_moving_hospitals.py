"""A hospital moved to another edge mid-round, and enrolments racing each other (issue 19, items 2 and 6).

A hospital is in at most one edge's aggregate per round: the cloud checks a round's manifests against the
edge each hospital was enrolled at when the round opened, and a move asked for while a round is open in which
the hospital could contribute through its old edge takes effect when that round ends. Every test runs on the
memory store and on a real Redis (tests/cloud/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    Enrolled,
    IdentityKeys,
)
from services.store import RedisStore, StateStore
from tests.adversarial.test_cloud_acceptance import CKKS_TOLERANCE, LATE, deltas_for
from tests.cloud.harness import (
    Cloud,
    Federation,
    bearer,
    post_enrolment,
    running_cloud,
    small_spec,
    weighted_mean,
)

pytestmark = pytest.mark.anyio

TOPOLOGY = {
    "edge-1": ("client-a", "client-b", "client-c"),
    "edge-2": ("client-d", "client-e"),
}
HOSPITALS = tuple(cid for ids in TOPOLOGY.values() for cid in ids)


async def move(cloud: Cloud, fed: Federation, client_id: str, edge_id: str) -> Enrolled:
    """Re-enrol `client_id` (same key, same count) at `edge_id`, as its agent does once pointed there."""
    info = (await cloud.context.enrolment.clients(fed.fid, with_stats=False))[client_id]
    body = ClientEnrolment(
        client_id=client_id, edge_id=edge_id, public_key=info.public_key, num_examples=info.num_examples
    )
    response = await post_enrolment(cloud.http, fed.fid, body, fed.client_keys[client_id], token=None)
    assert response.status_code == 200, response.text
    return Enrolled.model_validate_json(response.content)


async def listed(cloud: Cloud, fed: Federation) -> dict[str, ClientInfo]:
    response = await cloud.http.get(f"/federations/{fed.fid}/clients")
    assert response.status_code == 200, response.text
    return {c.client_id: c for c in (ClientInfo.model_validate(x) for x in response.json())}


async def identity_keys(cloud: Cloud, fed: Federation, edge_id: str) -> set[str]:
    response = await cloud.http.get(f"/federations/{fed.fid}/identity-keys", params={"edge_id": edge_id})
    assert response.status_code == 200, response.text
    return set(IdentityKeys.model_validate_json(response.content).keys)


@pytest.mark.parametrize("first", ["old-edge-first", "new-edge-first"])
async def test_a_hospital_moved_mid_round_counts_once_through_its_old_edge(first: str) -> None:
    """Property: a hospital re-enrolled at another edge while a round is open is in that round through its
    old edge only, and moves when the round ends; no other hospital of either edge is lost.

    Round 0 is open with a, b and c at edge-1 and d and e at edge-2. Hospital a uploads to edge-1, then
    re-enrols at edge-2 and uploads there again; both edges forward a sum naming a. On main the move took
    effect at once: edge-1's sum (a, b, c) was refused as naming a client of another edge, so b and c were
    lost; now it is accepted, edge-2's sum naming a is refused naming a (`client_counted_elsewhere` once
    edge-1 counted it, `unknown_client` before), and edge-2's sum without a closes the round with every
    hospital once. The record shows the move pending, and from round 1 on a is edge-2's."""
    rng = np.random.default_rng(91)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3), TOPOLOGY)
        await fed.start(cloud.http)
        old = deltas_for(rng, TOPOLOGY["edge-1"])
        new = deltas_for(rng, ("client-a", *TOPOLOGY["edge-2"]))
        old_sum = await fed.aggregate(cloud, "edge-1", 0, old)

        enrolled = await move(cloud, fed, "client-a", "edge-2")
        during = (await listed(cloud, fed))["client-a"]
        keys_during = {e: await identity_keys(cloud, fed, e) for e in TOPOLOGY}
        new_sum = await fed.aggregate(cloud, "edge-2", 0, new)
        if first == "old-edge-first":
            accepted = await fed.post(cloud.http, old_sum)
            refused = await fed.post(cloud.http, new_sum)
        else:
            refused = await fed.post(cloud.http, new_sum)
            accepted = await fed.post(cloud.http, old_sum)
        without_a = {cid: new[cid] for cid in TOPOLOGY["edge-2"]}
        honest = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 0, without_a))
        status = await cloud.status(fed.fid, 0)
        after = await listed(cloud, fed)
        keys_after = {e: await identity_keys(cloud, fed, e) for e in TOPOLOGY}
        next_status = await cloud.status(fed.fid, 1)
        round_1 = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-2", 1, deltas_for(rng, ("client-a", "client-d")))
        )
        vector = await cloud.vector(fed.fid, 1)

    assert enrolled.edge_url == "http://edge-2.test:8710"
    assert (during.edge_id, during.moving_to, during.moving_after_round) == ("edge-1", "edge-2", 0)
    assert keys_during == {"edge-1": {"client-a", "client-b", "client-c"}, "edge-2": {"client-d", "client-e"}}
    assert accepted.status_code == 202, accepted.text
    body = refused.json()
    if first == "old-edge-first":
        assert (refused.status_code, body["code"]) == (409, "client_counted_elsewhere"), refused.text
        assert body["detail"]["counted_at"] == {"client-a": "edge-1"}
    else:
        assert (refused.status_code, body["code"]) == (422, "unknown_client"), refused.text
    assert (body["detail"]["client_ids"], body["detail"]["round"]) == (["client-a"], 0)
    assert honest.status_code == 202, honest.text
    assert status.state.value == "closed"
    assert status.clients_contributed == len(HOSPITALS)
    assert {cid: c.rounds_contributed for cid, c in after.items()} == dict.fromkeys(HOSPITALS, 1)
    assert np.max(np.abs(vector - weighted_mean(old | without_a))) < CKKS_TOLERANCE
    assert (after["client-a"].edge_id, after["client-a"].moving_to) == ("edge-2", None)
    assert keys_after == {"edge-1": {"client-b", "client-c"}, "edge-2": {"client-a", "client-d", "client-e"}}
    assert {e.edge_id: e.expected_clients for e in next_status.edges} == {"edge-1": 2, "edge-2": 3}
    assert round_1.status_code == 202, round_1.text


async def test_a_late_upload_made_before_a_move_is_still_its_old_edges() -> None:
    """Property: a late bucket is checked against the edge each hospital had in the round it trained for, so
    an upload a hospital made at its old edge before moving still counts once, there, after the move.

    Hospital a (edge-1) moves to edge-2 while round 0 is open; its round-0 upload reached edge-1 too late
    for round 0's sum (b's too), and edge-1 forwards both in round 1 as round 0's late bucket, when a is
    already edge-2's. On main the bucket was refused (a "enrolled at edge-2") with edge-1's whole round-1 sum."""
    rng = np.random.default_rng(92)
    topology = {
        "edge-1": ("client-a", "client-b", "client-c", "client-f"),
        "edge-2": ("client-d", "client-e"),
    }
    spec = small_spec(rounds=3, late_uploads=LATE)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, topology)
        await fed.start(cloud.http)
        await move(cloud, fed, "client-a", "edge-2")
        for edge_id, ids in (("edge-1", ("client-c", "client-f")), ("edge-2", ("client-d", "client-e"))):
            answer = await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas_for(rng, ids)))
            assert answer.status_code == 202, answer.text
        late = deltas_for(rng, ("client-a", "client-b"))
        body = await fed.aggregate(
            cloud, "edge-1", 1, deltas_for(rng, ("client-c", "client-f")), late={0: late}
        )

        answer = await fed.post(cloud.http, body)
        after = await listed(cloud, fed)

    assert answer.status_code == 202, answer.text
    assert after["client-a"].edge_id == "edge-2"


async def test_a_hospital_moves_at_once_while_no_round_is_open() -> None:
    """Property: a move waits only for a round the hospital could contribute to; before the federation
    starts (no round open) it takes effect at once, and moving back cancels a pending move."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3), TOPOLOGY)
        await move(cloud, fed, "client-a", "edge-2")
        before = (await listed(cloud, fed))["client-a"]
        await fed.start(cloud.http)
        await move(cloud, fed, "client-a", "edge-1")
        pending = (await listed(cloud, fed))["client-a"]
        await move(cloud, fed, "client-a", "edge-2")
        cancelled = (await listed(cloud, fed))["client-a"]

    assert (before.edge_id, before.moving_to, before.moving_after_round) == ("edge-2", None, None)
    assert (pending.edge_id, pending.moving_to, pending.moving_after_round) == ("edge-2", "edge-1", 0)
    assert (cancelled.edge_id, cancelled.moving_to, cancelled.moving_after_round) == ("edge-2", None, None)


class StallingRedisStore(RedisStore):
    """A cloud replica's store that stalls (a GC pause, a slow link) right after its first write to the hash
    `key`, until `resume` is set; it sets `stalled` when it does. Redis itself is real."""

    def __init__(self, url: str, *, key: str) -> None:
        super().__init__(url)
        self.key = key
        self.stalled = asyncio.Event()
        self.resume = asyncio.Event()

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        async with super()._errors(what):
            yield
        writes = what.startswith(("HSET ", "a transaction"))  # HSET, or a transaction that may write it
        if writes and self.key in what and not self.stalled.is_set():
            self.stalled.set()
            await self.resume.wait()


@pytest.mark.parametrize("who", ["hospital", "edge"])
async def test_concurrent_enrolments_lose_nothing(who: str, state_store: StateStore) -> None:
    """Property: an enrolment and the token it issues are written in one transaction, so concurrent
    re-enrolments lose no write: of two re-enrolments of one hospital (or edge) at two cloud replicas on one
    Redis, exactly one token stays live, and the record the cloud keeps is the one its request asked for (for
    an edge, whose re-enrolment changes no URL, the one it had).

    One replica stalls right after writing the record, and the other enrols the same hospital (edge) again
    meanwhile. On main the record and the token's pointer were separate writes: the second request's record
    and the first request's token were last, so the hospital holding the live token was recorded at another
    edge than its answer named (the edge at another URL than the one it gave)."""
    if not isinstance(state_store, RedisStore):
        pytest.skip("two cloud replicas share one Redis server")
    roster = "cloud:fed-1:clients" if who == "hospital" else "cloud:fed-1:edges"
    stalling = StallingRedisStore(state_store.url, key=roster)
    topology = {"edge-1": ("client-a",), "edge-2": (), "edge-3": ()}
    try:
        async with running_cloud(store=state_store) as near, running_cloud(store=stalling) as far:
            fed = await Federation.create(near.http, small_spec(rounds=3), topology)
            client = (await near.context.enrolment.clients(fed.fid, with_stats=False))["client-a"]
            edge_key = fed.edges["edge-1"].key.public_bytes

            def request(n: int) -> ClientEnrolment | EdgeEnrolment:
                if who == "hospital":
                    return ClientEnrolment(
                        client_id="client-a",
                        edge_id=f"edge-{n}",
                        public_key=client.public_key,
                        num_examples=100,
                    )
                # An edge's re-enrolment changes no URL: both ask for the one it has.
                return EdgeEnrolment(edge_id="edge-1", url="http://edge-1.test:8710", public_key=edge_key)

            async def enrol(cloud: Cloud, body: ClientEnrolment | EdgeEnrolment) -> str:
                key = fed.client_keys["client-a"] if who == "hospital" else fed.edges["edge-1"].key
                answer = await post_enrolment(cloud.http, fed.fid, body, key, token=None)
                assert answer.status_code == 200, answer.text
                return Enrolled.model_validate_json(answer.content).api_token

            first = asyncio.ensure_future(enrol(far, request(2)))
            await asyncio.wait_for(stalling.stalled.wait(), timeout=30)
            second = await enrol(near, request(3))
            stalling.resume.set()
            tokens = {2: await first, 3: second}
            live = []
            for n, token in tokens.items():
                probe = await near.http.get(
                    f"/federations/{fed.fid}/identity-keys?edge_id=edge-1", headers=bearer(token)
                )
                if probe.status_code != 401:  # a live token is 200 (or 403 for another edge's); revoked: 401
                    live.append(n)
            stored = (
                (await near.context.enrolment.clients(fed.fid, with_stats=False))["client-a"].edge_id
                if who == "hospital"
                else (await near.context.enrolment.edge(fed.fid, "edge-1") or pytest.fail("no edge-1")).url
            )
    finally:
        await stalling.close()

    (won,) = live
    asked = request(won)
    assert stored == (asked.edge_id if isinstance(asked, ClientEnrolment) else asked.url)
