"""The one place where errors become HTTP answers: every 4xx/5xx body is an `ErrorBody`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud_server.errors import CloudError
from protocol.messages import ErrorBody, ErrorCode
from services.store import StoreError

log = logging.getLogger("fedlora.cloud")

_HTTP_CODES = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}
# Where a request part sits in a validation error's location; the field is what follows it.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    *,
    field: str | None = None,
    detail: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message[:4000], field=field, detail=detail)
    return JSONResponse(
        status_code=status,
        content=body.model_dump(mode="json", exclude_none=True),
        headers=dict(headers) if headers else None,
    )


def _field_of(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None


async def _cloud_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message, extra={"code": exc.code})
    return error_response(
        exc.status, exc.code, exc.message, field=exc.field, detail=exc.detail, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field_of(first.get("loc", ()))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    # Only locations and messages go back: the input may be a large or secret value.
    summary = [
        {"field": _field_of(e.get("loc", ())), "message": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors[:20]
    ]
    return error_response(422, ErrorCode.INVALID_REQUEST, message, field=field, detail={"errors": summary})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    message = f"request body is too large: {exc.detail}" if exc.status_code == 413 else str(exc.detail)
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: state store failed: %s", request.method, request.url.path, exc)
    return error_response(
        503, ErrorCode.STORE_UNAVAILABLE, f"state store unavailable: {exc}", headers={"Retry-After": "2"}
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the cloud's log"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
