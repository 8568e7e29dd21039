from __future__ import annotations

from fastapi import APIRouter

from cloud_server.deps import ContextDep
from cloud_server.routes import errors
from services.store import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness check")
async def healthz() -> dict[str, str]:
    """Always `{"status": "ok"}` while the process serves; it reads nothing, so it says nothing of Redis."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the state store answers (for load balancers in front of replicas)",
    responses=errors(503),
)
async def readyz(context: ContextDep) -> dict[str, str]:
    """200 with the store's address (never its password) when it answers PING; 503 `store_unavailable`
    otherwise, so a load balancer sends requests to another replica."""
    if not await context.store.ping():
        raise StoreError(f"state store {context.store.describe()} does not answer PING")
    return {"status": "ready", "store": context.store.describe()}
