from __future__ import annotations

from fastapi import APIRouter, Response

from cloud_server.deps import ContextDep
from services.metrics import CONTENT_TYPE

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (no authentication, like /healthz)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "the Prometheus text format"}},
    include_in_schema=True,
)
async def metrics(context: ContextDep) -> Response:
    """Rounds, uploads, bytes, HE timings, privacy spent, clients per edge, the state store's memory use and
    HTTP requests. Counts only: no client ids, no request paths (routes appear as their templates). Keep it
    off the public network, as /healthz."""
    await context.telemetry.refresh_enrolment()
    await context.metrics.sample_store(context.store)
    return Response(context.metrics.exposition(), media_type=CONTENT_TYPE)
