"""What the cloud refuses of an edge, tried as a malicious edge (or a hospital enrolled twice) would try it
(issue 18, item 3: "the cloud accepts only what it can check").

The cloud cannot see inside a ciphertext, so it holds each edge to what it can check: the envelope's count
of encryptions is the manifest's, every manifest line is signed by the hospital it names, no ciphertext is
accepted twice, and no hospital counts in two sums for one round. Each test states the property it checks; each failed before these checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from protocol.messages import ClientEnrolment, EdgeAggregate, LateUploadConfig
from tests.cloud.harness import (
    LAYOUT_SIZE,
    Cloud,
    Federation,
    post_enrolment,
    running_cloud,
    small_spec,
    weighted_mean,
)

pytestmark = pytest.mark.anyio

CKKS_TOLERANCE = 1e-5
TOPOLOGY = {
    "edge-1": ("client-a", "client-b", "client-c", "client-d"),
    "edge-2": ("client-e", "client-f"),
}
LATE = LateUploadConfig(max_staleness=1, decay=0.5)


def deltas_for(rng: np.random.Generator, ids: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ids}


def resigned(fed: Federation, body: EdgeAggregate, **update: Any) -> EdgeAggregate:
    """`body` changed by `update` and signed again by its edge (whose key a malicious edge holds)."""
    unsigned = body.model_copy(update=update | {"signature": b""})
    return unsigned.model_copy(
        update={"signature": fed.edges[body.edge_id].key.sign(unsigned.signing_payload())}
    )


async def round_zero(cloud: Cloud, fed: Federation, rng: np.random.Generator) -> EdgeAggregate:
    """Round 0 closed with a and b at edge-1, e and f at edge-2 (c and d did not upload); edge-1's body."""
    bodies = [
        await fed.aggregate(cloud, edge_id, 0, deltas_for(rng, ids))
        for edge_id, ids in (("edge-1", ("client-a", "client-b")), ("edge-2", ("client-e", "client-f")))
    ]
    for body in bodies:
        assert (await fed.post(cloud.http, body)).status_code == 202
    return bodies[0]


@pytest.mark.parametrize("where", ["ciphertext", "late.0.ciphertext"])
async def test_a_sum_of_more_encryptions_than_its_manifest_names_is_refused(where: str) -> None:
    """Property: a sum's envelope counts exactly as many encryptions as its manifest names hospitals.

    Edge-1 adds one hospital's ciphertext to itself 64 times and forwards it with another's under a
    manifest of those two (the m-fold scaling: one hospital weighs 64 times in the global sum, and the
    client-level DP guarantee shrinks by as much). The cloud took any count at or above the manifest's;
    now it answers 400 `bad_ciphertext` naming the sum, in a round's own sum and in a late bucket alike."""
    rng = np.random.default_rng(31)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3, late_uploads=LATE), TOPOLOGY)
        await fed.start(cloud.http)
        pair = ("client-c", "client-d") if where.startswith("late") else ("client-a", "client-b")
        deltas = deltas_for(rng, pair)
        one, other = (fed.scheme.encrypt(deltas[c]) for c in pair)
        scaled = fed.scheme.serialize(fed.scheme.sum([one] * 64 + [other]))
        if where == "ciphertext":
            body, round_ = await fed.aggregate(cloud, "edge-1", 0, deltas, ciphertext=scaled), 0
        else:
            await round_zero(cloud, fed, rng)
            fresh = deltas_for(rng, ("client-a", "client-b"))
            honest = await fed.aggregate(cloud, "edge-1", 1, fresh, late={0: deltas})
            bucket = honest.late[0].model_copy(update={"ciphertext": scaled})
            body, round_ = resigned(fed, honest, late=(bucket,)), 1

        response = await fed.post(cloud.http, body)

        assert response.status_code == 400, response.text
        assert (response.json()["code"], response.json()["field"]) == ("bad_ciphertext", where)
        assert (await cloud.status(fed.fid, round_)).clients_contributed == 0


@pytest.mark.parametrize("replay", ["next-round", "late-bucket", "other-edge"])
async def test_a_ciphertext_is_never_accepted_twice(replay: str) -> None:
    """Property: the cloud accepts a ciphertext (by its SHA-256) once per federation, across rounds, late
    buckets and edges.

    - next-round: edge-1 forwards its round-0 sum, already decrypted, again as its round-1 sum;
    - late-bucket: edge-1 forwards its round-0 sum of a and b again as round 0's late bucket of c and d,
      who never uploaded: the cloud would decrypt a sum it already released a second time, under another
      weight (the difference of the two releases isolates it);
    - other-edge: edge-2 forwards edge-1's sum of round 0 under its own manifest, both at once.
    The cloud accepted each; now the second is 409 `replay` naming the ciphertext, and nothing of it counts.
    """
    rng = np.random.default_rng(32)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3, late_uploads=LATE), TOPOLOGY)
        await fed.start(cloud.http)
        if replay == "other-edge":
            first = await fed.aggregate(cloud, "edge-1", 0, deltas_for(rng, ("client-a", "client-b")))
            copy = await fed.aggregate(
                cloud, "edge-2", 0, deltas_for(rng, ("client-e", "client-f")), ciphertext=first.ciphertext
            )
            answers = await asyncio.gather(fed.post(cloud.http, first), fed.post(cloud.http, copy))
            assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
            response, field = next(a for a in answers if a.status_code == 409), "ciphertext"
            round_ = 0
        else:
            old = await round_zero(cloud, fed, rng)
            fresh = deltas_for(rng, ("client-a", "client-b"))
            if replay == "next-round":
                body = await fed.aggregate(cloud, "edge-1", 1, fresh, ciphertext=old.ciphertext)
                field = "ciphertext"
            else:
                honest = await fed.aggregate(
                    cloud, "edge-1", 1, fresh, late={0: deltas_for(rng, ("client-c", "client-d"))}
                )
                bucket = honest.late[0].model_copy(update={"ciphertext": old.ciphertext})
                body, field = resigned(fed, honest, late=(bucket,)), "late.0.ciphertext"
            response, round_ = await fed.post(cloud.http, body), 1

        assert response.status_code == 409, response.text
        assert (response.json()["code"], response.json()["field"]) == ("replay", field)
        counted = (await cloud.status(fed.fid, round_)).clients_contributed
        assert counted == (2 if replay == "other-edge" else 0)


