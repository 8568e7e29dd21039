"""Adversarial review of issue 22's edge ingest path: the binary upload frame, the hand-off of checked uploads
to the process's own folder, and the folder's quarantine of records a store neighbour rewrote.

Each test states the property it holds; the first four reproduced defects the review found (a stored upload
rewritten with another valid ciphertext was folded, a rolled-back running sum forwarded, a rewritten
checkpoint believed, a huge `validation_examples` stopped the cloud's close), the others probe promises that
held. Faults are injected into a real store (both backends) as a neighbour with write access
to the edge's keys would leave them, after the upload's 202.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import gmpy2
import numpy as np
import pytest

from edge_aggregator.ledger import RoundLedger
from protocol.crypto import PaillierParams
from protocol.crypto.errors import CiphertextError
from protocol.crypto.paillier import PaillierScheme
from protocol.messages import MAX_EXAMPLES, DropReason, RoundState
from protocol.upload_frame import encode_upload
from services import keyspace
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import EID, FID, World, running_edge, until

ATOL = 1e-5
pytestmark = pytest.mark.anyio


async def stored(world: World, names: list[str]) -> RoundLedger:
    """`names`' uploads for round 0 stored as a sibling replica's request path stores them (nothing folded,
    nothing held in any hand-off)."""
    ledger = world.ledger()
    for name in names:
        await ledger.add(world.update(world.hospitals[name]), capacity=world.public.max_summands)
    return ledger


# -- 1, 3 and 5: what is folded is what was signed -------------------------------------------------------


async def test_a_stored_upload_rewritten_with_another_valid_ciphertext_is_not_folded(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Promises 1, 3 and 5: the sum holds exactly the bytes each hospital signed. A store neighbour copies
    hosp-c's stored ciphertext over hosp-b's (no key needed: it is a valid upload of this federation); a
    folder without the hand-off's copy (another replica's, or this one after a restart or past the hand-off's
    capacity) must take hosp-b out as `record_quarantined` (its bytes no longer match its signed digest) and
    sum hosp-a and hosp-c once each. Observed: the forged bytes are folded, hosp-c counted twice, hosp-b's
    update replaced, nothing dropped."""
    # Prepare: three uploads stored by a sibling replica; the neighbour rewrites hosp-b's.
    world = make_world(clients=3)
    ledger = await stored(world, ["hosp-a", "hosp-b", "hosp-c"])
    c_bytes = await world.store.get(keyspace.edge_upload(EID, FID, 0, "hosp-c"))
    assert c_bytes is not None
    await world.store.set(keyspace.edge_upload(EID, FID, 0, "hosp-b"), c_bytes)

    # Execute
    summed = await world.stored_sum()

    # Assert: hosp-b is out (its stored bytes are not the ones it signed), the others in once.
    a, c = world.hospitals["hosp-a"], world.hospitals["hosp-c"]
    np.testing.assert_allclose(summed, a.vector + c.vector, atol=ATOL)
    assert await ledger.dropped(0) == {DropReason.RECORD_QUARANTINED: 1}


