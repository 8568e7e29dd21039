"""Creating federations, their lifecycle, authentication, and the error contract of the API."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from protocol.crypto import scheme_from_public
from protocol.messages import FederationCreated, FederationInfo, FederationState
from services.store import FieldsTransactionFn, HashField, MemoryStore, StoreError, TransactionFn, Updates
from tests.cloud.harness import ADMIN_TOKEN, LAYOUT_SIZE, Federation, bearer, running_cloud, small_spec

pytestmark = pytest.mark.anyio


async def test_create_stores_a_sealed_key_and_a_zero_adapter() -> None:
    async with running_cloud() as cloud:
        response = await cloud.http.post("/federations", json=small_spec().model_dump(mode="json"))

        assert response.status_code == 201, response.text
        created = FederationCreated.model_validate_json(response.content)
        info = FederationInfo.model_validate_json((await cloud.http.get("/federations/fed-1")).content)
        assert (
            info.state is FederationState.ACTIVE and info.current_round is None and info.adapter_version == 0
        )
        assert info.layout_size == LAYOUT_SIZE and info.he_fingerprint == created.he_fingerprint
        assert [f["spec"]["federation_id"] for f in (await cloud.http.get("/federations")).json()] == [
            "fed-1"
        ]
        assert np.array_equal(await cloud.vector("fed-1", 0), np.zeros(LAYOUT_SIZE))
        # The secret key is stored sealed: the public key is served, no stored value holds the raw secret.
        public = (await cloud.http.get("/federations/fed-1/public-context")).content
        scheme = scheme_from_public(small_spec().he, public)
        assert not scheme.has_secret_key and scheme.fingerprint.hex() == created.he_fingerprint
        secret = (await cloud.context.federations.secret_scheme("fed-1")).secret_bytes()
        for key in await cloud.store.scan("cloud:fed-1:"):
            value = await cloud.store.get(key)
            assert value is None or secret[-64:] not in value, key


class OneWriteLost(MemoryStore):
    """The cloud's store, unreachable for the `lose`-th write once `armed` (a transaction or a hash write)."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose, self.writes, self.armed = lose, 0, False

    def _write_reaches(self, what: str) -> None:
        if self.armed:
            self.writes += 1
            if self.writes == self.lose:
                raise StoreError(f"redis unreachable during {what}")

    async def transaction(self, keys: Sequence[str], fn: TransactionFn) -> Updates:
        self._write_reaches("a transaction")
        return await super().transaction(keys, fn)

    async def hset(self, key: str, field: str, value: bytes) -> None:
        self._write_reaches(f"HSET {key}")
        await super().hset(key, field, value)

    async def hset_if_absent_with(
        self, key: str, field: str, value: bytes, *, keys: Sequence[str], fn: TransactionFn
    ) -> bool:
        self._write_reaches(f"a transaction with HSETNX {key}")
        return await super().hset_if_absent_with(key, field, value, keys=keys, fn=fn)

    async def fields_transaction(
        self, fields: Sequence[HashField], fn: FieldsTransactionFn, *, keys: Sequence[str] = ()
    ) -> None:
        self._write_reaches("a transaction on hash fields")
        await super().fields_transaction(fields, fn, keys=keys)


@pytest.mark.parametrize("lose", [1, 2])
async def test_a_create_cut_by_a_store_outage_leaves_no_federation_that_is_not_listed(lose: int) -> None:
    """A federation is created in one store write, its listing in `cloud:federations` included: whichever
    write of a create the store loses, the cloud either serves the federation and lists it (and so
    `fedlora kek rotate` and retention see it) or knows nothing of it."""
    store = OneWriteLost(lose)
    async with running_cloud(store=store) as cloud:
        store.armed = True
        created = await cloud.http.post("/federations", json=small_spec().model_dump(mode="json"))
        store.armed = False
        served = (await cloud.http.get("/federations/fed-1")).status_code
        listed = [f["spec"]["federation_id"] for f in (await cloud.http.get("/federations")).json()]
    assert created.status_code in (201, 503), created.text
    assert (served, listed) in ((200, ["fed-1"]), (404, [])), (created.status_code, served, listed)


async def test_a_second_federation_with_the_same_id_is_a_conflict() -> None:
    async with running_cloud() as cloud:
        body = small_spec().model_dump(mode="json")
        assert (await cloud.http.post("/federations", json=body)).status_code == 201
        again = await cloud.http.post("/federations", json=body)
        assert again.status_code == 409 and again.json()["code"] == "conflict"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"federation_id": "<your-federation-id>"}, "federation_id"),
        ({"r_max": 0}, "r_max"),
        ({"central_dp": {"noise_multiplier": -1.0}}, "central_dp.noise_multiplier"),
        ({"target_modules": ["no_such_module"]}, "target_modules"),
        ({"strategy": "fedavg"}, "strategy"),
    ],
)
async def test_an_invalid_spec_is_refused_with_422_naming_the_field(change: dict, field: str) -> None:
    async with running_cloud() as cloud:
        body = small_spec().model_dump(mode="json") | change

        response = await cloud.http.post("/federations", json=body)

        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_request" and response.json()["field"] == field
        assert (await cloud.http.get("/federations")).json() == []


