"""The edge's HTTP routes (docs/api.md, "Edge"). They parse, call the core, log; nothing else."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from edge_aggregator.deps import EdgeDep, RuntimeDep
from edge_aggregator.errors import UnknownFederationError, from_validation_error
from protocol.examples import ERRORS_BY_STATUS
from protocol.messages import ClientUpdate, EdgeProgress, UploadAccepted
from services.errors import ServiceError
from services.metrics import CONTENT_TYPE
from services.openapi import error_responses
from services.store import StoreError

log = logging.getLogger("edge_aggregator")
router = APIRouter()

RoundNumber = Annotated[int, Path(ge=0, le=2**62)]

TAGS = [
    {"name": "health", "description": "Liveness and readiness."},
    {"name": "uploads", "description": "Hospitals upload their signed, encrypted updates."},
    {"name": "rounds", "description": "How far a round got at this edge (counts only)."},
    {"name": "monitoring", "description": "Prometheus metrics for scraping (no authentication)."},
]
_DESCRIPTIONS = {
    400: "`bad_ciphertext`: not a ciphertext of the federation's key and layout",
    401: "`unauthenticated` (client not enrolled at this edge) or `bad_signature`",
    403: "`forbidden`: the client is not in this round's plan",
    404: "`unknown_federation`: this edge serves another federation",
    409: "`wrong_round`, `round_closed`, `wrong_basis`, `plan_mismatch` (made under another plan than this "
    "edge's for the round), `replay`, `duplicate_upload` or `conflict` (sum full)",
    410: "`federation_not_active`: the federation has ended",
    413: "`payload_too_large`",
    422: "`invalid_request` naming the field (also: path and body disagree)",
    503: "not ready (not enrolled or without the key yet) or `store_unavailable`; retry after `Retry-After`",
}
# The edge's own words where they differ from the cloud's.
_EXAMPLES = ERRORS_BY_STATUS | {
    401: {
        "code": "unauthenticated",
        "message": "client hospital-north-9 is not enrolled at edge edge-north",
        "field": "client_id",
    },
    403: {"code": "forbidden", "message": "client hospital-north-2 is not in round 3's plan"},
    404: {
        "code": "unknown_federation",
        "message": "this edge serves federation discharge-notes-2026, not sentiment-demo",
        "field": "federation_id",
    },
}
_COMPONENT_REF = "#/components/schemas/{model}"


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(_DESCRIPTIONS, *statuses, examples=_EXAMPLES)


def install_openapi(app: FastAPI) -> None:
    """The upload's body is read raw (the size limit applies while it streams), so FastAPI never sees
    `ClientUpdate` as a parameter: add its schema, and the models it refers to, to the document's
    components, where the upload's request body points."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schema = ClientUpdate.model_json_schema(ref_template=_COMPONENT_REF)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["ClientUpdate"] = schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


class EdgeHealth(BaseModel):
    """`GET /healthz`: `status` is always "ok" while the process serves; the rest says how far it got."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "edge_id": "edge-north",
                    "federation_id": "discharge-notes-2026",
                    "enrolled": True,
                    "ready": True,
                    "round": 3,
                }
            ]
        },
    )

    status: str = "ok"
    edge_id: str
    federation_id: str
    enrolled: bool
    ready: bool
    round: int | None = None
    federation_ended: str | None = None
    last_error: str | None = None


@router.get(
    "/healthz", summary="Liveness, with how far the edge got", response_model=EdgeHealth, tags=["health"]
)
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    """`status` is "ok" while the process serves, even before it enrolled; `ready`, `round` and
    `last_error` say whether it can take uploads and why not."""
    return runtime.health()


@router.get(
    "/readyz",
    summary="Ready for uploads: enrolled, holding the key, and the state store answers",
    tags=["health"],
    responses=errors(503),
)
async def readyz(edge: EdgeDep, runtime: RuntimeDep) -> dict[str, str]:
    """200 once the edge has enrolled with the cloud, holds the federation's public key and its state
    store answers PING; 503 otherwise (for a load balancer or an orchestrator's readiness probe)."""
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
    summary="A hospital uploads its signed, encrypted update",
    tags=["uploads"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 409, 410, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _COMPONENT_REF.format(model="ClientUpdate")}}
            },
        }
    },
)
async def upload(
    federation_id: str, round_number: RoundNumber, request: Request, edge: EdgeDep
) -> UploadAccepted:
    """Add one signed, encrypted `ClientUpdate` into the round's running sum. The checks run in the order
    of docs/api.md ("Edge"), each with its own code; only an upload that passes them all touches the sum,
    in one store transaction with its manifest entry and nonce. A late upload (the federation allows them)
    goes into its origin round's bucket instead: `folded_into_round` says which round carries it."""
    client_id: str | None = None
    try:
        body = await request.body()  # the size limit applies while this reads
        try:
            update = ClientUpdate.model_validate_json(body)
        except ValidationError as e:
            raise from_validation_error(e) from e
        client_id = update.client_id
        accepted = await edge.accept(update, federation_id=federation_id, round_=round_number)
    except ServiceError as e:
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


@router.get(
    "/federations/{federation_id}/rounds/{round_number}",
    summary="A round's progress at this edge",
    tags=["rounds"],
    response_model=EdgeProgress,
    responses=errors(404, 422, 503),
)
async def progress(federation_id: str, round_number: RoundNumber, edge: EdgeDep) -> EdgeProgress:
    """How far the round got at this edge: counts only, never client ids; `forwarded_at` is when the edge
    sent the aggregate the cloud accepted (by the edge's clock)."""
    if federation_id != edge.config.federation_id:
        raise UnknownFederationError(f"this edge serves federation {edge.config.federation_id}")
    return await edge.progress(round_number)