async def test_a_running_sum_rolled_back_in_the_store_is_not_forwarded(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Promise 5: an altered running sum is never forwarded and drops no acknowledged upload. A store
    neighbour saves the sum after hosp-a and hosp-b were folded and writes it back once hosp-c was (the sum
    is a valid ciphertext of this key: it deserialises). Expected: the edge forwards the sum of all four
    uploads, its envelope count equal to its four manifest lines. Observed: the sum forwarded lacks hosp-c
    (decrypts to a + b + d) and says it sums 3 encryptions beside 4 lines: a real cloud refuses it
    `count_mismatch`, and the edge then records the round refused, dropping all four acknowledged uploads."""
    # Prepare: quorum 1.0 of 4 keeps round 0 open until the fourth upload.
    world = make_world(clients=4)
    h = world.hospitals
    k_sum = keyspace.edge_sum(EID, FID, 0)

    async with running_edge(world) as edge:
        for name in ("hosp-a", "hosp-b"):
            assert (await edge.upload_frame(encode_upload(world.update(h[name])))).status_code == 202
        await world.stored_sum()
        older = await world.store.get(k_sum)
        assert (await edge.upload_frame(encode_upload(world.update(h["hosp-c"])))).status_code == 202
        await world.stored_sum()
        assert older is not None
        await world.store.set(k_sum, older)  # the neighbour writes the older sum back

        # Execute: the last upload closes the round at quorum; the edge folds it and forwards.
        assert (await edge.upload_frame(encode_upload(world.update(h["hosp-d"])))).status_code == 202
        await until(lambda: len(world.cloud.attempts) >= 1, what="round 0's forward")

    # Assert: the forwarded sum is the four uploads', and says so.
    forwarded = world.cloud.attempts[-1]
    envelope = world.secret.deserialize(forwarded.ciphertext)
    assert (envelope.count, len(forwarded.contributions)) == (4, 4)
    expected = sum(h[name].vector for name in ("hosp-a", "hosp-b", "hosp-c", "hosp-d"))
    np.testing.assert_allclose(world.decrypt(forwarded.ciphertext), expected, atol=ATOL)


async def test_a_checkpoint_naming_an_unfolded_upload_does_not_leave_it_out(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Promises 1 and 5: every acknowledged upload is in the sum once. A store neighbour rewrites the round's
    checkpoint (`folded`, plain JSON) to name hosp-c, stored but not yet folded. Expected: the folder sees the
    sum holds 2 encryptions where its checkpoint names 3, quarantines the pair and sums the stored uploads
    again (none dropped). Observed: hosp-c is never added; the sum holds a + b beside a manifest of three."""
    # Prepare: hosp-a and hosp-b folded, then hosp-c stored; the neighbour names hosp-c in the checkpoint.
    world = make_world(clients=3)
    ledger = await stored(world, ["hosp-a", "hosp-b"])
    await world.stored_sum()
    await stored(world, ["hosp-c"])
    k_folded = keyspace.edge_folded(EID, FID, 0)
    checkpoint = json.loads(await world.store.get(k_folded) or b"{}")
    checkpoint["covers"] = ["hosp-a", "hosp-b", "hosp-c"]
    await world.store.set(k_folded, json.dumps(checkpoint).encode())

    # Execute
    summed = await world.stored_sum()

    # Assert: all three in the sum once, none dropped.
    h = world.hospitals
    np.testing.assert_allclose(
        summed, h["hosp-a"].vector + h["hosp-b"].vector + h["hosp-c"].vector, atol=ATOL
    )
    assert await ledger.dropped(0) == {}


# -- 2: a bad input accepted at the edge cannot stop a round ----------------------------------------------

#: Held-out examples no hospital holds: an integer JSON carries (jiter parses up to ~4300 digits) and no
#: float can hold; `ClientUpdate.validation_examples` refuses it (at most `MAX_EXAMPLES`), and a manifest
#: line (`Contribution`, which keeps reading lines stored before the bound) may still carry it.
HUGE_EXAMPLES = 10**400


async def test_an_accepted_upload_with_a_huge_validation_examples_cannot_stop_the_round() -> None:
    """Promise 2: malformed input cannot stop a round; a bad upload is refused 4xx, or cannot hurt one
    accepted. A hospital (a valid credential) signs an upload with `validation_loss=0.5` and
    `validation_examples=10**400`: the edge accepts it (frame or JSON, the same model) and forwards its
    manifest line as signed; the cloud takes both edges' sums 202, then its close computes the round's
    example-weighted loss (`round_validation_loss`: `loss * n`) and raises OverflowError, so round 0 never
    completes. Expected: round 0 completes with the other hospitals' losses, or the line is refused."""
    rng = np.random.default_rng(22)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        validation = {"client-a": (0.5, HUGE_EXAMPLES), "client-b": (0.6, 30)}

        # Execute: both edges forward; client-a's line carries the huge count.
        answers = []
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id], validation=validation)
            answers.append((await fed.post(cloud.http, body)).status_code)
        await cloud.tick()
        status = await cloud.status(fed.fid, 0)

    # Assert: the round closed (`RoundState` has no "completed": a round that completes is `closed`), with
    # client-b's loss alone (client-a's count is left out), or client-a's line was refused with a 4xx.
    assert all(code < 500 for code in answers), answers
    assert status.state == RoundState.CLOSED, status
    assert status.metrics["validation_loss"] == pytest.approx(0.6)


@pytest.mark.parametrize("as_frame", [True, False], ids=["frame", "json"])
async def test_an_upload_stating_more_examples_than_the_bound_is_refused_naming_the_field(
    make_world: Callable[..., World],  # noqa: F811
    as_frame: bool,
) -> None:
    """Promise 2: a count no float can hold (`validation_examples`, `num_examples`) is refused at the edge,
    422 `invalid_request` naming the field, and nothing of it is stored."""
    world = make_world(clients=2)
    a = world.hospitals["hosp-a"]
    bad = {
        "validation_examples": world.update(a).model_copy(
            update={"validation_loss": 0.5, "validation_examples": HUGE_EXAMPLES}
        ),
        "num_examples": world.update(a).model_copy(update={"num_examples": MAX_EXAMPLES + 1}),
    }

    async with running_edge(world) as edge:
        answers = {}
        for name, unsigned in bad.items():
            update = unsigned.signed(a.key.sign)
            if as_frame:
                answers[name] = await edge.upload_frame(encode_upload(update))
            else:
                answers[name] = await edge.upload(update)
        progress = await edge.progress(0)

    for name, response in answers.items():
        assert response.status_code == 422, (name, response.text)
        assert response.json()["code"] == "invalid_request"
        assert name in response.text
    assert progress["uploads_accepted"] == 0


