"""Review of issue 18's first two defences (acceptance of edge sums; `k` per coordinate), tried as an attacker
within their stated scope would. Each test asserts the property the defence promises and is a strict xfail
while the defect it reproduces is open: it fails today, and turns green (so XPASS, an error) once fixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_aggregator.ledger import ForwardStatus
from protocol.crypto import CiphertextError, envelope
from protocol.messages import EdgeAggregate
from protocol.strategies import AggregationStrategy
from services.http import PeerRefusedError
from tests.adversarial.test_cloud_acceptance import LATE, TOPOLOGY, deltas_for, round_zero
from tests.adversarial.test_rank_columns import capped_round, deltas_at
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import World, running_edge

pytestmark = pytest.mark.anyio

CKKS_TOLERANCE = 1e-5


async def test_the_cloud_never_decrypts_a_column_fewer_than_k_hospitals_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: no coordinate the cloud decrypts is the sum of fewer than `k` hospitals (the cloud is
    curious, and the promise is "nobody learns anything about one hospital but sums of at least k").

    Same round as test_rank_columns: k = 2, only client-d's rank reaches column 1 of B, and the plan says in
    advance that column 1 will not be published (`published_rank` 1). Client-d still uploads column 1 (ranks
    are not capped at the published rank), edge-2 sums it with c's zeros, and the cloud decrypts the total:
    column 1 of what it decrypted is client-d's update exactly. Holding it back from the published adapter
    hides it from readers of the adapter, not from the cloud that decrypts it."""
    decrypted: list[np.ndarray] = []
    original = AggregationStrategy.next_global

    def spy(self: AggregationStrategy, previous: np.ndarray, round_sum: Any) -> np.ndarray:
        decrypted.append(np.array(round_sum.noisy_sum, dtype=np.float64))
        return original(self, previous, round_sum)

    monkeypatch.setattr(AggregationStrategy, "next_global", spy)
    rng = np.random.default_rng(41)
    async with running_cloud() as cloud:
        fed, plan, layout, module, deltas = await capped_round(cloud, small_spec(), rng)
        assert plan.published_rank == 1
        assert (await cloud.status(fed.fid, 0)).published_rank == 1

    (total,) = decrypted
    d_column = layout.unflatten(deltas["client-d"])[module][:, 1]
    seen = layout.unflatten(total)[module][:, 1]
    # Today the cloud holds client-d's column 1 to CKKS precision.
    assert np.max(np.abs(seen - d_column)) > 1e-3, "the cloud decrypted client-d's column 1 alone"


@pytest.mark.parametrize("forgery", ["three-fold", "single-hospital"])
async def test_a_sum_that_weighs_one_hospital_more_than_once_is_refused(forgery: str) -> None:
    """Property (the one `check_count` is there for): no hospital's encryption weighs more than once in a sum
    the cloud accepts, so every accepted sum is `k` distinct hospitals.

    Edge-1 (hospitals a, b, c, d) adds a's ciphertext to itself and names hospitals that never uploaded to
    keep the envelope's count equal to its manifest: no count rewritten, no ciphertext re-randomised, only
    homomorphic additions with the public key and manifest lines the cloud cannot tell from real ones.
    - three-fold: a, b uploaded; manifest a, b, c, d over 3 Enc(a) + Enc(b): a weighs three times;
    - single-hospital: only a uploaded; manifest a, b over 2 Enc(a): the round's release is a's update
      (published column = 2 a / 2 on edge-1's part: `k` per edge defeated).
    The cloud answers 202 to both and publishes them."""
    rng = np.random.default_rng(51)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        named = ("client-a", "client-b", "client-c", "client-d")
        never_uploaded = ("client-c", "client-d")
        if forgery == "single-hospital":
            named, never_uploaded = ("client-a", "client-b"), ("client-b",)
        deltas = deltas_for(rng, named)
        enc_a = fed.scheme.encrypt(deltas["client-a"])
        parts = [enc_a] * (len(named) - 1)
        if forgery == "three-fold":
            parts.append(fed.scheme.encrypt(deltas["client-b"]))
        else:
            parts.append(enc_a)
        forged = fed.scheme.serialize(fed.scheme.sum(parts))
        assert fed.scheme.deserialize(forged).count == len(named)
        # The hospitals that uploaded signed their lines; the edge writes the others' itself.
        body = await fed.aggregate(cloud, "edge-1", 0, deltas, ciphertext=forged, forged=never_uploaded)

        response = await fed.post(cloud.http, body)

        assert response.status_code in (400, 409), (response.status_code, response.text)


