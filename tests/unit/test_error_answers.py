"""The one error-to-HTTP mapper (`services.asgi.install_error_handlers`) under both services' wording."""

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from protocol.messages import ErrorCode
from services.asgi import install_error_handlers
from services.errors import InvalidRequestError, ServiceError
from services.store import StoreError

pytestmark = pytest.mark.anyio


class TeapotError(ServiceError):
    status = 418
    default_code = ErrorCode.CONFLICT
    headers: ClassVar[dict[str, str]] = {"Retry-After": "7"}


class Body(BaseModel):
    count: int


def app(*, omit_nulls: bool) -> FastAPI:
    def invalid_request(errors: Sequence[Any]) -> ServiceError:
        return InvalidRequestError(f"{len(errors)} problem(s)", field="count")

    application = FastAPI()
    install_error_handlers(
        application,
        log=logging.getLogger("tests.error_answers"),
        invalid_request=invalid_request,
        internal_error=lambda exc: ServiceError(f"internal ({type(exc).__name__})"),
        omit_nulls=omit_nulls,
    )

    @application.get("/teapot")
    async def teapot() -> None:
        raise TeapotError("short and stout", detail={"spout": 1})

    @application.post("/count")
    async def count(body: Body) -> int:
        return body.count

    @application.get("/store")
    async def store() -> None:
        raise StoreError("connection refused")

    @application.get("/bug")
    async def bug() -> None:
        raise KeyError("oops")

    return application


async def answers(application: FastAPI) -> dict[str, httpx.Response]:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as http:
        return {
            "teapot": await http.get("/teapot"),
            "invalid": await http.post("/count", json={"count": "many"}),
            "store": await http.get("/store"),
            "bug": await http.get("/bug"),
            "unknown": await http.get("/nowhere"),
        }


async def test_each_error_is_an_error_body_with_its_status_code_and_headers() -> None:
    # Execute
    got = await answers(app(omit_nulls=True))

    # Assert
    teapot = got["teapot"]
    assert (teapot.status_code, teapot.headers["retry-after"]) == (418, "7")
    assert teapot.json() == {
        "protocol_version": 1,
        "code": "conflict",
        "message": "short and stout",
        "detail": {"spout": 1},
    }
    assert (got["invalid"].status_code, got["invalid"].json()["message"]) == (422, "1 problem(s)")
    assert got["invalid"].json()["field"] == "count"
    store = got["store"]
    assert (store.status_code, store.headers["retry-after"], store.json()["code"]) == (
        503,
        "2",
        "store_unavailable",
    )
    assert store.json()["message"] == "state store unavailable: connection refused"
    assert (got["bug"].status_code, got["bug"].json()["message"]) == (500, "internal (KeyError)")
    assert (got["unknown"].status_code, got["unknown"].json()["code"]) == (404, "not_found")


async def test_the_edge_s_wording_sends_unset_fields_as_null() -> None:
    # Execute
    teapot = (await answers(app(omit_nulls=False)))["teapot"]

    # Assert
    assert teapot.content == (
        b'{"protocol_version":1,"code":"conflict","message":"short and stout","field":null,'
        b'"detail":{"spout":1}}'
    )
