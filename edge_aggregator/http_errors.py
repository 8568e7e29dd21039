"""The one place where edge errors become HTTP answers: every refusal is an `ErrorBody`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_aggregator.errors import EdgeError, InvalidRequestError, NotReadyError
from protocol.messages import ErrorBody, ErrorCode
from services.store import StoreError

log = logging.getLogger("edge_aggregator")

_HTTP_CODES = {401: ErrorCode.UNAUTHENTICATED, 403: ErrorCode.FORBIDDEN, 404: ErrorCode.NOT_FOUND}
_RETRY_AFTER_S = "2"


def error_response(error: EdgeError) -> JSONResponse:
    body = ErrorBody(code=error.code, message=error.message[:4000], field=error.field)
    headers = {"Retry-After": _RETRY_AFTER_S} if isinstance(error, NotReadyError) else None
    return JSONResponse(body.model_dump(mode="json"), status_code=error.status, headers=headers)


def invalid_request(errors: Sequence[Any]) -> InvalidRequestError:
    """An `InvalidRequestError` naming the first failing field (never echoing the input: it may be huge)."""
    if not errors:
        return InvalidRequestError("request is not valid")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(loc) or None
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"{field}: " if field else ""
    return InvalidRequestError(f"{where}{first.get('msg', 'invalid')}{more}", field=field)


def from_validation_error(error: ValidationError) -> InvalidRequestError:
    return invalid_request(error.errors(include_input=False, include_url=False))


async def _edge_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, EdgeError)
    return error_response(error)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(invalid_request(error.errors()))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, ErrorCode.INVALID_REQUEST)
    body = ErrorBody(code=code, message=str(error.detail)[:4000])
    return JSONResponse(body.model_dump(mode="json"), status_code=error.status_code, headers=error.headers)


async def _store_error(request: Request, error: Exception) -> JSONResponse:
    # An upload's sum, manifest and nonce move in one transaction: either none of it was written and the
    # same upload may be sent again, or all of it was and the retry is answered `duplicate_upload`.
    log.error("state store unavailable", extra={"data": {"path": request.url.path, "error": str(error)}})
    body = ErrorBody(code=ErrorCode.STORE_UNAVAILABLE, message=f"state store unavailable: {error}"[:4000])
    return JSONResponse(
        body.model_dump(mode="json"), status_code=503, headers={"Retry-After": _RETRY_AFTER_S}
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=error, extra={"data": {"path": request.url.path}})
    body = ErrorBody(code=ErrorCode.INTERNAL, message="internal error; see the edge's log")
    return JSONResponse(body.model_dump(mode="json"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(EdgeError, _edge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
