"""Enrolment of edges and clients: tokens, keys, ranks and rosters."""

from __future__ import annotations

import pytest

from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    Enrolled,
    EnrolmentTokens,
    IdentityKeys,
    Role,
)
from services.identity import SigningKey
from tests.cloud.harness import ADMIN_TOKEN, Federation, bearer, post_model, running_cloud, small_spec

pytestmark = pytest.mark.anyio


async def test_an_edge_enrols_once_per_key_and_re_enrolment_revokes_the_old_token() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={})
        key = SigningKey.generate()
        body = EdgeEnrolment(edge_id="edge-1", url="http://edge-1.test:8710", public_key=key.public_bytes)
        url = "/federations/fed-1/edges"

        first = await post_model(cloud.http, url, body, token=fed.created.edge_enrolment_token)
        again = await post_model(cloud.http, url, body, token=fed.created.edge_enrolment_token)
        hijack = body.model_copy(update={"public_key": SigningKey.generate().public_bytes})
        conflict = await post_model(cloud.http, url, hijack, token=fed.created.edge_enrolment_token)

        assert first.status_code == 201 and again.status_code == 200
        old, new = (Enrolled.model_validate_json(r.content) for r in (first, again))
        assert old.role is Role.EDGE and old.subject == "edge-1" and old.api_token != new.api_token
        assert (await cloud.http.get(url, headers=bearer(old.api_token))).status_code == 401
        listed = await cloud.http.get(url, headers=bearer(new.api_token))
        assert [EdgeInfo.model_validate(e).public_key for e in listed.json()] == [key.public_bytes]
        assert conflict.status_code == 409 and conflict.json()["field"] == "public_key"


async def test_enrolment_needs_the_right_enrolment_token() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={})
        body = EdgeEnrolment(
            edge_id="edge-1", url="http://edge-1.test", public_key=SigningKey.generate().public_bytes
        )

        for token in (fed.created.client_enrolment_token, "not-a-token-at-all-0123", None):
            response = await post_model(cloud.http, "/federations/fed-1/edges", body, token=token)
            assert response.status_code == 401 and response.json()["code"] == "unauthenticated", response.text
        unknown = await post_model(
            cloud.http, "/federations/nope/edges", body, token=fed.created.edge_enrolment_token
        )
        assert unknown.status_code == 404


async def test_clients_enrol_at_an_enrolled_edge_with_a_capped_rank() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(r_max=2), topology={"edge-1": ()})
        url = "/federations/fed-1/clients"

        def enrolment(cid: str, edge: str = "edge-1", max_rank: int | None = None) -> ClientEnrolment:
            key = SigningKey.generate().public_bytes
            return ClientEnrolment(
                client_id=cid, edge_id=edge, public_key=key, num_examples=50, max_rank=max_rank
            )

        token = fed.created.client_enrolment_token
        unknown_edge = await post_model(cloud.http, url, enrolment("client-z", edge="edge-9"), token=token)
        assert unknown_edge.status_code == 404 and unknown_edge.json()["field"] == "edge_id"
        for cid, max_rank in (("client-a", 1), ("client-b", None), ("client-c", 8)):
            response = await post_model(cloud.http, url, enrolment(cid, max_rank=max_rank), token=token)
            assert response.status_code == 201, response.text
            assert Enrolled.model_validate_json(response.content).edge_url == "http://edge-1.test:8710"
        wrong_role = await post_model(
            cloud.http, url, enrolment("client-d"), token=fed.created.edge_enrolment_token
        )
        assert wrong_role.status_code == 401

        listed = await cloud.http.get(
            url, params={"edge_id": "edge-1"}, headers=bearer(fed.edges["edge-1"].token)
        )
        clients = [ClientInfo.model_validate(c) for c in listed.json()]
        assert {c.client_id: c.rank for c in clients} == {"client-a": 1, "client-b": 2, "client-c": 2}
        assert (await cloud.http.get(url, params={"edge_id": "edge-2"})).json() == []
        client_token = Enrolled.model_validate_json(
            (await post_model(cloud.http, url, enrolment("client-e"), token=token)).content
        ).api_token
        assert (await cloud.http.get(url, headers=bearer(client_token))).status_code == 403


async def test_rotating_the_edge_enrolment_token_revokes_it_and_keeps_enrolled_edges_working() -> None:
    # Prepare: a federation with its two edges and four clients enrolled.
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        new_edge = EdgeEnrolment(
            edge_id="edge-3", url="http://edge-3.test:8710", public_key=SigningKey.generate().public_bytes
        )
        url = f"/federations/{fed.fid}/edges"

        # Execute: rotate the edge token only.
        rotated = await cloud.http.post(f"/federations/{fed.fid}/enrolment-tokens", json={"roles": ["edge"]})
        tokens = EnrolmentTokens.model_validate_json(rotated.content)
        with_old = await post_model(cloud.http, url, new_edge, token=fed.created.edge_enrolment_token)
        assert tokens.edge_enrolment_token is not None
        with_new = await post_model(cloud.http, url, new_edge, token=tokens.edge_enrolment_token)
        enrolled_edge = await cloud.http.get(url, headers=bearer(fed.edges["edge-1"].token))
        client = ClientEnrolment(
            client_id="client-z",
            edge_id="edge-3",
            public_key=SigningKey.generate().public_bytes,
            num_examples=5,
        )
        client_url = f"/federations/{fed.fid}/clients"
        client_still = await post_model(
            cloud.http, client_url, client, token=fed.created.client_enrolment_token
        )
        as_edge = await cloud.http.post(
            f"/federations/{fed.fid}/enrolment-tokens", json={}, headers=bearer(fed.edges["edge-1"].token)
        )
        empty = await cloud.http.post(f"/federations/{fed.fid}/enrolment-tokens", json={"roles": []})

    # Assert
    assert rotated.status_code == 200 and tokens.client_enrolment_token is None
    assert tokens.edge_enrolment_token != fed.created.edge_enrolment_token
    assert with_old.status_code == 401 and with_new.status_code == 201
    assert enrolled_edge.status_code == 200  # an enrolled edge's API token is untouched
    assert client_still.status_code == 201  # the client token was not rotated
    assert as_edge.status_code == 403
    assert empty.status_code == 422 and empty.json()["field"] == "roles"


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
        url, token = "/federations/fed-1/clients", fed.created.client_enrolment_token
        key = SigningKey.generate().public_bytes
        first = ClientEnrolment(client_id="client-a", edge_id="edge-1", public_key=key, num_examples=412)

        enrolled = await post_model(cloud.http, url, first, token=token)
        same = await post_model(cloud.http, url, first, token=token)
        redrawn = await post_model(
            cloud.http, url, first.model_copy(update={"num_examples": 398}), token=token
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
