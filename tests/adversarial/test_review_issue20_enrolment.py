"""Issue 20, item 2: enrolment. Each test reproduces a way one enrolment credential, or the public key of a
party (which every edge and hospital can read), took over or crowded out an identity; each holds now. Run on
the memory store and a real Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from pydantic import ValidationError

from protocol.ed25519 import PublicKeyError, check_public_key
from protocol.messages import (
    ENROLMENT_CHALLENGE_TTL_S,
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    Enrolled,
    EnrolmentTokenInfo,
    ErrorCode,
    Role,
    enrolment_payload,
)
from services.identity import IdentityError, SigningKey, verify
from tests.cloud.harness import (
    Federation,
    bearer,
    enrolment_nonce,
    issue_enrolment_token,
    post_enrolment,
    running_cloud,
    small_spec,
)

pytestmark = pytest.mark.anyio

# The identity point (y = 1), a point of order 4 (y = 0), a point of order 8 (Bernstein et al.'s list as
# libsodium blocks it), and y = p, a non-canonical encoding of y = 0.
IDENTITY = bytes([1]) + bytes(31)
ORDER_4 = bytes(32)
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
NON_CANONICAL = bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
BAD_KEYS = (IDENTITY, ORDER_4, ORDER_8, NON_CANONICAL)


def _client(cid: str, key: SigningKey, edge_id: str = "edge-1") -> ClientEnrolment:
    return ClientEnrolment(client_id=cid, edge_id=edge_id, public_key=key.public_bytes, num_examples=100)


def _edge(eid: str, key: SigningKey, url: str | None = None) -> EdgeEnrolment:
    return EdgeEnrolment(edge_id=eid, url=url or f"http://{eid}.test:8710", public_key=key.public_bytes)


def _code(response: httpx.Response) -> str:
    return str(response.json()["code"])


async def _edge_info(http: httpx.AsyncClient, fid: str, edge_id: str) -> EdgeInfo:
    response = await http.get(f"/federations/{fid}/edges")
    assert response.status_code == 200, response.text
    return next(EdgeInfo.model_validate(e) for e in response.json() if e["edge_id"] == edge_id)


async def test_a_token_for_one_id_cannot_enrol_another_id_or_role() -> None:
    """Property: an enrolment token enrols the one (role, id) the admin issued it for: a hospital's token
    enrols neither another hospital nor an edge of that name (401 `bad_enrolment_token`), and a party with
    no token, or a revoked one, does not enrol at all.

    (One shared token per role let whoever held it register any id first and own it.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-h1")
        key = SigningKey.generate()
        other_id = await post_enrolment(cloud.http, fed.fid, _client("client-h2", key), key, token=token)
        as_edge = await post_enrolment(cloud.http, fed.fid, _edge("client-h1", key), key, token=token)
        no_token = await post_enrolment(cloud.http, fed.fid, _client("client-h1", key), key, token=None)
        listed = await cloud.http.get(f"/federations/{fed.fid}/enrolment-tokens")
        token_id = next(t["token_id"] for t in listed.json() if t["subject"] == "client-h1")
        revoked = await cloud.http.delete(f"/federations/{fed.fid}/enrolment-tokens/{token_id}")
        after = await post_enrolment(cloud.http, fed.fid, _client("client-h1", key), key, token=token)
        roster = await cloud.http.get(f"/federations/{fed.fid}/clients")

    for refused in (other_id, as_edge, no_token, after):
        assert refused.status_code == 401, refused.text
        assert _code(refused) == ErrorCode.BAD_ENROLMENT_TOKEN.value
    assert revoked.status_code == 204
    assert {c["client_id"] for c in roster.json()} == {"client-a", "client-b", "client-c", "client-d"}


async def test_an_enrolment_token_enrols_once_and_lists_without_its_secret() -> None:
    """Property: a used token cannot enrol another key for its id (409), the admin's list shows it used and
    never shows a token, and the party it enrolled re-enrols with its own key alone.

    (The shared enrolment token stayed valid for every id, any number of times.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-h1")
        first, second = SigningKey.generate(), SigningKey.generate()
        enrolled = await post_enrolment(cloud.http, fed.fid, _client("client-h1", first), first, token=token)
        again = await post_enrolment(cloud.http, fed.fid, _client("client-h1", second), second, token=token)
        listed = await cloud.http.get(f"/federations/{fed.fid}/enrolment-tokens")
        own = await post_enrolment(cloud.http, fed.fid, _client("client-h1", first), first, token=None)

    assert enrolled.status_code == 201, enrolled.text
    assert again.status_code == 409, again.text
    assert listed.status_code == 200 and token not in listed.text
    info = next(EnrolmentTokenInfo.model_validate(t) for t in listed.json() if t["subject"] == "client-h1")
    assert info.state.value == "used" and info.used_at is not None
    assert own.status_code == 200, own.text


async def test_re_enrolment_without_the_enrolled_key_revokes_nothing_and_moves_no_url() -> None:
    """Property: re-enrolling an enrolled edge or hospital takes a signature by its enrolled key. With its
    public key (public: every edge and hospital reads it) but no proof, or another key, the holder's API
    token keeps working and the edge's URL stays; the holder's own re-enrolment rotates its token and
    changes no URL either (409 `edge_url_changed`); an admin changes the URL.

    (Re-enrolling with the shared token and the holder's public key revoked its API token and, for an edge,
    rewrote its URL: new hospitals were sent to an address of the attacker's choice.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        edge = fed.edges["edge-1"]
        mallory = SigningKey.generate()
        hijack = _edge("edge-1", edge.key, url="http://mallory.test:8710")
        unsigned = await cloud.http.post(
            f"/federations/{fed.fid}/edges",
            content=hijack.model_copy(
                update={"nonce": await enrolment_nonce(cloud.http, fed.fid)}
            ).model_dump_json(),
            headers={"Content-Type": "application/json", "Authorization": ""},
        )
        forged = await post_enrolment(cloud.http, fed.fid, hijack, mallory, token=None)
        other_key = await post_enrolment(cloud.http, fed.fid, _edge("edge-1", mallory), mallory, token=None)
        client = _client("client-a", fed.client_keys["client-a"])
        as_hospital = await post_enrolment(cloud.http, fed.fid, client, mallory, token=None)
        still = await cloud.http.get(f"/federations/{fed.fid}", headers=bearer(edge.token))
        hospital_still = await cloud.http.get(
            f"/federations/{fed.fid}", headers=bearer(fed.client_tokens["client-a"])
        )
        url_before = (await _edge_info(cloud.http, fed.fid, "edge-1")).url
        moved = await post_enrolment(cloud.http, fed.fid, hijack, edge.key, token=None)
        own = await post_enrolment(cloud.http, fed.fid, _edge("edge-1", edge.key), edge.key, token=None)
        old_token = await cloud.http.get(f"/federations/{fed.fid}", headers=bearer(edge.token))
        new_url = await cloud.http.put(
            f"/federations/{fed.fid}/edges/edge-1/url", json={"url": "https://edge-1.example.org:8710"}
        )
        url_after = (await _edge_info(cloud.http, fed.fid, "edge-1")).url

    for refused in (unsigned, forged, as_hospital):
        assert refused.status_code == 401, refused.text
        assert _code(refused) == ErrorCode.BAD_SIGNATURE.value
    assert other_key.status_code == 409, other_key.text
    assert still.status_code == 200 and hospital_still.status_code == 200
    assert url_before == "http://edge-1.test:8710"
    assert moved.status_code == 409 and _code(moved) == ErrorCode.EDGE_URL_CHANGED.value
    assert own.status_code == 200, own.text
    assert Enrolled.model_validate_json(own.content).api_token != edge.token
    assert old_token.status_code == 401  # the holder's own re-enrolment rotated it
    assert new_url.status_code == 200, new_url.text
    assert url_after == "https://edge-1.example.org:8710"


@pytest.mark.parametrize("bad", BAD_KEYS, ids=["identity", "order-4", "order-8", "non-canonical"])
async def test_small_order_and_non_canonical_keys_are_refused_naming_the_field(bad: bytes) -> None:
    """Property: a public key that is not a canonical point of prime order is refused wherever one is parsed:
    at enrolment (422 naming `public_key`), in every wire model that carries one, and by `verify`.

    (Small-order keys were accepted: the identity point verifies one fixed signature for any message.)"""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-h1")
        body = _client("client-h1", SigningKey.generate()).model_dump(mode="json")
        body["public_key"] = base64.b64encode(bad).decode()
        response = await cloud.http.post(f"/federations/{fed.fid}/clients", json=body, headers=bearer(token))

    assert response.status_code == 422, response.text
    assert response.json()["field"] == "public_key"
    with pytest.raises(PublicKeyError):
        check_public_key(bad)
    with pytest.raises(ValidationError):
        ClientInfo(
            client_id="h",
            edge_id="e",
            public_key=bad,
            num_examples=1,
            rank=1,
            max_rank=1,
            enrolled_at="2026-01-01T00:00:00Z",
        )
    with pytest.raises(IdentityError):
        verify(bad, b"any message", IDENTITY + bytes(32))


async def test_the_identity_key_no_longer_verifies_a_fixed_signature() -> None:
    """Property: `verify` refuses the identity key before looking at the signature, so (R = identity, S = 0),
    which such a key accepts for every message, verifies nothing."""
    for message in (b"plan", b"aggregate"):
        with pytest.raises(IdentityError):
            verify(IDENTITY, message, IDENTITY + bytes(32))


@pytest.mark.parametrize("role", [Role.CLIENT, Role.EDGE])
async def test_racing_enrolments_at_the_cap_admit_exactly_the_cap(role: Role) -> None:
    """Property: enrolments racing for the last places of a federation admit exactly `max_clients` hospitals
    (or `max_edges` edges); every other is 409 `federation_full` naming the cap.

    (The cap was counted outside the write: racing enrolments passed it together; edges had none.)"""
    spec = small_spec(max_clients=4, max_edges=3)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, {"edge-1": ("client-a",)})
        ids = [f"{role.value}-r{i}" for i in range(6)]
        tokens = [await issue_enrolment_token(cloud.http, fed.fid, role, i) for i in ids]
        keys = [SigningKey.generate() for _ in ids]
        bodies = [
            _client(i, k) if role is Role.CLIENT else _edge(i, k) for i, k in zip(ids, keys, strict=True)
        ]
        answers = await asyncio.gather(
            *(
                post_enrolment(cloud.http, fed.fid, b, k, token=t)
                for b, k, t in zip(bodies, keys, tokens, strict=True)
            )
        )
        roster = await cloud.http.get(
            f"/federations/{fed.fid}/{'clients' if role is Role.CLIENT else 'edges'}"
        )

    cap, held, name = (4, 1, "max_clients") if role is Role.CLIENT else (3, 1, "max_edges")
    admitted = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code != 201]
    assert len(admitted) == cap - held, [a.text for a in answers]
    for answer in refused:
        assert answer.status_code == 409, answer.text
        assert _code(answer) == ErrorCode.FEDERATION_FULL.value
        assert answer.json()["detail"] == {name: cap}
    assert len(roster.json()) == cap


