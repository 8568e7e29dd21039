from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from cloud_server.auth import AdminDep, AdminOrClientDep, MemberDep
from cloud_server.deps import AdaptersDep, FederationsDep, RoundsDep
from cloud_server.routes import errors
from protocol.messages import (
    FederationCreated,
    FederationInfo,
    FederationSpec,
    PrivacyReport,
)

router = APIRouter(prefix="/federations", tags=["federations"], responses=errors(503))


@router.post(
    "",
    status_code=201,
    summary="Create a federation",
    responses=errors(401, 403, 409, 413, 422),
)
async def create_federation(
    spec: FederationSpec, _: AdminDep, federations: FederationsDep
) -> FederationCreated:
    """Generates the HE key pair (the secret sealed with the KEK before it is stored), derives the adapter
    layout from the base model, stores adapter version 0 (zeros) and returns its HE fingerprint; enrolment tokens are issued per edge and hospital afterwards (`POST /federations/{fid}/enrolment-tokens`)."""
    return await federations.create(spec)


@router.get("", summary="List federations", responses=errors(401, 403))
async def list_federations(_: AdminDep, federations: FederationsDep) -> list[FederationInfo]:
    """Every federation's spec, state, current round and adapter version (no tokens, no keys)."""
    return await federations.list()


@router.get("/{fid}", summary="A federation's spec and state", responses=errors(401, 403, 404, 422))
async def get_federation(fid: str, _: MemberDep, federations: FederationsDep) -> FederationInfo:
    """For the admin and the federation's own edges and clients: the spec they train under, the state
    (with `reason` once ended), the HE key's fingerprint and the adapter layout's size and digest."""
    return await federations.info(fid)


@router.get(
    "/{fid}/public-context",
    summary="The federation's public HE key",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(401, 403, 404, 422)},
)
async def public_context(fid: str, _: MemberDep, federations: FederationsDep) -> Response:
    """`HEScheme.public_bytes()`: enough to encrypt and add, never to decrypt."""
    return Response(await federations.public_bytes(fid), media_type="application/octet-stream")


@router.get(
    "/{fid}/basis/{version}",
    summary="A basis version: every module's frozen A",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(401, 403, 404, 422)},
)
async def basis(
    fid: str, version: Annotated[int, Path(ge=0)], _: AdminOrClientDep, adapters: AdaptersDep
) -> Response:
    """float32 little-endian: each LoRA module's `A_max` (`r_max x in_features`, row-major), modules in the
    layout's order. The seeded basis is rebuilt from the seed; a re-based one (seed 001's third stage,
    `RoundStatus.rebased`) is served as stored. A hospital fetches it when a plan names a basis it lacks; an edge needs none (403)."""
    return Response(await adapters.basis(fid, version), media_type="application/octet-stream")


@router.get("/{fid}/privacy", summary="The privacy ledger", responses=errors(401, 403, 404, 422))
async def get_privacy(fid: str, _: AdminDep, federations: FederationsDep) -> PrivacyReport:
    """Both DP layers: per closed round, the client-level noise released and the federation's epsilon
    after it; per hospital and round, the example-level epsilon recomputed from its DP-SGD history beside
    the one it reported; what the next round and the whole plan would spend."""
    return await federations.privacy(fid)


@router.post(
    "/{fid}/pause", summary="Pause: no new plans are handed out", responses=errors(401, 403, 404, 409, 422)
)
async def pause(fid: str, _: AdminDep, federations: FederationsDep) -> FederationInfo:
    """Edges may still forward the current round's aggregates, but the round does not close and no plan
    is handed out until the federation resumes; 409 unless it is active."""
    return await federations.pause(fid)


@router.post("/{fid}/resume", summary="Resume a paused federation", responses=errors(401, 403, 404, 409, 422))
async def resume(fid: str, _: AdminDep, federations: FederationsDep) -> FederationInfo:
    """Plans are handed out again; 409 unless the federation is paused."""
    return await federations.resume(fid)


@router.post("/{fid}/stop", summary="Stop for good", responses=errors(401, 403, 404, 409, 422))
async def stop(fid: str, _: AdminDep, rounds: RoundsDep) -> FederationInfo:
    """The federation's state becomes `stopped` and its open round `failed` ("federation stopped"): the round
    is sealed first, so an edge sum arriving meanwhile is refused (409 `round_closed`), and the sums it holds
    are shown as forwarded and, with distributed noise, charged unreleased against the decrypting cloud.
    Plan requests are answered 410 from then on. 409 if it has already ended."""
    return await rounds.stop(fid)
