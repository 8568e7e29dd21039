from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from cloud_server.auth import (
    AdminDep,
    AdminOrEdgeDep,
    MemberDep,
    OptionalTokenDep,
    Principal,
    require_edge_certificate,
)
from cloud_server.deps import ContextDep, EdgeClocksDep, EnrolmentDep, EnrolmentTokensDep
from cloud_server.routes import errors
from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    EdgeUrl,
    Enrolled,
    EnrolmentChallenge,
    EnrolmentTokenInfo,
    EnrolmentTokenIssued,
    EnrolmentTokenRequest,
    Identifier,
    IdentityKeys,
    Role,
    Sha256Hex,
)
from services.errors import ForbiddenError

router = APIRouter(prefix="/federations/{fid}", tags=["enrolment"], responses=errors(503))


@router.post(
    "/enrolment-tokens",
    status_code=201,
    summary="Issue a single-use enrolment token for one edge or hospital id (admin)",
    responses=errors(401, 403, 404, 410, 422),
)
async def issue_enrolment_token(
    fid: str, body: EnrolmentTokenRequest, _: AdminDep, tokens: EnrolmentTokensDep
) -> EnrolmentTokenIssued:
    """The token is returned once; the cloud keeps its SHA-256 (`token_id`) with its expiry. It enrols the
    one `role` and `subject` it names, once, within `ttl_s`."""
    return await tokens.issue(fid, body)


@router.get(
    "/enrolment-tokens",
    summary="The enrolment tokens issued: issued, used or expired, without secrets (admin)",
    responses=errors(401, 403, 404, 422),
)
async def list_enrolment_tokens(
    fid: str, _: AdminDep, tokens: EnrolmentTokensDep
) -> list[EnrolmentTokenInfo]:
    """Each token by its digest (`token_id`), with the role and id it enrols, its expiry and whether it was
    used; an expired unused one is dropped at the next issue."""
    return await tokens.listing(fid)


@router.delete(
    "/enrolment-tokens/{token_id}",
    status_code=204,
    summary="Revoke an enrolment token by its digest (admin)",
    response_class=Response,
    responses=errors(401, 403, 404, 422),
)
async def revoke_enrolment_token(
    fid: str, token_id: Annotated[Sha256Hex, Path()], _: AdminDep, tokens: EnrolmentTokensDep
) -> Response:
    """The token enrols nobody from now on; a party it enrolled already stays enrolled."""
    await tokens.revoke(fid, token_id)
    return Response(status_code=204)


@router.post(
    "/enrolment-challenges",
    status_code=201,
    summary="A nonce to sign with the key being enrolled (no authentication)",
    responses=errors(404, 410, 422),
)
async def enrolment_challenge(fid: str, tokens: EnrolmentTokensDep) -> EnrolmentChallenge:
    """Single-use, answerable for `ENROLMENT_CHALLENGE_TTL_S` seconds: the enrolment it goes into carries it
    and the enrolled key's signature of the enrolment's signing payload (proof of possession)."""
    return await tokens.challenge(fid)


@router.post(
    "/edges",
    status_code=201,
    summary="Enrol an edge (its enrolment token; a re-enrolment needs only the proof)",
    responses={
        200: {"description": "already enrolled with this key: a fresh token", "model": Enrolled},
        **errors(401, 403, 404, 409, 410, 422),
    },
)
async def enrol_edge(
    fid: str,
    body: EdgeEnrolment,
    token: OptionalTokenDep,
    enrolment: EnrolmentDep,
    response: Response,
    request: Request,
    context: ContextDep,
) -> Enrolled:
    """A new edge brings the enrolment token issued for its id (`Authorization: Bearer`), and every
    enrolment a signature of a challenge's nonce by the key it enrols (401 `bad_signature`). Registers the
    edge's URL and Ed25519 public key (every aggregate it forwards must be signed with it) and returns its API
    token once; the cloud keeps only the token's digest. Again with the same key: a fresh API token, nothing
    else changed (another URL is 409 `edge_url_changed`). The same edge id with another key is 409; past
    `max_edges` 409 `federation_full`. A cloud serving TLS enrols an edge only over a connection whose client
    certificate names it (401 `client_certificate_required`, 403 `client_certificate_mismatch`)."""
    require_edge_certificate(request.scope, context.settings, fid, body.edge_id)
    enrolled, created = await enrolment.enrol_edge(fid, body, token)
    response.status_code = 201 if created else 200
    return enrolled


@router.put(
    "/edges/{edge_id}/url",
    summary="Change an enrolled edge's URL (admin)",
    responses=errors(401, 403, 404, 410, 422),
)
async def set_edge_url(
    fid: str, edge_id: Annotated[Identifier, Path()], body: EdgeUrl, _: AdminDep, enrolment: EnrolmentDep
) -> EdgeInfo:
    """Hospitals enrolling from now on are sent there; an edge's own re-enrolment never changes it."""
    return await enrolment.set_edge_url(fid, edge_id, body.url)


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
    summary="Enrol a client (its enrolment token; a re-enrolment needs only the proof)",
    responses={
        200: {"description": "already enrolled with this key: a fresh token", "model": Enrolled},
        **errors(401, 404, 409, 410, 422),
    },
)
async def enrol_client(
    fid: str, body: ClientEnrolment, token: OptionalTokenDep, enrolment: EnrolmentDep, response: Response
) -> Enrolled:
    """As an edge enrols: a new hospital with the enrolment token issued for its id, every enrolment with a
    signed challenge. The client's rank is `min(max_rank or r_max, r_max)`; its edge must be enrolled (404
    otherwise). A new client when the federation holds `max_clients` is refused (409 `federation_full`). A
    re-enrolment (the same key, proven) rotates the API token; naming another edge moves the hospital
    (`cloud_server.enrolment.placed`)."""
    enrolled, created = await enrolment.enrol_client(fid, body, token)
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
