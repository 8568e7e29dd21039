"""The edge's HTTP routes (docs/api.md, "Edge"). They parse, call the core, log; nothing else."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.deps import EdgeDep, RuntimeDep
from edge_aggregator.errors import UnknownFederationError, from_validation_error
from edge_aggregator.masking import Posted, Produced
from protocol.examples import ERRORS_BY_STATUS
from protocol.messages import ClientUpdate, EdgeProgress, ErrorCode, UploadAccepted
from protocol.secagg import (
    Consent,
    Inbox,
    KeyAdvert,
    Roster,
    ShareBundle,
    Stage,
    StageRequest,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.upload_frame import UPLOAD_FRAME_MEDIA_TYPE, UploadFrameError, decode_upload
from services.errors import InvalidRequestError, ServiceError
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
    {
        "name": "masking",
        "description": "Masking below the encryption (masking federations only): the stages of a round's "
        "cohort, one signed message per hospital and stage, and what each closed stage produced.",
    },
    {"name": "monitoring", "description": "Prometheus metrics for scraping (no authentication)."},
]
_DESCRIPTIONS = {
    400: "`bad_ciphertext`: not a ciphertext of the federation's key and layout",
    401: "`unauthenticated` (client not enrolled at this edge) or `bad_signature`",
    403: "`forbidden`: the client is not in this round's plan",
    404: "`unknown_federation`: this edge serves another federation (named in the path or the body)",
    409: "`round_not_open_yet` (a round after this edge's plan, which it is fetching: retry after "
    "`Retry-After`), `wrong_round` (also: the body names another round than the path), `round_closed`, `wrong_basis`, `plan_mismatch` (made under another plan "
    "than this edge's for the round), `replay`, `duplicate_upload` or `conflict` (sum full)",
    410: "`federation_not_active`: the federation has ended",
    413: "`payload_too_large`",
    422: "`invalid_request` naming the field",
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
_MASKING_DESCRIPTIONS = _DESCRIPTIONS | {
    401: "`unauthenticated` (client not enrolled at this edge) or `bad_signature` (not signed with its "
    "enrolled key)",
    403: "`forbidden` (not in this round's plan) or `not_in_cohort` (not in the stage: it missed an earlier one)",
    404: "`unknown_federation`, or `not_found`: the federation does not mask",
    409: "`wrong_cohort` (the body names another edge's cohort or round), `round_not_open_yet` (a round after "
    "this edge's plan, which it is fetching: retry after `Retry-After`), `wrong_round`, `stage_pending` (the "
    "stage it needs has not closed: retry after `Retry-After`), `stage_closed`, `cohort_failed` (nothing of "
    "the round is forwarded), `duplicate_upload` (another message for the stage) or `conflict` (an X25519 key "
    "another hospital advertised)",
}
_MASKING = "/federations/{federation_id}/rounds/{round_number}/masking"
_COMPONENT_REF = "#/components/schemas/{model}"


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(_DESCRIPTIONS, *statuses, examples=_EXAMPLES)


def masking_errors() -> dict[int | str, dict[str, Any]]:
    return error_responses(_MASKING_DESCRIPTIONS, 401, 403, 404, 409, 410, 413, 422, 503, examples=_EXAMPLES)


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
        allow_inf_nan=False,
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
    """Uploads, bytes, HE timings, the state store's memory use and HTTP requests. Counts only: no client
    ids, no request paths (routes appear as their templates)."""
    await runtime.sample_store()
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)


@router.post(
    "/federations/{federation_id}/rounds/{round_number}/uploads",
    status_code=202,
    summary="A hospital uploads its signed, encrypted update",
    tags=["uploads"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=errors(400, 401, 403, 404, 409, 410, 413, 422, 503),
    # The binary frame (`protocol.upload_frame`) is described in words, not listed as a media type: any bytes
    # are a valid `format: binary` string, and a document must not call a body valid that the edge refuses.
    openapi_extra={
        "requestBody": {
            "description": "A `ClientUpdate` as JSON; or, with `Content-Type: application/octet-stream`, the "
            'same update as a binary frame (docs/api.md, "Edge"): `FLUP`, version 1, the header\'s length '
            "(4 bytes, big-endian) and the header (the other fields as JSON), the ciphertext's length (8 "
            "bytes) and the ciphertext's bytes; a body that is not a frame is 422 `invalid_request` naming "
            "the part",
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _COMPONENT_REF.format(model="ClientUpdate")}},
            },
        }
    },
)
async def upload(
    federation_id: str, round_number: RoundNumber, request: Request, edge: EdgeDep
) -> UploadAccepted:
    """Take one signed, encrypted `ClientUpdate` for the round's running sum, as JSON or as the binary frame
    (`application/octet-stream`: the ciphertext's bytes as they are, after the other fields). The checks run in the order
    of docs/api.md ("Edge"), each with its own code; only an upload that passes them all is stored, in one
    store transaction with its manifest entry and nonce, before the answer; the edge's folder adds it into
    the sum later. A late upload (the federation allows them) goes into its origin round's bucket instead:
    `folded_into_round` says which round carries it."""
    client_id: str | None = None
    try:
        started = time.perf_counter()
        body = await request.body()  # the size limit applies while this reads
        received = time.perf_counter()
        update = _parse_upload(body, request.headers.get("content-type", ""))
        parsed = time.perf_counter()
        client_id = update.client_id
        accepted = await edge.accept(update, federation_id=federation_id, round_=round_number)
        edge.metrics.phase_observed("receive", received - started)
        edge.metrics.phase_observed("parse", parsed - received)
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


def _parse_upload(body: bytes, content_type: str) -> ClientUpdate:
    """The body as a `ClientUpdate`: the binary frame (`protocol.upload_frame`) or JSON (any other type)."""
    try:
        if content_type.partition(";")[0].strip().lower() == UPLOAD_FRAME_MEDIA_TYPE:
            return decode_upload(body)
        return ClientUpdate.model_validate_json(body)
    except ValidationError as e:
        raise from_validation_error(e) from e
    except UploadFrameError as e:
        raise InvalidRequestError(str(e), field=e.field) from e


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


# -- masking stages (docs/api.md, "Masking stages") -------------------------------------------------------
@router.post(
    f"{_MASKING}/adverts",
    status_code=202,
    summary="A hospital advertises its masking keys",
    tags=["masking"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=masking_errors(),
)
async def post_advert(
    federation_id: str, round_number: RoundNumber, advert: KeyAdvert, edge: EdgeDep
) -> UploadAccepted:
    """A signed `KeyAdvert`: the hospital's two X25519 public keys and its seed commitment for the round's
    cohort. The roster closes when every hospital of the plan enrolled here advertised, or
    `masking_stage_s` after the round opened; `count` is how many adverts the edge holds."""
    return await _posted("advert", advert, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/shares",
    status_code=202,
    summary="A hospital sends its sealed seed shares",
    tags=["masking"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=masking_errors(),
)
async def post_shares(
    federation_id: str, round_number: RoundNumber, bundle: ShareBundle, edge: EdgeDep
) -> UploadAccepted:
    """A signed `ShareBundle` from a roster member: one sealed box per neighbour. Only hospitals whose
    shares the edge holds when the stage closes get an inbox and may upload."""
    return await _posted("shares", bundle, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/consents",
    status_code=202,
    summary="A survivor signs the survivor list",
    tags=["masking"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=masking_errors(),
)
async def post_consent(
    federation_id: str, round_number: RoundNumber, consent: Consent, edge: EdgeDep
) -> UploadAccepted:
    """A `Consent`: the survivor's signature of the `SurvivorSet` this edge serves for the round (the
    hospitals in its sum). The unmask request needs a majority of the roster's signatures."""
    return await _posted("consent", consent, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/unmask-shares",
    status_code=202,
    summary="A survivor reveals the shares that unmask the sum",
    tags=["masking"],
    response_model=UploadAccepted,
    response_model_exclude_none=True,
    responses=masking_errors(),
)
async def post_unmask_shares(
    federation_id: str, round_number: RoundNumber, answer: UnmaskShares, edge: EdgeDep
) -> UploadAccepted:
    """Signed `UnmaskShares`: for each neighbour, its self-mask share if it survived, its mask-key share if
    it shared and dropped; any other share is refused (422). When every consenter answered, or at the
    timeout, the edge computes the correction and forwards the round's sum with it."""
    return await _posted("unmask shares", answer, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/roster",
    summary="The cohort's roster, once the adverts closed",
    tags=["masking"],
    response_model=Roster,
    responses=masking_errors(),
)
async def read_roster(
    federation_id: str, round_number: RoundNumber, request: StageRequest, edge: EdgeDep
) -> Produced:
    """A signed `StageRequest` (stage `roster`) from a hospital of the round: the adverts the roster closed
    with, sorted by client id; 409 `stage_pending` while it is open."""
    return await _produced(Stage.ROSTER, request, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/inbox",
    summary="The caller's inbox, once the shares closed",
    tags=["masking"],
    response_model=Inbox,
    responses=masking_errors(),
)
async def read_inbox(
    federation_id: str, round_number: RoundNumber, request: StageRequest, edge: EdgeDep
) -> Produced:
    """A signed `StageRequest` (stage `inbox`): the sealed shares the caller's neighbours addressed to it;
    403 `not_in_cohort` for a hospital that sent no shares."""
    return await _produced(Stage.INBOX, request, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/survivors",
    summary="The survivor list, once the round closed to uploads",
    tags=["masking"],
    response_model=SurvivorSet,
    responses=masking_errors(),
)
async def read_survivors(
    federation_id: str, round_number: RoundNumber, request: StageRequest, edge: EdgeDep
) -> Produced:
    """A signed `StageRequest` (stage `survivors`): the hospitals whose masked uploads are in the round's
    sum, for each survivor to sign (`consents`)."""
    return await _produced(Stage.SURVIVORS, request, federation_id, round_number, edge)


