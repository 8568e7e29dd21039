from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cloud_server.auth import AdminOrEdgeDep, ClientEnrolmentDep, EdgeEnrolmentDep, MemberDep, Principal
from cloud_server.deps import EdgeClocksDep, EnrolmentDep
from cloud_server.routes import errors
from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    Enrolled,
    Identifier,
    IdentityKeys,
    Role,
)
from services.errors import ForbiddenError

router = APIRouter(prefix="/federations/{fid}", tags=["enrolment"], responses=errors(503))


@router.post(
    "/edges",
    status_code=201,
    summary="Enrol an edge (edge enrolment token)",
    responses={
        200: {"description": "already enrolled with this key: a fresh token", "model": Enrolled},
        **errors(401, 404, 409, 410, 422),
    },
)
async def enrol_edge(
    body: EdgeEnrolment, fid: EdgeEnrolmentDep, enrolment: EnrolmentDep, response: Response
) -> Enrolled:
    """With the federation's edge enrolment token. Registers the edge's URL and Ed25519 public key (every
    aggregate it forwards must be signed with it) and returns its API token once; the cloud keeps only the
    token's digest. The same edge id with another key is 409."""
    enrolled, created = await enrolment.enrol_edge(fid, body)
    response.status_code = 201 if created else 200
    return enrolled


@router.get("/edges", summary="Enrolled edges", responses=errors(401, 403, 404, 422))
async def list_edges(
    fid: str, _: AdminOrEdgeDep, enrolment: EnrolmentDep, clocks: EdgeClocksDep
) -> list[EdgeInfo]:
    """Each edge's URL, public key and enrolment time, and the clock offset it last reported on a plan poll
    (`clock`, with `alert` set while it exceeds half the deadline margin)."""
    return await clocks.annotate(fid, await enrolment.edges(fid))


@router.post(
    "/clients",
    status_code=201,
    summary="Enrol a client (client enrolment token)",
    responses={
        200: {"description": "already enrolled with this key: a fresh token", "model": Enrolled},
        **errors(401, 404, 409, 410, 422),
    },
)
async def enrol_client(
    body: ClientEnrolment, fid: ClientEnrolmentDep, enrolment: EnrolmentDep, response: Response
) -> Enrolled:
    """The client's rank is `min(max_rank or r_max, r_max)`; its edge must be enrolled (404 otherwise). A new
    client when the federation holds `max_clients` is refused (409 `federation_full`)."""
    enrolled, created = await enrolment.enrol_client(fid, body)
    response.status_code = 201 if created else 200
    return enrolled


@router.get(
    "/clients", summary="Enrolled clients and their participation", responses=errors(401, 403, 404, 422)
)
async def list_clients(
    fid: str,
    caller: AdminOrEdgeDep,
    enrolment: EnrolmentDep,
    edge_id: Annotated[
        Identifier | None, Query(description="only the clients of this edge (an edge: its own, the default)")
    ] = None,
) -> list[ClientInfo]:
    """Each hospital's edge, public key, current rank (a rank policy may grow it between rounds), rounds
    contributed, last seen and example-level epsilon. Edges read it to learn their clients' keys: an edge
    sees its own hospitals only (403 for another edge's)."""
    if caller.role is Role.EDGE:
        edge_id = _own_edge(caller, edge_id)
    return list((await enrolment.clients(fid, edge_id=edge_id)).values())


def _own_edge(caller: Principal, edge_id: str | None) -> str:
    """The edge a calling edge may ask about: its own (also when it names none)."""
    if edge_id is not None and edge_id != caller.subject:
        raise ForbiddenError(f"an edge may read its own hospitals only, not {edge_id}'s", field="edge_id")
    return caller.subject


@router.get(
    "/identity-keys",
    summary="The identity keys of one edge's hospitals (its masking cohorts' PKI)",
    responses=errors(401, 403, 404, 422),
)
async def identity_keys(
    fid: str,
    caller: MemberDep,
    enrolment: EnrolmentDep,
    edge_id: Annotated[Identifier, Query(description="the edge whose hospitals' keys to list")],
) -> IdentityKeys:
    """Each hospital's enrolled Ed25519 public key, for the hospitals enrolled at `edge_id`: a hospital
    checks every advert and signature of its masking cohort against them, so that an edge cannot stand in
    for a hospital. A hospital may read its own edge's only, an edge its own."""
    if caller.role is Role.EDGE:
        _own_edge(caller, edge_id)
    clients = await enrolment.clients(fid, edge_id=edge_id, with_stats=False)
    if caller.role is Role.CLIENT and caller.subject not in clients:
        raise ForbiddenError(f"a hospital may read the identity keys of its own edge only, not {edge_id}'s")
    return IdentityKeys(edge_id=edge_id, keys={cid: c.public_key for cid, c in clients.items()})
