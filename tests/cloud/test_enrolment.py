"""Enrolment of edges and clients: tokens, keys, ranks and rosters."""

from __future__ import annotations

import json

import httpx
import pytest

from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    Enrolled,
    IdentityKeys,
    Role,
)
from services import keyspace
from services.identity import SigningKey
from tests.cloud.harness import (
    ADMIN_TOKEN,
    Federation,
    bearer,
    issue_enrolment_token,
    post_enrolment,
    running_cloud,
    small_spec,
)

pytestmark = pytest.mark.anyio


async def test_an_edge_enrols_once_per_key_and_re_enrolment_revokes_the_old_token() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={})
        key = SigningKey.generate()
        body = EdgeEnrolment(edge_id="edge-1", url="http://edge-1.test:8710", public_key=key.public_bytes)
        url = "/federations/fed-1/edges"
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-1")

        first = await post_enrolment(cloud.http, fed.fid, body, key, token=token)
        again = await post_enrolment(cloud.http, fed.fid, body, key, token=None)
        other = SigningKey.generate()
        hijack = body.model_copy(update={"public_key": other.public_bytes})
        conflict = await post_enrolment(cloud.http, fed.fid, hijack, other, token=token)

        assert first.status_code == 201 and again.status_code == 200
        old, new = (Enrolled.model_validate_json(r.content) for r in (first, again))
        assert old.role is Role.EDGE and old.subject == "edge-1" and old.api_token != new.api_token
        assert (await cloud.http.get(url, headers=bearer(old.api_token))).status_code == 401
        listed = await cloud.http.get(url, headers=bearer(new.api_token))
        assert [EdgeInfo.model_validate(e).public_key for e in listed.json()] == [key.public_bytes]
        assert conflict.status_code == 409 and conflict.json()["field"] == "public_key"


async def test_enrolment_needs_the_enrolment_token_issued_for_its_id() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={})
        key = SigningKey.generate()
        body = EdgeEnrolment(edge_id="edge-1", url="http://edge-1.test", public_key=key.public_bytes)
        client_token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "edge-1")

        for token in (client_token, "not-a-token-at-all-0123", None):
            response = await post_enrolment(cloud.http, fed.fid, body, key, token=token)
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "bad_enrolment_token", response.text
        unknown = await cloud.http.post("/federations/nope/enrolment-challenges")
        assert unknown.status_code == 404


async def test_clients_enrol_at_an_enrolled_edge_with_a_capped_rank() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(r_max=2), topology={"edge-1": ()})
        url = "/federations/fed-1/clients"

        async def enrol(cid: str, edge: str = "edge-1", max_rank: int | None = None) -> httpx.Response:
            key = SigningKey.generate()
            body = ClientEnrolment(
                client_id=cid, edge_id=edge, public_key=key.public_bytes, num_examples=50, max_rank=max_rank
            )
            token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, cid)
            return await post_enrolment(cloud.http, fed.fid, body, key, token=token)

        unknown_edge = await enrol("client-z", edge="edge-9")
        assert unknown_edge.status_code == 404 and unknown_edge.json()["field"] == "edge_id"
        for cid, max_rank in (("client-a", 1), ("client-b", None), ("client-c", 8)):
            response = await enrol(cid, max_rank=max_rank)
            assert response.status_code == 201, response.text
            assert Enrolled.model_validate_json(response.content).edge_url == "http://edge-1.test:8710"

        listed = await cloud.http.get(
            url, params={"edge_id": "edge-1"}, headers=bearer(fed.edges["edge-1"].token)
        )
        clients = [ClientInfo.model_validate(c) for c in listed.json()]
        assert {c.client_id: c.rank for c in clients} == {"client-a": 1, "client-b": 2, "client-c": 2}
        assert (await cloud.http.get(url, params={"edge_id": "edge-2"})).json() == []
        client_token = Enrolled.model_validate_json((await enrol("client-e")).content).api_token
        assert (await cloud.http.get(url, headers=bearer(client_token))).status_code == 403


