"""The edge's HTTP routes (docs/api.md, "Edge"). They parse, call the core, log; nothing else."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from edge_aggregator.deps import EdgeDep, RuntimeDep
from edge_aggregator.errors import EdgeError, UnknownFederationError
from edge_aggregator.http_errors import from_validation_error
from protocol.messages import ClientUpdate, EdgeProgress, UploadAccepted
from services.metrics import CONTENT_TYPE
from services.store import StoreError

log = logging.getLogger("edge_aggregator")
router = APIRouter()

RoundNumber = Annotated[int, Path(ge=0, le=2**62)]


class EdgeHealth(BaseModel):
    """`GET /healthz`: `status` is always "ok" while the process serves; the rest says how far it got."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: str = "ok"
    edge_id: str
    federation_id: str
    enrolled: bool
    ready: bool
    round: int | None = None
    federation_ended: str | None = None
    last_error: str | None = None


@router.get("/healthz", response_model=EdgeHealth)
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    return runtime.health()


@router.get("/readyz", summary="Ready for uploads: enrolled, holding the key, and the state store answers")
async def readyz(edge: EdgeDep, runtime: RuntimeDep) -> dict[str, str]:
    if not await runtime.store_ok():
        raise StoreError("the state store does not answer PING")
    return {"status": "ready", "edge_id": edge.config.edge_id}


@router.get(
    "/metrics",
    summary="Prometheus metrics (no authentication, like /healthz)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "the Prometheus text format"}},
    tags=["monitoring"],
    include_in_schema=True,
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Uploads, bytes, HE timings and HTTP requests. Counts only: no client ids, no request paths (routes
    appear as their templates)."""
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)


@router.post(
    "/federations/{federation_id}/rounds/{round_number}/uploads",
    status_code=202,
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ClientUpdate.model_json_schema()}},
        }
    },
)
async def upload(
    federation_id: str, round_number: RoundNumber, request: Request, edge: EdgeDep
) -> UploadAccepted:
    """Add one signed, encrypted `ClientUpdate` into the round's running sum."""
    client_id: str | None = None
    try:
        body = await request.body()  # the size limit applies while this reads
        try:
            update = ClientUpdate.model_validate_json(body)
        except ValidationError as e:
            raise from_validation_error(e) from e
        client_id = update.client_id
        accepted = await edge.accept(update, federation_id=federation_id, round_=round_number)
    except EdgeError as e:
        log.warning(
            "upload refused",
            extra={
                "round": round_number,
                "client_id": client_id,
                "code": e.code.value,
                "status": e.status,
                "data": {"reason": e.message},
            },
        )
        await edge.record_refusal(round_number)
        raise
    late = accepted.folded_into_round
    log.info(
        "upload accepted" if late is None else f"late upload accepted into round {late}'s bucket",
        extra={
            "round": round_number,
            "client_id": client_id,
            "code": "accepted",
            "data": {"count": accepted.count, "folded_into_round": late},
        },
    )
    return accepted


@router.get("/federations/{federation_id}/rounds/{round_number}", response_model=EdgeProgress)
async def progress(federation_id: str, round_number: RoundNumber, edge: EdgeDep) -> EdgeProgress:
    """How far the round got at this edge: counts only, never client ids."""
    if federation_id != edge.config.federation_id:
        raise UnknownFederationError(f"this edge serves federation {edge.config.federation_id}")
    return await edge.progress(round_number)
