from __future__ import annotations

from fastapi import APIRouter

from cloud_server.deps import ContextDep
from services.store import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness check")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the state store answers (for load balancers in front of replicas)")
async def readyz(context: ContextDep) -> dict[str, str]:
    if not await context.store.ping():
        raise StoreError(f"state store {context.store.describe()} does not answer PING")
    return {"status": "ready", "store": context.store.describe()}