def hostile_frames(world: World) -> dict[str, bytes]:
    """Frames a hospital's credential can send, each wrong in one way, made from hosp-b's signed upload."""
    body = encode_upload(world.update(world.hospitals["hosp-b"]))
    (size,) = struct.unpack_from(">I", body, 5)
    header, ciphertext = body[9 : 9 + size], body[9 + size + 8 :]
    fields = json.loads(header)

    def frame(head: bytes, length: bytes | None = None) -> bytes:
        declared = length if length is not None else struct.pack(">Q", len(ciphertext))
        return b"FLUP\x01" + struct.pack(">I", len(head)) + head + declared + ciphertext

    return {
        "nested-bomb": frame(b"[" * 60_000),
        "length-2^64-1": frame(header, struct.pack(">Q", 2**64 - 1)),
        "length-minus-1": frame(header, struct.pack(">q", -1)),
        "ciphertext-in-header": frame(json.dumps({**fields, "ciphertext": "AAAA"}).encode()),
        "other-round": frame(json.dumps({**fields, "round": 1}).encode()),
        "other-federation": frame(json.dumps({**fields, "federation_id": "other"}).encode()),
        "duplicate-key": frame(header[:-1] + b',"client_id":"hosp-c"}'),
    }


async def test_hostile_frames_are_refused_with_a_code_and_lose_nothing(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    """Promise 2 (held): lying lengths, a nested JSON bomb, a header naming another round, federation or
    client, a ciphertext field in the header, a JSON body sent as a frame and a frame sent as JSON are each
    refused 4xx with a code; the accepted upload stays the whole sum."""
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]
    frames = hostile_frames(world)
    framed = encode_upload(world.update(world.hospitals["hosp-c"]))
    as_json = world.update(world.hospitals["hosp-c"]).model_dump_json().encode()
    url = f"/federations/{FID}/rounds/0/uploads"

    async with running_edge(world) as edge:
        assert (await edge.upload_frame(encode_upload(world.update(a)))).status_code == 202
        answers = {name: await edge.upload_frame(raw) for name, raw in frames.items()}
        answers["frame-as-json"] = await edge.http.post(
            url, content=framed, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        answers["json-as-frame"] = await edge.upload_frame(as_json)
        progress = await edge.progress(0)
        summed = await world.stored_sum()

    codes = {name: (r.status_code, r.json().get("code")) for name, r in answers.items()}
    assert all(400 <= status < 500 and code for status, code in codes.values()), codes
    assert progress["uploads_accepted"] == 1
    np.testing.assert_allclose(summed, a.vector, atol=ATOL)


# -- 4: the batched gcd check of Paillier chunks ------------------------------------------------------------


@pytest.fixture(scope="module")
def factored() -> tuple[PaillierScheme, int, int]:
    """A Paillier scheme on a 2048-bit n whose factors the test holds (drawn here: no key generation)."""
    state = gmpy2.random_state(22)
    p, q = (gmpy2.next_prime(gmpy2.mpz_urandomb(state, 1024) | (1 << 1023)) for _ in range(2))
    return PaillierScheme(PaillierParams(key_bits=2048), int(p * q), (int(p), int(q))), int(p), int(q)


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda p, q, n: [2, 3, p * 5, 7], 2),
        (lambda p, q, n: [q, 3, 5, p], 0),
        (lambda p, q, n: [2, 3, n], 2),
        (lambda p, q, n: [2, 0], 1),
        (lambda p, q, n: [2, n * n], 1),
        (lambda p, q, n: [n * n + p], 0),
    ],
    ids=["p-multiple", "p-and-q-apart", "n", "zero", "n-squared", "past-n-squared"],
)
def test_the_batched_gcd_refuses_every_chunk_not_a_unit_and_names_it(
    factored: tuple[PaillierScheme, int, int], make: Callable[[int, int, int], list[int]], bad: int
) -> None:
    """Promise 4 (held): one gcd of the chunks' product refuses what a gcd per chunk refused (a multiple of p,
    of q or of n, 0, n^2 and past it) and names the first chunk at fault."""
    scheme, p, q = factored
    width = (((p * q) ** 2).bit_length() + 7) // 8  # the chunk width of this key's ciphertexts
    chunks = [memoryview(v.to_bytes(width, "big")) for v in make(p, q, p * q)]

    with pytest.raises(CiphertextError, match=f"Paillier chunk {bad} "):
        scheme._load_chunks(chunks, 1)