async def test_requests_without_a_valid_admin_token_are_refused() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        body = small_spec("fed-2").model_dump(mode="json")

        anonymous = await cloud.http.post("/federations", json=body, headers={"Authorization": ""})
        wrong = await cloud.http.post("/federations", json=body, headers=bearer(ADMIN_TOKEN + "x"))
        as_edge = await cloud.http.post("/federations", json=body, headers=bearer(fed.edges["edge-1"].token))
        start_as_edge = await cloud.http.post(
            f"/federations/{fed.fid}/start", headers=bearer(fed.edges["edge-1"].token)
        )
        list_as_client = await cloud.http.get(
            f"/federations/{fed.fid}/rounds", headers=bearer(fed.client_tokens["client-a"])
        )

        for response in (anonymous, wrong, as_edge):
            assert response.status_code == 401 and response.json()["code"] == "unauthenticated", response.text
            assert response.headers["www-authenticate"] == "Bearer"
        for response in (start_as_edge, list_as_client):
            assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
        # Members may read their federation, not others'.
        own = await cloud.http.get(f"/federations/{fed.fid}", headers=bearer(fed.client_tokens["client-a"]))
        assert own.status_code == 200
        await Federation.create(cloud.http, small_spec("fed-2"), topology={})
        other = await cloud.http.get("/federations/fed-2", headers=bearer(fed.client_tokens["client-a"]))
        assert other.status_code == 401


async def test_pause_resume_and_stop() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        client = bearer(fed.client_tokens["client-a"])
        plan_url = f"/federations/{fed.fid}/plan"

        paused = await cloud.http.post(f"/federations/{fed.fid}/pause")
        assert paused.status_code == 200 and paused.json()["state"] == "paused"
        assert (await cloud.http.get(plan_url, params={"wait": 0.05}, headers=client)).status_code == 204
        assert (await cloud.http.post(f"/federations/{fed.fid}/pause")).status_code == 409
        assert (await cloud.http.post(f"/federations/{fed.fid}/resume")).json()["state"] == "active"
        assert (await cloud.http.get(plan_url, headers=client)).json()["round"] == 0

        stopped = await cloud.http.post(f"/federations/{fed.fid}/stop")

        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        gone = await cloud.http.get(plan_url, headers=client)
        assert gone.status_code == 410 and gone.json()["code"] == "federation_not_active"
        assert "stopped" in gone.json()["message"] and gone.json()["detail"] == {"state": "stopped"}
        assert (await cloud.status(fed.fid, 0)).failure == "federation stopped"
        assert (await cloud.http.post(f"/federations/{fed.fid}/resume")).status_code == 409


async def test_unknown_federations_routes_and_large_bodies_answer_with_an_error_body() -> None:
    async with running_cloud(max_body_bytes=64 * 1024) as cloud:
        unknown = await cloud.http.get("/federations/nope")
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_federation"
        no_route = await cloud.http.get("/nowhere")
        assert no_route.status_code == 404 and no_route.json()["code"] == "not_found"
        too_large = await cloud.http.post(
            "/federations",
            content=b"{" + b" " * (128 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert too_large.status_code == 413 and too_large.json()["code"] == "payload_too_large"

        async def chunks():  # no Content-Length: the limit applies as the body streams in
            for _ in range(4):
                yield b" " * (32 * 1024)

        streamed = await cloud.http.post(
            "/federations", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413 and streamed.json()["code"] == "payload_too_large"
        not_json = await cloud.http.post(
            "/federations", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 422 and not_json.json()["code"] == "invalid_request"
        assert (await cloud.http.get("/healthz", headers={})).json() == {"status": "ok"}


async def test_openapi_documents_every_endpoint_with_tags() -> None:
    async with running_cloud() as cloud:
        schema = (await cloud.http.get("/openapi.json")).json()
        assert {t["name"] for t in schema["tags"]} == {
            "health",
            "federations",
            "enrolment",
            "rounds",
            "adapters",
            "dashboard",
            "monitoring",
        }
        paths = schema["paths"]
        for path in (
            "/federations",
            "/federations/{fid}/plan",
            "/federations/{fid}/rounds/{n}/aggregates",
            "/federations/{fid}/adapters/{version}",
        ):
            assert path in paths
        operations = [op for item in paths.values() for op in item.values()]
        assert all(op.get("summary") and op.get("tags") for op in operations)