async def test_a_signature_over_another_federation_role_or_nonce_is_refused() -> None:
    """Property: the proof signs a tagged payload naming the federation, the role, the id, the key, the edge
    and URL and the nonce: a signature over another federation's, another role's or another nonce's payload
    is 401 `bad_signature`, and a nonce answered once is 409 `unknown_challenge` the second time."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-h1")
        key = SigningKey.generate()
        body = _client("client-h1", key)
        url = f"/federations/{fed.fid}/clients"

        async def post(signed: ClientEnrolment) -> httpx.Response:
            headers = {"Content-Type": "application/json", **bearer(token)}
            return await cloud.http.post(url, content=signed.model_dump_json(), headers=headers)

        nonce = await enrolment_nonce(cloud.http, fed.fid)
        other_fed = await post(body.signed(key, federation_id="fed-2", nonce=nonce))
        other_nonce = (body.signed(key, federation_id=fed.fid, nonce=nonce)).model_copy(
            update={"nonce": await enrolment_nonce(cloud.http, fed.fid)}
        )
        wrong_nonce = await post(other_nonce)
        with_nonce = body.model_copy(update={"nonce": nonce})
        as_edge = enrolment_payload(
            fed.fid, Role.EDGE, with_nonce.model_dump(mode="json", exclude={"signature", "protocol_version"})
        )
        other_role = await post(with_nonce.model_copy(update={"signature": key.sign(as_edge)}))
        good = body.signed(key, federation_id=fed.fid, nonce=nonce)
        accepted = await post(good)
        replayed = await post(good)
        never_issued = await post(body.signed(key, federation_id=fed.fid, nonce="ab" * 16))

    for refused in (other_fed, wrong_nonce, other_role):
        assert refused.status_code == 401, refused.text
        assert _code(refused) == ErrorCode.BAD_SIGNATURE.value
    assert accepted.status_code == 201, accepted.text
    for refused in (replayed, never_issued):
        assert refused.status_code == 409, refused.text
        assert _code(refused) == ErrorCode.UNKNOWN_CHALLENGE.value


async def test_challenges_write_nothing_and_a_nonce_is_its_federation_s_until_it_expires() -> None:
    """Property: the challenge route (no credential needed) cannot fill the store: issuing a challenge
    writes nothing but the federation's challenge key, once. A nonce answers only in the federation that
    issued it, and only until it expires (409 `unknown_challenge`).
    Failed before the fix: every challenge stored its nonce for 120 s, so anyone could grow the cloud's Redis
    until it refused the writes rounds need."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        other = await Federation.create(cloud.http, small_spec("fed-2"))
        await enrolment_nonce(cloud.http, fed.fid)  # draws the challenge key
        before = await cloud.store.scan("cloud:")
        for _ in range(50):
            await enrolment_nonce(cloud.http, fed.fid)
        after = await cloud.store.scan("cloud:")

        key = SigningKey.generate()

        async def enrol_with(cid: str, nonce: str) -> httpx.Response:
            token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, cid)
            return await post_enrolment(cloud.http, fed.fid, _client(cid, key), key, token=token, nonce=nonce)

        foreign = await enrol_with("client-h1", await enrolment_nonce(cloud.http, other.fid))
        stale_nonce = await enrolment_nonce(cloud.http, fed.fid)
        cloud.clock.advance(ENROLMENT_CHALLENGE_TTL_S + 1)
        stale = await enrol_with("client-h1", stale_nonce)
        fresh = await enrol_with("client-h1", await enrolment_nonce(cloud.http, fed.fid))

    assert sorted(after) == sorted(before)
    for refused in (foreign, stale):
        assert refused.status_code == 409, refused.text
        assert _code(refused) == ErrorCode.UNKNOWN_CHALLENGE.value
    assert fresh.status_code == 201, fresh.text
