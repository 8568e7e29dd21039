"""`services.limits.RequestLimits`: a refusal raised while a request is admitted (before its route runs) is
answered by the app's own exception handlers, as the same error raised by a route would be."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute
from starlette.types import Scope

from services import keyspace
from services.limits import Admission, RequestLimits
from services.settings import ServiceSettings
from services.store import MemoryStore, StoreError
from services.stored_records import StoredRecordError
from tests.error_handlers import with_edge_error_handlers

RECORD_KEY = "cloud:fed:f1:spec"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_admitting_with(error: Exception, store: MemoryStore) -> FastAPI:
    router = APIRouter()

    @router.get("/things/{tid}")
    async def thing(tid: str) -> dict[str, str]:
        return {"tid": tid}

    async def admit(scope: Scope, route: BaseRoute | None, params: dict[str, object]) -> Admission:
        raise error

    app = FastAPI()
    app.include_router(router)
    app.state.store = store
    with_edge_error_handlers(app)
    app.add_middleware(RequestLimits, settings=ServiceSettings(), admit=admit, routes=router.routes)
    return app


@pytest.mark.anyio
async def test_a_corrupt_record_read_while_admitting_is_quarantined_and_answered_409() -> None:
    store = MemoryStore()
    error = StoredRecordError(RECORD_KEY, "not JSON", raw=b"\x00garbage")
    with TestClient(app_admitting_with(error, store)) as client:
        answer = client.get("/things/t1")

    assert (answer.status_code, answer.json()["code"]) == (409, "stored_record_corrupt")
    assert await store.get(keyspace.quarantine_of(RECORD_KEY, None)) == b"\x00garbage"


def test_a_store_that_fails_while_admitting_is_503_store_unavailable_with_retry_after() -> None:
    with TestClient(app_admitting_with(StoreError("connection refused"), MemoryStore())) as client:
        answer = client.get("/things/t1")

    assert (answer.status_code, answer.json()["code"]) == (503, "store_unavailable")
    assert answer.headers["Retry-After"] == "2"
    assert answer.json()["field"] is None  # the app's own body (this app does not omit nulls)