@pytest.mark.parametrize(
    ("rank_2", "published_rank", "folded_in"),
    [(("client-d", "client-e"), 1, 2), (("client-d", "client-e", "client-f"), 2, 0)],
    ids=["short-on-time", "short-late"],
)
async def test_every_sum_the_cloud_decrypts_has_k_hospitals_on_each_published_column(
    monkeypatch: pytest.MonkeyPatch, rank_2: tuple[str, ...], published_rank: int, folded_in: int
) -> None:
    """Property: on every published coordinate, each sum the cloud decrypts holds none or at least `k`
    hospitals.

    `aggregate` decrypts the round's on-time total and each late staleness group on its own (the comment
    there says so), but `reach` counted the hospitals of all of them together. Round 1 below, short-on-time:
    on time, only client-e's rank reaches column 1; in round 0's late bucket only client-d's does. Two
    hospitals reach column 1, so nothing was held back (published rank 2), yet the cloud decrypted e's column
    1 alone in the on-time total and d's alone in the late one: a curious cloud reads both. Now each decrypted
    sum counts on its own: the on-time total reaches column 1 with e alone, so column 1 is held back
    (published rank 1) and the late bucket, which holds back nothing more, is folded in. Short-late: client-f
    reaches column 1 on time too, so the on-time total publishes it; the late bucket would reach it with d
    alone, so it is left out of the round (never decrypted) rather than hold column 1 back for everyone.
    (That a held-back column is still decrypted is the finding above.)"""
    ranks = {cid: 1 for cid in TOPOLOGY["edge-1"] + TOPOLOGY["edge-2"]} | dict.fromkeys(rank_2, 2)
    spec = small_spec(rounds=3, late_uploads=LATE)
    decrypted: list[np.ndarray] = []
    rng = np.random.default_rng(61)
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, spec, TOPOLOGY, max_ranks={c: r for c, r in ranks.items() if r == 1}
        )
        plan = await fed.start(cloud.http)
        assert plan.client_ranks == ranks
        scheme_class = type(fed.scheme)
        original = scheme_class.decrypt

        def spy(self: Any, vector: Any, **options: Any) -> np.ndarray:
            out = original(self, vector, **options)
            decrypted.append(np.array(out, dtype=np.float64))
            return out

        monkeypatch.setattr(scheme_class, "decrypt", spy)
        layout, _ = await cloud.context.federations.layout(fed.fid)
        (module,) = [entry.name for entry in layout.lora]
        round0 = deltas_at(layout, rng, ranks)
        for edge_id, ids in (("edge-1", ("client-a", "client-b")), ("edge-2", ("client-e", "client-f"))):
            body = await fed.aggregate(cloud, edge_id, 0, {c: round0[c] for c in ids}, ranks=ranks)
            assert (await fed.post(cloud.http, body)).status_code == 202
        round1 = deltas_at(layout, rng, ranks)
        late = {0: {c: round0[c] for c in ("client-c", "client-d")}}
        bodies = [
            await fed.aggregate(
                cloud, "edge-1", 1, {c: round1[c] for c in ("client-a", "client-b")}, ranks=ranks, late=late
            ),
            await fed.aggregate(
                cloud, "edge-2", 1, {c: round1[c] for c in ("client-e", "client-f")}, ranks=ranks
            ),
        ]
        decrypted.clear()
        for body in bodies:
            response = await fed.post(cloud.http, body)
            assert response.status_code == 202, response.text
        status = await cloud.status(fed.fid, 1)

    uploads = {c: round1[c] for c in ("client-a", "client-b", "client-e", "client-f")}
    uploads |= {f"{c} (late)": round0[c] for c in ("client-c", "client-d")}
    alone = [
        (who, column)
        for total in decrypted
        for column in range(status.published_rank)
        for who, mine in uploads.items()
        if np.max(
            np.abs(layout.unflatten(total)[module][:, column] - layout.unflatten(mine)[module][:, column])
        )
        < CKKS_TOLERANCE
    ]
    assert not alone, f"the cloud decrypted (hospital, published column) {alone} alone"
    assert status.state.value == "closed" and status.published_rank == published_rank
    assert status.late_contributions == folded_in and len(decrypted) == 1 + (folded_in > 0)
    assert status.metrics.get("late_left_out", 0.0) == 2 - folded_in