async def test_a_hospital_counts_in_one_edge_sum_per_round() -> None:
    """Property: a hospital is in at most one accepted sum per round, whichever edges name it.

    Hospital a uploads to edge-1, which forwards a + b; a then re-enrols at edge-2 (same key) and edge-2
    forwards a + e + f in the same round. The manifest check asked only "enrolled at this edge now", so
    both counted: a's update twice in the mean. Now edge-2's sum is 409 `client_counted_elsewhere` naming a
    (and edge-1, which counted it), edge-1's whole sum stays, and once edge-2 forwards without a the round
    closes with every hospital once."""
    rng = np.random.default_rng(33)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        first = deltas_for(rng, ("client-a", "client-b"))
        assert (await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 0, first))).status_code == 202
        info = (await cloud.context.enrolment.clients(fed.fid, with_stats=False))["client-a"]
        moved = ClientEnrolment(
            client_id="client-a", edge_id="edge-2", public_key=info.public_key, num_examples=info.num_examples
        )
        enrolled = await post_enrolment(cloud.http, fed.fid, moved, fed.client_keys["client-a"], token=None)
        assert enrolled.status_code == 200, enrolled.text
        others = deltas_for(rng, ("client-e", "client-f"))

        twice = await fed.post(
            cloud.http, await fed.aggregate(cloud, "edge-2", 0, {"client-a": first["client-a"]} | others)
        )

        assert twice.status_code == 409, twice.text
        assert twice.json()["detail"]["counted_at"] == {"client-a": "edge-1"}
        assert (twice.json()["detail"]["client_ids"], twice.json()["detail"]["round"]) == (["client-a"], 0)
        assert (twice.json()["code"], twice.json()["field"]) == ("client_counted_elsewhere", "contributions")
        assert (await cloud.status(fed.fid, 0)).clients_contributed == 2
        honest = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 0, others))
        assert honest.status_code == 202, honest.text
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - weighted_mean(first | others))) < CKKS_TOLERANCE


@pytest.mark.parametrize(
    ("where", "tamper"),
    [
        ("contributions", "other-key"),
        ("contributions", "other-round"),
        ("contributions", "weight"),
        ("late", "other-key"),
        ("late", "other-round"),
    ],
)
async def test_every_manifest_line_is_signed_by_its_hospital_for_its_round(where: str, tamper: str) -> None:
    """Property: every line of an accepted manifest carries its hospital's signature over that line, for the
    federation and the round the hospital trained for (a late bucket's origin round).

    Edge-1 forwards round 1 with a and b, and a late bucket of round-0 uploads from c and d. One line (b's,
    or d's in the bucket) is not what that hospital signed for that sum: signed with another key (it never
    uploaded), its genuine line of another round (round 0 for the round's own sum, round 1 for the bucket),
    or its genuine line with the weight changed. The cloud answers 400 `bad_contribution_signature` naming
    the line, the hospital and its round, and counts nothing of the aggregate."""
    rng = np.random.default_rng(34)
    late = where == "late"
    target, origin = ("client-d", 0) if late else ("client-b", 1)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3, late_uploads=LATE), TOPOLOGY)
        await fed.start(cloud.http)
        await round_zero(cloud, fed, rng)
        own, bucket = deltas_for(rng, ("client-a", "client-b")), deltas_for(rng, ("client-c", "client-d"))
        forged = (target,) if tamper == "other-key" else ()
        body = await fed.aggregate(cloud, "edge-1", 1, own, late={0: bucket}, forged=forged)
        lines = body.late[0].contributions if late else body.contributions
        if tamper == "other-round":
            moved = await fed.aggregate(cloud, "edge-1", 1 - origin, {target: (bucket | own)[target]})
            lines = (lines[0], moved.contributions[0])
        elif tamper == "weight":
            lines = (lines[0], lines[1].model_copy(update={"weight": 0.5}))
        if late:
            body = resigned(fed, body, late=(body.late[0].model_copy(update={"contributions": lines}),))
        else:
            body = resigned(fed, body, contributions=lines)

        response = await fed.post(cloud.http, body)

        field = "late.0.contributions.1.signature" if late else "contributions.1.signature"
        assert response.status_code == 400, response.text
        assert (response.json()["code"], response.json()["field"]) == ("bad_contribution_signature", field)
        assert response.json()["detail"] == {"client_ids": [target], "round": origin}
        assert (await cloud.status(fed.fid, 1)).clients_contributed == 0
