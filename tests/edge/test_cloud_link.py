"""`HttpCloudLink` against a small stand-in for the cloud's HTTP API (docs/api.md), in-process."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from edge_aggregator.cloud_link import FederationNotActiveError, HttpCloudLink
from edge_aggregator.credentials import StoredToken
from protocol.crypto import HEScheme
from protocol.messages import (
    ClientInfo,
    Contribution,
    EdgeAggregate,
    EdgeEnrolment,
    Enrolled,
    EnrolmentChallenge,
    ErrorBody,
    ErrorCode,
    FederationSpec,
    FederationState,
    Role,
    RoundPlan,
)
from services.http import PeerRefusedError
from services.identity import SigningKey, verify
from services.store import StateStore
from tests.clock import T0
from tests.edge.harness import EID, FID, federation_info

pytestmark = pytest.mark.anyio
ENROL_TOKEN = "edge-enrol-Vq3kZ8pLw2Rt6Yx9"


@dataclass
class StubCloud:
    secret: HEScheme[Any]
    state: FederationState = FederationState.ACTIVE
    plan: RoundPlan | None = None
    live_token: str | None = None
    issued: int = 0
    enrolments: list[EdgeEnrolment] = field(default_factory=list)
    roster_queries: list[str] = field(default_factory=list)
    held: dict[str, EdgeAggregate] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)

    def app(self) -> FastAPI:
        app = FastAPI()

        def refuse(status: int, code: ErrorCode, message: str) -> JSONResponse:
            return JSONResponse(
                ErrorBody(code=code, message=message).model_dump(mode="json"), status_code=status
            )

        def authorised(authorization: str | None) -> bool:
            return self.live_token is not None and authorization == f"Bearer {self.live_token}"

        @app.post("/federations/{fid}/enrolment-challenges", status_code=201)
        async def challenge(fid: str) -> Any:
            nonce = secrets.token_hex(16)
            self.nonces.add(nonce)
            return EnrolmentChallenge(federation_id=fid, nonce=nonce, expires_at=T0).model_dump(mode="json")

        @app.post("/federations/{fid}/edges", status_code=201)
        async def enrol(
            fid: str, request: Request, authorization: Annotated[str | None, Header()] = None
        ) -> Any:
            enrolment = EdgeEnrolment.model_validate_json(await request.body())
            known = any(e.public_key == enrolment.public_key for e in self.enrolments)
            if authorization != f"Bearer {ENROL_TOKEN}" and not known:
                return refuse(401, ErrorCode.BAD_ENROLMENT_TOKEN, "enrolment token required")
            if enrolment.nonce not in self.nonces or enrolment.signature is None:
                return refuse(409, ErrorCode.UNKNOWN_CHALLENGE, "no such challenge")
            self.nonces.discard(enrolment.nonce)
            verify(enrolment.public_key, enrolment.signing_payload(fid), enrolment.signature)
            self.enrolments.append(enrolment)
            self.issued += 1
            self.live_token = f"edge-api-token-{self.issued:04d}"
            return Enrolled(
                federation_id=fid, subject=enrolment.edge_id, role=Role.EDGE, api_token=self.live_token
            ).model_dump(mode="json")

        @app.get("/federations/{fid}")
        async def federation(fid: str, authorization: Annotated[str | None, Header()] = None) -> Any:
            if not authorised(authorization):
                return refuse(401, ErrorCode.UNAUTHENTICATED, "unknown token")
            info = federation_info(FederationSpec(federation_id=fid), self.secret, state=self.state)
            return info.model_dump(mode="json")

        @app.get("/federations/{fid}/public-context")
        async def public_context(fid: str, authorization: Annotated[str | None, Header()] = None) -> Any:
            if not authorised(authorization):
                return refuse(401, ErrorCode.UNAUTHENTICATED, "unknown token")
            return Response(self.secret.public_bytes(), media_type="application/octet-stream")

        @app.get("/federations/{fid}/plan")
        async def plan(
            fid: str,
            wait: float,
            after_round: int | None = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> Any:
            if not authorised(authorization):
                return refuse(401, ErrorCode.UNAUTHENTICATED, "unknown token")
            if self.state is not FederationState.ACTIVE:
                return refuse(410, ErrorCode.FEDERATION_NOT_ACTIVE, f"federation is {self.state.value}")
            if self.plan is None or (after_round is not None and self.plan.round <= after_round):
                return Response(status_code=204)
            return self.plan.model_dump(mode="json")

        @app.get("/federations/{fid}/clients")
        async def clients(
            fid: str, edge_id: str, authorization: Annotated[str | None, Header()] = None
        ) -> Any:
            if not authorised(authorization):
                return refuse(401, ErrorCode.UNAUTHENTICATED, "unknown token")
            self.roster_queries.append(edge_id)
            key = SigningKey.generate().public_bytes
            info = ClientInfo(
                client_id="hosp-a", edge_id=edge_id, public_key=key, num_examples=5, rank=2, enrolled_at=T0
            )
            return [info.model_dump(mode="json")]

        @app.post("/federations/{fid}/rounds/{n}/aggregates")
        async def aggregates(
            fid: str,
            n: int,
            request: Request,
            authorization: Annotated[str | None, Header()] = None,
            idempotency_key: Annotated[str | None, Header()] = None,
        ) -> Any:
            if not authorised(authorization):
                return refuse(401, ErrorCode.UNAUTHENTICATED, "unknown token")
            aggregate = EdgeAggregate.model_validate_json(await request.body())
            assert idempotency_key == aggregate.idempotency_key
            held = self.held.get(aggregate.idempotency_key)
            if held is None:
                self.held[aggregate.idempotency_key] = aggregate
                return JSONResponse({"state": "collecting"}, status_code=202)
            if held.signing_payload() == aggregate.signing_payload():
                return JSONResponse({"state": "collecting"}, status_code=200)
            return refuse(409, ErrorCode.DUPLICATE_UPLOAD, "another aggregate of this edge for this round")

        return app


def _aggregate(weight: float) -> EdgeAggregate:
    contribution = Contribution(
        client_id="hosp-a", weight=weight, num_examples=5, rank=2, nonce="ab" * 16, ciphertext_sha256="0" * 64
    )
    return EdgeAggregate(
        federation_id=FID,
        round=0,
        basis_version=0,
        edge_id=EID,
        ciphertext=b"sum",
        contributions=(contribution,),
        idempotency_key=f"{FID}:0:{EID}",
    )


async def test_http_cloud_link_speaks_the_cloud_api(secret_scheme: HEScheme[Any]) -> None:
    stub = StubCloud(secret_scheme)
    link = HttpCloudLink(
        "http://cloud.test/",
        federation_id=FID,
        enrolment_token=ENROL_TOKEN,
        transport=httpx.ASGITransport(app=stub.app()),
    )
    key = SigningKey.generate()
    enrolment = EdgeEnrolment(edge_id=EID, url="http://edge.test:8710", public_key=key.public_bytes)
    try:
        enrolled = await link.enrol(enrolment, key)
        info = await link.federation()
        context = await link.public_context()
        nothing = await link.plan(after_round=None, wait_s=0.0)
        stub.plan = RoundPlan(
            federation_id=FID,
            round=0,
            adapter_version=0,
            basis_version=0,
            deadline=T0,
            client_ranks={"hosp-a": 2},
            clip_norm=1.0,
        )
        plan = await link.plan(after_round=None, wait_s=0.0)
        no_newer = await link.plan(after_round=0, wait_s=0.0)
        roster = await link.roster()
        await link.forward(_aggregate(1.0))  # 202
        await link.forward(_aggregate(1.0))  # 200: the same aggregate again, counted once
        with pytest.raises(PeerRefusedError) as refused:
            await link.forward(_aggregate(2.0))  # another body under the same key
        stub.live_token = None  # the cloud restarted and forgot the token: the link enrols again
        after_restart = await link.federation()
        stub.state = FederationState.COMPLETED
        with pytest.raises(FederationNotActiveError) as ended:
            await link.plan(after_round=0, wait_s=0.0)
    finally:
        await link.close()

    assert enrolled.api_token == "edge-api-token-0001"
    assert info.spec.federation_id == FID and context == secret_scheme.public_bytes()
    assert nothing is None and no_newer is None and plan == stub.plan
    assert [c.client_id for c in roster] == ["hosp-a"] and stub.roster_queries == [EID]
    assert (refused.value.status, refused.value.code) == (409, "duplicate_upload")
    assert len(stub.held) == 1
    assert after_restart.state is FederationState.ACTIVE and len(stub.enrolments) == 2
    assert ended.value.state is FederationState.COMPLETED


async def test_replicas_share_the_live_token_through_the_store(
    secret_scheme: HEScheme[Any], state_store: StateStore
) -> None:
    # The cloud keeps one live token per edge: each enrolment revokes the previous one. Two replicas of
    # the edge with a shelf in one store must both end up calling with the live token, without enrolling
    # back and forth.
    stub = StubCloud(secret_scheme)
    transport = httpx.ASGITransport(app=stub.app())
    shelf = StoredToken(state_store, edge_id=EID, federation_id=FID)
    links = [
        HttpCloudLink(
            "http://cloud.test/",
            federation_id=FID,
            enrolment_token=ENROL_TOKEN,
            transport=transport,
            tokens=shelf,
        )
        for _ in range(2)
    ]
    key = SigningKey.generate()
    enrolment = EdgeEnrolment(edge_id=EID, url="http://edge.test:8710", public_key=key.public_bytes)
    try:
        first = await links[0].enrol(enrolment, key)
        second = await links[1].enrol(enrolment, key)  # finds the first replica's token: no new enrolment
        assert second.api_token == first.api_token and len(stub.enrolments) == 1
        for _ in range(3):
            for link in links:
                assert (await link.federation()).state is FederationState.ACTIVE
        assert len(stub.enrolments) == 1

        stub.live_token = None  # the cloud forgot the token: one replica enrols again, the other follows
        await links[1].federation()
        await links[0].federation()
        assert len(stub.enrolments) == 2
        assert await shelf.load() == stub.live_token
    finally:
        for link in links:
            await link.close()