async def test_enrolment_tokens_are_issued_listed_and_revoked_by_the_admin_only() -> None:
    # Prepare: a federation with its two edges and four clients enrolled.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        key = SigningKey.generate()
        new_edge = EdgeEnrolment(edge_id="edge-3", url="http://edge-3.test:8710", public_key=key.public_bytes)
        tokens_url = f"/federations/{fed.fid}/enrolment-tokens"

        # Execute: issue a token for edge-3, revoke it, issue another.
        first = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3")
        listed = await cloud.http.get(tokens_url)
        token_id = next(t["token_id"] for t in listed.json() if t["subject"] == "edge-3")
        revoked = await cloud.http.delete(f"{tokens_url}/{token_id}")
        again = await cloud.http.delete(f"{tokens_url}/{token_id}")
        with_revoked = await post_enrolment(cloud.http, fed.fid, new_edge, key, token=first)
        second = await issue_enrolment_token(cloud.http, fed.fid, Role.EDGE, "edge-3")
        with_new = await post_enrolment(cloud.http, fed.fid, new_edge, key, token=second)
        enrolled_edge = await cloud.http.get(
            f"/federations/{fed.fid}/edges", headers=bearer(fed.edges["edge-1"].token)
        )
        as_edge = await cloud.http.post(
            tokens_url, json={"role": "edge", "subject": "edge-9"}, headers=bearer(fed.edges["edge-1"].token)
        )
        as_edge_list = await cloud.http.get(tokens_url, headers=bearer(fed.edges["edge-1"].token))
        admin_role = await cloud.http.post(tokens_url, json={"role": "admin", "subject": "root"})
        too_short = await cloud.http.post(tokens_url, json={"role": "client", "subject": "h1", "ttl_s": 1})

    # Assert
    assert listed.status_code == 200 and first not in listed.text
    assert revoked.status_code == 204 and again.status_code == 404
    assert with_revoked.status_code == 401 and with_new.status_code == 201
    assert enrolled_edge.status_code == 200  # an enrolled edge's API token is untouched
    assert as_edge.status_code == 403 and as_edge_list.status_code == 403
    assert admin_role.status_code == 422 and admin_role.json()["field"] == "role"
    assert too_short.status_code == 422 and too_short.json()["field"] == "ttl_s"


async def test_the_previous_admin_token_works_while_a_new_one_rolls_out() -> None:
    new = "adm-new-Hq4zR8wLp2Vx6Tn9Kc3M"
    async with running_cloud(admin_token=new, admin_token_previous=ADMIN_TOKEN) as cloud:
        with_previous = await cloud.http.get("/federations")  # the harness client sends ADMIN_TOKEN
        with_new = await cloud.http.get("/federations", headers=bearer(new))
        unknown = await cloud.http.get("/federations", headers=bearer("adm-unknown-Zx8Qw3Er5Ty7Ui"))
    assert (with_previous.status_code, with_new.status_code, unknown.status_code) == (200, 200, 401)


async def test_a_client_re_enrolling_with_another_count_is_refused() -> None:
    """A hospital releases its noisy example count once, at enrolment; a re-enrolment (same key) with
    another count means it drew again (its state folder was lost): a second release nobody would charge."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={"edge-1": ()})
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-a")
        key = SigningKey.generate()
        first = ClientEnrolment(
            client_id="client-a", edge_id="edge-1", public_key=key.public_bytes, num_examples=412
        )

        enrolled = await post_enrolment(cloud.http, fed.fid, first, key, token=token)
        same = await post_enrolment(cloud.http, fed.fid, first, key, token=None)
        redrawn = await post_enrolment(
            cloud.http, fed.fid, first.model_copy(update={"num_examples": 398}), key, token=None
        )

    assert enrolled.status_code == 201 and same.status_code == 200
    assert redrawn.status_code == 409 and redrawn.json()["field"] == "num_examples"


async def test_a_hospital_reads_the_identity_keys_of_its_own_edges_hospitals_only() -> None:
    """The masking cohort's PKI: a hospital gets each hospital of its own edge with the key it enrolled (the
    same the admin's client list shows), and nothing of another edge's."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        url = "/federations/fed-1/identity-keys"
        own = await cloud.http.get(
            url, params={"edge_id": "edge-1"}, headers=bearer(fed.client_tokens["client-a"])
        )
        other = await cloud.http.get(
            url, params={"edge_id": "edge-2"}, headers=bearer(fed.client_tokens["client-a"])
        )
        listed = await cloud.http.get("/federations/fed-1/clients", headers=bearer(ADMIN_TOKEN))

    assert own.status_code == 200, own.text
    keys = IdentityKeys.model_validate_json(own.content)
    enrolled = {c.client_id: c.public_key for c in (ClientInfo.model_validate(x) for x in listed.json())}
    assert keys.edge_id == "edge-1"
    assert keys.keys == {c: enrolled[c] for c in ("client-a", "client-b")}
    assert other.status_code == 403 and other.json()["code"] == "forbidden"


async def test_a_federation_enrolled_before_counts_were_kept_is_capped_by_its_roster() -> None:
    """A federation whose store holds no enrolment count (enrolled before the count was kept, its record
    still naming the shared enrolment tokens' digests) opens, and its cap counts the roster it has."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(max_clients=4))
        record_key = keyspace.fed_state(fed.fid)
        record = json.loads(await cloud.store.get(record_key) or b"{}")
        record |= {"edge_enrolment_digest": "4" * 64, "client_enrolment_digest": "5" * 64}
        await cloud.store.set(record_key, json.dumps(record).encode())
        await cloud.store.delete(keyspace.fed_enrolled_count(fed.fid, Role.CLIENT.value))
        key = SigningKey.generate()
        token = await issue_enrolment_token(cloud.http, fed.fid, Role.CLIENT, "client-e")
        body = ClientEnrolment(
            client_id="client-e", edge_id="edge-1", public_key=key.public_bytes, num_examples=5
        )
        full = await post_enrolment(cloud.http, fed.fid, body, key, token=token)
        info = await cloud.http.get(f"/federations/{fed.fid}")

    assert info.status_code == 200, info.text
    assert full.status_code == 409 and full.json()["code"] == "federation_full", full.text