@router.post(
    f"{_MASKING}/unmask-request",
    summary="The unmask request, once the consents closed",
    tags=["masking"],
    response_model=UnmaskRequest,
    responses=masking_errors(),
)
async def read_unmask_request(
    federation_id: str, round_number: RoundNumber, request: StageRequest, edge: EdgeDep
) -> Produced:
    """A signed `StageRequest` (stage `unmask-request`): the survivor list with the signatures it
    collected, for each survivor to check and answer (`unmask-shares`)."""
    return await _produced(Stage.UNMASK_REQUEST, request, federation_id, round_number, edge)


async def _posted(
    what: str, message: Posted, federation_id: str, round_number: int, edge: EdgeAggregator
) -> UploadAccepted:
    try:
        accepted = await edge.masking_post(message, federation_id=federation_id, round_=round_number)
    except ServiceError as e:
        _refused(f"masking {what} refused", e, round_number, message.client_id)
        raise
    log.info(
        f"masking {what} accepted",
        extra={
            "round": round_number,
            "client_id": message.client_id,
            "code": "accepted",
            "data": {"count": accepted.count},
        },
    )
    return accepted


async def _produced(
    stage: Stage, request: StageRequest, federation_id: str, round_number: int, edge: EdgeAggregator
) -> Produced:
    try:
        return await edge.masking_read(request, stage=stage, federation_id=federation_id, round_=round_number)
    except ServiceError as e:
        if e.code is not ErrorCode.STAGE_PENDING:  # hospitals poll: a pending stage is no event
            _refused(f"masking {stage.value} refused", e, round_number, request.client_id)
        raise


def _refused(what: str, error: ServiceError, round_: int, client_id: str) -> None:
    log.warning(
        what,
        extra={
            "round": round_,
            "client_id": client_id,
            "code": error.code.value,
            "status": error.status,
            "data": {"reason": error.message},
        },
    )