@pytest.mark.parametrize("code", ["duplicate_upload", "client_counted_elsewhere", "unknown_client"])
async def test_an_edge_whose_sum_names_a_hospital_counted_elsewhere_still_delivers_the_others(
    code: str,
    make_world: Any,  # noqa: F811 (the edge tests' fixture, imported above)
) -> None:
    """Property: an honest edge does not lose its other hospitals' accepted uploads when the cloud refuses its
    sum because one hospital is already counted for the round at another edge (a hospital re-enrolled
    mid-round whose agent uploaded again there: the case tests/adversarial/test_cloud_acceptance refuses).

    docs/operations.md (the `replay`, `duplicate_upload` row) says "the edge must forward again without it",
    and the new test in test_cloud_acceptance shows the cloud taking such a second forward; but the real
    edge (`edge_aggregator/forwarder.py`, `PeerRefusedError` branch) records the round REFUSED and stops,
    and its ledger holds only the running sum, so it cannot take hosp-a out: b's and c's uploads, answered
    202 by the edge, are lost for the round. The cloud names such a hospital with `client_counted_elsewhere`
    (another edge counted it for the round) or `unknown_client` (a hospital that moved: another edge's in
    that round, tests/cloud/test_moving_hospitals.py) as well as `duplicate_upload`; the edge takes it out
    for each."""
    world: World = make_world(clients=3, k=2)
    fake = world.cloud
    honest_forward = fake.forward

    async def cloud_counting_a_elsewhere(aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        fake.attempts.append(aggregate)
        if any(c.client_id == "hosp-a" for c in aggregate.contributions):
            # The real cloud's refusal names the hospitals in `detail` (protocol.acceptance.claim).
            raise PeerRefusedError(
                422 if code == "unknown_client" else 409,
                code,
                "clients ['hosp-a'] are already in round 0's sums",
                detail={"round": 0, "client_ids": ["hosp-a"], "counted_at": {"hosp-a": "edge-south"}},
            )
        fake.attempts.pop()
        await honest_forward(aggregate, within_s=within_s)

    fake.forward = cloud_counting_a_elsewhere  # type: ignore[method-assign]
    async with running_edge(world) as edge:
        for hospital in world.hospitals.values():
            assert (await edge.upload(world.update(hospital))).status_code == 202
        world.clock.advance(61)
        for _ in range(4):
            await edge.core.tick()
        outcome = await edge.core.ledger.outcome(0)

    assert outcome is not None and outcome.status is ForwardStatus.DELIVERED, outcome
    (delivered,) = fake.delivered.values()
    assert [c.client_id for c in delivered.contributions] == ["hosp-b", "hosp-c"]


def padded(fed: Federation, ciphertext: bytes) -> bytes:
    """The same CKKS ciphertext in other bytes: each chunk (a TenSEAL protobuf) gets an unknown field
    (number 127, varint 0) appended, which protobuf parsing skips. No key, no homomorphic operation, and the
    envelope's count is left as it was."""
    parsed = envelope.decode(ciphertext, fed.scheme.expectation())
    return envelope.encode(
        kind=parsed.kind,
        fingerprint=parsed.fingerprint,
        length=parsed.length,
        count=parsed.count,
        chunks=[bytes(chunk) + b"\xf8\x07\x00" for chunk in parsed.chunks],
    )


async def test_a_ciphertext_in_other_bytes_is_still_a_replay() -> None:
    """Property: a ciphertext the cloud accepted is not accepted again (test_cloud_acceptance's
    "next-round" case), whatever bytes carry it.

    Edge-1 forwards its round-0 sum of a and b, already decrypted, again as its round-1 sum, after
    appending three bytes to each chunk that TenSEAL's protobuf parser ignores. The envelope's count is
    untouched (2, as the manifest) and nothing is re-encrypted, so this is not the documented
    re-randomisation hole: the registry keyed on SHA-256 of the bytes (`ciphertext_digest`), not of what
    they parse to, and the cloud answered 202 and decrypted the same sum a second time. Since issue 20 a
    CKKS chunk is parsed before TenSEAL sees it (`protocol.crypto.seal_container`) and a protobuf field
    TenSEAL would skip is refused outright: the other bytes are no ciphertext at all (400)."""
    rng = np.random.default_rng(71)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3, late_uploads=LATE), TOPOLOGY)
        await fed.start(cloud.http)
        old = await round_zero(cloud, fed, rng)
        same = padded(fed, old.ciphertext)
        assert same != old.ciphertext
        with pytest.raises(CiphertextError, match="protobuf field 127"):
            fed.scheme.deserialize(same)
        body = await fed.aggregate(
            cloud, "edge-1", 1, deltas_for(rng, ("client-a", "client-b")), ciphertext=same
        )

        response = await fed.post(cloud.http, body)

        assert response.status_code == 400, (response.status_code, response.text)
        assert response.json()["code"] == "bad_ciphertext"
